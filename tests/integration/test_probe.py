"""The probe on real Envoy meshes that look unlike the default one: it must learn each shape and
behaviour from what the mesh does, not from the knobs (the knobs only build the mesh)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from loadgen.backends.zipkin import ZipkinBackend
from loadgen.mesh.profile import MeshProfile, RequestIdHandling, SpanShape
from loadgen.probe import PLAN, ProbeError, probe_mesh
from loadgen.stack.envoy import TraceContextOption, TracingConfig
from loadgen.stack.mesh import GATEWAY_SERVICE, SIDECAR_SERVICE, EmbeddedMesh, MeshConfig

pytestmark = pytest.mark.integration

DEFAULT = TracingConfig(sampling_percent=100.0)
PROBE_REQUESTS = sum(n for _k, n in PLAN)


def _probe(tmp: Path, tracing: TracingConfig) -> MeshProfile:
    mesh = EmbeddedMesh(tmp, MeshConfig(tracing=tracing, fanout=False)).start()
    try:
        with ZipkinBackend(mesh.collector_url) as backend:
            return probe_mesh(mesh.gateway_url, mesh.host_header, backend, "t-probe", seed=7, max_wait_s=20.0)
    finally:
        mesh.stop()


@pytest.fixture(scope="module")
def default_profile(tmp_path_factory: pytest.TempPathFactory) -> MeshProfile:
    return _probe(tmp_path_factory.mktemp("probe-default"), DEFAULT)


def test_default_mesh_profile(default_profile: MeshProfile) -> None:
    p = default_profile
    assert p.requests == PROBE_REQUESTS == 24 and p.answered == 24
    assert p.echo is True
    # Gateway SERVER + its upstream CLIENT span, sidecar SERVER: what ENVOY-NOTES measured.
    assert p.shape == SpanShape(
        ((GATEWAY_SERVICE, "SERVER", 1), (GATEWAY_SERVICE, "CLIENT", 1), (SIDECAR_SERVICE, "SERVER", 1))
    )
    assert p.traces_found == p.traces_sampled > 0
    assert p.request_id is RequestIdHandling.REPLACED
    assert p.b3 is True and p.w3c is False
    assert p.force_trace is not None and p.force_trace.marked == 0  # an external client: stripped
    assert p.client_trace_id is not None and p.client_trace_id.marked == p.client_trace_id.sent == 8
    assert p.run_id_tag == DEFAULT.run_id_tag
    assert p.reader == "zipkin" and p.not_found_form is True
    assert p.time_to_queryable_s is not None and 0 < p.time_to_queryable_s < 10


@pytest.mark.parametrize(
    ("name", "tracing", "check"),
    [
        (
            "one span, no run tag",
            replace(DEFAULT, sidecar=False, gateway_spawn_upstream_span=False, run_id_tag=""),
            lambda p: p.shape == SpanShape(((GATEWAY_SERVICE, "SERVER", 1),)) and p.run_id_tag is None,
        ),
        (
            "four spans, W3C, internal client",
            replace(
                DEFAULT,
                sidecar_spawn_upstream_span=True,
                trace_context_option=TraceContextOption.USE_B3_WITH_W3C_PROPAGATION,
                gateway_internal_cidrs=("127.0.0.1/32",),
            ),
            lambda p: (
                p.shape is not None
                and p.shape.total == 4
                and (SIDECAR_SERVICE, "CLIENT", 1) in p.shape.entries
                and p.w3c is True
                and p.force_trace is not None
                and p.force_trace.marked == p.force_trace.sent
            ),
        ),
        (
            "non-edge gateway",
            replace(DEFAULT, gateway_use_remote_address=False),
            lambda p: p.request_id is RequestIdHandling.KEPT_HONOURED,
        ),
        (
            "edge gateway preserving ids, no client forcing",
            replace(DEFAULT, gateway_preserve_external_request_id=True, client_sampling_percent=0.0),
            lambda p: (
                p.request_id is RequestIdHandling.KEPT_RESET
                and p.client_trace_id is not None
                and p.client_trace_id.marked == 0
            ),
        ),
        (
            "no header echo",
            replace(DEFAULT, echo_headers=False),
            # Without an echo the probe still reads back the B3-forced traces by the ids it sent,
            # and names no tracer (nothing upstream showed one).
            lambda p: (
                p.echo is False
                and p.request_id is None
                and p.shape is not None
                and p.shape.total == 3
                and p.tracer is None
                and p.tracer_headers == ()
            ),
        ),
    ],
)
def test_profile_of_unlike_meshes(tmp_path: Path, name: str, tracing: TracingConfig, check: object) -> None:
    profile = _probe(tmp_path, tracing)
    assert callable(check)
    assert check(profile), f"{name}: {profile}"


def test_probe_of_a_dead_gateway_is_one_clear_error(tmp_path: Path) -> None:
    mesh = EmbeddedMesh(tmp_path, MeshConfig(tracing=DEFAULT, fanout=False)).start()
    try:
        with (
            ZipkinBackend(mesh.collector_url) as backend,
            pytest.raises(ProbeError, match="did not answer any of 24 probe requests"),
        ):
            probe_mesh("http://127.0.0.1:9", mesh.host_header, backend, "t-probe", max_wait_s=1.0)
    finally:
        mesh.stop()
