"""Each header mode's written-down expectation (MODE_SPECS) against the real Envoy gateway +
sidecar, request by request, without Locust: what the upstream saw and what the collector got."""

from __future__ import annotations

import random

import httpx
import pytest

from loadgen.mesh.echo import parse_echo
from loadgen.mesh.encode import encode
from loadgen.mesh.expect import Decision
from loadgen.mesh.headers import RUN_ID_HEADER
from loadgen.mesh.modes import LEGACY_MODES, MODE_SPECS, HeaderMode
from loadgen.stack.mesh import GATEWAY_SERVICE, SIDECAR_SERVICE, EmbeddedMesh

from .conftest import wait_for_trace

pytestmark = pytest.mark.integration


def send(mesh: EmbeddedMesh, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(
        f"{mesh.gateway_url}/headers",
        headers={"Host": mesh.host_header, RUN_ID_HEADER: "modes-test", **headers},
        timeout=5.0,
    )


# The seven original modes; every mode under several mesh configurations is in test_header_matrix.py.
@pytest.mark.parametrize("mode", LEGACY_MODES)
@pytest.mark.parametrize("mesh_name", ["mesh100", "mesh0"])
def test_upstream_sees_the_expected_decision_and_ids(
    mode: HeaderMode, mesh_name: str, request: pytest.FixtureRequest
) -> None:
    mesh: EmbeddedMesh = request.getfixturevalue(mesh_name)
    rng = random.Random(f"{mode}-{mesh_name}")
    spec = MODE_SPECS[mode]
    proxy_decision = mesh.config.tracing.sampling_percent == 100.0
    for _ in range(5):
        inj = encode(mode, rng)
        resp = send(mesh, inj.headers)
        assert resp.status_code == 200
        view = parse_echo(resp.json()["headers"])
        want = {
            Decision.FORCED_SAMPLED: True,
            Decision.FORCED_NOT_SAMPLED: False,
            Decision.PROXY: proxy_decision,
        }[spec.decision]
        assert view.sampled is want, (mode, resp.json())
        assert view.trace_id is not None and len(view.trace_id) == 32
        if spec.injects_ids:
            # Injected trace ids survive gateway and sidecar unchanged; the span id is new.
            assert view.trace_id == inj.trace_id
            assert view.span_id != inj.span_id


def test_sampled_trace_has_gateway_and_sidecar_spans_with_run_tag(mesh100: EmbeddedMesh) -> None:
    inj = encode(HeaderMode.B3_MULTI_SAMPLED, random.Random(7))
    assert send(mesh100, inj.headers).status_code == 200
    expected = mesh100.config.tracing.expected_spans_per_trace()
    spans = wait_for_trace(mesh100, str(inj.trace_id), expected)
    assert len(spans) == expected
    services = sorted(s["localEndpoint"]["serviceName"] for s in spans)
    # gateway SERVER + gateway CLIENT (spawn_upstream_span) + sidecar SERVER
    assert services == sorted([GATEWAY_SERVICE, GATEWAY_SERVICE, SIDECAR_SERVICE])
    by_kind = {(s["localEndpoint"]["serviceName"], s["kind"]): s for s in spans}
    gw_server = by_kind[(GATEWAY_SERVICE, "SERVER")]
    gw_client = by_kind[(GATEWAY_SERVICE, "CLIENT")]
    sidecar = by_kind[(SIDECAR_SERVICE, "SERVER")]
    # Parent chain: injected span -> gateway SERVER -> gateway CLIENT -> sidecar SERVER.
    assert gw_server["parentId"] == inj.span_id
    assert gw_client["parentId"] == gw_server["id"]
    assert sidecar["parentId"] == gw_client["id"]
    tag = mesh100.config.tracing.run_id_tag
    assert gw_server["tags"][tag] == "modes-test"
    assert sidecar["tags"][tag] == "modes-test"


def test_not_sampled_request_leaves_no_span(mesh100: EmbeddedMesh) -> None:
    rng = random.Random(11)
    unsampled = encode(HeaderMode.B3_MULTI_NOT_SAMPLED, rng)
    sampled = encode(HeaderMode.B3_MULTI_SAMPLED, rng)
    assert send(mesh100, unsampled.headers).status_code == 200
    assert send(mesh100, sampled.headers).status_code == 200
    # Once the later sampled trace has arrived, the earlier unsampled one would have too.
    assert wait_for_trace(mesh100, str(sampled.trace_id), mesh100.config.tracing.expected_spans_per_trace())
    assert httpx.get(f"{mesh100.collector_url}/api/v2/trace/{unsampled.trace_id}").status_code == 404


def test_gateway_replaces_client_request_id_at_the_edge(mesh100: EmbeddedMesh) -> None:
    client_id = "00000000-1111-4222-8333-444444444444"
    resp = send(mesh100, {"x-request-id": client_id})
    echoed = parse_echo(resp.json()["headers"]).request_id
    assert echoed and echoed != client_id  # Istio's gateway: use_remote_address, no preserve
