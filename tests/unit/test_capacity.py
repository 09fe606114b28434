"""loadgen.capacity and loadgen.traffic.shape on hand-built data: the step plan, step windows,
per-step metrics, knee detection, rendering and the live safety monitor.

Expected numbers are derived in the comments from the inputs, not copied from a run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from loadgen.analysis.reconcile import Expectation, TraceObservation
from loadgen.analysis.stats import Proportion, percentile
from loadgen.backends.base import Fetched, FetchStatus, TraceBackend
from loadgen.capacity import (
    IngestSample,
    KneeBounds,
    LiveMonitor,
    SafetyBounds,
    StepMetrics,
    StepWindow,
    capacity_document,
    capacity_rows,
    find_knee,
    render_capacity_markdown,
    report_steps,
    step_breaches,
    step_metrics,
    step_windows,
)
from loadgen.ledger import LiveCounts
from loadgen.stack.collector.server import Faults, TokenBucket
from loadgen.stack.mesh import CollectorFaults
from loadgen.traffic import shape
from loadgen.traffic.shape import StepPlan, format_steps, parse_steps

EXPECT = Expectation(spans_per_trace=2, services=("gw", "app"), configured_percent=100.0)
COMPLETE = TraceObservation(FetchStatus.FOUND, 2, ("app", "gw"))
PARTIAL = TraceObservation(FetchStatus.FOUND, 1, ("gw",))
MISSING = TraceObservation(FetchStatus.MISSING)
ERROR = TraceObservation(FetchStatus.ERROR, error="HTTP 503")


def tid(i: int) -> str:
    return f"{0xCAFE000000000000 + i:016x}{i:016x}"


# --- the step plan (shape.py) --------------------------------------------------------------------


def test_parse_steps_accepts_users_and_rate_and_rejects_the_rest() -> None:
    assert parse_steps("users:10,20,40,80") == ("users", (10.0, 20.0, 40.0, 80.0))
    assert parse_steps(" RATE: 200, 400,800 ") == ("rate", (200.0, 400.0, 800.0))
    assert format_steps("rate", (200.0, 400.5)) == "rate:200,400.5"
    for bad in (
        "10,20",
        "threads:1,2",
        "users:",
        "users:1,x",
        "users:0,2",
        "rate:-5",
        "users:1.5",
        "rate:nan",
    ):
        with pytest.raises(ValueError):
            parse_steps(bad)


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="ramp"):
        StepPlan("users", (1.0,), step_s=5, ramp_s=5)
    with pytest.raises(ValueError, match="step length"):
        StepPlan("users", (1.0,), step_s=0)
    with pytest.raises(ValueError, match="at least one user"):
        StepPlan("rate", (10.0,), users=0)
    with pytest.raises(ValueError, match="at least one step"):
        StepPlan("users", ())


def test_users_steps_sequence() -> None:
    plan = StepPlan.parse("users:10,20,40,80", step_s=30, ramp_s=5)
    assert plan.duration_s == 120 and plan.max_users == 80 and not plan.paced
    # (users, spawn rate) per tick: each step spawns its difference over the 5 s ramp.
    assert plan.tick_at(0) == (10, 2.0)  # 10 users / 5 s
    assert plan.tick_at(29.9) == (10, 2.0)
    assert plan.tick_at(30) == (20, 2.0)  # +10 over 5 s
    assert plan.tick_at(60) == (40, 4.0)  # +20
    assert plan.tick_at(119.9) == (80, 8.0)  # +40
    assert plan.tick_at(120) is None  # the shape ends the test
    assert plan.tick_at(-1) is None
    # Closed loop: no pacing, no offered rate.
    assert plan.interval_at(45) == 0.0 and plan.offered_rps(1) is None
    assert [plan.label(i) for i in range(4)] == ["10 users", "20 users", "40 users", "80 users"]


def test_users_steps_with_a_per_user_rate_offer_users_times_rate() -> None:
    plan = StepPlan.parse("users:2,8", step_s=6, ramp_s=1, user_rate=10)
    assert plan.paced
    assert plan.interval_at(0) == pytest.approx(0.1)
    assert (plan.offered_rps(0), plan.offered_rps(1)) == (20.0, 80.0)
    assert plan.spawn_rate_for(1) == 6.0  # +6 users over 1 s


def test_rate_steps_keep_users_fixed_and_pace_towards_the_step_rate() -> None:
    plan = StepPlan.parse("rate:200,400,800", step_s=10, ramp_s=4, users=50)
    assert [plan.tick_at(t) for t in (0, 10, 25)] == [(50, 12.5), (50, 1.0), (50, 1.0)]
    # Per-user interval = users / rate: 50 users at 200 req/s -> 0.25 s.
    assert plan.interval_at(0) == pytest.approx(0.25)
    assert plan.interval_at(3.9) == pytest.approx(0.25)  # the first step has no rate ramp
    # Second step's ramp: 200 -> 400 over 4 s; 1 s in -> 250 req/s -> 0.2 s.
    assert plan.rate_at(11) == pytest.approx(250.0)
    assert plan.interval_at(11) == pytest.approx(50 / 250)
    assert plan.rate_at(14) == 400.0 and plan.interval_at(19.99) == pytest.approx(0.125)
    assert plan.rate_at(22) == pytest.approx(400 + 400 * 2 / 4)  # 600 halfway to 800
    assert plan.interval_at(30) is None
    assert [plan.offered_rps(i) for i in range(3)] == [200.0, 400.0, 800.0]
    assert plan.label(2) == "800 req/s"


def test_plan_env_round_trip_is_what_the_shape_reads() -> None:
    plan = StepPlan.parse("rate:200,400", step_s=12.5, ramp_s=2, users=7, user_rate=0)
    env = plan.to_env()
    assert env["LOADGEN_STEPS"] == "rate:200,400"
    assert StepPlan.from_env(env) == plan
    with pytest.raises(ValueError, match="LOADGEN_STEPS"):
        StepPlan.from_env({})


def test_step_interval_is_none_unless_a_shape_sets_it() -> None:
    assert shape.step_interval() is None
    shape.set_step_interval(0.25)
    try:
        assert shape.step_interval() == 0.25
    finally:
        shape.set_step_interval(None)
    with pytest.raises(AttributeError):
        _ = shape.NotAThing


def test_the_orchestrating_side_never_imports_locust() -> None:
    # Locust monkey-patches the whole process with gevent on import.
    code = "import sys, loadgen.capacity, loadgen.traffic.shape; sys.exit(int('locust' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- step windows --------------------------------------------------------------------------------

PLAN2 = StepPlan.parse("users:2,8", step_s=10, ramp_s=2, user_rate=10)


def test_step_windows_from_the_shape_log() -> None:
    events = [
        {"ev": "plan", "t": 99.0},
        {"ev": "step", "index": 0, "t": 100.0},
        {"ev": "step", "index": 1, "t": 110.4},  # noticed at a tick, a little late
        {"ev": "end", "t": 120.5},
    ]
    w0, w1 = step_windows(PLAN2, events)
    assert (w0.start, w0.measure_start, w0.end, w0.complete) == (100.0, 102.0, 110.4, True)
    assert (w1.start, w1.measure_start, w1.end, w1.complete) == (110.4, 112.4, 120.5, True)
    assert (w1.users, w1.offered_rps, w1.label, w1.kind) == (8, 80.0, "8 users", "users")


def test_step_windows_cut_by_an_abort_and_without_an_end() -> None:
    events = [{"ev": "step", "index": 0, "t": 100.0}, {"ev": "step", "index": 1, "t": 110.0}]
    w0, w1 = step_windows(PLAN2, events, stop_at=113.0)
    assert w0.complete and (w1.end, w1.complete) == (113.0, False)
    # No end record and no abort (Locust killed): the nominal end, or the last request if earlier.
    (_, w1) = step_windows(PLAN2, events, last_ts=116.0)
    assert (w1.end, w1.complete) == (116.0, False)
    # An abort during a ramp leaves an empty measured window.
    (_, w1) = step_windows(PLAN2, events, stop_at=111.0)
    assert w1.measured_s == 0.0


def test_step_windows_fall_back_to_the_nominal_schedule() -> None:
    assert step_windows(PLAN2, []) == []
    w0, w1 = step_windows(PLAN2, [], first_ts=50.0, last_ts=69.9)
    assert (w0.start, w0.end, w1.start, w1.end) == (50.0, 60.0, 60.0, 69.9)
    assert not w1.complete
    (only,) = step_windows(PLAN2, [], first_ts=50.0, last_ts=55.0)  # step 1 never began
    assert only.index == 0


# --- step metrics --------------------------------------------------------------------------------


def window(
    index: int, start: float, *, ramp: float = 2.0, length: float = 10.0, users: int = 2
) -> StepWindow:
    return StepWindow(
        index=index,
        label=f"{users} users",
        kind="users",
        users=users,
        offered_rps=users * 10.0,
        start=start,
        measure_start=start + ramp,
        end=start + length,
        complete=True,
    )


def rec(
    ts: float, i: int, *, mode: str = "none", flag: str | None = "1", status: int = 200, latency: float = 5.0
) -> dict[str, Any]:
    return {
        "ts": ts,
        "mode": mode,
        "status": status,
        "latency_ms": latency,
        "up_trace": tid(i),
        "up_flag": flag,
    }


def test_step_metrics_on_a_hand_built_ledger() -> None:
    steps = [window(0, 100.0), window(1, 110.0, users=8)]
    ledger = [
        rec(100.5, 1),  # in step 0's ramp: belongs to no step
        # step 0 measured [102, 110): 4 requests
        rec(102.0, 2, latency=1.0),  # sampled, complete
        rec(103.0, 3, latency=2.0),  # sampled, complete
        rec(104.0, 4, flag="0", latency=3.0),  # proxy decided not sampled
        rec(105.0, 5, mode="b3_multi_sampled", latency=4.0),  # forced: not a proxy decision
        # step 1's ramp [110, 112): none; measured [112, 120): 5 requests
        rec(111.0, 6),
        rec(112.0, 7, latency=10.0),  # sampled, partial -> collected: no
        rec(113.0, 8, latency=20.0),  # sampled, missing
        rec(114.0, 9, latency=30.0),  # sampled, backend error -> unknown, not counted
        rec(115.0, 10, status=503, flag=None, latency=999.0),  # error: no latency, no decision
        rec(116.0, 11, latency=40.0),  # sampled, never queried -> unknown
        rec(120.0, 12),  # after the last step's end
        {"ts": "bad"},
    ]
    observations = {tid(2): COMPLETE, tid(3): COMPLETE, tid(4): MISSING, tid(5): COMPLETE, tid(7): PARTIAL}
    observations |= {tid(8): MISSING, tid(9): ERROR, tid(1): COMPLETE, tid(6): COMPLETE}
    reference = [
        (101.0, tid(100), "exported", 3),  # step 0's ramp
        (103.0, tid(101), "exported", 3),  # step 0, found complete
        (104.0, tid(102), "failed", 3),  # not exported: not a backend loss
        (113.0, tid(103), "exported", 3),  # step 1, found with 2 of 3 spans: not complete
        (114.0, tid(104), "exported", 3),  # step 1, missing
        (None, tid(105), "exported", 3),  # no start time
    ]
    observations |= {
        tid(100): TraceObservation(FetchStatus.FOUND, 3),
        tid(101): TraceObservation(FetchStatus.FOUND, 3),
        tid(103): TraceObservation(FetchStatus.FOUND, 2),
        tid(104): MISSING,
    }
    # Accepted spans: 0 at 100, +50/s until 110, then +100/s -> step 0 window [102, 110]: 50/s.
    ingest = [
        IngestSample(100.0 + s, 60 * s, 50 * s if s <= 10 else 500 + 100 * (s - 10), 0) for s in range(21)
    ]
    m0, m1 = step_metrics(ledger, observations, steps, EXPECT, reference=reference, ingest=ingest)

    assert (m0.requests, m0.errors) == (4, 0)
    assert m0.achieved_rps == pytest.approx(4 / 8)
    assert (m0.p50_ms, m0.p99_ms) == (
        percentile([1.0, 2.0, 3.0, 4.0], 50),
        percentile([1.0, 2.0, 3.0, 4.0], 99),
    )
    assert m0.decision == Proportion(2, 3)  # records 2, 3 sampled of 2, 3, 4 (5 is forced)
    assert m0.collection == Proportion(3, 3)  # 2, 3, 5 decided sampled and complete
    assert m0.reference == Proportion(1, 1)
    assert m0.ingest == {
        "received_per_s": pytest.approx(60.0),
        "accepted_per_s": pytest.approx(50.0),
        "dropped_per_s": 0.0,
    }

    assert (m1.requests, m1.errors) == (5, 1)
    assert m1.p99_ms == percentile([10.0, 20.0, 30.0, 40.0], 99)  # the 503's latency left out
    assert m1.decision == Proportion(4, 4)
    assert m1.collection == Proportion(0, 2)  # 7 partial, 8 missing; 9 and 11 unknown
    assert (m1.collection_partial, m1.collection_unknown) == (1, 2)
    assert m1.reference == Proportion(0, 2)
    assert m1.ingest is not None and m1.ingest["accepted_per_s"] == pytest.approx(100.0)
    assert m1.throughput_ratio == pytest.approx((5 / 8) / 80.0)


def test_ingest_is_none_when_the_samples_do_not_cover_the_window() -> None:
    (m,) = step_metrics([], {}, [window(0, 100.0)], EXPECT, ingest=[IngestSample(105.0, 0, 0, 0)])
    assert m.ingest is None and m.requests == 0 and m.p99_ms is None and m.achieved_rps == 0.0


# --- knee detection ------------------------------------------------------------------------------


def metrics(
    index: int,
    *,
    requests: int = 1000,
    errors: int = 0,
    p99: float = 10.0,
    collection: tuple[int, int] = (500, 500),
    offered: float | None = None,
    achieved: float | None = None,
) -> StepMetrics:
    # measured window of 10 s: achieved req/s = requests / 10
    if achieved is not None:
        requests = round(achieved * 10)
    w = StepWindow(index, f"step {index}", "rate", 10, offered, 0.0, 0.0, 10.0, True)
    return StepMetrics(
        window=w, requests=requests, errors=errors, p99_ms=p99, collection=Proportion(*collection)
    )


# The absolute bounds only: the relative ones (scaling, p99 growth) are in test_capacity_knee.py.
BOUNDS = KneeBounds(
    p99_ms=100.0,
    max_error_rate=0.01,
    min_collection=0.99,
    min_throughput=0.9,
    min_scaling=None,
    max_p99_growth=None,
)


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (metrics(1, errors=11), "errors"),  # 1.1 % > 1 %
        (metrics(1, p99=100.5), "latency"),
        (metrics(1, collection=(494, 500)), "collection"),  # 98.8 % < 99 %
        (metrics(1, offered=400.0, achieved=359.0), "throughput"),  # 89.75 % < 90 %
    ],
)
def test_knee_for_each_bound(broken: StepMetrics, reason: str) -> None:
    steps = [metrics(0), broken, metrics(2)]
    knee = find_knee(steps, BOUNDS)
    assert knee is not None
    assert (knee.index, knee.reason, knee.reasons) == (1, reason, (reason,))
    assert knee.detail.startswith({"latency": "p99"}.get(reason, reason))


def test_bounds_at_their_limit_do_not_break() -> None:
    edge = metrics(0, errors=10, p99=100.0, collection=(495, 500), offered=400.0, achieved=360.0)
    assert step_breaches(edge, BOUNDS) == []


def test_no_knee() -> None:
    assert find_knee([metrics(0), metrics(1), metrics(2)], BOUNDS) is None
    assert find_knee([], BOUNDS) is None


def test_first_of_several_and_every_reason_in_order() -> None:
    steps = [
        metrics(0),
        metrics(1, p99=150.0, collection=(10, 500), errors=50),
        metrics(2, errors=500),
    ]
    knee = find_knee(steps, BOUNDS)
    assert knee is not None and knee.index == 1
    assert knee.reasons == ("errors", "latency", "collection") and knee.reason == "errors"


def test_steps_without_data_and_bounds_turned_off_break_nothing() -> None:
    empty = metrics(0, requests=0, errors=0, collection=(0, 0))
    no_sampled = metrics(1, collection=(0, 0))  # sampling 0 %: collection cannot be judged
    assert find_knee([empty, no_sampled], BOUNDS) is None
    off = KneeBounds(p99_ms=None, max_error_rate=None, min_collection=None, min_throughput=None)
    assert find_knee([metrics(0, errors=900, p99=1e6, collection=(0, 10))], off) is None


# --- documents and rendering ---------------------------------------------------------------------


def test_document_markdown_rows_and_report_steps() -> None:
    plan = StepPlan.parse("rate:100,200,400", step_s=10, ramp_s=2)
    steps = [
        metrics(0, offered=100.0, achieved=100.0),
        metrics(1, offered=200.0, achieved=199.0, collection=(400, 500)),
        metrics(2, offered=400.0, achieved=300.0),
    ]
    knee = find_knee(steps, BOUNDS)
    doc = capacity_document(
        run_id="cap1", plan=plan, bounds=BOUNDS, safety=SafetyBounds(), metrics=steps, knee=knee,
        status="aborted", abort={"reason": "safety: boom", "at": 5.0, "elapsed_s": 42.0},
    )  # fmt: skip
    json.dumps(doc)  # serialisable as is
    assert doc["knee"]["index"] == 1 and doc["knee"]["reason"] == "collection" and doc["last_good"] == 0
    assert [s["knee"] for s in doc["steps"]] == [False, True, False]
    assert doc["steps"][2]["breaches"] == ["throughput"]
    assert doc["steps"][0]["target_rps"] == 100.0 and doc["steps"][0]["p99_ms"] == 10.0
    assert doc["steps"][1]["collection"] == Proportion(400, 500).to_dict()

    assert report_steps(doc) == {"steps": doc["steps"], "knee": 1}

    rows = capacity_rows(doc)
    assert rows[0][0] == "step" and len(rows) == 4
    assert rows[2][-1] == "KNEE: collection" and rows[1][-1] == "ok"
    assert rows[2][8] == "80.0% (400/500)"

    md = render_capacity_markdown(doc)
    assert "**Knee: step 1 (step 1)**" in md and "The last step within every bound: step 0." in md
    assert "**Aborted** after 42.0 s: safety: boom." in md
    assert md.count("\n|") == 4 + 1  # header, separator, 3 steps


def test_closed_loop_users_steps_plot_on_users() -> None:
    w = StepWindow(0, "4 users", "users", 4, None, 0.0, 1.0, 5.0, True)
    row = StepMetrics(window=w, requests=40).to_row()
    assert "target_rps" not in row and row["users"] == 4 and row["achieved_rps"] == 10.0


# --- the safety monitor --------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeBackend(TraceBackend):
    name = "fake"
    url = "fake://"

    def __init__(self, answers: Mapping[str, Fetched]) -> None:
        self.answers = answers
        self.queries: list[list[str]] = []
        self.closed = False

    def check(self) -> None:
        pass

    def fetch_many(
        self, trace_ids: Sequence[str], on_progress: Callable[..., None] | None = None
    ) -> dict[str, Fetched]:
        self.queries.append(list(trace_ids))
        return {t: self.answers.get(t, Fetched(FetchStatus.MISSING)) for t in trace_ids}

    def search(self, **_: Any) -> list[list[dict[str, Any]]]:
        return []

    def close(self) -> None:
        self.closed = True


def test_safety_errors_trip_only_with_enough_requests_in_the_window(tmp_path: Path) -> None:
    clock = FakeClock()
    safety = SafetyBounds(max_error_rate=0.5, min_collection=None, window_s=5.0, min_requests=50)
    mon = LiveMonitor(tmp_path, safety, clock=clock)
    assert mon(LiveCounts(requests=40, errors=40), 1.0) is None  # too few requests to judge
    for second in range(2, 12):
        clock.t += 1.0
        assert mon(LiveCounts(requests=40 + 100 * second, errors=40 + 10 * second), second) is None
    # Now a burst of errors: the last 5 s hold 500 requests, 300 of them errors (60 % > 50 %).
    base_r, base_e = 40 + 100 * 11, 40 + 10 * 11
    reason = None
    for second in range(1, 6):
        clock.t += 1.0
        reason = mon(LiveCounts(requests=base_r + 100 * second, errors=base_e + 60 * second), 11 + second)
        if reason:
            break
    assert reason is not None and reason.startswith("safety: errors")
    assert mon.abort_reason == reason and mon.abort_at == clock.t
    assert mon.samples == []  # no run.json: no collector to sample


def test_safety_live_collection_queries_due_sampled_traces_once(tmp_path: Path) -> None:
    clock = FakeClock(2000.0)
    good = Fetched(
        FetchStatus.FOUND,
        ({"localEndpoint": {"serviceName": "gw"}}, {"localEndpoint": {"serviceName": "app"}}),
    )
    answers = {tid(i): good for i in range(0, 100, 2)}  # every other trace is complete, the rest missing
    backend = FakeBackend(answers)
    safety = SafetyBounds(
        max_error_rate=None, min_collection=0.8, window_s=10, min_sampled=20, check_every_s=1, max_ids=30
    )
    mon = LiveMonitor(
        tmp_path, safety, clock=clock, backend=backend, expect=EXPECT, settle_s=2.0, stats_url=None
    )
    ledger = tmp_path / "ledger.jsonl"
    # 100 sampled requests that ended 1990.0 .. 1999.9, plus unsampled ones (never queried).
    with open(ledger, "w") as fh:
        for i in range(100):
            fh.write(json.dumps(rec(1990.0 + i / 10, i, latency=0.0)) + "\n")
            fh.write(json.dumps(rec(1990.0 + i / 10, 1000 + i, flag="0", latency=0.0)) + "\n")
        fh.write('{"ts": 1999.0, "trunc')  # a partial last line waits for its end
    reason = mon(LiveCounts(), 1.0)
    # Due: ended <= 1998 -> i = 0..80 (81 ids), spread to 30 queried ids; half found -> ~50 % < 80 %.
    assert len(backend.queries) == 1 and len(backend.queries[0]) == 30
    assert all(int(t[16:], 16) < 100 for t in backend.queries[0])  # only sampled traces
    assert reason is not None and "live collection" in reason
    k, n = mon.checks[-1]["k"], mon.checks[-1]["n"]
    assert n == 30 and 0.3 <= k / n <= 0.7
    # Already-queried ids are not queried again.
    clock.t += 1.5
    mon(LiveCounts(), 2.5)
    assert all(int(t[16:], 16) > 80 for t in backend.queries[-1])
    mon.close()
    assert backend.closed


def test_safety_live_collection_waits_for_enough_traces(tmp_path: Path) -> None:
    clock = FakeClock(2000.0)
    backend = FakeBackend({})
    safety = SafetyBounds(max_error_rate=None, min_collection=0.8, min_sampled=20, check_every_s=1)
    mon = LiveMonitor(tmp_path, safety, clock=clock, backend=backend, expect=EXPECT, settle_s=2.0)
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(rec(1995.0, i)) + "\n" for i in range(5)))
    assert mon(LiveCounts(), 1.0) is None  # 5 missing of 5: too few to judge
    assert mon.checks[-1] == {"t": 2000.0, "k": 0, "n": 5, "queried": 5}


def test_monitor_failures_turn_the_check_off_instead_of_breaking_the_run(tmp_path: Path) -> None:
    class Broken(FakeBackend):
        def fetch_many(
            self, trace_ids: Sequence[str], on_progress: Callable[..., None] | None = None
        ) -> dict[str, Fetched]:
            raise RuntimeError("backend exploded")

    safety = SafetyBounds(min_collection=0.8, check_every_s=0)
    mon = LiveMonitor(
        tmp_path, safety, clock=FakeClock(2000.0), backend=Broken({}), expect=EXPECT, settle_s=0.0
    )
    (tmp_path / "ledger.jsonl").write_text(json.dumps(rec(1990.0, 1)) + "\n")
    assert mon(LiveCounts(), 1.0) is None
    assert mon(LiveCounts(), 2.0) is None
    assert len(mon.notes) == 1 and "backend exploded" in mon.notes[0]


# --- the collector's ingest limit -----------------------------------------------------------------


def test_token_bucket_grants_a_second_of_burst_then_the_rate() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(100.0, 100.0, clock)
    assert bucket.take(80) == 80
    assert bucket.take(80) == 20  # the burst is spent
    clock.t += 0.5
    assert bucket.take(80) == 50  # 50 tokens refilled in 0.5 s
    clock.t += 10.0
    assert bucket.take(500) == 100  # never more than the capacity


def test_ingest_limit_knob_validation_and_argv() -> None:
    with pytest.raises(ValueError, match="ingest_limit"):
        Faults(ingest_limit=-1.0)
    assert "--ingest-limit" not in CollectorFaults().argv()
    argv = CollectorFaults(ingest_limit=150.0).argv()
    assert argv[argv.index("--ingest-limit") + 1] == "150.0"


def test_a_step_with_no_data_for_any_bound_is_not_judged_and_never_the_last_good() -> None:
    # Step 0 sent nothing; step 1 ran but with every bound it has data for turned off below.
    plan = StepPlan.parse("rate:100,200", step_s=10, ramp_s=2)
    empty = metrics(0, offered=100.0, requests=0, errors=0, collection=(0, 0))
    ran = metrics(1, offered=200.0, achieved=200.0)
    doc = capacity_document(
        run_id="cap2", plan=plan, bounds=BOUNDS, safety=SafetyBounds(), metrics=[empty, ran], knee=None,
        status="complete", abort=None,
    )  # fmt: skip
    assert doc["steps"][0]["judged"] == [] and "errors" in doc["steps"][1]["judged"]
    assert doc["last_good"] == 1
    rows = capacity_rows(doc)
    assert rows[1][-1] == "not judged" and rows[2][-1] == "ok"
    md = render_capacity_markdown(doc)
    assert "**No knee**: among the 1 steps judged; not judged (no data for any bound): step 0." in md
    assert "every step stayed within the bounds" not in md

    off = KneeBounds(
        p99_ms=None, max_error_rate=None, min_collection=None, min_throughput=None, min_scaling=None,
        max_p99_growth=None,
    )  # fmt: skip
    nothing = capacity_document(
        run_id="cap3", plan=plan, bounds=off, safety=SafetyBounds(), metrics=[empty, ran], knee=None,
        status="complete", abort=None,
    )  # fmt: skip
    assert [s["judged"] for s in nothing["steps"]] == [[], []] and nothing["last_good"] is None
    assert "**No knee verdict**: no step had data for any bound" in render_capacity_markdown(nothing)
