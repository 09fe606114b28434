"""Issue 9's matrix: `loadgen run` with **no hint flags** on real-Envoy meshes that look unlike the
embedded default, each of which gave a wrong verdict before the probe. The knobs only build the
mesh; everything the verdicts expect must come from what the run learns.

Each run is short and loopback-only; reference spans are off except where they are the subject,
so each verdict under test is the one that decides the exit code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loadgen.ledger import LiveCounts
from loadgen.run import RunError, RunOptions, RunResult, execute_run
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import GATEWAY_SERVICE, CollectorFaults, EmbeddedMesh, MeshConfig

from .backend_proxy import BackendProxy

pytestmark = pytest.mark.integration

T100 = TracingConfig(sampling_percent=100.0)
EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INCONCLUSIVE = 0, 1, 2, 3


def _run(out: Path, name: str, **kw: Any) -> RunResult:
    opts = RunOptions(
        run_id=name, output_dir=out, duration_s=3, users=4, spawn_rate=4, seed=11, reference_rate=0.0, **kw
    )
    return execute_run(opts, lambda _m: None)


def _verdicts(result: RunResult) -> dict[str, str]:
    return dict(result.summary["verdicts"])


def _cause(result: RunResult, verdict: str) -> str:
    details = result.summary.get("verdict_details") or {}
    return str((details.get(verdict) or {}).get("cause") or "")


def test_one_span_gateway_is_collected_not_failed(tmp_path: Path) -> None:
    """Case 1: no upstream span, no sidecar: sampled traces have one span. Before: 0/34,957."""
    r = _run(tmp_path, "one-span", tracing=replace(T100, sidecar=False, gateway_spawn_upstream_span=False))
    mesh = r.summary["mesh"]
    sampled = mesh["collection"]["n"]
    assert sampled > 300
    assert mesh["expected_shape"] == [[GATEWAY_SERVICE, "SERVER", 1]]
    assert mesh["spans_per_found_trace"] == {"1": sampled} and mesh["collection"]["k"] == sampled
    assert _verdicts(r)["mesh_collection"] == "pass"
    md = (r.run_dir / "report.md").read_text()
    assert "spans from ." not in md and GATEWAY_SERVICE in md
    assert r.exit_code == EXIT_OK, _verdicts(r)


def test_four_span_mesh_with_span_loss_is_not_over_reported(tmp_path: Path) -> None:
    """Case 9: both proxies add an upstream span (4 per trace) and the collector drops a share q
    of spans: the truth is (1-q)^4. Before: 0.985, because 3 of 4 spans counted as collected."""
    q = 0.05
    r = _run(
        tmp_path, "four-span",
        tracing=replace(T100, sidecar_spawn_upstream_span=True),
        faults=CollectorFaults(drop_probability=q, seed=3),
    )  # fmt: skip
    coll = r.summary["mesh"]["collection"]
    truth = (1 - q) ** 4
    n = coll["n"]
    assert n > 300
    # The binomial's own spread at the true rate: 4.5 standard deviations (p ~ 7e-6 to miss).
    assert abs(coll["rate"] - truth) <= 4.5 * math.sqrt(truth * (1 - truth) / n), coll
    assert r.summary["mesh"]["partial"] > 0
    assert sum(n for _svc, _kind, n in r.summary["mesh"]["expected_shape"]) == 4
    assert _verdicts(r)["mesh_collection"] == "fail"
    assert r.exit_code == EXIT_FAILED


def test_non_edge_gateway_keeps_client_ids_and_sampling_passes(tmp_path: Path) -> None:
    """Case 2: a non-edge gateway keeps client x-request-ids; with xrid modes in the mix the
    sampling verdict failed on 2,149 "mismatches". The probe learns it; no flag needed."""
    r = _run(
        tmp_path, "non-edge",
        tracing=replace(T100, sampling_percent=50.0, gateway_use_remote_address=False),
        mix="none=2,xrid_forced=1,xrid_crafted=1,xrid_random=1,b3_multi_sampled=1",
    )  # fmt: skip
    s = r.summary
    assert s["profile"]["request_id"] == "kept_honoured"
    assert s["sampling"]["prediction"]["checked"] > 100
    assert s["sampling"]["prediction"]["mismatches"] == 0
    assert s["modes"]["xrid_forced"]["expectation_violations"] == 0
    v = _verdicts(r)
    assert v["sampling"] == "pass" and v["header_modes"] == "pass"
    assert r.exit_code == EXIT_OK, v


def test_no_run_id_tag_makes_the_tag_estimate_null_not_zero(tmp_path: Path) -> None:
    """Case 5 (half): no run-id tag on the spans: the tag search is not a measurement of 0."""
    r = _run(tmp_path, "no-tag", tracing=replace(T100, run_id_tag=""))
    s = r.summary
    assert s["profile"]["run_id_tag"] is None
    assert s["tag_search"] is None or s["tag_search"].get("decision") is None
    assert any("tag" in n for n in s["notes"])
    assert _verdicts(r)["mesh_collection"] == "pass"
    assert r.exit_code == EXIT_OK, _verdicts(r)


def test_no_echo_is_inconclusive_not_a_pass_or_a_zero(tmp_path: Path) -> None:
    """Case 5: no header echo: decisions are unknown, so every decision-based verdict is
    inconclusive, names the missing fact, and the run exits 3."""
    r = _run(tmp_path, "no-echo", tracing=replace(T100, echo_headers=False))
    v = _verdicts(r)
    for name in ("sampling", "mesh_collection", "no_leaks"):
        assert v[name] == "inconclusive", (name, v)
        assert "echo" in _cause(r, name), r.summary.get("verdict_details")
    assert "pass" not in {v.get("no_leaks"), v.get("sampling")}
    ts = r.summary["tag_search"]
    assert ts is None or ts.get("decision") is None or ts["decision"].get("n")
    assert r.exit_code == EXIT_INCONCLUSIVE


def test_overall_sampling_below_100_fails_and_says_why(tmp_path: Path) -> None:
    """Case 6: overall_sampling 50 cuts forcing and random sampling alike. Before: counted as
    violations nobody showed, exit 0. Now the decisions disagree with the configured 100 %."""
    r = _run(
        tmp_path, "overall",
        tracing=replace(T100, overall_sampling_percent=50.0),
        mix="none=2,client_trace_id=2,b3_multi_sampled=1",
    )  # fmt: skip
    v = _verdicts(r)
    assert v["sampling"] == "fail"
    assert "overall_sampling" in _cause(r, "sampling") or "overall_sampling" in " ".join(r.summary["notes"])
    assert r.exit_code == EXIT_FAILED


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedMesh]:
    mesh = EmbeddedMesh(tmp_path / "mesh", MeshConfig(tracing=T100, fanout=False)).start()
    try:
        yield mesh
    finally:
        mesh.stop()


def test_a_proxys_foreign_404_is_an_error_not_loss(tmp_path: Path, embedded: EmbeddedMesh) -> None:
    """Case 3: trace routes behind a proxy answer `404 page not found`. Before: every trace
    missing, FAIL. Now the run refuses before load: the trace route is not the backend's."""
    with BackendProxy(embedded.collector_url) as proxy:
        proxy.set_mode("foreign404")
        with pytest.raises(RunError, match="404 text/plain"):
            _run(tmp_path, "foreign", gateway=embedded.gateway_url, host=embedded.host_header,
                 backend=f"zipkin:{proxy.url}")  # fmt: skip
    assert not any((tmp_path / "foreign").glob("ledger.jsonl"))


def test_backend_gone_mid_run_is_unknown_and_inconclusive(tmp_path: Path, embedded: EmbeddedMesh) -> None:
    """Case 4 and 8: the backend starts answering 500 after the probe. Before: `no_leaks` passed
    with nothing queried, and the note said counts "were still changing"."""
    with BackendProxy(embedded.collector_url) as proxy:

        def break_backend(_live: LiveCounts, _elapsed: float) -> str | None:
            proxy.set_mode("500")
            return None

        r = _run(
            tmp_path, "gone", gateway=embedded.gateway_url, host=embedded.host_header,
            backend=f"zipkin:{proxy.url}", mix="none=1,b3_multi_not_sampled=1", max_wait_s=4.0,
            on_tick=break_backend,
        )  # fmt: skip
    s = r.summary
    assert s["mesh"]["collection"]["n"] == 0 and s["mesh"]["unknown"] > 0
    v = _verdicts(r)
    assert v["no_leaks"] == "inconclusive" and v["mesh_collection"] == "inconclusive"
    assert not any("still changing" in n for n in s["notes"])
    assert any("fail" in n and "poll" in n for n in s["notes"]), s["notes"]
    assert r.exit_code == EXIT_INCONCLUSIVE


def test_reference_collection_reaches_a_conclusion_at_the_default_rate(tmp_path: Path) -> None:
    """Case 7: collection is judged on its interval; the default reference rate must let a
    healthy 10 s run conclude (200 of 200 has a Wilson low end of 0.981 < 0.99)."""
    r = execute_run(
        RunOptions(run_id="ref", output_dir=tmp_path, duration_s=10, users=2, spawn_rate=2, seed=5, rate=50),
        lambda _m: None,
    )
    ref = r.summary["reference"]
    assert ref["collection"]["k"] == ref["collection"]["n"] == ref["exported"]
    assert ref["collection"]["ci95"][0] >= 0.99
    assert _verdicts(r)["reference_collection"] == "pass"
