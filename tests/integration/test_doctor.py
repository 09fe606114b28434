"""`loadgen doctor` against the real embedded mesh (real Envoy gateway + sidecar, echo upstream,
Zipkin-compatible collector on 127.0.0.1 free ports)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadgen.doctor import CheckStatus, check_gateway, run_doctor
from loadgen.doctor.collector import SpanFormat, fidelity_problems, probe_spans
from loadgen.mesh.ids import new_trace_id
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"
V2_HINT = "use collectorEndpoint /api/v2/spans with collectorEndpointVersion HTTP_JSON"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMesh]:
    started = EmbeddedMesh(tmp_path_factory.mktemp("doctor"), MeshConfig()).start()
    try:
        yield started
    finally:
        started.stop()


def test_everything_passes_with_the_right_collector_path(mesh: EmbeddedMesh) -> None:
    assert mesh.gateway is not None
    report = run_doctor(
        mesh.gateway_url,
        mesh.host_header,
        mesh.collector_url,
        f"zipkin:{mesh.collector_url}",
        bootstrap=str(mesh.gateway.config_path),
        istio_files=[FIXTURES / "seed-istiooperator-tracing.yaml"],
        settle_s=2.0,
    )
    text = "\n".join(report.render_text())
    assert report.exit_code == 0, text
    assert {c.status for c in report.checks} == {CheckStatus.PASS}, text
    names = [c.name for c in report.checks]
    for name in (
        "bootstrap.collector_endpoint",
        "istio.sampling",
        "backend.query",
        "gateway.reachable",
        "gateway.routing",
        "gateway.echo",
        "gateway.x_request_id",
        "gateway.b3",
        "collector.endpoint",
        "collector.readback",
        "mesh.trace",
    ):
        assert name in names, text
    trace = report.get("mesh.trace")
    assert trace is not None
    # Gateway SERVER + gateway CLIENT (spawn_upstream_span) + sidecar SERVER.
    assert trace.data["services"] == ["httpbin.istioinaction", "istio-ingressgateway"], text
    assert trace.data["spans"] == 3, text
    sampling = report.get("istio.sampling")
    assert sampling is not None and sampling.data["percent"] == 100.0
    json.dumps(report.to_dict())  # the --json form serializes


def test_broken_collector_path_fails_and_names_the_v2_path(mesh: EmbeddedMesh) -> None:
    report = run_doctor(
        collector=f"{mesh.collector_url}/zipkin/api/v1/spans", backend=f"zipkin:{mesh.collector_url}"
    )
    endpoint = report.get("collector.endpoint")
    assert endpoint is not None
    assert endpoint.status is CheckStatus.FAIL
    assert endpoint.fix_hint.startswith(V2_HINT)
    assert f"{mesh.collector_url}/api/v2/spans was accepted and read back" in endpoint.fix_hint
    assert "HTTP 404" in endpoint.summary
    assert report.exit_code == 1


def test_the_probe_follows_the_bootstrap_endpoint_when_the_url_has_no_path(mesh: EmbeddedMesh) -> None:
    # The walkthrough's override: Envoy would post to /zipkin/api/v1/spans on this collector.
    report = run_doctor(
        collector=mesh.collector_url,
        backend=f"zipkin:{mesh.collector_url}",
        bootstrap=str(FIXTURES / "seed-custom-bootstrap-override.json"),
    )
    endpoint = report.get("collector.endpoint")
    assert endpoint is not None and endpoint.status is CheckStatus.FAIL
    assert endpoint.summary.startswith("POST /zipkin/api/v1/spans")
    assert endpoint.data["working_endpoint"] == "/api/v2/spans"
    lint = report.get("bootstrap.collector_endpoint")
    assert lint is not None and lint.status is CheckStatus.FAIL


def test_unreachable_gateway_fails_with_a_hint() -> None:
    report = run_doctor("http://127.0.0.1:9", "httpbin.istioinaction.io")
    reachable = report.get("gateway.reachable")
    assert reachable is not None
    assert reachable.status is CheckStatus.FAIL
    assert "ConnectError" in reachable.summary
    assert "--gateway" in reachable.fix_hint and "port-forward" in reachable.fix_hint
    routing = report.get("gateway.routing")
    assert routing is not None and routing.status is CheckStatus.SKIP
    assert report.exit_code == 1


def test_embedded_edge_gateway_regenerates_x_request_id(mesh: EmbeddedMesh) -> None:
    checks = {c.name: c for c in check_gateway(mesh.gateway_url, mesh.host_header)}
    xrid = checks["gateway.x_request_id"]
    assert xrid.status is CheckStatus.PASS
    assert xrid.data["x_request_id"] == "regenerated"
    assert xrid.data["echoed"] != xrid.data["sent"]
    assert xrid.data["decision"] == "sampled"  # the embedded mesh samples 100 %
    assert "REGENERATES" in xrid.summary


def test_unknown_host_is_no_route(mesh: EmbeddedMesh) -> None:
    checks = {c.name: c for c in check_gateway(mesh.gateway_url, "not-routed.example")}
    assert checks["gateway.reachable"].status is CheckStatus.PASS
    routing = checks["gateway.routing"]
    assert routing.status is CheckStatus.FAIL and "NR" in routing.summary


def test_embedded_collector_accepts_a_v1_body_at_the_v2_path_but_drops_its_fields(mesh: EmbeddedMesh) -> None:
    # What the probe's fidelity check exists for: a 202 alone does not prove the format matched.
    trace_id = new_trace_id(random.Random())
    body = probe_spans(SpanFormat.V1_JSON, trace_id, int(time.time() * 1_000_000))
    assert httpx.post(f"{mesh.collector_url}/api/v2/spans", json=body).status_code == 202
    stored = httpx.get(f"{mesh.collector_url}/api/v2/trace/{trace_id}").json()
    assert fidelity_problems(stored) == [
        "service name 'loadgen-doctor' lost (got none)",
        "tag loadgen.probe=1 lost",
    ]


def test_doctor_probes_and_prints_what_to_change(tmp_path: Path) -> None:
    """Issue 9: doctor runs the run's own probe and names the settings that limit a run, here
    a non-edge gateway (keeps client x-request-ids) whose Envoys add no run-id tag."""
    import subprocess
    import sys

    from loadgen.stack.envoy import TracingConfig

    tracing = TracingConfig(run_id_tag="", gateway_use_remote_address=False)
    started = EmbeddedMesh(tmp_path, MeshConfig(tracing=tracing, fanout=False)).start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "loadgen.cli", "doctor", "--gateway", started.gateway_url,
             "--host", started.host_header, "--backend", f"zipkin:{started.collector_url}", "--json"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        started.stop()
    assert proc.stdout.strip(), proc.stderr
    body = json.loads(proc.stdout)
    assert body["profile"]["request_id"] == "kept_honoured"
    assert body["profile"]["run_id_tag"] is None
    changes = " ".join(body["changes"])
    assert "customTags" in changes and "x-loadgen-run-id" in changes
    assert "keeps client x-request-ids" in changes
    assert "Traceback" not in proc.stderr


def test_doctor_on_an_opentelemetry_tracer_mesh(tmp_path: Path) -> None:
    """Issue 12: the real gateway under envoy.tracers.opentelemetry (OTLP/gRPC into the collector):
    doctor names the tracer from the gateway and the bootstrap, forces a trace with traceparent +
    x-client-trace-id and finds it, and warns that the default mix is mostly B3."""
    from loadgen.mesh.tracer import TracerFamily
    from loadgen.stack.envoy import TracingConfig

    tracing = TracingConfig(tracer=TracerFamily.OPENTELEMETRY, flush_interval_ms=200, min_flush_spans=1)
    started = EmbeddedMesh(tmp_path, MeshConfig(tracing=tracing, fanout=False)).start()
    try:
        assert started.gateway is not None
        begun = time.monotonic()
        report = run_doctor(
            started.gateway_url,
            started.host_header,
            backend=f"zipkin:{started.collector_url}",
            bootstrap=str(started.gateway.config_path),
            settle_s=1.0,
            trace_timeout_s=8.0,
        )
        took = time.monotonic() - begun
    finally:
        started.stop()
    text = "\n".join(report.render_text())
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["gateway.tracer"] is CheckStatus.PASS, text
    assert statuses["gateway.b3"] is CheckStatus.SKIP, text
    assert statuses["gateway.traceparent"] is CheckStatus.PASS, text
    assert statuses["bootstrap.otlp_export"] is CheckStatus.PASS, text
    assert statuses["bootstrap.otlp_cluster"] is CheckStatus.PASS, text
    tracer = report.get("mesh.tracer")
    assert tracer is not None and tracer.status is CheckStatus.PASS, text
    assert tracer.data["family"] == "opentelemetry" and "gateway, bootstrap" in tracer.summary
    mix = report.get("mesh.header_mix")
    assert mix is not None and mix.status is CheckStatus.WARN
    assert mix.fix_hint == "--mix none=7,w3c_sampled=2,w3c_not_sampled=1"
    trace = report.get("mesh.trace")
    assert trace is not None and trace.status is CheckStatus.PASS, text
    assert trace.data["services"] == ["httpbin.istioinaction", "istio-ingressgateway"], text
    assert report.exit_code == 0, text
    assert took < 10.0, took
