"""The multi-hop embedded mesh against the real Envoy: gateway -> app sidecar (inbound) -> echo app
-> app sidecar (outbound, egress) -> backend sidecar -> backend echo. What Envoy 1.40 records
per hop, how the parent chain looks for B3 multi, single `b3` and no headers, and the integrity
fold (loadgen.analysis.integrity) on traces the real proxies wrote: fragmentation found exactly where the
app drops the headers, and nowhere else."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadgen.analysis.integrity import TraceShape, fold_integrity, judge_trace
from loadgen.analysis.reconcile import TraceObservation
from loadgen.backends.base import FetchStatus
from loadgen.backends.zipkin import ZipkinBackend
from loadgen.mesh.echo import parse_b3_single, parse_echo
from loadgen.mesh.encode import encode
from loadgen.mesh.headers import RUN_ID_HEADER
from loadgen.mesh.modes import HeaderMode
from loadgen.readback import search_hop_traces
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import (
    BACKEND_SERVICE,
    GATEWAY_SERVICE,
    SIDECAR_SERVICE,
    EmbeddedMesh,
    MeshConfig,
)

from .conftest import wait_for_trace

pytestmark = pytest.mark.integration

RUN_ID = "fanout-test"
MODES = [HeaderMode.NONE, HeaderMode.B3_MULTI_SAMPLED, HeaderMode.B3_SINGLE_SAMPLED]


def _mesh(workdir: Path, **tracing: Any) -> EmbeddedMesh:
    config = MeshConfig(tracing=TracingConfig(sampling_percent=100.0, **tracing), fanout=True)
    return EmbeddedMesh(workdir, config).start()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMesh]:
    m = _mesh(tmp_path_factory.mktemp("fanout"))
    try:
        yield m
    finally:
        m.stop()


def send(mesh: EmbeddedMesh, path: str, headers: dict[str, str]) -> dict[str, Any]:
    resp = httpx.get(
        f"{mesh.gateway_url}{path}",
        headers={"Host": mesh.host_header, RUN_ID_HEADER: RUN_ID, **headers},
        timeout=5.0,
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def by_hop(spans: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for s in spans:
        out.setdefault((s["localEndpoint"]["serviceName"], s["kind"]), []).append(s)
    return out


def test_layout_is_derived_from_the_tracing_config() -> None:
    plain = MeshConfig(tracing=TracingConfig(gateway_spawn_upstream_span=True))
    assert [(h.service, h.spans) for h in plain.hops("/fanout")] == [
        (GATEWAY_SERVICE, 2),
        (SIDECAR_SERVICE, 2),
        (BACKEND_SERVICE, 1),
    ]
    assert plain.expected_spans_per_trace("/headers") == 3
    assert plain.expected_spans_per_trace("/fanout?x=1") == 5
    # The app starts a new trace for its outbound call: only gateway + inbound stay under its id.
    assert plain.expected_spans_per_trace("/fanout-nopropagate") == 3
    spawn = MeshConfig(
        tracing=TracingConfig(gateway_spawn_upstream_span=False, sidecar_spawn_upstream_span=True)
    )
    assert spawn.expected_spans_per_trace("/fanout") == 1 + 4 + 2
    assert MeshConfig(fanout=False).expected_spans_per_trace("/fanout") == 3


@pytest.mark.parametrize("mode", MODES)
def test_fanout_keeps_one_trace_with_an_intact_parent_chain(mesh: EmbeddedMesh, mode: HeaderMode) -> None:
    inj = encode(mode, random.Random(f"chain-{mode}"))
    body = send(mesh, "/fanout", inj.headers)
    app = parse_echo(body["headers"])
    backend = parse_echo(body["backend"]["headers"])
    assert body["backend"]["status"] == 200
    # The backend saw the same trace and request id as the app, under a new span.
    assert backend.trace_id == app.trace_id and backend.request_id == app.request_id
    assert backend.span_id != app.span_id and backend.sampled is True
    if inj.trace_id:
        assert app.trace_id == inj.trace_id
    # A well-behaved app forwards exactly the trace headers it received (and the run id).
    received = {k.lower(): v for k, v in body["headers"].items()}
    sent = body["backend"]["sent"]
    assert sent == {k: received[k] for k in sent} and {"x-request-id", RUN_ID_HEADER} <= set(sent)
    assert ("b3" in sent) is (mode is HeaderMode.B3_SINGLE_SAMPLED)
    assert ("x-b3-traceid" in sent) is (mode is not HeaderMode.B3_SINGLE_SAMPLED)

    expected = mesh.config.expected_spans_per_trace("/fanout")
    spans = wait_for_trace(mesh, str(app.trace_id), expected)
    assert len(spans) == expected == 5
    assert Counter(s["localEndpoint"]["serviceName"] for s in spans) == {
        hop.service: hop.spans for hop in mesh.config.hops("/fanout")
    }
    hops = by_hop(spans)
    gw_server = hops[(GATEWAY_SERVICE, "SERVER")][0]
    gw_client = hops[(GATEWAY_SERVICE, "CLIENT")][0]
    inbound = hops[(SIDECAR_SERVICE, "SERVER")][0]
    outbound = hops[(SIDECAR_SERVICE, "CLIENT")][0]  # the app's egress, traced as CLIENT
    backend_server = hops[(BACKEND_SERVICE, "SERVER")][0]
    assert gw_server.get("parentId") == inj.span_id  # None for a root when nothing was injected
    assert gw_client["parentId"] == gw_server["id"]
    assert inbound["parentId"] == gw_client["id"]
    assert outbound["parentId"] == inbound["id"]
    assert backend_server["parentId"] == outbound["id"]
    assert outbound["name"] == "backend.istioinaction"
    # What the app and the backend received names the span each sits under.
    assert app.span_id == inbound["id"] and backend.span_id == backend_server["id"]

    verdict = judge_trace(TraceShape.from_spans(spans), inj.span_id, mesh.config.hops("/fanout"))
    assert verdict.links_ok and verdict.flattened == 0 and verdict.missing_hops == ()
    assert verdict.entry_ok is (True if inj.span_id else None)


def test_single_b3_is_rewritten_at_every_hop_not_flattened(mesh: EmbeddedMesh) -> None:
    """envoyproxy/envoy#47515 reports `b3` forwarded unchanged (every hop parented to the
    client's span). Envoy 1.40.0 rewrites it: each hop receives its own span and parent."""
    inj = encode(HeaderMode.B3_SINGLE_SAMPLED, random.Random(47515))
    body = send(mesh, "/fanout", inj.headers)
    app_b3 = {k.lower(): v for k, v in body["headers"].items()}["b3"]
    backend_b3 = {k.lower(): v for k, v in body["backend"]["headers"].items()}["b3"]
    assert app_b3 != inj.headers["b3"] and backend_b3 != app_b3
    # Answered in the format received: no X-B3-* headers appear on either hop.
    for echoed in (body["headers"], body["backend"]["headers"]):
        assert not [k for k in echoed if k.lower().startswith("x-b3-")]
    spans = wait_for_trace(mesh, str(inj.trace_id), 5)
    hops = by_hop(spans)
    inbound = hops[(SIDECAR_SERVICE, "SERVER")][0]
    outbound = hops[(SIDECAR_SERVICE, "CLIENT")][0]
    backend_server = hops[(BACKEND_SERVICE, "SERVER")][0]
    gw_client = hops[(GATEWAY_SERVICE, "CLIENT")][0]
    # `trace-span-flag-parent`: the span the receiver sits under and that span's parent.
    assert app_b3.split("-") == [inj.trace_id, inbound["id"], "1", gw_client["id"]]
    assert backend_b3.split("-") == [inj.trace_id, backend_server["id"], "1", outbound["id"]]
    assert parse_b3_single(backend_b3)[1] != inj.span_id
    assert backend_server["parentId"] == outbound["id"] != inj.span_id


def test_nopropagate_splits_the_trace_in_two(mesh: EmbeddedMesh) -> None:
    inj = encode(HeaderMode.B3_MULTI_SAMPLED, random.Random("split"))
    body = send(mesh, "/fanout-nopropagate", inj.headers)
    assert body["propagated"] is False and body["backend"]["sent"] == {}
    app = parse_echo(body["headers"])
    backend = parse_echo(body["backend"]["headers"])
    assert app.trace_id == inj.trace_id
    # The app's sidecar started a new trace (and a new x-request-id) for the outbound call.
    assert backend.trace_id != app.trace_id and backend.request_id != app.request_id
    original = wait_for_trace(
        mesh, str(app.trace_id), mesh.config.expected_spans_per_trace("/fanout-nopropagate")
    )
    fragment = wait_for_trace(mesh, str(backend.trace_id), 2)
    assert sorted(s["localEndpoint"]["serviceName"] for s in original) == sorted(
        [GATEWAY_SERVICE, GATEWAY_SERVICE, SIDECAR_SERVICE]
    )
    hops = by_hop(fragment)
    root = hops[(SIDECAR_SERVICE, "CLIENT")][0]
    assert "parentId" not in root  # the outbound span is the root of a new trace
    assert hops[(BACKEND_SERVICE, "SERVER")][0]["parentId"] == root["id"]


def test_fanout_with_sidecar_upstream_spans_and_shared_context(tmp_path: Path) -> None:
    """The span count follows the config (spawn_upstream_span on every sidecar HCM) and the
    analysis reads shared spans (server half reuses the client's id) as intact links."""
    m = _mesh(tmp_path, sidecar_spawn_upstream_span=True, shared_span_context=True)
    try:
        for mode in MODES:
            inj = encode(mode, random.Random(f"spawn-{mode}"))
            body = send(m, "/fanout", inj.headers)
            trace_id = parse_echo(body["headers"]).trace_id
            expected = m.config.expected_spans_per_trace("/fanout")
            spans = wait_for_trace(m, str(trace_id), expected)
            assert len(spans) == expected == 8, mode
            shape = TraceShape.from_spans(spans)
            assert shape.shared > 0
            verdict = judge_trace(shape, inj.span_id, m.config.hops("/fanout"))
            assert verdict.links_ok and verdict.missing_hops == (), (mode, shape)
    finally:
        m.stop()


# --- the run-level fold on real traces ---------------------------------------------------------


def _request(mesh: EmbeddedMesh, path: str, mode: HeaderMode, rng: random.Random) -> dict[str, Any]:
    """One ledger record, as loadgen.traffic.user writes it (plus the path)."""
    inj = encode(mode, rng)
    ts = time.time()
    start = time.perf_counter()
    body = send(mesh, path, inj.headers)
    view = parse_echo(body["headers"])
    return {
        "rid": uuid.uuid4().hex,
        "mode": mode.value,
        "path": path,
        "ts": ts,
        "latency_ms": (time.perf_counter() - start) * 1000.0,
        "status": 200,
        "inj_trace": inj.trace_id,
        "inj_span": inj.span_id,
        "inj_flag": inj.flag,
        "up_trace": view.trace_id,
        "up_span": view.span_id,
        "up_flag": view.flag,
        "up_xrid": view.request_id,
        # Not a ledger field: the trace id the backend saw, to check the fold's attribution.
        "backend_trace": parse_echo(body["backend"]["headers"]).trace_id,
    }


def _fold(mesh: EmbeddedMesh, ledger: list[dict[str, Any]]) -> dict[str, Any]:
    """Read back like `loadgen run` does: fetch every trace, search the window, fold."""
    config = mesh.config
    hops_by_path = {p: config.hops(p) for p in ("/fanout", "/fanout-nopropagate")}
    expected = {str(r["up_trace"]): config.expected_spans_per_trace(r["path"]) for r in ledger}
    with ZipkinBackend(mesh.collector_url) as backend:
        observations: dict[str, TraceObservation] = {}
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            fetched = backend.fetch_many(list(expected))
            observations = {
                tid: TraceObservation.from_fetched(f, config.tracing.run_id_tag, RUN_ID)
                for tid, f in fetched.items()
            }
            if all(
                o.status is FetchStatus.FOUND and o.span_count >= expected[t] for t, o in observations.items()
            ):
                break
            time.sleep(0.3)
        # The fragments are flushed with the same timer as the originals; one more interval.
        time.sleep(config.tracing.flush_interval_ms / 1000.0 + 0.5)
        start_us = int(min(r["ts"] for r in ledger) * 1e6)
        end_us = int(max(r["ts"] + r["latency_ms"] / 1000.0 for r in ledger) * 1e6) + 1
        hop_traces = search_hop_traces(backend, service=BACKEND_SERVICE, start_us=start_us, end_us=end_us)
    return fold_integrity(
        ledger,
        observations,
        config.hops("/headers"),
        hops_by_path=hops_by_path,
        hop_traces=hop_traces,
        run_id_tag=config.tracing.run_id_tag,
        run_id=RUN_ID,
        example_limit=len(ledger),
    )


def _split_pairs(ledger: list[dict[str, Any]]) -> list[list[str]]:
    return sorted(
        [str(r["up_trace"]), str(r["backend_trace"])]
        for r in ledger
        if r["path"].startswith("/fanout-nopropagate")
    )


def test_fold_reports_no_defect_for_propagating_fanout(tmp_path: Path) -> None:
    m = _mesh(tmp_path)
    try:
        rng = random.Random(1)
        ledger = [_request(m, "/fanout", MODES[i % 3], rng) for i in range(30)]
        out = _fold(m, ledger)
    finally:
        m.stop()
    assert out["traces"] == 30
    assert out["defects"]["fragmented"]["count"] == 0
    assert out["defects"]["fragmented"]["orphans"] == 0
    for name, defect in out["defects"].items():
        assert defect["count"] == 0, (name, defect)
    assert out["parent_links_ok"]["k"] == out["parent_links_ok"]["n"] == 30
    assert out["injected_kept_end_to_end"]["k"] == out["injected_kept_end_to_end"]["n"] == 20
    assert {svc: (p["k"], p["n"]) for svc, p in out["completeness"].items()} == {
        GATEWAY_SERVICE: (30, 30),
        SIDECAR_SERVICE: (30, 30),
        BACKEND_SERVICE: (30, 30),
    }
    assert out["roots"] == {"0": 20, "1": 10}


def test_fold_detects_fragmentation_only_where_the_app_drops_headers(tmp_path: Path) -> None:
    m = _mesh(tmp_path)
    try:
        rng = random.Random(2)
        ledger: list[dict[str, Any]] = []
        for i in range(36):
            # Interleaved, so fragments and intact traces share the time window.
            path = ("/fanout", "/fanout-nopropagate", "/fanout-nopropagate?keep=x-request-id")[i % 3]
            ledger.append(_request(m, path, MODES[(i // 3) % 3], rng))
        out = _fold(m, ledger)
    finally:
        m.stop()
    split = {str(r["up_trace"]) for r in ledger if r["path"].startswith("/fanout-nopropagate")}
    kept = {str(r["up_trace"]) for r in ledger if r["path"] == "/fanout"}
    frag = out["defects"]["fragmented"]
    assert frag["orphans"] == len(split) == 24
    assert frag["count"] == frag["attributed"] == 24 and frag["unattributed"] == 0
    # The app that kept x-request-id is matched by it; the others by time on the sidecar's clock.
    assert frag["attributed_by"] == {"x_request_id": 12, "time": 12}
    assert set(frag["examples"]) == split and not set(frag["examples"]) & kept
    # Each fragment is matched to the very request it was split from.
    assert sorted(frag["pairs"]) == _split_pairs(ledger)
    incomplete = out["defects"]["incomplete_hops"]
    assert incomplete["count"] == incomplete["explained_by_fragmentation"] == 24
    backend = out["completeness"][BACKEND_SERVICE]
    assert (backend["k"], backend["n"]) == (12, 36)
    for name in ("entry_parent_mismatch", "broken_parent_links", "extra_roots", "flattened_parent_links"):
        assert out["defects"][name]["count"] == 0, name


def test_fold_attributes_fragments_of_concurrent_requests(tmp_path: Path) -> None:
    """Eight requests in flight at once: the app sidecar's windows overlap, so attribution by
    time has to pick among several candidates for each fragment."""
    m = _mesh(tmp_path)
    try:
        rng = random.Random(3)
        jobs = [("/fanout-nopropagate" if i % 2 else "/fanout", MODES[i % 3]) for i in range(48)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            ledger = list(
                pool.map(lambda job: _request(m, job[0], job[1], random.Random(rng.random())), jobs)
            )
        out = _fold(m, ledger)
    finally:
        m.stop()
    frag = out["defects"]["fragmented"]
    assert frag["orphans"] == frag["count"] == frag["attributed"] == 24
    assert frag["attributed_by"] == {"x_request_id": 0, "time": 24}
    assert set(frag["examples"]) == {p[0] for p in _split_pairs(ledger)}
    # The pairing itself may swap fragments of overlapping requests; count how many are exact.
    exact = len({tuple(p) for p in frag["pairs"]} & {tuple(p) for p in _split_pairs(ledger)})
    assert exact >= 12, (exact, frag["pairs"])
