"""Tables of a run (pure): the ledger folded into time windows, and CSV for spreadsheets.

`ledger_timeseries` folds ledger records (streamed; one pass) into fixed windows by request start
time: requests, errors, throughput, latency percentiles, the fraction the upstream saw sampled,
the decision rate of the proxy-decided modes with its Wilson 95 % interval, and, when the backend
observations are given, the per-window outcomes and collection rate. Outcomes are computed
exactly as `loadgen.analysis.reconcile` does (same join by trace id, same `classify`), so the windows add
up to the summary's totals.

CSV cells that hold text (mode names come from scenario files) are neutralised against formula
injection: a spreadsheet would run `=HYPERLINK(...)` in a cell that starts with `=`, `+`, `-`, `@`.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loadgen.analysis.reconcile import (
    VIOLATION_KINDS,
    Expectation,
    Outcome,
    TraceObservation,
    classify,
    ledger_trace_id,
    upstream_decision,
)
from loadgen.analysis.stats import Proportion, percentile
from loadgen.mesh.expect import Decision
from loadgen.mesh.modes import mode_spec
from loadgen.mesh.profile import SpanShape
from loadgen.mesh.tracer import TracerFamily
from loadgen.summary.io import as_summary
from loadgen.summary.model import Mesh, Summary

MAX_WINDOWS = 1_000_000  # a bad timestamp must not allocate a window per microsecond


def expectation_from_summary(summary: Summary | Mapping[str, Any]) -> Expectation:
    """What a complete sampled trace looks like, as the run recorded it in summary.json."""
    s = as_summary(summary)
    mesh = s.mesh or Mesh()
    return Expectation(
        mesh.expected_spans_per_trace,
        tuple(mesh.expected_services),
        s.sampling.configured_percent if s.sampling else None,
        shape=SpanShape.from_json([list(e) for e in mesh.expected_shape]) if mesh.expected_shape else None,
    )


@dataclass
class _Window:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    decided: int = 0
    sampled: int = 0
    proxy_decided: int = 0
    proxy_sampled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    last_end: float = 0.0


def _proportion(k: int, n: int) -> dict[str, Any]:
    return Proportion(k, n).to_dict()


def ledger_timeseries(
    records: Iterable[Mapping[str, Any]],
    window_s: float = 1.0,
    *,
    observations: Mapping[str, TraceObservation] | None = None,
    expect: Expectation | None = None,
    tracer: TracerFamily = TracerFamily.ZIPKIN,
) -> dict[str, Any]:
    """Fold ledger records into windows of `window_s` seconds by request start time (`ts`).

    Returns `{window_s, t0, requests, untimed, windows: [...]}`; `t0` is the first start time
    (epoch s) and each window has:
        t_s                   window start, seconds after t0
        requests, errors      requests started in the window; errors = status != 200
        rps                   requests / covered seconds (the last window may be shorter)
        covered_s             the seconds the window covers: window_s, less for a partial last one
        p50_ms, p95_ms, p99_ms  latency of the successful requests (None when there are none)
        sampled_fraction      {k, n, rate, ci95}: upstream saw "sampled" / requests with a decision
        decision              {k, n, rate, ci95}: the same over the proxy-decided modes only
        collection            {k, n, rate, ci95}: found complete / decided sampled (not unknown),
                              None without observations
        outcomes              counts per reconcile outcome, None without observations
    Windows without requests are kept (zeros and None), so the time axis has no holes.
    Records without a start time are counted in `untimed` and left out. `tracer`: the run's
    (run.json), which says where each request's sampled fact is read (`upstream_decision`)."""
    if not window_s > 0 or not math.isfinite(window_s):
        raise ValueError(f"window_s must be a positive number of seconds, got {window_s!r}")
    if observations is not None and expect is None:
        raise ValueError("observations need an Expectation (spans per complete trace) to classify")
    windows: dict[int, _Window] = {}
    untimed = 0
    total = 0
    # One pass: windows are aligned to the start time of the first record. Ledger lines are
    # written when requests complete, so a few requests that started a little earlier may come
    # later in the file; those (up to one window earlier) are counted in the first window.
    t_first: float | None = None
    for rec in records:
        total += 1
        try:
            ts = float(rec.get("ts") or 0.0)
        except (TypeError, ValueError):
            ts = 0.0
        if not ts or not math.isfinite(ts):
            untimed += 1
            continue
        if t_first is None:
            t_first = ts
        _fold(windows, ts, t_first, window_s, rec, observations, expect, tracer)
    if t_first is None:
        return {"window_s": window_s, "t0": None, "requests": total, "untimed": untimed, "windows": []}
    lo, hi = min(windows), max(windows)
    if hi - lo + 1 > MAX_WINDOWS:
        raise ValueError(
            f"the ledger spans {(hi - lo + 1) * window_s:g} s: too many {window_s:g}-s windows (bad ts?)"
        )
    t0 = t_first + lo * window_s
    out: list[dict[str, Any]] = []
    for i in range(lo, hi + 1):
        w = windows.get(i, _Window())
        start = t_first + i * window_s
        covered = window_s
        if i == hi and w.last_end:
            covered = min(window_s, max(w.last_end - start, window_s * 1e-3))
        lat = sorted(w.latencies)
        with_obs = observations is not None
        collection_n = w.outcomes[Outcome.FOUND] + w.outcomes[Outcome.PARTIAL] + w.outcomes[Outcome.MISSING]
        out.append(
            {
                "t_s": round(start - t0, 6),
                "requests": w.requests,
                "errors": w.errors,
                "rps": w.requests / covered,
                "covered_s": round(covered, 6),
                "p50_ms": percentile(lat, 50),
                "p95_ms": percentile(lat, 95),
                "p99_ms": percentile(lat, 99),
                "sampled_fraction": _proportion(w.sampled, w.decided),
                "decision": _proportion(w.proxy_sampled, w.proxy_decided),
                "collection": _proportion(w.outcomes[Outcome.FOUND], collection_n) if with_obs else None,
                "outcomes": {o.value: w.outcomes[o.value] for o in Outcome} if with_obs else None,
            }
        )
    return {"window_s": window_s, "t0": t0, "requests": total, "untimed": untimed, "windows": out}


def _fold(
    windows: dict[int, _Window],
    ts: float,
    t_first: float,
    window_s: float,
    rec: Mapping[str, Any],
    observations: Mapping[str, TraceObservation] | None,
    expect: Expectation | None,
    tracer: TracerFamily,
) -> None:
    idx = math.floor((ts - t_first) / window_s + 1e-9)
    if idx == -1:
        idx = 0
    w = windows.get(idx)
    if w is None:
        if len(windows) >= MAX_WINDOWS:
            raise ValueError(f"more than {MAX_WINDOWS} windows of {window_s:g} s (bad ts?)")
        w = windows[idx] = _Window()
    w.requests += 1
    latency = rec.get("latency_ms")
    try:
        latency_f = float(latency) if latency is not None else None
    except (TypeError, ValueError):
        latency_f = None
    w.last_end = max(w.last_end, ts + (latency_f or 0.0) / 1000.0)
    if rec.get("status") != 200:
        w.errors += 1
    elif latency_f is not None and math.isfinite(latency_f):
        w.latencies.append(latency_f)
    decided = upstream_decision(rec, tracer)
    if decided is not None:
        w.decided += 1
        w.sampled += int(decided)
        spec = mode_spec(rec.get("mode"))
        if spec is not None and spec.decision is Decision.PROXY:
            w.proxy_decided += 1
            w.proxy_sampled += int(decided)
    if observations is not None and expect is not None:
        tid = ledger_trace_id(rec)
        obs = observations.get(tid) if tid else None
        w.outcomes[classify(decided, obs, expect).value] += 1


# --- CSV ----------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str | int | float:
    """A value for a CSV cell: numbers as numbers, None as empty, text neutralised (a leading
    formula character gets a `'` prefix, control characters become visible escapes)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # Six decimals: enough for rates and microseconds, without float noise (6.7857000000001).
        return round(value, 6) if math.isfinite(value) else str(value)
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in str(value))
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def _csv(header: list[str], rows: Iterable[list[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


MODE_COLUMNS = [
    "mode",
    "expected_decision",
    "requests",
    "errors",
    "decided_sampled",
    "decided_not_sampled",
    "found",
    "partial",
    "missing",
    "leaked",
    "not_sampled",
    "unknown",
    "not_queried",
    "expectation_violations",
    "latency_n",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    # the header-modes verdict's evidence: requests checked against the profile, violations by kind
    "expectation_checked",
    *(f"violations_{kind}" for kind in VIOLATION_KINDS),
]


def modes_table(summary: Summary | Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per header mode: the outcome counts, the latency percentiles, and the requests
    checked against the profile's expectations with the violations by kind (None when the
    summary predates them)."""
    s = as_summary(summary)
    rows = []
    for mode, m in s.modes.items():
        lat = s.latency_ms.get(mode)
        counts = m.to_dict()
        kinds = m.violations
        rows.append(
            {
                "mode": mode,
                "expected_decision": m.expected_decision,
                **{c: counts.get(c) for c in MODE_COLUMNS[2 : MODE_COLUMNS.index("latency_n")]},
                "latency_n": lat.n if lat else None,
                "p50_ms": lat.p50 if lat else None,
                "p95_ms": lat.p95 if lat else None,
                "p99_ms": lat.p99 if lat else None,
                "expectation_checked": m.expectation_checked,
                **{
                    f"violations_{kind}": kinds.get(kind) if kinds is not None else None
                    for kind in VIOLATION_KINDS
                },
            }
        )
    return rows


def modes_csv(summary: Summary | Mapping[str, Any]) -> str:
    return _csv(MODE_COLUMNS, ([row[c] for c in MODE_COLUMNS] for row in modes_table(summary)))


TIMESERIES_COLUMNS = [
    "t_s",
    "t_epoch",
    "requests",
    "errors",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "sampled_k",
    "sampled_n",
    "sampled_fraction",
    "decision_k",
    "decision_n",
    "decision_rate",
    "decision_ci95_low",
    "decision_ci95_high",
    "collection_k",
    "collection_n",
    "collection_rate",
    "collection_ci95_low",
    "collection_ci95_high",
    *(f"outcome_{o.value}" for o in Outcome),
]


def _prop_cells(p: Mapping[str, Any] | None, *, ci: bool) -> list[object]:
    if p is None:
        return [None] * (5 if ci else 3)
    cells: list[object] = [p.get("k"), p.get("n"), p.get("rate")]
    if ci:
        low, high = p.get("ci95") or (None, None)
        cells += [low if p.get("n") else None, high if p.get("n") else None]
    return cells


def timeseries_csv(timeseries: Mapping[str, Any]) -> str:
    """One row per window of `ledger_timeseries` (flat columns, rates as fractions)."""
    t0 = timeseries.get("t0")

    def rows() -> Iterable[list[object]]:
        for w in timeseries.get("windows") or []:
            outcomes = w.get("outcomes")
            yield [
                w["t_s"],
                None if t0 is None else round(float(t0) + float(w["t_s"]), 6),
                w["requests"],
                w["errors"],
                round(float(w["rps"]), 6),
                w.get("p50_ms"),
                w.get("p95_ms"),
                w.get("p99_ms"),
                *_prop_cells(w.get("sampled_fraction"), ci=False),
                *_prop_cells(w.get("decision"), ci=True),
                *_prop_cells(w.get("collection"), ci=True),
                *((outcomes or {}).get(o.value) if outcomes is not None else None for o in Outcome),
            ]

    return _csv(TIMESERIES_COLUMNS, rows())
