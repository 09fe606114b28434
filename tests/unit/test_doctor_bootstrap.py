"""Bootstrap lint on the walkthrough's dumps and on shapes istioctl and Envoy produce."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.doctor import CheckStatus, collector_path_problem, lint_bootstrap
from loadgen.doctor.bootstrap import collector_endpoints
from loadgen.stack.envoy import ProxySpec, TracingConfig, render_bootstrap

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _statuses(obj: Any) -> dict[str, CheckStatus]:
    return {c.name: c.status for c in lint_bootstrap(obj)}


ALL_PASS = {
    "bootstrap.tracer": CheckStatus.PASS,
    "bootstrap.collector_cluster": CheckStatus.PASS,
    "bootstrap.collector_endpoint": CheckStatus.PASS,
    "bootstrap.collector_endpoint_version": CheckStatus.PASS,
    "bootstrap.trace_id_128bit": CheckStatus.PASS,
    "bootstrap.shared_span_context": CheckStatus.PASS,
}


def test_seed_good_tracing_object_passes() -> None:
    assert _statuses(_load("seed-bootstrap-tracing-good.json")) == ALL_PASS


@pytest.mark.parametrize("wrap", ["tracing", "bootstrap"])
def test_the_same_config_passes_inside_bootstrap_or_full_dump(wrap: str) -> None:
    tracing = _load("seed-bootstrap-tracing-good.json")
    obj = {"tracing": tracing} if wrap == "tracing" else {"bootstrap": {"tracing": tracing}}
    assert _statuses(obj) == ALL_PASS


def test_full_dump_checks_the_static_cluster() -> None:
    dump = _load("istioctl-bootstrap-full-dump.json")
    checks = {c.name: c for c in lint_bootstrap(dump)}
    assert {n: c.status for n, c in checks.items()} == ALL_PASS
    assert "defined" in checks["bootstrap.collector_cluster"].summary
    broken = copy.deepcopy(dump)
    broken["bootstrap"]["staticResources"]["clusters"] = [
        c for c in broken["bootstrap"]["staticResources"]["clusters"] if c["name"] != "zipkin"
    ]
    cluster = {c.name: c for c in lint_bootstrap(broken)}["bootstrap.collector_cluster"]
    assert cluster.status is CheckStatus.FAIL
    assert "'zipkin' is not one of the static clusters" in cluster.summary


def test_seed_broken_dump_fails_on_path_and_format_and_warns_on_shared_context() -> None:
    checks = {c.name: c for c in lint_bootstrap(_load("seed-bootstrap-tracing-broken.json"))}
    endpoint = checks["bootstrap.collector_endpoint"]
    assert endpoint.status is CheckStatus.FAIL
    assert "/zipkin/api/v1/spans is a Zipkin v1 path" in endpoint.summary
    assert "/api/v2/spans" in endpoint.summary and "/zipkin prefix" in endpoint.summary
    assert endpoint.fix_hint == "use collectorEndpoint /api/v2/spans with collectorEndpointVersion HTTP_JSON"
    version = checks["bootstrap.collector_endpoint_version"]
    assert version.status is CheckStatus.FAIL and "format mismatch" in version.summary
    # istioctl printed traceId128bit as a real boolean: fine. The override dropped sharedSpanContext.
    assert checks["bootstrap.trace_id_128bit"].status is CheckStatus.PASS
    shared = checks["bootstrap.shared_span_context"]
    assert shared.status is CheckStatus.WARN and "default true" in shared.summary


def test_seed_configmap_override_flags_the_string_true() -> None:
    checks = {c.name: c for c in lint_bootstrap(_load("seed-custom-bootstrap-override.json"))}
    trace_id = checks["bootstrap.trace_id_128bit"]
    assert trace_id.status is CheckStatus.WARN
    assert "the string 'true'" in trace_id.summary and "reads it as true" in trace_id.summary
    assert checks["bootstrap.collector_endpoint"].status is CheckStatus.FAIL
    assert collector_endpoints(_load("seed-custom-bootstrap-override.json")) == ["/zipkin/api/v1/spans"]


def test_snake_case_envoy_bootstrap_of_the_embedded_mesh_passes() -> None:
    spec = ProxySpec(
        role="gateway", service_name="gw", upstream_cluster="up", upstream_port=1, collector_port=2
    )
    checks = lint_bootstrap(render_bootstrap(spec, TracingConfig()))
    assert {c.name: c.status for c in checks} == ALL_PASS
    assert "tracing.provider" in checks[0].summary


def _zipkin(**fields: Any) -> dict[str, Any]:
    config = {
        "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
        "collectorCluster": "zipkin",
        "collectorEndpoint": "/api/v2/spans",
        "traceId128bit": True,
        "sharedSpanContext": False,
        "collectorEndpointVersion": "HTTP_JSON",
    }
    for key, value in fields.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    return {"http": {"name": "envoy.tracers.zipkin", "typedConfig": config}}


@pytest.mark.parametrize(
    ("fields", "name", "status", "text"),
    [
        ({"collectorEndpointVersion": None}, "collector_endpoint_version", CheckStatus.FAIL, "unset"),
        ({"collectorEndpointVersion": "GRPC"}, "collector_endpoint_version", CheckStatus.FAIL, "aborts"),
        (
            {"collectorEndpointVersion": "HTTP_JSON_V1"},
            "collector_endpoint_version",
            CheckStatus.FAIL,
            "removed",
        ),
        ({"collectorEndpointVersion": 2}, "collector_endpoint_version", CheckStatus.PASS, "HTTP_PROTO"),
        ({"collectorEndpoint": "/api/v1/spans"}, "collector_endpoint", CheckStatus.FAIL, "v1 path"),
        ({"collectorEndpoint": "/zipkin/api/v2/spans"}, "collector_endpoint", CheckStatus.WARN, "prefix"),
        (
            {"collectorEndpoint": "/spans"},
            "collector_endpoint",
            CheckStatus.WARN,
            "not a Zipkin span endpoint",
        ),
        ({"collectorEndpoint": None}, "collector_endpoint", CheckStatus.FAIL, "missing"),
        ({"collectorCluster": None}, "collector_cluster", CheckStatus.FAIL, "missing"),
        ({"traceId128bit": False}, "trace_id_128bit", CheckStatus.WARN, "64-bit"),
        ({"traceId128bit": None}, "trace_id_128bit", CheckStatus.WARN, "64-bit"),
        ({"traceId128bit": "false"}, "trace_id_128bit", CheckStatus.WARN, "truncated to 64 bits"),
        ({"sharedSpanContext": True}, "shared_span_context", CheckStatus.WARN, "parent links change"),
    ],
)
def test_single_field_rules(fields: dict[str, Any], name: str, status: CheckStatus, text: str) -> None:
    check = {c.name: c for c in lint_bootstrap(_zipkin(**fields))}[f"bootstrap.{name}"]
    assert check.status is status
    assert text in check.summary


def test_listener_tracer_with_a_cds_cluster_only_warns() -> None:
    listener_dump = {
        "static_resources": {"clusters": [{"name": "agent"}]},
        "listeners": [
            {"filter_chains": [{"filters": [{"typed_config": {"tracing": {"provider": _zipkin()["http"]}}}]}]}
        ],
    }
    check = {c.name: c for c in lint_bootstrap(listener_dump)}["bootstrap.collector_cluster"]
    assert check.status is CheckStatus.WARN
    assert "istioctl proxy-config cluster" in check.fix_hint


def test_no_tracer_and_other_tracers() -> None:
    (only,) = lint_bootstrap({"bootstrap": {"node": {"id": "x"}}})
    assert only.name == "bootstrap.tracing" and only.status is CheckStatus.WARN
    datadog = {"tracing": {"http": {"name": "envoy.tracers.datadog", "typedConfig": {"serviceName": "x"}}}}
    (check,) = lint_bootstrap(datadog)
    assert check.status is CheckStatus.WARN and "neither Zipkin nor OpenTelemetry" in check.summary
    # An OpenTelemetry tracer is linted now: the Zipkin checks are not run on it.
    otel = {"tracing": {"http": {"name": "envoy.tracers.opentelemetry", "typedConfig": {"serviceName": "x"}}}}
    names = [c.name for c in lint_bootstrap(otel)]
    assert names[0] == "bootstrap.tracer" and "bootstrap.otlp_export" in names
    assert "bootstrap.collector_endpoint" not in names


def test_two_tracers_get_indexed_names() -> None:
    obj = {"a": _zipkin()["http"], "b": _zipkin(collectorEndpoint="/api/v1/spans")["http"]}
    statuses = {c.name: c.status for c in lint_bootstrap(obj)}
    assert statuses["bootstrap[0].collector_endpoint"] is CheckStatus.PASS
    assert statuses["bootstrap[1].collector_endpoint"] is CheckStatus.FAIL


def test_collector_path_problem_pass_only_for_v2() -> None:
    assert collector_path_problem("/api/v2/spans")[0] is CheckStatus.PASS
    status, why, hint = collector_path_problem("/zipkin/api/v1/spans")
    assert status is CheckStatus.FAIL and "/api/v2/spans" in hint
