"""Which tracing provider an Istio proxy uses, and its custom tags, from the YAML that configures
it (pure). Reads the same resources as loadgen.mesh.istio_config.

Field names and rules, with their sources (data provenance; istio/api read at commit
b8f8791d9653b2edc77a071d48887e582cfe84bf, istio/istio's pilot/pkg/model/telemetry.go and
pilot/pkg/networking/core/tracing.go; the reference pages
https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/ and
https://istio.io/latest/docs/reference/config/telemetry/):
- MeshConfig `extensionProviders[]`: `name` plus one provider (mesh/v1alpha1/config.proto
  `ExtensionProvider`). Tracing ones: `zipkin` (`service`, `port`, `maxTagLength`,
  `enable64bitTraceId`, `path` default `/api/v2/spans`, `traceContextOption` `USE_B3` (default) or
  `USE_B3_WITH_W3C_PROPAGATION`, `timeout`, `headers`) and `opentelemetry` (`service`, `port`,
  `maxTagLength`, `http` {`path`, `timeout`, `headers`}: OTLP/HTTP, else OTLP/gRPC with optional
  `grpc` {`timeout`, `initialMetadata`}; `resourceDetectors` {`environment`, `dynatrace`};
  `serviceAttributeEnrichment`; `dynatraceSampler` {`tenant`, `clusterId`,
  `rootSpansPerMinute`, `httpService`}); also `datadog`, `skywalking`, `stackdriver`, and the
  deprecated `lightstep`, `opencensus`. `defaultProviders.tracing`: provider names.
- Telemetry `spec.tracing[]` (telemetry/v1alpha1/telemetry.proto `Tracing`): `match.mode`,
  `providers[].name` ("only a single provider can be specified"), `randomSamplingPercentage`,
  `disableSpanReporting`, `customTags` (each one of `literal.value`, `environment.name`,
  `header.name`, `formatter.value`; "custom_tags will fully replace any values provided by parent
  configuration"), `useRequestIdForTraceSampling`, `enableIstioTags`, `disableContextPropagation`.
- Resolution (telemetry.go `mergeTracing`): start from `defaultProviders.tracing[0]`; then root
  namespace, namespace, workload, each entry of the proxy's mode overriding `providers[0]`,
  `customTags` (whole map), `randomSamplingPercentage`, `disableSpanReporting`. Without any
  Telemetry tracing and default provider, the legacy meshConfig path applies (Zipkin, from
  `defaultConfig.tracing.zipkin.address`) when `enableTracing` is on.
- tracing.go: a provider with a sampler (`dynatraceSampler`) makes istiod set the HCM's random
  sampling to 100 % "so all spans arrive at the sampler for its decision".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.mesh.istio_config import (
    DEFAULT_ROOT_NAMESPACE,
    Resource,
    WorkloadMode,
    mesh_configs,
    mode_applies,
    telemetry_levels,
)

__all__ = [
    "OTEL_FIELDS",
    "TRACING_PROVIDER_KINDS",
    "ZIPKIN_FIELDS",
    "ProviderChoice",
    "TracingProvider",
    "extension_providers",
    "tracing_provider",
]

#: The tracing provider kinds of ExtensionProvider's oneof (the others are not tracers).
TRACING_PROVIDER_KINDS = (
    "zipkin",
    "opentelemetry",
    "datadog",
    "skywalking",
    "stackdriver",
    "lightstep",
    "opencensus",
)
_OTHER_PROVIDER_KINDS = (
    "envoyExtAuthzHttp", "envoyExtAuthzGrpc", "prometheus", "envoyFileAccessLog", "envoyHttpAls",
    "envoyTcpAls", "envoyOtelAls", "sds",
)  # fmt: skip
#: The fields each provider message has (camelCase, as YAML writes them).
ZIPKIN_FIELDS = frozenset(
    {
        "service",
        "port",
        "maxTagLength",
        "enable64bitTraceId",
        "path",
        "traceContextOption",
        "timeout",
        "headers",
    }
)
OTEL_FIELDS = frozenset(
    {
        "service", "port", "maxTagLength", "http", "grpc", "resourceDetectors",
        "serviceAttributeEnrichment", "dynatraceSampler",
    }
)  # fmt: skip


def _snake_to_camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def camel_keys(obj: Any) -> dict[str, Any]:
    """A mapping with snake_case keys written camelCase (MeshConfig YAML accepts both)."""
    return {_snake_to_camel(str(k)): v for k, v in obj.items()} if isinstance(obj, dict) else {}


@dataclass(frozen=True)
class TracingProvider:
    """One `extensionProviders` entry: its name, kind (`zipkin`, `opentelemetry`…, or "" when it
    names no tracing provider), the provider's body (camelCase keys) and where it was found."""

    name: str
    kind: str
    body: dict[str, Any]
    where: str
    kinds_given: tuple[str, ...] = ()  # every provider key the entry has (one is right)


def extension_providers(mesh: Mapping[str, Any], where: str) -> list[TracingProvider]:
    """The extensionProviders of one MeshConfig, in order."""
    out = []
    for index, raw in enumerate(camel_keys(mesh).get("extensionProviders") or []):
        entry = camel_keys(raw)
        kinds = tuple(k for k in entry if k in TRACING_PROVIDER_KINDS or k in _OTHER_PROVIDER_KINDS)
        kind = next((k for k in kinds if k in TRACING_PROVIDER_KINDS), "")
        body = camel_keys(entry.get(kind)) if kind else {}
        out.append(
            TracingProvider(
                str(entry.get("name", "")), kind, body, f"{where} extensionProviders[{index}]", kinds
            )
        )
    return out


@dataclass(frozen=True)
class ProviderChoice:
    """The tracing a workload gets: the provider name and where it was chosen, the provider
    (None: not defined in the files given), the custom tags and whether spans are reported."""

    name: str | None  # None: no provider selected
    chosen_by: str  # "Telemetry (workload) …", "meshConfig defaultProviders.tracing", "legacy meshConfig"…
    provider: TracingProvider | None
    custom_tags: dict[str, Any] | None  # None: no Telemetry level sets customTags
    tags_where: str = ""
    span_reporting_disabled: bool = False
    legacy: bool = False  # no Telemetry tracing: meshConfig's defaultConfig.tracing (Zipkin)
    notes: list[str] = field(default_factory=list)


def tracing_provider(
    resources: Sequence[Resource], namespace: str, labels: Mapping[str, str], mode: WorkloadMode
) -> ProviderChoice:
    """Istio's `mergeTracing` for the workload with `labels` in `namespace` on the `mode` side."""
    notes: list[str] = []
    meshes = mesh_configs(resources)
    mesh = camel_keys(meshes[0].config) if meshes else {}
    providers = [p for m in meshes for p in extension_providers(m.config, m.where)]
    root = str(mesh.get("rootNamespace") or DEFAULT_ROOT_NAMESPACE)
    defaults = camel_keys(mesh.get("defaultProviders")).get("tracing") or []
    name: str | None = str(defaults[0]) if defaults else None
    chosen_by = f"{meshes[0].where} defaultProviders.tracing" if name else ""
    tags: dict[str, Any] | None = None
    tags_where, disabled, any_tracing = "", False, False
    for level in telemetry_levels(resources, namespace, labels, root, notes):
        for entry in (camel_keys(e) for e in level.entries):
            if not mode_applies(entry, mode):
                continue
            any_tracing = True
            named = [camel_keys(p).get("name") for p in entry.get("providers") or []]
            if named and named[0]:
                name, chosen_by = str(named[0]), f"{level.level} {level.res.ref}"
                if len(named) > 1:
                    notes.append(f"{level.res.ref} names {len(named)} providers: Istio uses only the first")
            if isinstance(entry.get("customTags"), dict):
                tags, tags_where = dict(entry["customTags"]), level.res.ref
            if entry.get("disableSpanReporting") is not None:
                disabled = bool(entry["disableSpanReporting"])
    if name is None and not any_tracing:
        legacy = mesh.get("enableTracing", True) is not False
        where = meshes[0].where if meshes else "Istio's default meshConfig"
        return ProviderChoice(None, where, None, None, legacy=legacy, notes=notes)
    provider = next((p for p in providers if p.name == name), None) if name else None
    return ProviderChoice(name, chosen_by, provider, tags, tags_where, disabled, notes=notes)
