"""`loadgen run` end to end on the real embedded mesh: real Envoy, real Locust, real OTel SDK."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loadgen.analysis.planner import all_found_sample_size
from loadgen.analysis.stats import wilson_interval
from loadgen.ledger import read_ledger
from loadgen.run import RunError, RunOptions, RunResult, execute_run, verify_run
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import GATEWAY_SERVICE, SIDECAR_SERVICE, CollectorFaults, EmbeddedMesh

from .conftest import leftover_processes

pytestmark = pytest.mark.integration


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def run100(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    out = tmp_path_factory.mktemp("run100")
    return execute_run(
        RunOptions(
            run_id="r100", output_dir=out, duration_s=4, users=4, spawn_rate=4,
            # 150/s for 4 s: >= 381 reference traces, the fewest that (all found) put the Wilson
            # low end over the 0.99 minimum, so reference collection can pass at all.
            tracing=TracingConfig(sampling_percent=100.0), reference_rate=150.0, seed=1,
        ),
        quiet,
    )  # fmt: skip


def test_sampling_100_every_request_and_reference_trace_is_found(run100: RunResult) -> None:
    s = run100.summary
    assert s["status"] == "complete"
    assert s["requests"]["total"] > 500 and s["requests"]["errors"] == 0
    mesh = s["mesh"]
    # Every request whose upstream saw "sampled" is found complete; nothing partial or unknown.
    sampled = sum(m["decided_sampled"] for m in s["modes"].values())
    assert mesh["collection"]["n"] == sampled > 0
    assert mesh["collection"]["k"] == sampled
    assert mesh["partial"] == 0 and mesh["unknown"] == 0 and mesh["leaked"] == 0
    # Each found trace has exactly the spans the config implies (gateway SERVER+CLIENT, sidecar).
    assert mesh["spans_per_found_trace"] == {"3": sampled}
    assert sorted(mesh["expected_services"]) == sorted([GATEWAY_SERVICE, SIDECAR_SERVICE])
    assert mesh["run_tag"]["k"] == mesh["run_tag"]["n"] == 3 * sampled
    ref = s["reference"]
    assert ref["started"] == ref["exported"] > 50
    assert ref["failed"] == 0 and ref["dropped"] == 0
    assert ref["collection"]["k"] == ref["collection"]["n"] == ref["exported"]
    assert ref["exported"] >= all_found_sample_size(s["min_collection"])
    assert s["verdicts"] == {
        "load_delivered": "pass",
        "sampling": "pass",
        "sampling_prediction": "pass",
        "mesh_collection": "pass",
        "no_leaks": "pass",
        "reference_collection": "pass",
        "propagation_integrity": "pass",
        "header_modes": "pass",
    }
    details = s["verdict_details"]
    assert details["reference_collection"]["checked"] == ref["exported"]
    assert details["mesh_collection"]["checked"] == sampled
    assert details["no_leaks"]["checked"] == sum(m["decided_not_sampled"] for m in s["modes"].values()) > 0
    assert all(d["cause"] is None for d in details.values())
    assert run100.exit_code == 0
    # The run-id tag search finds the same traces without knowing their ids.
    tags = s["tag_search"]
    assert tags["tagged_mesh"] == mesh["collection"]["k"]
    assert tags["tagged_reference"] == ref["exported"]
    assert tags["forced_not_sampled_found"]["k"] == 0
    assert tags["forced_sampled_found"]["k"] == tags["forced_sampled_found"]["n"] > 0


def test_sampled_flag_wins_both_ways(run100: RunResult) -> None:
    modes = run100.summary["modes"]
    for forced in ("b3_multi_sampled", "b3_single_sampled"):
        assert modes[forced]["requests"] > 0
        assert modes[forced]["found"] == modes[forced]["requests"]
        assert modes[forced]["expectation_violations"] == 0
    unsampled = modes["b3_multi_not_sampled"]
    assert unsampled["requests"] > 0
    assert unsampled["found"] == unsampled["leaked"] == unsampled["decided_sampled"] == 0
    assert unsampled["not_sampled"] == unsampled["requests"]


def test_injected_trace_ids_come_back_unchanged(run100: RunResult) -> None:
    prop = run100.summary["propagation"]
    assert prop["n"] > 0 and prop["k"] == prop["n"]
    assert prop["backend"]["n"] > 0 and prop["backend"]["k"] == prop["backend"]["n"]
    for rec in read_ledger(run100.run_dir / "ledger.jsonl"):
        if rec["inj_trace"]:
            assert rec["up_trace"] == rec["inj_trace"]


def test_ledger_matches_locust_and_report_files_exist(run100: RunResult) -> None:
    s = run100.summary
    ledger = list(read_ledger(run100.run_dir / "ledger.jsonl"))
    assert len(ledger) == s["requests"]["total"] == s["locust"]["requests"]
    assert len({r["rid"] for r in ledger}) == len(ledger)
    on_disk = json.loads((run100.run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(s))
    report = (run100.run_dir / "report.md").read_text()
    assert "r100" in report and "b3\\_multi\\_sampled" in report
    assert leftover_processes(str(run100.run_dir)) == []


def _dig(obj: Any, path: str) -> Any:
    for key in path.split("."):
        obj = obj[key]
    return obj


def test_verify_rebuilds_a_missing_summary(run100: RunResult, tmp_path: Path) -> None:
    """Issue 10: a folder without summary.json (SIGKILL, a Locust crash, a full disk) could be
    neither verified nor reported. A copy of a real run folder, as if the run had been killed
    before writing its summary, and Locust before writing its statistics."""
    run_dir = tmp_path / "r100"
    shutil.copytree(run100.run_dir, run_dir)
    for name in ("summary.json", "locust.json", "report.md", "report.html"):
        (run_dir / name).unlink()
    result, changes = verify_run(run_dir, quiet, max_wait_s=5, poll_interval_s=0.2)
    s, live = result.summary, run100.summary
    assert changes == []
    assert s["status"] == "partial" and "rebuilt" in s["status_reason"]
    # what only the live run knew is null, never 0, and named
    assert s["locust"] is None and s["started_at"] is None and s["queryable"] is None
    assert {"locust", "started_at", "queryable"} <= set(s["recovered"]["unknown"])
    # everything else comes back from the folder exactly as the live run had it
    for path in ("requests.total", "requests.errors", "sampling.decision", "sampling.prediction.checked",
                 "mesh.collection", "mesh.leak_checked", "reference.exported", "reference.collection",
                 "propagation", "modes", "profile", "target", "verdicts"):  # fmt: skip
        assert _dig(s, path) == _dig(live, path), path
    assert json.loads((run_dir / "summary.json").read_text())["recovered"] == s["recovered"]
    assert "Partial run" in (run_dir / "report.md").read_text() and (run_dir / "report.html").exists()
    assert list(run_dir.glob("summary.previous*")) == []  # there was nothing to keep
    assert leftover_processes(str(run_dir)) == []


def test_sampling_20_decision_rate_covers_configured(tmp_path: Path) -> None:
    """n >= 1500 decision-free requests. The assertion uses a 99.99 % Wilson interval, so a
    correct proxy fails this test with probability about 1e-4; the x-request-id rule check is
    exact (zero mismatches) and cannot fail by chance."""
    result = execute_run(
        RunOptions(
            run_id="r20", output_dir=tmp_path, duration_s=5, users=4, spawn_rate=4,
            mix="none=2,b3_multi_no_flag=1,b3_single_no_flag=1,b3_multi_sampled=1,b3_multi_not_sampled=1",
            tracing=TracingConfig(sampling_percent=20.0), reference_rate=0.0, seed=2,
        ),
        quiet,
    )  # fmt: skip
    s = result.summary
    decision = s["sampling"]["decision"]
    assert decision["n"] >= 1500, "too few requests for the stated false-failure probability"
    low, high = wilson_interval(decision["k"], decision["n"], 0.9999)
    assert low <= 0.20 <= high
    assert s["sampling"]["prediction"]["checked"] == decision["n"]
    assert s["sampling"]["prediction"]["mismatches"] == 0
    # Forced modes ignore the 20 %: sampled=1 always found, sampled=0 never.
    modes = s["modes"]
    assert modes["b3_multi_sampled"]["found"] == modes["b3_multi_sampled"]["requests"] > 0
    assert modes["b3_multi_not_sampled"]["found"] == 0
    assert s["mesh"]["collection"]["k"] == s["mesh"]["collection"]["n"]
    assert s["mesh"]["leaked"] == 0
    # Every decision was checked against the x-request-id rule: the verdict is exact.
    assert s["sampling"]["verdict_basis"] == "exact"
    assert s["verdicts"]["sampling"] == "pass"
    # Statistical mode (tag search, no per-request echo) agrees exactly when nothing is lost.
    assert s["tag_search"]["decision"]["k"] == decision["k"]
    assert s["tag_search"]["decision"]["n"] == decision["n"]


def test_existing_mesh_as_external_target(mesh100: EmbeddedMesh, tmp_path: Path) -> None:
    result = execute_run(
        RunOptions(
            run_id="ext", output_dir=tmp_path, duration_s=2, users=2, spawn_rate=2,
            gateway=mesh100.gateway_url, host=mesh100.host_header, collector=mesh100.collector_url,
            backend=f"zipkin:{mesh100.collector_url}", expect_percent=100.0,
            reference_rate=250.0,  # >= 381 reference traces in 2 s: enough to conclude at 0.99
        ),
        quiet,
    )  # fmt: skip
    s = result.summary
    assert s["target"]["kind"] == "external"
    assert s["target"]["gateway"] == mesh100.gateway_url
    assert s["mesh"]["collection"]["n"] > 0
    assert s["mesh"]["collection"]["k"] == s["mesh"]["collection"]["n"]
    assert s["reference"]["collection"]["k"] == s["reference"]["collection"]["n"] > 0
    assert result.exit_code == 0, s["verdict_details"]
    assert not (result.run_dir / "stack").exists()  # nothing embedded was started


@pytest.mark.parametrize(
    "broken, needle",
    [
        ("gateway", "gateway http://127.0.0.1:9 is unreachable"),
        ("collector", "collector http://127.0.0.1:9 is unreachable"),
        ("backend", "cannot reach"),
    ],
)
def test_unreachable_parts_fail_before_load(
    mesh100: EmbeddedMesh, tmp_path: Path, broken: str, needle: str
) -> None:
    dead = "http://127.0.0.1:9"
    opts = RunOptions(
        run_id=f"bad-{broken}", output_dir=tmp_path, duration_s=2, users=1,
        gateway=dead if broken == "gateway" else mesh100.gateway_url,
        collector=dead if broken == "collector" else mesh100.collector_url,
        backend=f"zipkin:{dead if broken == 'backend' else mesh100.collector_url}",
    )  # fmt: skip
    with pytest.raises(RunError) as info:
        execute_run(opts, quiet)
    assert needle in str(info.value).lower() or needle in str(info.value)
    assert not (tmp_path / f"bad-{broken}").exists()  # not even an empty run folder


def test_collection_loss_fails_the_run_and_verify_picks_up_late_spans(tmp_path: Path) -> None:
    """A collector that drops every span: nothing found, reference collection fails (exit 1), while
    the decisions stay known (missing, not unknown). The probe's traces are lost too, so the
    shape of a complete trace is not learned (the fact, in expectation_gaps), yet mesh collection
    still fails: nothing of any trace arrived, which is a loss under any shape. Spans that reach the store later (here written straight into the
    run's span store) are found by `verify`, which updates the summary."""
    result = execute_run(
        RunOptions(
            run_id="lossy", output_dir=tmp_path, duration_s=2, users=2, spawn_rate=2,
            mix="b3_multi_sampled=1", faults=CollectorFaults(drop_probability=1.0), reference_rate=10.0,
        ),
        quiet,
    )  # fmt: skip
    s = result.summary
    n = s["mesh"]["collection"]["n"]
    assert n > 0 and s["mesh"]["collection"]["k"] == 0
    assert s["modes"]["b3_multi_sampled"]["missing"] == n and s["mesh"]["unknown"] == 0
    assert s["reference"]["exported"] > 0 and s["reference"]["collection"]["k"] == 0
    assert s["verdicts"]["reference_collection"] == "fail" and result.exit_code == 1
    assert "none of" in s["verdict_details"]["reference_collection"]["cause"]
    gap = s["expectation_gaps"]["mesh_collection"]
    assert gap.startswith("the trace shape is unknown")
    assert s["verdicts"]["mesh_collection"] == "fail"
    assert gap in s["verdict_details"]["mesh_collection"]["cause"]
    assert s["verdict_details"]["mesh_collection"]["checked"] == n  # the evidence is still counted

    late = [
        [
            {"traceId": rec["up_trace"], "id": f"{i:016x}", "localEndpoint": {"serviceName": svc}}
            for i, svc in enumerate((GATEWAY_SERVICE, GATEWAY_SERVICE, SIDECAR_SERVICE), start=1)
        ]
        for rec in read_ledger(result.run_dir / "ledger.jsonl")
    ]
    with open(result.run_dir / "collector" / "spans.jsonl", "a") as fh:
        fh.writelines(json.dumps(batch) + "\n" for batch in late)
    verified, changes = verify_run(result.run_dir, quiet, max_wait_s=5)
    v = verified.summary
    assert v["mesh"]["collection"]["k"] == v["mesh"]["collection"]["n"] == n
    # every trace arrived, but what a complete one holds is still unknown: no pass on a guess
    assert v["verdicts"]["mesh_collection"] == "inconclusive"
    assert v["verdict_details"]["mesh_collection"]["cause"] == gap
    assert ("mesh collection", 0, n) in changes
    previous = json.loads((result.run_dir / "summary.previous.json").read_text())
    assert previous["mesh"]["collection"]["k"] == 0
    assert json.loads((result.run_dir / "summary.json").read_text())["mesh"]["collection"]["k"] == n
    # A second verify keeps the run's own summary (issue 10: it used to overwrite it).
    verify_run(result.run_dir, quiet, max_wait_s=5, poll_interval_s=0.2)
    assert json.loads((result.run_dir / "summary.previous.json").read_text())["mesh"]["collection"]["k"] == 0
    assert (
        json.loads((result.run_dir / "summary.previous.2.json").read_text())["verified_at"]
        == v["verified_at"]
    )
    assert leftover_processes(str(result.run_dir)) == []


@pytest.mark.parametrize("path, fragmented", [("/fanout", False), ("/fanout-nopropagate", True)])
def test_fanout_integrity_verdict(tmp_path: Path, path: str, fragmented: bool) -> None:
    """Through a second hop: an app forwarding the trace headers keeps one trace per request; one
    that forgets them fragments every sampled request (found by searching the downstream hop)."""
    result = execute_run(
        RunOptions(run_id="fan", output_dir=tmp_path, duration_s=2, users=2, spawn_rate=2, path=path, reference_rate=0),
        quiet,
    )  # fmt: skip
    s = result.summary
    integrity = s["integrity"]
    judged = integrity["traces"]
    assert judged > 50
    frag = integrity["defects"]["fragmented"]["count"]
    assert frag == (judged if fragmented else 0)
    assert s["verdicts"]["propagation_integrity"] == ("fail" if fragmented else "pass")
    verdicts = set(s["verdicts"].values())
    if fragmented:
        assert result.exit_code == 1
    else:  # nothing fails; a verdict a slow machine gave too few traces to decide is inconclusive
        assert "fail" not in verdicts
        assert result.exit_code == (0 if verdicts == {"pass"} else 3), s["verdicts"]
    assert s["mesh"]["collection"]["k"] == s["mesh"]["collection"]["n"] > 0
    assert ("Propagation integrity" in (result.run_dir / "report.md").read_text()) is True
