"""Bootstrap lint of Envoy's OpenTelemetry tracer (issue 12): the embedded mesh's bootstraps,
an istioctl listener dump in Istio's shape, and one mutation per rule. The verdicts follow what
Envoy 1.40 did with each mutation (loadgen/doctor/otel.py docstring)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadgen.doctor import CheckStatus, lint_bootstrap
from loadgen.doctor.bootstrap import collector_endpoints
from loadgen.mesh.tracer import OtlpProtocol, TracerFamily
from loadgen.stack.envoy import ProxySpec, TracingConfig, render_bootstrap

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"
P, W, F = CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL
Obj = dict[str, Any]


def _bootstrap(protocol: OtlpProtocol) -> Obj:
    spec = ProxySpec(
        "gateway", "istio-ingressgateway", "app", 18080, 19411, collector_grpc_port=14317, edge=True
    )
    return render_bootstrap(spec, TracingConfig(tracer=TracerFamily.OPENTELEMETRY, otlp_protocol=protocol))


def _provider(boot: Obj) -> Obj:
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    config: Obj = hcm["tracing"]["provider"]["typed_config"]
    return config


def _statuses(obj: Any) -> dict[str, CheckStatus]:
    return {c.name: c.status for c in lint_bootstrap(obj)}


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        (
            OtlpProtocol.GRPC,
            {"tracer": P, "otlp_export": P, "otlp_cluster": P, "service_name": P, "sampler": P},
        ),
        (
            OtlpProtocol.HTTP,
            {
                "tracer": P,
                "otlp_export": P,
                "otlp_cluster": P,
                "otlp_path": P,
                "service_name": P,
                "sampler": P,
            },
        ),
    ],
)
def test_the_embedded_meshs_opentelemetry_bootstraps_pass(
    protocol: OtlpProtocol, expected: dict[str, CheckStatus]
) -> None:
    # Two listeners (the gateway has one) would index the names; the gateway has exactly one tracer.
    checks = lint_bootstrap(_bootstrap(protocol))
    assert {c.name.removeprefix("bootstrap."): c.status for c in checks} == expected
    tracer = checks[0]
    assert tracer.data == {"family": "opentelemetry", "w3c": True}
    assert "honours traceparent, tracestate" in " ".join(tracer.details)
    assert checks[1].data["otlp_protocol"] == protocol.value


def test_an_istioctl_listener_dump_in_istios_shape_passes() -> None:
    dump = json.loads((FIXTURES / "istioctl-listener-otel-grpc.json").read_text())
    checks = {c.name: c for c in lint_bootstrap(dump)}
    assert {n: c.status for n, c in checks.items()} == {
        "bootstrap.tracer": P,
        "bootstrap.otlp_export": P,
        "bootstrap.otlp_cluster": P,
        "bootstrap.service_name": P,
        "bootstrap.sampler": P,
    }
    # A listener dump has no static clusters: the cluster comes from CDS, so HTTP/2 is a note.
    cluster = checks["bootstrap.otlp_cluster"]
    assert "outbound|4317||otel-collector" in cluster.summary and "from CDS" in cluster.summary
    assert "grpc-*" in cluster.details[0]
    assert collector_endpoints(dump) == []  # nothing for the Zipkin collector probe to follow


def _drop(field: str) -> Callable[[Obj], None]:
    return lambda boot: _provider(boot).pop(field)


def _set(field: str, value: Any) -> Callable[[Obj], None]:
    return lambda boot: _provider(boot).__setitem__(field, value)


def _uri(field: str, value: Any) -> Callable[[Obj], None]:
    def change(boot: Obj) -> None:
        uri = _provider(boot)["http_service"]["http_uri"]
        if value is None:
            uri.pop(field)
        else:
            uri[field] = value

    return change


def _no_http2(boot: Obj) -> None:
    for cluster in boot["static_resources"]["clusters"]:
        cluster.pop("typed_extension_protocol_options", None)


_AO = {"name": "envoy.tracers.opentelemetry.samplers.always_on", "typed_config": {}}
_ENV = {"name": "envoy.tracers.opentelemetry.resource_detectors.environment", "typed_config": {}}

MUTATIONS = [
    # (protocol, change, check, status, words in the summary)
    (OtlpProtocol.GRPC, _drop("grpc_service"), "otlp_export", F, "no exporter: Envoy refuses"),
    (OtlpProtocol.GRPC, _set("http_service", {"http_uri": {}}), "otlp_export", F, "together"),
    (OtlpProtocol.GRPC, _set("collector_cluster", "otlp"), "fields", F, "ZipkinConfig fields"),
    (OtlpProtocol.GRPC, lambda b: _provider(b)["grpc_service"]["envoy_grpc"].update(cluster_name="nope"),
     "otlp_cluster", F, "'nope' is not defined"),
    (OtlpProtocol.GRPC, _no_http2, "otlp_cluster", F, "does not speak HTTP/2"),
    (OtlpProtocol.HTTP, _uri("cluster", "nope"), "otlp_cluster", F, "'nope' is not defined"),
    (OtlpProtocol.HTTP, _uri("timeout", None), "otlp_export", F, "no timeout"),
    (OtlpProtocol.HTTP, _uri("uri", "http://127.0.0.1:19411"), "otlp_path", F, "has no path"),
    (OtlpProtocol.HTTP, _uri("uri", "http://127.0.0.1:19411/api/v2/spans"), "otlp_path", F, "Zipkin path"),
    (OtlpProtocol.HTTP, _uri("uri", "https://x.live.dynatrace.com/api/v2/otlp/v1/traces"), "otlp_path", P, "traces path"),
    (OtlpProtocol.HTTP, _uri("uri", "http://127.0.0.1:19411/otlp"), "otlp_path", W, "is not /v1/traces"),
    (OtlpProtocol.GRPC, _drop("service_name"), "service_name", W, "unknown_service:envoy"),
    (OtlpProtocol.GRPC, _set("sampler", _AO), "sampler", W, "samplers.always_on decides"),
    (OtlpProtocol.GRPC, _set("resource_detectors", [_ENV]), "resource_detectors", P, "environment"),
    (OtlpProtocol.GRPC, _set("resource_detectors", [{"name": "x.detector"}]), "resource_detectors", W, "x.detector"),
]  # fmt: skip


@pytest.mark.parametrize(("protocol", "change", "name", "status", "words"), MUTATIONS)
def test_each_field_rule(
    protocol: OtlpProtocol, change: Callable[[Obj], None], name: str, status: CheckStatus, words: str
) -> None:
    boot = copy.deepcopy(_bootstrap(protocol))
    change(boot)
    checks = {c.name: c for c in lint_bootstrap(boot)}
    check = checks[f"bootstrap.{name}"]
    assert check.status is status, check
    assert words in check.summary
    if status is not P:
        assert check.fix_hint


def test_camel_case_config_from_istioctl_is_read_like_snake_case() -> None:
    camel = {
        "tracing": {
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typedConfig": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "httpService": {
                        "httpUri": {"uri": "http://otel:4318/", "cluster": "otel", "timeout": "3s"}
                    },
                },
            }
        }
    }
    assert _statuses(camel) == {
        "bootstrap.tracer": P,
        "bootstrap.otlp_export": P,
        "bootstrap.otlp_cluster": P,
        "bootstrap.otlp_path": F,  # "/" is no OTLP path
        "bootstrap.service_name": W,
        "bootstrap.sampler": P,
    }


def test_an_envoy_config_dump_with_dynamic_listeners_is_found() -> None:
    listener = json.loads((FIXTURES / "istioctl-listener-otel-grpc.json").read_text())[0]
    dump = {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "dynamic_listeners": [{"name": listener["name"], "active_state": {"listener": listener}}],
            }
        ]
    }
    assert _statuses(dump)["bootstrap.tracer"] is P
    assert _statuses(dump)["bootstrap.otlp_export"] is P


def test_zipkin_tracer_reports_its_trace_context_option() -> None:
    zipkin: Obj = {
        "name": "envoy.tracers.zipkin",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
            "collector_cluster": "zipkin",
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
        },
    }
    plain = lint_bootstrap({"tracing": {"provider": zipkin}})[0]
    assert plain.data == {"family": "zipkin", "w3c": False}
    assert (
        "USE_B3 (default)" in plain.details[0]
        and "ignores (forwards untouched) traceparent" in plain.details[0]
    )
    w3c = copy.deepcopy(zipkin)
    w3c["typed_config"]["trace_context_option"] = "USE_B3_WITH_W3C_PROPAGATION"
    tracer = lint_bootstrap({"tracing": {"provider": w3c}})[0]
    assert tracer.data == {"family": "zipkin", "w3c": True}
    assert "honours X-B3-*, b3, traceparent" in tracer.details[0]
