"""A run against a baseline run (pure): what changed, and whether it is more than noise.

A measure is called "different" only when the change is both real and large enough to matter,
and each row says which rule decided (`basis`):

- rates (k of n: decision rate, collection, propagation, error share, leaks, rule mismatches):
  a two-sided two-proportion test (the pooled z-test; Fisher's exact test when an expected count
  is below 5) at p < 0.05, AND an absolute difference of at least the measure's minimum in
  percentage points (`RATE_MEASURES`): "different (p < 0.001, -4.0 points ≥ 1 point)",
  "same (p = 0.40, not significant at 0.05)", "same (p < 0.001, but +0.50 points < 1 point)".
- p99 latency per header mode: a practical threshold, at least 1 ms AND at least 10 % of the
  baseline's p99, and when the per-request latencies of both runs are given (their ledgers), a
  quantile test as well: the pooled sample's 99th percentile splits each run into "above" and
  "not above", and the two shares above go through the same two-proportion test (Mood's test
  for a quantile). "same (+0.45 ms < 1 ms)"; without per-request data the threshold alone
  decides, and the row says so.
- a quantity measured at a resolution (time to queryable, one read-back poll apart): a
  difference below the resolution is never different: "same (within 1 s resolution)".
- counts (requests) follow the rate and the duration: shown, not judged.

Verdicts that flipped are listed. comparison.json keeps fractions, milliseconds and seconds;
the Markdown (and the HTML section, loadgen.report.html.comparison) shows rates in percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.analysis.stats import percentile
from loadgen.report.render import md_code, md_escape
from loadgen.summary.io import as_summary
from loadgen.summary.model import Summary

ALPHA = 0.05  # significance level of every test here
LATENCY_MIN_MS = 1.0  # a p99 shift smaller than this is never "different" ...
LATENCY_MIN_RELATIVE = 0.10  # ... nor one smaller than this share of the baseline's p99
FISHER_BELOW = 5.0  # an expected count below this: Fisher's exact test instead of the z-test

KN = tuple[int, int]


@dataclass(frozen=True)
class RateMeasure:
    name: str
    get: Callable[[Summary], KN | None]
    min_points: float  # the smallest difference, in percentage points, that matters


def _kn(k: int | None, n: int | None) -> KN | None:
    return (int(k), int(n)) if k is not None and n is not None else None


RATE_MEASURES: tuple[RateMeasure, ...] = (
    RateMeasure(
        "decision rate",
        lambda s: _kn(s.sampling.decision.k, s.sampling.decision.n) if s.sampling else None,
        1.0,
    ),
    RateMeasure(
        "mesh collection", lambda s: _kn(s.mesh.collection.k, s.mesh.collection.n) if s.mesh else None, 1.0
    ),
    RateMeasure(
        "reference collection",
        lambda s: _kn(s.reference.collection.k, s.reference.collection.n) if s.reference else None,
        1.0,
    ),
    RateMeasure(
        "propagation (upstream kept injected ids)",
        lambda s: _kn(s.propagation.k, s.propagation.n) if s.propagation else None,
        1.0,
    ),
    # errors and leaks should be near zero: a smaller shift already matters
    RateMeasure(
        "error rate", lambda s: _kn(s.requests.errors, s.requests.total) if s.requests else None, 0.5
    ),
    RateMeasure(
        "leaked (of decided-not-sampled queried)",
        lambda s: _kn(s.mesh.leaked, s.mesh.leak_checked) if s.mesh else None,
        0.1,
    ),
    RateMeasure(
        "x-request-id rule mismatches",
        lambda s: (
            _kn(s.sampling.prediction.mismatches, s.sampling.prediction.checked)
            if s.sampling and s.sampling.prediction
            else None
        ),
        0.1,
    ),
)


# --- the tests (pure) --------------------------------------------------------------------------------


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher's exact test of k1/n1 vs k2/n2: the probability, with the margins fixed,
    of a table no more likely than the one observed."""
    total, hits = n1 + n2, k1 + k2
    lo, hi = max(0, hits - n2), min(hits, n1)
    base = _log_comb(total, n1)

    def logp(x: int) -> float:
        return _log_comb(hits, x) + _log_comb(total - hits, n1 - x) - base

    observed = logp(k1)
    p = sum(math.exp(lp) for lp in map(logp, range(lo, hi + 1)) if lp <= observed + 1e-7)
    return min(1.0, p)


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> tuple[float, str]:
    """(two-sided p, the test's name) for k1/n1 vs k2/n2: the pooled z-test, or Fisher's exact
    test when any expected count of the 2x2 table is below 5."""
    total, hits = n1 + n2, k1 + k2
    expected = min(n1, n2) * min(hits, total - hits) / total
    if expected < FISHER_BELOW:
        return fisher_exact_p(k1, n1, k2, n2), "fisher"
    pooled = hits / total
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (k1 / n1 - k2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2)), "z"


def quantile_test_p(current: Sequence[float], baseline: Sequence[float], q: float = 99.0) -> float:
    """Two-sided p that both samples share their q-th percentile (Mood's quantile test): the
    shares of each sample above the pooled sample's q-th percentile, compared."""
    pooled = sorted([*current, *baseline])
    cut = percentile(pooled, q)
    assert cut is not None
    above_cur = sum(1 for v in current if v > cut)
    above_base = sum(1 for v in baseline if v > cut)
    return two_proportion_p(above_cur, len(current), above_base, len(baseline))[0]


# --- the rows ----------------------------------------------------------------------------------------


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def _missing(cur: object, base: object) -> str:
    if cur is None and base is None:
        return "n/a (not measured in either run)"
    return "n/a (not measured in the baseline)" if base is None else "n/a (not measured in this run)"


def _rate_row(m: RateMeasure, cur: KN | None, base: KN | None) -> dict[str, Any]:
    row: dict[str, Any] = {"measure": m.name, "kind": "rate", "baseline": None, "current": None,
                           "delta": None, "change": "n/a", "p_value": None, "test": None,
                           "min_points": m.min_points}  # fmt: skip
    if cur is None or base is None or not cur[1] or not base[1]:
        row["basis"] = _missing(cur if cur and cur[1] else None, base if base and base[1] else None)
        return row
    (k1, n1), (k2, n2) = cur, base
    delta = k1 / n1 - k2 / n2
    p, test = two_proportion_p(k1, n1, k2, n2)
    row.update(baseline=k2 / n2, current=k1 / n1, delta=delta, p_value=p, test=test,
               baseline_kn=[k2, n2], current_kn=[k1, n1])  # fmt: skip
    points = delta * 100
    digits = 2 if m.min_points < 1 or abs(points) < 1 else 1
    shift = f"{_signed(points, digits)} points"
    unit = "point" if m.min_points == 1 else "points"
    if p >= ALPHA:
        row.update(change="same", basis=f"{p_text(p)}, not significant at {ALPHA:g}")
    elif abs(points) < m.min_points - 1e-9:
        row.update(change="same", basis=f"{p_text(p)}, but {shift} < {m.min_points:g} {unit}")
    else:
        row.update(change="different", basis=f"{p_text(p)}, {shift} ≥ {m.min_points:g} {unit}")
    return row


def _latency_row(
    mode: str, cur: float | None, base: float | None, samples: tuple[Sequence[float], Sequence[float]] | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"measure": f"p99 latency {mode}", "kind": "latency", "unit": "ms",
                           "baseline": base, "current": cur, "delta": None, "change": "n/a",
                           "p_value": None, "test": None}  # fmt: skip
    if cur is None or base is None:
        row["basis"] = _missing(cur, base)
        return row
    delta = cur - base
    row["delta"] = delta
    shift = f"{_signed(delta, 2)} ms"
    if abs(delta) < LATENCY_MIN_MS:
        row.update(change="same", basis=f"{shift} < {LATENCY_MIN_MS:g} ms")
        return row
    if abs(delta) < LATENCY_MIN_RELATIVE * abs(base):
        row.update(change="same", basis=f"{shift} < {LATENCY_MIN_RELATIVE * 100:g} % of {base:.2f} ms")
        return row
    practical = f"{shift} ≥ {LATENCY_MIN_MS:g} ms and ≥ {LATENCY_MIN_RELATIVE * 100:g} %"
    if samples is None or not samples[0] or not samples[1]:
        row.update(change="different", basis=f"{practical}; no per-request latencies to test")
        return row
    p = quantile_test_p(samples[0], samples[1])
    row.update(p_value=p, test="quantile")
    if p >= ALPHA:
        row.update(change="same", basis=f"{p_text(p)}, not significant at {ALPHA:g}")
    else:
        row.update(change="different", basis=f"{p_text(p)}, {practical}")
    return row


def _resolution_row(
    name: str, cur: float | None, base: float | None, resolution: float | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"measure": name, "kind": "resolution", "unit": "s", "baseline": base,
                           "current": cur, "delta": None, "change": "n/a", "resolution": resolution}  # fmt: skip
    if cur is None or base is None:
        row["basis"] = _missing(cur, base)
        return row
    delta = cur - base
    row["delta"] = delta
    if resolution is None:
        row.update(change="same" if delta == 0 else "different", basis="resolution unknown")
    elif abs(delta) < resolution:
        row.update(change="same", basis=f"within {resolution:g} s resolution")
    else:
        row.update(change="different", basis=f"{_signed(delta, 2)} s ≥ {resolution:g} s resolution")
    return row


def _count_row(name: str, cur: int | None, base: int | None) -> dict[str, Any]:
    return {"measure": name, "kind": "count", "baseline": base, "current": cur,
            "delta": cur - base if cur is not None and base is not None else None,
            "change": "n/a", "basis": "a count: follows the rate and the duration, not judged"}  # fmt: skip


def _p99(s: Summary, mode: str) -> float | None:
    lat = s.latency_ms.get(mode)
    return lat.p99 if lat else None


def _queryable(s: Summary) -> tuple[float | None, float | None]:
    return (s.queryable.t99_s, s.queryable.resolution_s) if s.queryable else (None, None)


def answered_latencies(rows: Iterable[Any]) -> dict[str, list[float]]:
    """{mode: latencies in ms} of the answered (status 200) requests of a ledger's records
    (`loadgen.ledger.read_rows`: LedgerRow structs or dicts), the requests `latency_ms` is
    computed from."""
    out: dict[str, list[float]] = {}
    for r in rows:
        get = r.get if isinstance(r, Mapping) else lambda key, r=r: getattr(r, key, None)
        mode, status, latency = get("mode"), get("status"), get("latency_ms")
        number = (
            float(latency) if isinstance(latency, int | float) and not isinstance(latency, bool) else None
        )
        if status == 200 and isinstance(mode, str) and number is not None and math.isfinite(number):
            out.setdefault(mode, []).append(number)
    return out


def compare_summaries(
    current: Summary | Mapping[str, Any],
    baseline: Summary | Mapping[str, Any],
    *,
    latencies: tuple[Mapping[str, Sequence[float]], Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, Any]:
    """Every measure of `current` against `baseline`, each row with its `change` (same |
    different | n/a) and the rule that decided (`basis`). `latencies` are the per-request
    latencies (`answered_latencies`) of (current, baseline), for the p99 test; without them the
    practical threshold alone judges p99."""
    cur, base = as_summary(current), as_summary(baseline)
    rows = [_rate_row(m, m.get(cur), m.get(base)) for m in RATE_MEASURES]
    for mode in sorted(set(cur.latency_ms) | set(base.latency_ms)):
        samples = (latencies[0].get(mode, ()), latencies[1].get(mode, ())) if latencies else None
        rows.append(_latency_row(mode, _p99(cur, mode), _p99(base, mode), samples))
    (qc, rc), (qb, rb) = _queryable(cur), _queryable(base)
    res = max((r for r in (rc, rb) if r is not None), default=None)
    rows.append(_resolution_row("time to queryable p99", qc, qb, res))
    rows.append(
        _count_row(
            "requests",
            cur.requests.total if cur.requests else None,
            base.requests.total if base.requests else None,
        )
    )
    flipped = [
        {"verdict": k, "baseline": base.verdicts.get(k), "current": cur.verdicts.get(k)}
        for k in sorted(set(cur.verdicts) | set(base.verdicts))
        if cur.verdicts.get(k) != base.verdicts.get(k)
    ]
    return {"current": cur.run_id, "baseline": base.run_id, "alpha": ALPHA, "rows": rows,
            "verdict_changes": flipped}  # fmt: skip


# --- text ----------------------------------------------------------------------------------------------


def value_text(row: Mapping[str, Any], key: str) -> str:
    """A row's baseline, current or delta as a person reads it: rates in percent (points for the
    delta), latency in ms, time in s."""
    value = row.get(key)
    if value is None:
        return "–"
    kind = row.get("kind")
    if kind == "rate":
        if key == "delta":
            return f"{_signed(value * 100, 2)} points"
        kn = row.get(f"{key}_kn")
        return f"{value * 100:.2f} %" + (f" ({kn[0]:,}/{kn[1]:,})" if kn else "")
    if kind == "latency":
        return f"{_signed(value, 2) if key == 'delta' else f'{value:.2f}'} ms"
    if kind == "resolution":
        return f"{_signed(value, 2) if key == 'delta' else f'{value:.2f}'} s"
    return f"{value:+,}" if key == "delta" else f"{value:,}"


def change_text(row: Mapping[str, Any]) -> str:
    """`different (p < 0.001, -4.0 points ≥ 1 point)`, `same (within 1 s resolution)`."""
    change, basis = str(row.get("change", "n/a")), row.get("basis")
    if change == "n/a" and isinstance(basis, str) and basis.startswith("n/a"):
        return basis
    return f"{change} ({basis})" if basis else change


RULES_TEXT = (
    f"A measure is different only when the change is significant (two-sided, p < {ALPHA:g}) "
    "and large enough to matter: rates by a two-proportion test (z; Fisher's exact test for small "
    "counts) and a minimum in percentage points; p99 latency by at least "
    f"{LATENCY_MIN_MS:g} ms and {LATENCY_MIN_RELATIVE * 100:g} % of the baseline, tested on the pooled 99th "
    "percentile when both ledgers are there; a quantity measured at a resolution never differs by "
    "less than its resolution. Each row says which rule decided."
)


def render_comparison_markdown(cmp: Mapping[str, Any]) -> str:
    lines = [
        f"# {md_code(cmp['current'])} compared with baseline {md_code(cmp['baseline'])}",
        "",
        RULES_TEXT,
        "",
        "| measure | baseline | current | delta | change |",
        "|---|---|---|---|---|",
    ]
    for row in cmp["rows"]:
        cells = [
            row["measure"],
            *(value_text(row, k) for k in ("baseline", "current", "delta")),
            change_text(row),
        ]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    lines.append("")
    if cmp["verdict_changes"]:
        lines.append("Verdicts that changed:")
        lines.append("")
        for v in cmp["verdict_changes"]:
            lines.append(
                f"- {md_escape(v['verdict'])}: {md_escape(v['baseline'])} -> {md_escape(v['current'])}"
            )
    else:
        lines.append("No verdict changed.")
    lines.append("")
    return "\n".join(lines)
