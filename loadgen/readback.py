"""Read-back: after a settle period, fetch every trace id from the backend and poll until the
number of complete traces stops changing (Envoy flushes spans on a timer, backends index late).

Observations are updated in place, so an interrupted read-back keeps what it learned; an id never
answered stays absent and the reconciler calls it unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from loadgen.backends.base import FetchStatus, TraceBackend
from loadgen.reconcile import TraceObservation


@dataclass
class PollRecord:
    """One poll: when (seconds after read-back started), how many ids asked, how many complete."""

    t_s: float
    queried: int
    complete: int
    errors: int


@dataclass
class ReadBackResult:
    observations: dict[str, TraceObservation] = field(default_factory=dict)
    polls: list[PollRecord] = field(default_factory=list)
    stable: bool = False
    interrupted: bool = False


def read_back(
    backend: TraceBackend,
    expected_spans: Mapping[str, int],
    *,
    settle_s: float,
    poll_interval_s: float = 1.0,
    max_wait_s: float = 60.0,
    run_id_tag: str = "",
    run_id: str = "",
    on_status: Callable[[str], None] | None = None,
    result: ReadBackResult | None = None,
) -> ReadBackResult:
    """Poll until stable: two consecutive polls with the same number of complete traces and no
    query errors, or until max_wait_s. `expected_spans[id]` = spans a complete trace has; 0 means
    "should not exist" (queried to detect leaks, never complete)."""
    res = result if result is not None else ReadBackResult()
    say = on_status or (lambda _msg: None)
    ids = list(expected_spans)
    if not ids:
        res.stable = True
        return res
    if settle_s > 0:
        say(f"settling {settle_s:.1f} s (proxies flush spans on a timer)")
        time.sleep(settle_s)
    wanted = sum(1 for v in expected_spans.values() if v)
    started = time.monotonic()
    complete: set[str] = set()
    previous = -1
    while True:
        pending = [i for i in ids if i not in complete]
        fetched = backend.fetch_many(
            pending, on_progress=lambda done, total: say(f"querying backend: {done}/{total} trace ids")
        )
        errors = 0
        for tid, answer in fetched.items():
            obs = TraceObservation.from_fetched(answer, run_id_tag, run_id)
            res.observations[tid] = obs
            errors += int(answer.status is FetchStatus.ERROR)
            want = expected_spans.get(tid, 0)
            if want and obs.status is FetchStatus.FOUND and obs.span_count >= want:
                complete.add(tid)
        elapsed = time.monotonic() - started
        res.polls.append(PollRecord(round(elapsed, 3), len(pending), len(complete), errors))
        say(f"poll {len(res.polls)}: {len(complete)}/{wanted} traces complete")
        if len(complete) == previous and errors == 0:
            res.stable = True
            return res
        if elapsed >= max_wait_s:
            return res
        previous = len(complete)
        time.sleep(poll_interval_s)
