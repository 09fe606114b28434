"""Read-back: fetch every trace id from the backend and poll until the number of complete traces
has not changed for a quiet period (Envoy flushes spans on a timer, backends index late); and
the windowed searches of the run's time window (`search_run`: traces by run tag;
`search_hop_traces`: a downstream hop's traces, for fragmentation), one engine for both.

Polling starts right after the load stops, so the time each trace first became complete is
observed (to within one poll interval): that is the time-to-queryable curve, instead of a fixed
settle guess. Observations are updated in place, so an interrupted read-back keeps what it
learned; an id never answered stays absent and the reconciler calls it unknown.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from loadgen.analysis.observation import ObserveTrace, TraceObservation
from loadgen.backends.base import BackendError, FetchStatus, Span, TraceBackend
from loadgen.mesh.ids import normalize_trace_id

#: Young-generation threshold of the cyclic GC during a read-back (CPython's default is 700).
READBACK_GC_THRESHOLD = 10_000


@contextmanager
def gc_relaxed(threshold: int = READBACK_GC_THRESHOLD) -> Iterator[None]:
    """The cyclic GC, run rarely: decoded spans and the observations they become hold no
    reference cycles, so frequent collections would only rescan them (a third of the reader's
    time in bench/reconcile.py when every span of a poll was kept). It is not switched off:
    every HTTP answer leaves a reference cycle (httpx's Response and its stream) holding the
    answer's body, and with the GC off those bodies piled up for the whole read-back (~2.4 KB
    per trace); with this threshold the pile is bounded, whatever the number of traces."""
    old = gc.get_threshold()
    gc.set_threshold(threshold, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@dataclass
class PollRecord:
    """One poll: when it ended (epoch s), how many ids asked, how many complete in total."""

    t: float
    queried: int
    complete: int
    errors: int


@dataclass
class ReadBackResult:
    observations: dict[str, TraceObservation] = field(default_factory=dict)
    polls: list[PollRecord] = field(default_factory=list)
    complete_at: dict[str, float] = field(default_factory=dict)  # epoch s of the first complete poll
    started_at: float = 0.0
    stable: bool = False
    interrupted: bool = False


def read_back(
    backend: TraceBackend,
    expected_spans: Mapping[str, int],
    *,
    quiet_s: float,
    poll_interval_s: float = 1.0,
    max_wait_s: float = 60.0,
    run_id_tag: str = "",
    run_id: str = "",
    on_status: Callable[[str], None] | None = None,
    result: ReadBackResult | None = None,
    expected_services: Mapping[str, Collection[str]] | None = None,
) -> ReadBackResult:
    """Poll until stable: at least two polls, no query errors in the last one, and no trace
    completed during the last `quiet_s` seconds — or until `max_wait_s`.

    `expected_spans[id]` = spans a complete trace has; 0 means "should not exist" (queried on
    every poll to catch late leaks, never complete). `expected_services[id]`, when given, are
    services the trace must also show before it counts complete and stops being queried — the
    reconciler's own test (`reconcile.classify`): a trace whose span count is reached by spans of
    another service (an extra hop, a span reported twice) is not complete while a sidecar span
    is still on its way."""
    res = result if result is not None else ReadBackResult()
    say = on_status or (lambda _msg: None)
    ids = list(expected_spans)
    res.started_at = time.time()
    if not ids:
        res.stable = True
        return res
    wanted = sum(1 for v in expected_spans.values() if v)
    services = expected_services or {}
    started = time.monotonic()
    last_change = started
    while True:
        pending = [i for i in ids if i not in res.complete_at]
        with gc_relaxed():  # decoding spans and folding them into observations
            # Each trace becomes its observation as soon as its batch is decoded: the raw spans
            # of a few batches at most are alive at once, never those of the whole poll.
            observed = backend.fetch_reduced(
                pending,
                ObserveTrace(run_id_tag, run_id),
                on_progress=lambda done, total: say(
                    f"querying backend: {done}/{total} trace ids{query_rate(backend)}"
                ),
            )
            now = time.time()
            errors = 0
            newly = 0
            for tid, obs in observed.items():
                res.observations[tid] = obs
                errors += int(obs.status is FetchStatus.ERROR)
                want = expected_spans.get(tid, 0)
                if (
                    want
                    and obs.status is FetchStatus.FOUND
                    and not obs.partial
                    and obs.span_count >= want
                    and set(services.get(tid, ())) <= set(obs.services)
                ):
                    res.complete_at[tid] = now
                    newly += 1
        if newly:
            last_change = time.monotonic()
        res.polls.append(PollRecord(round(now, 3), len(pending), len(res.complete_at), errors))
        say(f"poll {len(res.polls)}: {len(res.complete_at)}/{wanted} traces complete")
        quiet_for = time.monotonic() - last_change
        if len(res.polls) >= 2 and errors == 0 and (quiet_for >= quiet_s or len(res.complete_at) == wanted):
            res.stable = True
            return res
        if time.monotonic() - started >= max_wait_s:
            return res
        time.sleep(poll_interval_s)


def query_rate(backend: TraceBackend) -> str:
    """`, 312 queries/s, 8 in flight` for a status line: the queries per second the reader has
    achieved so far and its concurrency limit now; "" when it does not count them."""
    stats = backend.query_stats()
    if stats is None or stats.qps is None:
        return ""
    return f", {stats.qps:,.0f} queries/s, {stats.concurrency} in flight"


def time_to_queryable(polls: list[PollRecord], load_end: float, poll_interval_s: float) -> dict[str, Any]:
    """Pure: the found-fraction curve after the load stopped, and the time (seconds after the
    last request ended) by which 50 / 99 / 100 % of the finally-complete traces were queryable.

    Resolution is one poll: each time is the first poll that saw the fraction, so it is an upper
    bound at most one poll interval (plus one query) late."""
    total = polls[-1].complete if polls else 0
    curve = [
        {
            "t_s": round(p.t - load_end, 3),
            "complete": p.complete,
            "fraction": (p.complete / total) if total else None,
        }
        for p in polls
    ]

    def first_at(fraction: float) -> float | None:
        for p in polls:
            if total and p.complete >= fraction * total:
                return round(p.t - load_end, 3)
        return None

    return {
        "traces": total,
        "resolution_s": poll_interval_s,
        "t50_s": first_at(0.5),
        "t99_s": first_at(0.99),
        "t100_s": first_at(1.0),
        "curve": curve,
    }


# --- searching the run's time window -------------------------------------------------------------


def search_window(
    backend: TraceBackend,
    *,
    tags: Mapping[str, str] | None,
    service: str | None,
    start_us: int,
    end_us: int,
    limit: int = 10_000,
    min_window_us: int = 1_000,
) -> Iterator[tuple[str, list[Span]]]:
    """(normalized trace id, spans) of every trace the backend finds in [start_us, end_us] (a
    trace may come twice). Backends return at most `limit` traces per query (the ones nearest
    the end), so a full page means "there may be more": the window is split in two and each half
    searched again, down to `min_window_us` (then BackendError: raise the limit)."""
    stack = [(start_us, end_us)]
    while stack:
        lo, hi = stack.pop()
        traces = backend.search(tags=tags, service=service, start_us=lo, end_us=hi, limit=limit)
        for trace in traces:
            tid = next((str(span["traceId"]) for span in trace if span.get("traceId")), None)
            if tid is not None:
                yield normalize_trace_id(tid), trace
        if len(traces) >= limit:
            if hi - lo <= min_window_us:
                raise BackendError(
                    f"more than {limit} traces in a {hi - lo} µs window: raise the search limit"
                )
            mid = (lo + hi) // 2
            stack += [(lo, mid), (mid + 1, hi)]


def search_run(
    backend: TraceBackend, *, tag: str, run_id: str, start_us: int, end_us: int, service: str | None = None
) -> set[str]:
    """Trace ids holding a span tagged `tag=run_id` in [start_us, end_us]."""
    found = search_window(backend, tags={tag: run_id}, service=service, start_us=start_us, end_us=end_us)
    return {tid for tid, _ in found}


def search_hop_traces(
    backend: TraceBackend, *, service: str, start_us: int, end_us: int, limit: int = 10_000
) -> list[list[Span]]:
    """Every trace holding a span of `service` in [start_us, end_us] (what
    `loadgen.analysis.integrity.fold_integrity` looks for fragments in).

    No tag filter on purpose: an app that drops trace headers usually drops the run-id header
    too, so a fragment's spans carry no run tag."""
    found: dict[str, list[Span]] = {}
    for tid, trace in search_window(
        backend, tags=None, service=service, start_us=start_us, end_us=end_us, limit=limit
    ):
        found.setdefault(tid, list(trace))
    return list(found.values())
