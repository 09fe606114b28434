"""`loadgen capacity` on the real embedded mesh (real Envoy, real Locust with the step shape):
a collector ingest limit set between two steps' span rates must make the second step the knee,
for the reason "collection"; a tripped safety bound must stop the run early with the ledger intact.

Span rates at sampling 100 % with the default mix (9 of 10 requests traced, 3 spans each):
2 users x 10 req/s -> ~54 spans/s, 8 users x 10 req/s -> ~216 spans/s, plus 5 reference traces/s
x 3 spans = 15 spans/s. The limit of 150 spans/s lies between 69 and 231.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

from loadgen.capacity import (
    CapacityOptions,
    CapacityResult,
    KneeBounds,
    SafetyBounds,
    reanalyze_capacity,
    run_capacity,
)
from loadgen.ledger import LedgerStats, read_ledger
from loadgen.run import RunOptions
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import CollectorFaults, UpstreamFaults
from loadgen.stack.procs import ManagedProcess, python_module_argv

from .conftest import leftover_processes

pytestmark = pytest.mark.integration

INGEST_LIMIT = 150.0


def quiet(_: str) -> None:
    pass


def _options(out: Path, run_id: str, **overrides: object) -> CapacityOptions:
    opts = CapacityOptions(
        steps="users:2,8",
        step_s=6.0,
        ramp_s=1.5,
        user_rate=10.0,
        # The collection knee: the relative bounds (scaling, p99 growth) off, as before issue 13.
        bounds=KneeBounds(
            p99_ms=None,
            max_error_rate=0.01,
            min_collection=0.95,
            min_throughput=0.8,
            min_scaling=None,
            max_p99_growth=None,
        ),
        safety=SafetyBounds(min_collection=None),  # the knee run must reach its second step
        run=RunOptions(
            run_id=run_id,
            output_dir=out,
            tracing=TracingConfig(sampling_percent=100.0),
            faults=CollectorFaults(ingest_limit=INGEST_LIMIT),
            reference_rate=5.0,
            seed=3,
        ),
    )
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


@pytest.fixture(scope="module")
def knee_run(tmp_path_factory: pytest.TempPathFactory) -> CapacityResult:
    return run_capacity(_options(tmp_path_factory.mktemp("capacity"), "cap-knee"), quiet)


def test_ingest_limit_makes_the_second_step_the_knee_for_collection(knee_run: CapacityResult) -> None:
    assert knee_run.exit_code == 0 and knee_run.abort is None
    assert knee_run.knee is not None
    assert (knee_run.knee.index, knee_run.knee.reason) == (1, "collection")
    first, second = knee_run.metrics
    # Below the limit every sampled trace is found complete; above it most are not.
    assert first.collection.n > 50 and first.collection.rate is not None and first.collection.rate >= 0.97
    assert first.reference.n > 10 and first.reference.rate == 1.0
    assert second.collection.rate is not None and second.collection.rate < 0.9
    assert second.collection.ci95[1] < 0.95  # clearly below the bound, not noise
    # The pacing followed the steps (10 req/s per user) and nothing failed.
    assert first.achieved_rps == pytest.approx(20.0, rel=0.2)
    assert second.achieved_rps == pytest.approx(80.0, rel=0.2)
    assert first.errors == second.errors == 0
    assert first.decision.rate == 1.0  # sampling 100 %
    # The collector stored about what it was told to: the limit during the second step.
    assert first.ingest is not None and second.ingest is not None
    assert first.ingest["dropped_per_s"] == 0.0
    assert 0.8 * INGEST_LIMIT <= second.ingest["accepted_per_s"] <= 1.25 * INGEST_LIMIT
    assert second.ingest["dropped_per_s"] > 20.0


def test_capacity_files_in_the_run_folder(knee_run: CapacityResult) -> None:
    run_dir = knee_run.run_dir
    doc = json.loads((run_dir / "capacity.json").read_text())
    assert doc == json.loads(json.dumps(knee_run.document))
    assert doc["status"] == "complete" and doc["last_good"] == 0 and doc["abort"] is None
    assert [s["knee"] for s in doc["steps"]] == [False, True]
    assert [s["target_rps"] for s in doc["steps"]] == [20.0, 80.0]
    assert json.loads((run_dir / "steps.json").read_text()) == {"steps": doc["steps"], "knee": 1}
    md = (run_dir / "capacity.md").read_text()
    assert "**Knee: step 1 (8 users)**" in md and "collection" in md
    events = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [e["ev"] for e in events] == ["plan", "step", "step", "end"]
    assert 5.0 <= events[2]["t"] - events[1]["t"] <= 7.5
    rows = knee_run.rows()
    assert rows[2][-1] == "KNEE: collection"
    # The run itself is a normal run folder too.
    assert (run_dir / "summary.json").exists() and (run_dir / "ingest.jsonl").exists()
    assert leftover_processes(str(run_dir)) == []


def test_reanalyze_with_other_bounds(knee_run: CapacityResult) -> None:
    run_dir = knee_run.run_dir
    original = KneeBounds(**knee_run.document["bounds"])
    try:
        slo = reanalyze_capacity(run_dir, KneeBounds(p99_ms=0.001, min_collection=None))
        assert slo["knee"]["index"] == 0 and slo["knee"]["reason"] == "latency"
        assert slo["last_good"] is None
        loose = reanalyze_capacity(
            run_dir,
            KneeBounds(
                max_error_rate=None,
                min_collection=None,
                min_throughput=None,
                min_scaling=None,
                max_p99_growth=None,
            ),
        )
        # Every bound off: no step could be judged, so none is the last good one (issue 13's
        # "not judged" state) and the table says so.
        assert loose["knee"] is None and loose["last_good"] is None
        assert [s["judged"] for s in loose["steps"]] == [[], []]
        assert [s["requests"] for s in loose["steps"]] == [s["requests"] for s in knee_run.document["steps"]]
        # One bound every step keeps (a p99 no step reaches): both judged, the last is the last good.
        wide = reanalyze_capacity(
            run_dir,
            KneeBounds(
                p99_ms=1e9, max_error_rate=None, min_collection=None, min_throughput=None,
                min_scaling=None, max_p99_growth=None,
            ),
        )  # fmt: skip
        assert wide["knee"] is None and wide["last_good"] == 1
        assert [s["judged"] for s in wide["steps"]] == [["latency"], ["latency"]]
    finally:
        again = reanalyze_capacity(run_dir, original)
    assert again["knee"] == knee_run.document["knee"]


def test_an_upstream_delay_makes_the_knee_where_throughput_stops_scaling(tmp_path: Path) -> None:
    """Issue 13: rate steps 10 -> 100 req/s with 2 users and a fixed 60 ms upstream delay. Each
    user waits >= 60 ms per request, so 2 users achieve at most 2 / 0.060 = 33.3 req/s: the
    second step rises by <= 23.3 req/s, less than half the offered +90. The knee is that step,
    by the scaling rule alone (the absolute throughput bound off). Short: no probe, sampling
    0 %, no reference traces, no second hop (~8 s)."""
    opts = CapacityOptions(
        steps="rate:10,100",
        step_s=2.5,
        ramp_s=0.5,
        step_users=2,
        bounds=KneeBounds(min_throughput=None),
        safety=SafetyBounds(max_error_rate=None, min_collection=None),
        run=RunOptions(
            run_id="cap-delay",
            output_dir=tmp_path,
            tracing=TracingConfig(sampling_percent=0.0),
            upstream=UpstreamFaults(delay_ms_mean=60.0, delay_dist="fixed", seed=3),
            reference_rate=0.0,
            seed=3,
            probe=False,
            fanout=False,
            quiet_s=0.0,
            max_wait_s=2.0,
        ),
    )
    result = run_capacity(opts, quiet)
    assert result.exit_code == 0 and result.abort is None
    first, second = result.metrics
    assert first.p50_ms is not None and first.p50_ms >= 60.0  # the delay is in every request
    assert first.achieved_rps == pytest.approx(10.0, rel=0.25)  # below the cap: the target is met
    assert second.achieved_rps is not None and second.achieved_rps < 2 / 0.060 * 1.1
    assert result.knee is not None and (result.knee.index, result.knee.reason) == (1, "scaling")
    doc = result.document
    assert doc["steps"][0]["breaches"] == [] and doc["last_good"] == 0
    assert "**Knee: step 1 (100 req/s)**" in (result.run_dir / "capacity.md").read_text()
    assert "<title>loadgen capacity report cap-delay</title>" in (result.run_dir / "report.html").read_text()
    assert leftover_processes(str(result.run_dir)) == []


def test_safety_abort_stops_the_run_early_with_the_ledger_intact(tmp_path: Path) -> None:
    opts = _options(
        tmp_path,
        "cap-abort",
        steps="users:8",
        step_s=30.0,
        ramp_s=1.0,
        safety=SafetyBounds(
            max_error_rate=0.5, min_collection=0.8, window_s=3.0, min_sampled=30, check_every_s=1.0
        ),
    )
    start = time.time()
    result = run_capacity(opts, quiet)
    elapsed = time.time() - start
    assert elapsed < 20.0  # the step was 30 s long
    assert result.exit_code == 1
    assert result.abort is not None and result.abort.startswith("safety: live collection")
    doc = result.document
    assert doc["status"] == "aborted" and doc["abort"]["reason"] == result.abort
    assert doc["steps"][0]["complete"] is False and doc["steps"][0]["requests"] > 50
    summary = result.run.summary
    assert summary["status"] == "partial" and summary["status_reason"] == f"aborted: {result.abort}"
    # Ledger intact: every line parses, and requests were recorded up to the abort.
    stats = LedgerStats()
    records = list(read_ledger(result.run_dir / "ledger.jsonl", stats))
    assert stats.truncated == 0 and len(records) == summary["requests"]["total"] > 100
    assert max(r["ts"] for r in records) >= doc["abort"]["at"] - 2.0
    assert leftover_processes(str(result.run_dir)) == []


def test_collector_ingest_limit_answers_202_and_counts_the_excess(tmp_path: Path) -> None:
    collector = ManagedProcess(
        "collector",
        python_module_argv("loadgen.stack.collector", "--port", "0", "--ingest-limit", "5"),
        tmp_path / "collector.log",
    )
    collector.start(stdout_pipe=True)
    try:
        url = str(collector.read_ready_line(15.0)["url"])
        tid = secrets.token_hex(16)
        spans = [
            {"traceId": tid, "id": secrets.token_hex(8), "name": "s", "timestamp": 1, "duration": 1}
            for _ in range(8)
        ]
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.post("/api/v2/spans", json=spans).status_code == 202
            assert len(http.get(f"/api/v2/trace/{tid}").json()) == 5  # one second of burst
            stats = http.get("/loadgen/stats").json()
    finally:
        collector.stop()
    assert stats["ingest"]["limited_spans"] == 3 and stats["spans_dropped"] == 3
    assert stats["spans_accepted"] == 5 and stats["faults"]["ingest_limit"] == 5.0


@pytest.mark.parametrize("dist", ["fixed", "exp"])
def test_echo_upstream_delay_and_error_knobs(tmp_path: Path, dist: str) -> None:
    echo = ManagedProcess(
        "echo",
        python_module_argv(
            "loadgen.stack.echo", "--port", "0",
            "--delay-ms-mean", "30", "--delay-dist", dist, "--error-rate", "0.5", "--seed", "7",
        ),
        tmp_path / "echo.log",
    )  # fmt: skip
    echo.start(stdout_pipe=True)
    try:
        url = str(echo.read_ready_line(15.0)["url"])
        with httpx.Client(base_url=url, timeout=10) as http:
            start = time.perf_counter()
            codes = [http.get("/headers").status_code for _ in range(20)]
            took = time.perf_counter() - start
            health_start = time.perf_counter()
            assert http.get("/health").status_code == 200
            health_took = time.perf_counter() - health_start
    finally:
        echo.stop()
    assert set(codes) == {200, 503} and 3 <= codes.count(503) <= 17
    assert took >= (0.6 if dist == "fixed" else 0.2)  # 20 x 30 ms (exponential: on average)
    if dist == "fixed":
        assert health_took < 0.025  # /health is exempt from the 30 ms delay
