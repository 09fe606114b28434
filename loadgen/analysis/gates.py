"""CI gates: thresholds a run's summary must meet, from flags or a `loadgen.toml` `[gates]` table.

The verdicts of a run (loadgen.analysis.verdicts) say whether the mesh behaves as configured; gates say
whether a run is good enough for *this* pipeline: a latency budget, an error budget, a
collection floor for the backend, no leaks. Each gate gives one `GateResult`; the exit code is 0
when every gate passed and 1 when any failed, and `loadgen.report.junit.render_junit` turns the
results into a JUnit report that CI systems show per gate.

Everything here is pure except `load_gate_config`, which only reads the file it is given.

    [gates]
    sampling = true                  # the sampling verdict must pass ...
    allow_inconclusive = true        # ... or be inconclusive
    min_collection = 0.99            # mesh collection rate (found complete / decided sampled)
    min_reference_collection = 0.999 # reference collection rate (found complete / exported)
    max_p99_ms = 250                 # p99 latency of the slowest header mode
    max_error_rate = 0.001           # errors / requests
    max_leaked = 0                   # traces found although decided not sampled

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

EXIT_GATES_PASSED = 0
EXIT_GATES_FAILED = 1


class GateConfigError(ValueError):
    """A gate threshold is unknown, of the wrong type or out of range; the message says which."""


@dataclass(frozen=True)
class GateConfig:
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
_BOOLS = ("sampling", "allow_inconclusive")
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


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _pct(value: float) -> str:
    return f"{value * 100:.2f} %"


def _rate_gate(name: str, label: str, proportion: Any, minimum: float, extra: str = "") -> GateResult:
    k, n = _number(_get(proportion, "k")), _number(_get(proportion, "n"))
    if not n or k is None:
        return GateResult(
            name,
            False,
            None,
            minimum,
            f"{label}: nothing was measured (n = 0){extra}; need >= {_pct(minimum)}",
        )
    rate = k / n
    ci = _get(proportion, "ci95")
    ci_text = (
        f" [95 % CI {_pct(ci[0])} – {_pct(ci[1])}]"
        if isinstance(ci, list | tuple) and len(ci) == 2 and all(_number(c) is not None for c in ci)
        else ""
    )
    passed = rate >= minimum
    return GateResult(
        name,
        passed,
        rate,
        minimum,
        f"{label} {_pct(rate)}{ci_text} (k={int(k)}, n={int(n)}){extra} "
        f"{'>=' if passed else '<'} minimum {_pct(minimum)}",
    )


def evaluate_gates(summary: Mapping[str, Any], config: GateConfig) -> list[GateResult]:
    """One result per configured gate, in a fixed order (sampling, collection, reference
    collection, p99, error rate, leaks)."""
    results: list[GateResult] = []
    if config.sampling:
        final = _get(summary, "verdicts", "sampling")
        verdict = str(final or _get(summary, "sampling", "verdict") or "missing")
        cause = _get(summary, "verdict_details", "sampling", "cause") if final else None
        allowed = ("pass", "inconclusive") if config.allow_inconclusive else ("pass",)
        decision = _get(summary, "sampling", "decision")
        conf = _number(_get(summary, "sampling", "configured_percent"))
        k, n = _number(_get(decision, "k")), _number(_get(decision, "n"))
        detail = (
            f"decision rate {_pct(k / n)} (k={int(k)}, n={int(n)})" if n and k is not None else "no decisions"
        )
        detail += f" vs configured {conf:g} %" if conf is not None else ", configured percentage unknown"
        basis = _get(summary, "sampling", "verdict_basis")
        why = f" ({cause})" if isinstance(cause, str) and cause and verdict != "pass" else ""
        results.append(
            GateResult(
                "sampling",
                verdict in allowed,
                verdict,
                " or ".join(allowed),
                f"sampling verdict {verdict}" + (f" ({basis})" if basis else "") + f": {detail}{why}; "
                f"required: {' or '.join(allowed)}",
            )
        )
    if config.min_collection is not None:
        unknown = _number(_get(summary, "mesh", "unknown"))
        extra = f", {int(unknown)} unknown" if unknown else ""
        results.append(
            _rate_gate(
                "min_collection",
                "mesh collection rate",
                _get(summary, "mesh", "collection"),
                config.min_collection,
                extra,
            )
        )
    if config.min_reference_collection is not None:
        unknown = _number(_get(summary, "reference", "unknown"))
        extra = f", {int(unknown)} unknown" if unknown else ""
        results.append(
            _rate_gate(
                "min_reference_collection",
                "reference collection rate",
                _get(summary, "reference", "collection"),
                config.min_reference_collection,
                extra,
            )
        )
    if config.max_p99_ms is not None:
        worst: tuple[str, float] | None = None
        latency = _get(summary, "latency_ms")
        for mode, lat in latency.items() if isinstance(latency, Mapping) else ():
            p99 = _number(_get(lat, "p99"))
            if p99 is not None and (worst is None or p99 > worst[1]):
                worst = (str(mode), p99)
        if worst is None:
            results.append(
                GateResult(
                    "max_p99_ms",
                    False,
                    None,
                    config.max_p99_ms,
                    f"p99 latency: no successful request was measured; need <= {config.max_p99_ms:g} ms",
                )
            )
        else:
            passed = worst[1] <= config.max_p99_ms
            results.append(
                GateResult(
                    "max_p99_ms",
                    passed,
                    worst[1],
                    config.max_p99_ms,
                    f"p99 latency {worst[1]:.2f} ms (slowest mode {worst[0]}) "
                    f"{'<=' if passed else '>'} maximum {config.max_p99_ms:g} ms",
                )
            )
    if config.max_error_rate is not None:
        total = _number(_get(summary, "requests", "total"))
        errors = _number(_get(summary, "requests", "errors")) or 0.0
        if not total:
            results.append(
                GateResult(
                    "max_error_rate",
                    False,
                    None,
                    config.max_error_rate,
                    f"error rate: no requests were sent; need <= {_pct(config.max_error_rate)}",
                )
            )
        else:
            rate = errors / total
            passed = rate <= config.max_error_rate
            top = _get(summary, "requests", "top_errors")
            commonest = (
                f"; most common: {describe_error(top[0])} ({int(_number(_get(top[0], 'count')) or 0)} requests)"
                if not passed and isinstance(top, list) and top and isinstance(top[0], Mapping)
                else ""
            )
            results.append(
                GateResult(
                    "max_error_rate",
                    passed,
                    rate,
                    config.max_error_rate,
                    f"error rate {_pct(rate)} ({int(errors)} of {int(total)} requests) "
                    f"{'<=' if passed else '>'} maximum {_pct(config.max_error_rate)}{commonest}",
                )
            )
    if config.max_leaked is not None:
        leaked = _number(_get(summary, "mesh", "leaked"))
        checked = _number(_get(summary, "mesh", "leak_checked"))  # absent in summaries before it
        if leaked is None:
            results.append(
                GateResult("max_leaked", False, None, config.max_leaked, "leaked traces: not in the summary")
            )
        elif checked == 0:
            results.append(
                GateResult(
                    "max_leaked",
                    False,
                    None,
                    config.max_leaked,
                    "leaked traces: no decided-not-sampled trace was queried (n = 0); "
                    f"need <= {config.max_leaked} of a measured n",
                )
            )
        else:
            passed = leaked <= config.max_leaked
            examples = _get(summary, "mesh", "leaked_examples")
            ex = (
                f" (e.g. {', '.join(str(e) for e in examples[:3])})"
                if isinstance(examples, list) and examples and not passed
                else ""
            )
            results.append(
                GateResult(
                    "max_leaked",
                    passed,
                    int(leaked),
                    config.max_leaked,
                    f"{int(leaked)} traces leaked{ex}"
                    + (f" of {int(checked)} queried" if checked is not None else "")
                    + f" {'<=' if passed else '>'} maximum {config.max_leaked}",
                )
            )
    return results


def gates_exit_code(results: Sequence[GateResult]) -> int:
    """0 when every gate passed (or none was configured), 1 when any failed."""
    return EXIT_GATES_FAILED if any(not r.passed for r in results) else EXIT_GATES_PASSED


def gates_headline(results: Sequence[GateResult]) -> str:
    """One line for a terminal or a CI log: `gates: 4 of 5 passed; failed: max_p99_ms`."""
    failed = [r.name for r in results if not r.passed]
    text = f"gates: {len(results) - len(failed)} of {len(results)} passed"
    return text + (f"; failed: {', '.join(failed)}" if failed else "")
