"""The tracing provider an Istio workload gets (Istio's mergeTracing) and the doctor's checks of
the zipkin and opentelemetry providers (issue 12), on YAML written after Istio's API."""

from __future__ import annotations

from pathlib import Path

from loadgen.doctor import Check, CheckStatus
from loadgen.doctor.istio import check_istio_tracing, provider_checks
from loadgen.mesh.istio_config import WorkloadMode, parse_istio_yaml
from loadgen.mesh.istio_providers import tracing_provider

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"
GATEWAY = {"istio": "ingressgateway"}
P, W, F = CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL

MESH = """
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    defaultProviders:
      tracing: [zipkin]
    extensionProviders:
    - name: zipkin
      zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
    - name: otel
      opentelemetry:
        service: otel-collector.observability.svc.cluster.local
        port: 4317
    - name: prom
      prometheus: {}
"""


def _telemetry(namespace: str, entry: str, selector: str = "") -> str:
    return f"""
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: t-{namespace}, namespace: {namespace}}}
spec:
{selector}  tracing:
  - {entry}
"""


def _checks(
    yaml_text: str, namespace: str = "istio-system", labels: dict[str, str] | None = None
) -> dict[str, Check]:
    choice = tracing_provider(parse_istio_yaml(yaml_text), namespace, labels or GATEWAY, WorkloadMode.CLIENT)
    return {c.name: c for c in provider_checks(choice)}


def test_the_fixture_selects_the_opentelemetry_provider() -> None:
    checks = {
        c.name: c
        for c in check_istio_tracing(
            [FIXTURES / "istio-otel-provider.yaml"], "istio-system", GATEWAY, WorkloadMode.CLIENT
        )
    }
    assert {n: c.status for n, c in checks.items()} == {
        "istio.provider": P,
        "istio.otel.protocol": P,
        "istio.otel.resource_detectors": P,
        "istio.custom_tags": P,
    }
    provider = checks["istio.provider"]
    assert provider.data == {
        "family": "opentelemetry",
        "w3c": True,
        "provider": "otel-tracing",
        "kind": "opentelemetry",
    }
    assert "Telemetry (root namespace)" in provider.summary
    assert checks["istio.otel.protocol"].data == {"otlp_protocol": "grpc"}
    assert checks["istio.custom_tags"].data == {"run_id_tag": "loadgen.run_id"}


def test_default_provider_then_more_specific_telemetry_levels_override() -> None:
    only_default = tracing_provider(parse_istio_yaml(MESH), "istio-system", GATEWAY, WorkloadMode.CLIENT)
    assert only_default.name == "zipkin" and "defaultProviders.tracing" in only_default.chosen_by
    text = (
        MESH
        + _telemetry("istio-system", "randomSamplingPercentage: 5")
        + _telemetry("shop", "providers: [{name: otel}]", "  selector: {matchLabels: {app: web}}\n")
    )
    # The root level names no provider: the default stays; the workload level picks otel.
    root = tracing_provider(parse_istio_yaml(text), "istio-system", GATEWAY, WorkloadMode.CLIENT)
    assert root.name == "zipkin"
    web = tracing_provider(parse_istio_yaml(text), "shop", {"app": "web"}, WorkloadMode.SERVER)
    assert web.name == "otel" and web.provider is not None and web.provider.kind == "opentelemetry"
    assert "Telemetry (workload)" in web.chosen_by
    # A mode-specific entry applies only to that side.
    server_only = MESH + _telemetry("istio-system", "{match: {mode: SERVER}, providers: [{name: otel}]}")
    assert (
        tracing_provider(parse_istio_yaml(server_only), "istio-system", GATEWAY, WorkloadMode.CLIENT).name
        == "zipkin"
    )


def test_provider_problems() -> None:
    unknown = _checks(MESH + _telemetry("istio-system", "providers: [{name: tempo}]"))
    assert unknown["istio.provider"].status is W and "'tempo'" in unknown["istio.provider"].summary
    metrics = _checks(MESH + _telemetry("istio-system", "providers: [{name: prom}]"))
    assert (
        metrics["istio.provider"].status is F
        and "not a tracing provider" in metrics["istio.provider"].summary
    )
    no_tags = _checks(MESH + _telemetry("istio-system", "providers: [{name: otel}]"))
    assert (
        no_tags["istio.custom_tags"].status is W
        and "x-loadgen-run-id" in no_tags["istio.custom_tags"].fix_hint
    )
    literal = _checks(MESH + _telemetry("istio-system", "customTags: {env: {literal: {value: prod}}}"))
    assert literal["istio.custom_tags"].status is W and literal["istio.custom_tags"].data == {"tags": ["env"]}


def _otel(body: str) -> dict[str, Check]:
    text = f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |-
    defaultProviders: {{tracing: [o]}}
    extensionProviders:
    - name: o
      opentelemetry: {body}
"""
    return _checks(text)


def test_opentelemetry_provider_fields() -> None:
    ok_http = _otel("{service: c.o.svc.cluster.local, port: 4318, http: {path: /v1/traces, timeout: 5s}}")
    assert ok_http["istio.otel.protocol"].status is P and ok_http["istio.otel.http_path"].status is P
    cases = [
        ("{service: c, port: 4317, http: {path: /v1/traces}}", "istio.otel.protocol", W, "OTLP/gRPC's"),
        ("{service: c, port: 4318}", "istio.otel.protocol", W, "OTLP/HTTP's"),
        ("{service: c, port: 4318, http: {path: /v1/traces}, grpc: {timeout: 1s}}", "istio.otel.protocol", W, "ignores grpc"),
        ("{service: c, port: 4318, http: {timeout: 5s}}", "istio.otel.http_path", F, "missing (REQUIRED)"),
        ("{service: c, port: 4318, http: {path: /api/v2/spans}}", "istio.otel.http_path", F, "Zipkin path"),
        ("{service: c, port: 4318, http: {path: /otlp}}", "istio.otel.http_path", W, "is not /v1/traces"),
        ("{port: 4317}", "istio.otel.service", F, "service missing"),
        ("{service: c, port: 4317, dynatraceSampler: {tenant: t, clusterId: 1}}", "istio.otel.sampler", F, "http settings"),
        ("{service: c, port: 4318, http: {path: /v1/traces}, dynatraceSampler: {tenant: t, clusterId: 1}}",
         "istio.otel.sampler", W, "random sampling to 100 %"),
        ("{service: c, port: 4317, resourceDetectors: {envirnoment: {}}}", "istio.otel.resource_detectors", W, "envirnoment"),
        ("{service: c, port: 4317, resource_detector: {}}", "istio.otel.fields", W, "resourceDetector"),
    ]  # fmt: skip
    for body, name, status, words in cases:
        check = _otel(body)[name]
        assert check.status is status and words in check.summary, (body, check)


def test_zipkin_provider_fields() -> None:
    def zipkin(body: str) -> dict[str, Check]:
        return _checks(MESH.replace("{service: zipkin.istio-system.svc.cluster.local, port: 9411}", body))

    plain = zipkin("{service: z, port: 9411}")
    assert plain["istio.provider"].data["w3c"] is False and plain["istio.zipkin.path"].status is P
    w3c = zipkin("{service: z, port: 9411, traceContextOption: USE_B3_WITH_W3C_PROPAGATION}")
    assert w3c["istio.provider"].data == {
        "family": "zipkin",
        "w3c": True,
        "provider": "zipkin",
        "kind": "zipkin",
    }
    v1 = zipkin("{service: z, port: 9411, path: /api/v1/spans}")
    assert v1["istio.zipkin.path"].status is F and "path /api/v2/spans" in v1["istio.zipkin.path"].fix_hint
    bad = zipkin("{service: z, port: 9411, traceContextOption: W3C, enable64bitTraceId: true}")
    assert bad["istio.zipkin.trace_context_option"].status is F
    assert bad["istio.zipkin.trace_id_bits"].status is W


def test_no_telemetry_and_no_default_provider_is_the_legacy_zipkin_path() -> None:
    legacy = _checks(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: 'enableTracing: true'\n"
    )
    assert (
        legacy["istio.provider"].data["family"] == "zipkin" and "legacy" in legacy["istio.provider"].summary
    )
    assert "istio.custom_tags" not in legacy
    off = _checks(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: 'enableTracing: false'\n"
    )
    assert off["istio.provider"].status is W and "no tracing" in off["istio.provider"].summary
