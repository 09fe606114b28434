"""Loss and errors over time: which window of the run lost what (pure, no I/O).

A collection rate says *how much* was lost; after a fault (a collector restart, a gateway that
died, a backend that went away) the next question is *when*. Every ledger request has a start
time and every reference trace a start record, so each outcome can be put in a time bin:

    bins of `bin_s` seconds from the first request  ->  requests, errors, found / partial /
    missing / unknown / leaked, reference started / failed exports / found / missing ...

and the bins that lost something merge into **loss intervals**: a loss that belongs to a fault
shows up as one interval around it, a loss spread over the whole run (a lossy backend) as bins
everywhere. The outcome of each request is `loadgen.analysis.reconcile.classify`, the same function the
run's rates come from, so the windows add up to the summary's counts.

Attribution is by *request start*. Envoy buffers spans up to its flush interval before sending,
so a collector outage at T loses traces of requests that started up to one flush interval
before T: read an interval with that lead in mind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loadgen.analysis.ledgerfold import LedgerFold, RequestFacts, as_fold, unique_inverse
from loadgen.analysis.observation import TraceObservation
from loadgen.analysis.reconcile import OUTCOMES, Expectation, Outcome, observe
from loadgen.backends.base import FetchStatus
from loadgen.ledger import LedgerRow
from loadgen.mesh.ids import normalize_trace_id

__all__ = ["WindowTally", "loss_intervals", "tally_windows", "windows_summary"]


@dataclass
class WindowTally:
    """What happened to the requests and reference traces that *started* in [start, end)."""

    start: float  # epoch s
    end: float
    requests: int = 0
    errors: int = 0  # status != 200 (0 = no response at all)
    decided_sampled: int = 0
    found: int = 0
    partial: int = 0
    missing: int = 0
    unknown: int = 0  # decided sampled but never successfully queried
    leaked: int = 0
    reference_started: int = 0
    reference_exported: int = 0
    reference_failed: int = 0  # an export of the trace failed (collector down, 5xx)
    reference_dropped: int = 0  # never reached the exporter
    reference_found: int = 0
    reference_partial: int = 0
    reference_missing: int = 0
    reference_unknown: int = 0

    @property
    def lost(self) -> int:
        """Things this window lost: mesh traces partial/missing, errored requests, reference traces
        that failed to export, were dropped, or were exported and are not (all) in the backend."""
        return (
            self.partial
            + self.missing
            + self.errors
            + self.reference_failed
            + self.reference_dropped
            + self.reference_partial
            + self.reference_missing
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lost": self.lost}


def _bin_index(ts: float, origin: float, bin_s: float) -> int:
    return max(0, math.floor((ts - origin) / bin_s))


def tally_windows(
    ledger: LedgerFold | Iterable[LedgerRow | Mapping[str, Any]],
    observations: Mapping[str, TraceObservation],
    expect: Expectation,
    reference: Iterable[tuple[str, str, int, float | None]] = (),
    *,
    bin_s: float = 1.0,
    origin: float | None = None,
) -> list[WindowTally]:
    """Outcomes per time bin, from the first event (or `origin`) to the last; empty bins kept so
    the list is a time axis. `ledger`: the ledger's fold, or its records (a request without a
    start time is in no bin).

    `reference` yields (trace id, emitter state, spans expected, start time) per reference trace
    (`ReferenceSummary.traces`: state `exported`/`failed`/`dropped`, `spans`, `t`); traces
    without a start time are skipped. Mesh outcomes follow `reconcile.classify`; reference ones
    follow `reconcile.reconcile_reference` (exported: found/partial/missing/unknown)."""
    if bin_s <= 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    fold = as_fold(ledger)
    timed = ~np.isnan(fold.starts)  # NaN: no usable start time
    starts = fold.starts[timed]
    traces = [(float(t), (tid, state, spans)) for tid, state, spans, t in reference if t is not None]
    times = [float(starts.min()), float(starts.max())] if len(starts) else []
    times += [ts for ts, _ in traces]
    if not times:
        return []
    start = min(times) if origin is None else origin
    bins = [
        WindowTally(start + i * bin_s, start + (i + 1) * bin_s)
        for i in range(_bin_index(max(times), start, bin_s) + 1)
    ]

    def window(ts: float) -> WindowTally:
        return bins[min(_bin_index(ts, start, bin_s), len(bins) - 1)]

    # `window` for every request at once (the same arithmetic, on arrays), then requests counted
    # by (bin, facts, class): each distinct triple is added once.
    offsets = (starts - start) / bin_s
    if origin is None:
        # start is the earliest time and the bins reach the latest: every offset is in
        # [0, len(bins)), so truncation is the floor and no clamp is needed.
        indexes = offsets.astype(np.int64)
    else:
        indexes = np.clip(np.floor(offsets), 0, len(bins) - 1).astype(np.int64)
    classes = observe(fold, observations, expect).classes[timed]
    pairs, pair_index = unique_inverse(fold.codes[timed].astype(np.int64) * 256 + classes)
    triples, index = unique_inverse(indexes * max(1, len(pairs)) + pair_index)
    for triple, n in zip(triples.tolist(), np.bincount(index, minlength=len(triples)).tolist(), strict=True):
        i, pair = divmod(triple, max(1, len(pairs)))
        code, cls = divmod(int(pairs[pair]), 256)
        _add_requests(bins[i], fold.facts[code], OUTCOMES[cls >> 3], n)
    for ts, (tid, state, spans) in traces:
        _add_reference(window(ts), tid, state, spans, observations)
    return bins


def _add_requests(w: WindowTally, f: RequestFacts, outcome: Outcome, n: int) -> None:
    """`n` requests with the same facts and outcome."""
    w.requests += n
    if not f.answered:
        w.errors += n
    if f.decided:
        w.decided_sampled += n
        if outcome is Outcome.UNKNOWN:
            w.unknown += n
    if outcome is Outcome.FOUND:
        w.found += n
    elif outcome is Outcome.PARTIAL:
        w.partial += n
    elif outcome is Outcome.MISSING:
        w.missing += n
    elif outcome is Outcome.LEAKED:
        w.leaked += n


def _add_reference(
    w: WindowTally,
    trace_id: str,
    state: str,
    spans: int,
    observations: Mapping[str, TraceObservation],
) -> None:
    w.reference_started += 1
    if state == "failed":
        w.reference_failed += 1
        return
    if state != "exported":
        w.reference_dropped += 1
        return
    w.reference_exported += 1
    obs = observations.get(normalize_trace_id(trace_id))
    if obs is None or obs.status is FetchStatus.ERROR:
        w.reference_unknown += 1
    elif obs.status is FetchStatus.FOUND and obs.span_count >= spans:
        w.reference_found += 1
    elif obs.status is FetchStatus.FOUND and obs.span_count > 0:
        w.reference_partial += 1
    else:
        w.reference_missing += 1


def loss_intervals(bins: Iterable[WindowTally], *, min_lost: int = 1) -> list[tuple[float, float, int]]:
    """Adjacent bins that each lost at least `min_lost`, merged: (start, end, lost) per interval."""
    out: list[tuple[float, float, int]] = []
    for w in bins:
        if w.lost < min_lost:
            continue
        if out and out[-1][1] == w.start:
            s, _, n = out[-1]
            out[-1] = (s, w.end, n + w.lost)
        else:
            out.append((w.start, w.end, w.lost))
    return out


def windows_summary(
    ledger: LedgerFold | Iterable[LedgerRow | Mapping[str, Any]],
    observations: Mapping[str, TraceObservation],
    expect: Expectation,
    reference: Iterable[tuple[str, str, int, float | None]] = (),
    *,
    bin_s: float = 1.0,
) -> dict[str, Any]:
    """The `windows` section of summary.json: the bins (epoch s) and the merged loss intervals."""
    bins = tally_windows(ledger, observations, expect, reference, bin_s=bin_s)
    return {
        "bin_s": bin_s,
        "bins": [w.to_dict() for w in bins],
        "loss_intervals": [{"start": s, "end": e, "lost": n} for s, e, n in loss_intervals(bins)],
    }
