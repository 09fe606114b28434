"""CI gates: thresholds a run's summary must meet, from flags or a `loadgen.toml` `[gates]` table.

The verdicts of a run (loadgen.analysis.verdicts) say whether the mesh behaves as configured; gates say
whether a run is good enough for *this* pipeline: a latency budget, an error budget, a
collection floor for the backend, no leaks. Each gate gives one `GateResult`; the exit code is 0
when every gate passed and 1 when any failed, and `loadgen.report.junit.render_junit` turns the
results into a JUnit report that CI systems show per gate.

Everything here is pure except `load_gate_config`, which only reads the file it is given.

    [gates]
    verdicts = true                  # every verdict of the run must pass ...
    allow_inconclusive = true        # ... or be inconclusive
    sampling = true                  # false leaves the sampling verdict out
    min_collection = 0.99            # mesh collection rate (found complete / decided sampled)
    min_reference_collection = 0.999 # reference collection rate (found complete / exported)
    max_p99_ms = 250                 # p99 latency of the slowest header mode
    max_error_rate = 0.001           # errors / requests
    max_leaked = 0                   # traces found although decided not sampled

By default every verdict in the summary (`verdicts`: load_delivered, sampling, mesh_collection,
no_leaks, ...) is a gate of its own, named after the verdict: a run that failed a verdict fails
the gate, and an inconclusive one fails it too unless `allow_inconclusive`. The thresholds only
tighten that. `verdicts = false` checks the sampling verdict (unless `sampling = false`) and the
thresholds only, as before issue 13. A summary that records no verdict fails the `verdicts` gate:
the run was never judged.

`max_error_rate` is on by default at 0.05, the share above which a run's `load_delivered` verdict
fails (`--max-error-rate` means the same in `run` and `gate`); 1 allows any share, but a run that
made no request still fails. Any other threshold that is absent (or null from a flag) is not
checked. A gate whose quantity was not
measured (n = 0) fails: a CI gate that nothing could check must not look green. So `max_leaked`
fails when no decided-not-sampled trace was queried (`mesh.leak_checked` = 0), and the sampling
gate reads the run's final verdict (`verdicts.sampling`: inconclusive when too few decisions
were seen or a fact it needs was not learned), with its cause from `verdict_details`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE, describe_error
from loadgen.summary.io import as_summary
from loadgen.summary.model import Proportion, Summary

EXIT_GATES_PASSED = 0
EXIT_GATES_FAILED = 1


class GateConfigError(ValueError):
    """A gate threshold is unknown, of the wrong type or out of range; the message says which."""


@dataclass(frozen=True)
class GateConfig:
    verdicts: bool = True
    sampling: bool = True
    allow_inconclusive: bool = False
    min_collection: float | None = None
    min_reference_collection: float | None = None
    max_p99_ms: float | None = None
    max_error_rate: float | None = DEFAULT_MAX_ERROR_RATE
    max_leaked: int | None = None

    def merged(self, overrides: Mapping[str, Any]) -> GateConfig:
        """These thresholds with `overrides` (e.g. from command-line flags) on top; a None value
        means "not given" and keeps the current one."""
        given = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
        return replace(self, **_validated(given, source="flags"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FRACTIONS = ("min_collection", "min_reference_collection", "max_error_rate")
_BOOLS = ("verdicts", "sampling", "allow_inconclusive")
_FIELDS = tuple(f.name for f in fields(GateConfig))


def _validated(values: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in _FIELDS:
            raise GateConfigError(f"{source}: unknown gate {raw_key!r}; known: {', '.join(_FIELDS)}")
        if key in _BOOLS:
            if not isinstance(value, bool):
                raise GateConfigError(f"{source}: {key} must be true or false, got {value!r}")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise GateConfigError(f"{source}: {key} must be a number, got {value!r}")
        if value < 0:
            raise GateConfigError(f"{source}: {key} must not be negative, got {value!r}")
        if key in _FRACTIONS and value > 1:
            raise GateConfigError(f"{source}: {key} is a fraction in [0, 1] (0.99 = 99 %), got {value!r}")
        if key == "max_leaked":
            if value != int(value):
                raise GateConfigError(f"{source}: max_leaked must be a whole number, got {value!r}")
            out[key] = int(value)
        else:
            out[key] = float(value)
    return out


def gate_config_from_mapping(table: Mapping[str, Any], *, source: str = "[gates]") -> GateConfig:
    return replace(GateConfig(), **_validated(table, source=source))


def gate_config_from_toml(text: str, *, source: str = "loadgen.toml") -> GateConfig:
    """The `[gates]` table of a loadgen.toml document (defaults when the table is absent)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GateConfigError(f"{source}: not valid TOML: {exc}") from exc
    table = doc.get("gates", {})
    if not isinstance(table, dict):
        raise GateConfigError(f"{source}: [gates] must be a table")
    return gate_config_from_mapping(table, source=f"{source} [gates]")


def load_gate_config(path: Path) -> GateConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GateConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise GateConfigError(f"{path}: not UTF-8 text (byte {exc.start}); expected TOML") from exc
    return gate_config_from_toml(text, source=str(path))


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    observed: float | int | str | None
    threshold: float | int | str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- evaluation -----------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{value * 100:.2f} %"


def _rate_gate(
    name: str, label: str, proportion: Proportion | None, minimum: float, extra: str = ""
) -> GateResult:
    if proportion is None or not proportion.n:
        return GateResult(
            name,
            False,
            None,
            minimum,
            f"{label}: nothing was measured (n = 0){extra}; need >= {_pct(minimum)}",
        )
    k, n = proportion.k, proportion.n
    rate = k / n
    low, high = proportion.ci95
    passed = rate >= minimum
    return GateResult(
        name,
        passed,
        rate,
        minimum,
        f"{label} {_pct(rate)} [95 % CI {_pct(low)} – {_pct(high)}] (k={k}, n={n}){extra} "
        f"{'>=' if passed else '<'} minimum {_pct(minimum)}",
    )


def _allowed(config: GateConfig) -> tuple[str, ...]:
    return ("pass", "inconclusive") if config.allow_inconclusive else ("pass",)


def _sampling_gate(s: Summary, config: GateConfig) -> GateResult:
    final = s.verdicts.get("sampling")
    sampling = s.sampling
    verdict = final or (sampling.verdict if sampling else None) or "missing"
    detail_doc = s.verdict_details.get("sampling")
    cause = detail_doc.cause if final and detail_doc else None
    allowed = _allowed(config)
    k, n = (sampling.decision.k, sampling.decision.n) if sampling else (0, 0)
    conf = sampling.configured_percent if sampling else None
    detail = f"decision rate {_pct(k / n)} (k={k}, n={n})" if n else "no decisions"
    detail += f" vs configured {conf:g} %" if conf is not None else ", configured percentage unknown"
    basis = sampling.verdict_basis if sampling else None
    why = f" ({cause})" if cause and verdict != "pass" else ""
    return GateResult(
        "sampling",
        verdict in allowed,
        verdict,
        " or ".join(allowed),
        f"sampling verdict {verdict}" + (f" ({basis})" if basis else "") + f": {detail}{why}; "
        f"required: {' or '.join(allowed)}",
    )


def _verdict_gate(s: Summary, name: str, allowed: tuple[str, ...]) -> GateResult:
    """One verdict of the run as a gate: its value, the evidence it rests on and, unless it
    passed, its cause (from `verdict_details`)."""
    verdict = s.verdicts[name]
    detail = s.verdict_details.get(name)
    evidence = (
        f" ({detail.basis}, {detail.checked:,} checked, at least {detail.minimum:,} needed)" if detail else ""
    )
    why = f": {detail.cause}" if detail and detail.cause and verdict != "pass" else ""
    return GateResult(
        name,
        verdict in allowed,
        verdict,
        " or ".join(allowed),
        f"{name} verdict {verdict}{evidence}{why}; required: {' or '.join(allowed)}",
    )


def _verdict_gates(s: Summary, config: GateConfig) -> list[GateResult]:
    """The sampling gate (unless switched off), then every other verdict of the run in the
    summary's order; a summary without any verdict fails: the run was never judged."""
    allowed = _allowed(config)
    results = [_sampling_gate(s, config)] if config.sampling else []
    if not s.verdicts:
        results.append(
            GateResult(
                "verdicts", False, None, " or ".join(allowed),
                "the summary records no verdict (`verdicts` is empty): the run was never judged; "
                "`loadgen verify RUN_DIR` judges it",
            )
        )  # fmt: skip
    results += [_verdict_gate(s, name, allowed) for name in s.verdicts if name != "sampling"]
    return results


def _unknown_text(unknown: int | None) -> str:
    return f", {unknown} unknown" if unknown else ""


def _p99_gate(s: Summary, maximum: float) -> GateResult:
    worst: tuple[str, float] | None = None
    for mode, lat in s.latency_ms.items():
        if lat.p99 is not None and math.isfinite(lat.p99) and (worst is None or lat.p99 > worst[1]):
            worst = (mode, lat.p99)
    if worst is None:
        return GateResult(
            "max_p99_ms", False, None, maximum,
            f"p99 latency: no successful request was measured; need <= {maximum:g} ms",
        )  # fmt: skip
    passed = worst[1] <= maximum
    return GateResult(
        "max_p99_ms",
        passed,
        worst[1],
        maximum,
        f"p99 latency {worst[1]:.2f} ms (slowest mode {worst[0]}) {'<=' if passed else '>'} maximum {maximum:g} ms",
    )


def _error_rate_gate(s: Summary, maximum: float) -> GateResult:
    requests = s.requests
    if requests is None or not requests.total:
        return GateResult(
            "max_error_rate",
            False,
            None,
            maximum,
            f"error rate: no requests were sent; need <= {_pct(maximum)}",
        )
    total, errors = requests.total, requests.errors
    rate = errors / total
    passed = rate <= maximum
    top = requests.top_errors
    commonest = (
        f"; most common: {describe_error(top[0])} ({top[0].count} requests)" if not passed and top else ""
    )
    return GateResult(
        "max_error_rate",
        passed,
        rate,
        maximum,
        f"error rate {_pct(rate)} ({errors} of {total} requests) "
        f"{'<=' if passed else '>'} maximum {_pct(maximum)}{commonest}",
    )


def _leak_gate(s: Summary, maximum: int) -> GateResult:
    leaked = s.mesh.leaked if s.mesh else None
    checked = s.mesh.leak_checked if s.mesh else None  # absent in summaries before it
    if leaked is None or s.mesh is None:
        return GateResult("max_leaked", False, None, maximum, "leaked traces: not in the summary")
    if checked == 0:
        return GateResult(
            "max_leaked", False, None, maximum,
            "leaked traces: no decided-not-sampled trace was queried (n = 0); "
            f"need <= {maximum} of a measured n",
        )  # fmt: skip
    passed = leaked <= maximum
    examples = s.mesh.leaked_examples
    ex = f" (e.g. {', '.join(examples[:3])})" if examples and not passed else ""
    return GateResult(
        "max_leaked",
        passed,
        leaked,
        maximum,
        f"{leaked} traces leaked{ex}"
        + (f" of {checked} queried" if checked is not None else "")
        + f" {'<=' if passed else '>'} maximum {maximum}",
    )


def evaluate_gates(summary: Summary | Mapping[str, Any], config: GateConfig) -> list[GateResult]:
    """One result per configured gate, in a fixed order (sampling, the run's other verdicts,
    collection, reference collection, p99, error rate, leaks)."""
    s = as_summary(summary)
    results: list[GateResult] = []
    if config.verdicts:
        results += _verdict_gates(s, config)
    elif config.sampling:
        results.append(_sampling_gate(s, config))
    if config.min_collection is not None:
        mesh = s.mesh
        results.append(
            _rate_gate(
                "min_collection", "mesh collection rate", mesh.collection if mesh else None,
                config.min_collection, _unknown_text(mesh.unknown if mesh else None),
            )
        )  # fmt: skip
    if config.min_reference_collection is not None:
        ref = s.reference
        results.append(
            _rate_gate(
                "min_reference_collection", "reference collection rate", ref.collection if ref else None,
                config.min_reference_collection, _unknown_text(ref.unknown if ref else None),
            )
        )  # fmt: skip
    if config.max_p99_ms is not None:
        results.append(_p99_gate(s, config.max_p99_ms))
    if config.max_error_rate is not None:
        results.append(_error_rate_gate(s, config.max_error_rate))
    if config.max_leaked is not None:
        results.append(_leak_gate(s, config.max_leaked))
    return results


def gates_exit_code(results: Sequence[GateResult]) -> int:
    """0 when every gate passed (or none was configured), 1 when any failed."""
    return EXIT_GATES_FAILED if any(not r.passed for r in results) else EXIT_GATES_PASSED


def gates_headline(results: Sequence[GateResult]) -> str:
    """One line for a terminal or a CI log: `gates: 4 of 5 passed; failed: max_p99_ms`."""
    failed = [r.name for r in results if not r.passed]
    text = f"gates: {len(results) - len(failed)} of {len(results)} passed"
    return text + (f"; failed: {', '.join(failed)}" if failed else "")
