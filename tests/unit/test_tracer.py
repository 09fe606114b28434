"""Tracer families (loadgen.mesh.tracer): where each reads the sampled fact from an upstream echo,
and the OpenTelemetry-tracer bootstraps of the embedded mesh (issue 12).

The echo cases are what the real Envoy 1.40 forwarded (tests/integration/test_header_matrix.py,
/work/notes/H-tracer.md): under the OpenTelemetry tracer the client's B3 headers arrive untouched
and x-request-id character 14 can read `9` while the forwarded traceparent says 00."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.mesh.echo import parse_echo, parse_traceparent
from loadgen.mesh.tracer import (
    TRACERS,
    OtlpProtocol,
    TracerFamily,
    detect_tracer,
    propagation_headers,
    sampled_fact,
    traceparent_flag,
)
from loadgen.stack.envoy import ProxySpec, TracingConfig, render_bootstrap

OTEL, ZIPKIN = TracerFamily.OPENTELEMETRY, TracerFamily.ZIPKIN
TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
# Envoy marked this id sampled (char 14 `9`), yet it forwarded traceparent ...-00 (a client's 00).
XRID_9 = "5a6c1f9e-0d33-9425-9f76-fa53ac62a12d"
ECHO_VETOED = {
    "X-B3-TraceId": "a" * 32, "X-B3-SpanId": "b" * 16, "X-B3-Sampled": "1",  # the client's, untouched
    "traceparent": f"00-{TRACE}-{SPAN}-00", "x-request-id": XRID_9,
}  # fmt: skip


def test_zipkin_reads_b3_and_the_opentelemetry_tracer_reads_traceparent() -> None:
    z = parse_echo(ECHO_VETOED)
    assert (z.trace_id, z.flag, z.sampled) == ("a" * 32, "1", True)
    o = parse_echo(ECHO_VETOED, OTEL)
    assert (o.trace_id, o.span_id, o.flag, o.sampled) == (TRACE, SPAN, "0", False)
    assert o.request_id == XRID_9 and o.tracer is OTEL


def test_character_14_is_no_fallback_under_the_opentelemetry_tracer() -> None:
    echo = {"x-request-id": XRID_9}
    assert parse_echo(echo).sampled is True  # zipkin: Envoy's mark
    assert parse_echo(echo, OTEL).sampled is None
    assert sampled_fact(OTEL, None, XRID_9) is None and sampled_fact(ZIPKIN, None, XRID_9) is True
    assert sampled_fact(OTEL, "1", None) is True and sampled_fact(OTEL, "0", XRID_9) is False


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id: invalid in W3C
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        "garbage",
        f"00-{TRACE[:-1]}-{SPAN}-01",
    ],
)
def test_an_invalid_traceparent_is_no_context(value: str) -> None:
    assert parse_traceparent(value) is None
    view = parse_echo({"traceparent": value, "x-request-id": XRID_9}, OTEL)
    assert (view.trace_id, view.flag, view.sampled) == (None, None, None)


@pytest.mark.parametrize(
    ("value", "flag"), [("00-x-y-01", "1"), ("00-x-y-03", "1"), ("00-x-y-02", "0"), ("x", None)]
)
def test_traceparent_flag(value: str, flag: str | None) -> None:
    assert traceparent_flag(value) == flag


def test_the_families_honour_disjoint_headers() -> None:
    assert "traceparent" in TRACERS[OTEL].honours and "x-b3-sampled" in TRACERS[OTEL].ignores
    assert "x-b3-sampled" in TRACERS[ZIPKIN].honours
    assert not TRACERS[OTEL].reads_request_id_mark and TRACERS[ZIPKIN].reads_request_id_mark


def _provider(tracing: TracingConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = ProxySpec("gateway", "istio-ingressgateway", "up", 8000, 9411, collector_grpc_port=4317, edge=True)
    boot = render_bootstrap(spec, tracing)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["tracing"], boot


def test_opentelemetry_bootstrap_over_grpc() -> None:
    tracing, boot = _provider(
        TracingConfig(sampling_percent=1.0, tracer=OTEL, otlp_protocol=OtlpProtocol.GRPC)
    )
    provider = tracing["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    config = provider["typed_config"]
    assert config["@type"] == "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
    assert config["service_name"] == "istio-ingressgateway"
    assert (
        config["grpc_service"]["envoy_grpc"]["cluster_name"] == "otlp-grpc" and "http_service" not in config
    )
    assert tracing["random_sampling"] == {"value": 1.0}
    assert tracing["custom_tags"][0]["request_header"]["name"] == "x-loadgen-run-id"
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "otlp-grpc")
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"]["port_value"] == 4317
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]  # gRPC needs HTTP/2
    runtime = boot["layered_runtime"]["layers"][0]["static_layer"]
    assert set(runtime) == {
        "tracing.opentelemetry.flush_interval_ms",
        "tracing.opentelemetry.min_flush_spans",
    }


def test_opentelemetry_bootstrap_over_http() -> None:
    tracing, boot = _provider(TracingConfig(tracer=OTEL, otlp_protocol=OtlpProtocol.HTTP))
    config = tracing["provider"]["typed_config"]
    assert "grpc_service" not in config
    assert config["http_service"]["http_uri"] == {
        "uri": "http://127.0.0.1:9411/v1/traces", "cluster": "otlp", "timeout": "5s"
    }  # fmt: skip
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["up", "otlp"]


def test_the_zipkin_bootstrap_is_unchanged_by_default() -> None:
    tracing, boot = _provider(TracingConfig())
    assert tracing["provider"]["name"] == "envoy.tracers.zipkin"
    assert tracing["provider"]["typed_config"]["collector_cluster"] == "zipkin"
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == ["up", "zipkin"]
    assert set(boot["layered_runtime"]["layers"][0]["static_layer"]) == {
        "tracing.zipkin.flush_interval_ms", "tracing.zipkin.min_flush_spans"
    }  # fmt: skip
    assert TracingConfig(tracer=OTEL).expectation_context().tracer is OTEL


def test_the_tracer_is_told_by_the_context_headers_envoy_added() -> None:
    # Zipkin adds B3 to any request; the OpenTelemetry tracer a traceparent and no B3.
    assert detect_tracer({}, {"X-B3-TraceId": "a" * 32, "x-request-id": XRID_9}) is ZIPKIN
    assert detect_tracer({}, {"traceparent": f"00-{TRACE}-{SPAN}-01"}) is OTEL
    # The client's own B3 arriving untouched tells nothing; Envoy's traceparent does.
    b3 = {"X-B3-TraceId": "a" * 32, "X-B3-SpanId": "b" * 16}
    assert detect_tracer(b3, {**b3, "traceparent": f"00-{TRACE}-{SPAN}-00"}) is OTEL
    # Zipkin under W3C propagation rewrites a sent traceparent and adds B3.
    sent_tp = {"traceparent": f"00-{TRACE}-{SPAN}-01"}
    assert detect_tracer(sent_tp, {"traceparent": "x", "x-b3-sampled": "1"}) is ZIPKIN
    assert detect_tracer(sent_tp, sent_tp) is None and detect_tracer({}, {}) is None


def test_doctor_checks_describe_the_same_headers_for_a_tracer() -> None:
    # Zipkin under USE_B3_WITH_W3C_PROPAGATION reads the W3C context (traceparent + tracestate)
    # as well as B3; under USE_B3 it forwards both W3C headers untouched (ENVOY-NOTES, "W3C").
    honoured, ignored = propagation_headers(TracerFamily.ZIPKIN, w3c=True)
    assert {"traceparent", "tracestate", "b3", "x-b3-sampled"} <= set(honoured) and ignored == ()
    honoured, ignored = propagation_headers(TracerFamily.ZIPKIN)
    assert "traceparent" not in honoured and set(ignored) == {"traceparent", "tracestate"}
    # The bootstrap lint and the mesh.tracer summary word it the same way.
    from loadgen.doctor.bootstrap import _honours
    from loadgen.doctor.headers import _describe

    for family, w3c in (
        (TracerFamily.ZIPKIN, True),
        (TracerFamily.ZIPKIN, False),
        (TracerFamily.OPENTELEMETRY, False),
    ):
        said, ignores = _describe(family, w3c)
        assert _honours(family, w3c) == f"honours {said}; ignores (forwards untouched) {ignores}"
