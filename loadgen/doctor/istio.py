"""The Istio YAML checks besides sampling: which tracing provider the workload gets
(`istio.provider`), the fields of that provider (`istio.zipkin.*`, `istio.otel.*`) and the
run-id custom tag (`istio.custom_tags`). Field names and resolution rules: the sources listed in
loadgen.mesh.istio_providers; what a wrong field costs: loadgen.doctor.otel (measured on Envoy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen.doctor.bootstrap import V2_ENDPOINT, collector_path_problem
from loadgen.doctor.model import Check, CheckStatus
from loadgen.doctor.otel import OTLP_HTTP_PATH
from loadgen.mesh.headers import DEFAULT_RUN_ID_TAG, RUN_ID_HEADER
from loadgen.mesh.istio_config import IstioConfigError, Resource, WorkloadMode, load_istio_files
from loadgen.mesh.istio_providers import (
    OTEL_FIELDS,
    ZIPKIN_FIELDS,
    ProviderChoice,
    TracingProvider,
    camel_keys,
    tracing_provider,
)
from loadgen.mesh.tracer import TracerFamily

__all__ = ["check_istio_tracing", "lint_otel_provider", "lint_zipkin_provider", "provider_checks"]

_OTLP_GRPC_PORT, _OTLP_HTTP_PORT, _ZIPKIN_PORT = 4317, 4318, 9411
_TRACE_CONTEXT_OPTIONS = ("USE_B3", "USE_B3_WITH_W3C_PROPAGATION")
RUN_TAG_SNIPPET = f"customTags: {{{DEFAULT_RUN_ID_TAG}: {{header: {{name: {RUN_ID_HEADER}}}}}}}"


def check_istio_tracing(
    istio_files: Sequence[str | Path], namespace: str, labels: Mapping[str, str], mode: WorkloadMode
) -> list[Check]:
    """`istio.provider`, the provider's field checks and `istio.custom_tags` for one workload."""
    try:
        resources = load_istio_files(istio_files)
        choice = tracing_provider(resources, namespace, labels, mode)
    except (IstioConfigError, OSError) as exc:
        return [
            Check(
                "istio.provider",
                CheckStatus.FAIL,
                f"cannot read the Istio configuration: {exc}",
                "fix the file",
            )
        ]
    return provider_checks(choice, resources)


def provider_checks(choice: ProviderChoice, resources: Sequence[Resource] = ()) -> list[Check]:
    checks = [_provider_check(choice)]
    if choice.provider is not None and choice.provider.kind == "opentelemetry":
        checks += lint_otel_provider(choice.provider)
    elif choice.provider is not None and choice.provider.kind == "zipkin":
        checks += lint_zipkin_provider(choice.provider)
    if choice.name is not None:  # the legacy path takes its tags from ProxyConfig, not read here
        checks.append(_custom_tags_check(choice))
    return checks


def _provider_check(choice: ProviderChoice) -> Check:
    details = tuple(choice.notes)
    if choice.name is None:
        if not choice.legacy:
            return Check(
                "istio.provider",
                CheckStatus.WARN,
                f"no tracing: no Telemetry tracing, no defaultProviders.tracing and enableTracing false ({choice.chosen_by})",
                "select a provider with a Telemetry resource (see docs/clusters.md, 'Two Istio tracing paths')",
                details,
            )
        return Check(
            "istio.provider",
            CheckStatus.PASS,
            "no Telemetry tracing and no defaultProviders.tracing: the legacy meshConfig path, Envoy's Zipkin "
            f"tracer (B3) to defaultConfig.tracing.zipkin.address ({choice.chosen_by})",
            details=details,
            data={"family": TracerFamily.ZIPKIN.value, "w3c": False, "provider": None},
        )
    provider = choice.provider
    if provider is None:
        return Check(
            "istio.provider",
            CheckStatus.WARN,
            f"provider {choice.name!r} (chosen by {choice.chosen_by}) is not in the extensionProviders of the "
            "files given: if istiod has none of that name, the proxy gets no tracer",
            "pass the istio ConfigMap or IstioOperator too (--istio-config), or define the provider",
            details,
            {"provider": choice.name},
        )
    if not provider.kind:
        return Check(
            "istio.provider",
            CheckStatus.FAIL,
            f"extension provider {choice.name!r} ({provider.where}) is not a tracing provider "
            f"({', '.join(provider.kinds_given) or 'no provider field'}): istiod configures no tracing",
            "name a zipkin or opentelemetry provider in the Telemetry resource",
            details,
        )
    family = {"zipkin": TracerFamily.ZIPKIN, "opentelemetry": TracerFamily.OPENTELEMETRY}.get(provider.kind)
    where = f"{provider.where}, chosen by {choice.chosen_by}"
    if family is None:
        return Check(
            "istio.provider",
            CheckStatus.WARN,
            f"provider {choice.name!r} is {provider.kind} ({where}): loadgen reads the zipkin and opentelemetry paths",
            "select a zipkin or opentelemetry provider to measure with loadgen",
            details,
            {"provider": choice.name, "kind": provider.kind},
        )
    w3c = (
        family is TracerFamily.OPENTELEMETRY
        or provider.body.get("traceContextOption") == _TRACE_CONTEXT_OPTIONS[1]
    )
    return Check(
        "istio.provider",
        CheckStatus.PASS,
        f"provider {choice.name!r}: {provider.kind} ({where})",
        details=details,
        data={"family": family.value, "w3c": w3c, "provider": choice.name, "kind": provider.kind},
    )


def _unknown_fields(body: Mapping[str, Any], known: frozenset[str], name: str, message: str) -> Check | None:
    unknown = sorted(k for k in body if k not in known)
    if not unknown:
        return None
    return Check(
        name,
        CheckStatus.WARN,
        f"{', '.join(unknown)}: not a field of Istio's {message} (a typo?); it configures nothing",
        f"the fields are {', '.join(sorted(known))}",
    )


def _required(body: Mapping[str, Any], prefix: str) -> list[Check]:
    missing = [f for f in ("service", "port") if not body.get(f)]
    if not missing:
        return []
    return [
        Check(
            f"{prefix}service",
            CheckStatus.FAIL,
            f"{' and '.join(missing)} missing (REQUIRED): istiod finds no cluster and configures no tracing",
            "set service (the collector's host, e.g. otel-collector.observability.svc.cluster.local) and port",
        )
    ]


def lint_otel_provider(provider: TracingProvider) -> list[Check]:
    """The `opentelemetry` provider's fields, one check each where it matters."""
    body, prefix = provider.body, "istio.otel."
    checks = [
        c
        for c in (_unknown_fields(body, OTEL_FIELDS, f"{prefix}fields", "OpenTelemetryTracingProvider"),)
        if c
    ]
    checks += _required(body, prefix)
    http = camel_keys(body.get("http")) if "http" in body else None
    checks.append(_otel_protocol_check(body, http, prefix))
    if http is not None:
        checks.append(_otel_http_path_check(http, prefix))
    if body.get("dynatraceSampler") is not None:
        checks.append(_otel_sampler_check(body, http, prefix))
    if body.get("resourceDetectors") is not None:
        detectors = camel_keys(body.get("resourceDetectors"))
        unknown = sorted(k for k in detectors if k not in ("environment", "dynatrace"))
        checks.append(
            Check(
                f"{prefix}resource_detectors",
                CheckStatus.WARN if unknown else CheckStatus.PASS,
                f"resourceDetectors: {', '.join(sorted(detectors)) or 'none'}"
                + (
                    f" ({', '.join(unknown)} unknown: Istio has environment and dynatrace)" if unknown else ""
                ),
                "use environment: {} (reads OTEL_RESOURCE_ATTRIBUTES) or dynatrace: {}" if unknown else "",
            )
        )
    return checks


_PORT_OWNERS = {_OTLP_GRPC_PORT: "OTLP/gRPC's", _OTLP_HTTP_PORT: "OTLP/HTTP's", _ZIPKIN_PORT: "Zipkin's"}


def _otel_protocol_check(body: Mapping[str, Any], http: Mapping[str, Any] | None, prefix: str) -> Check:
    """OTLP/HTTP when an http block is given (tracing.go), else OTLP/gRPC; the port should match."""
    port, name = body.get("port"), f"{prefix}protocol"
    protocol = "http" if http is not None else "grpc"
    if http is not None and body.get("grpc") is not None:
        return Check(
            name,
            CheckStatus.WARN,
            "both http and grpc given: istiod exports OTLP/HTTP and ignores grpc",
            "keep one: http for OTLP/HTTP (4318), none or grpc for OTLP/gRPC (4317)",
            data={"otlp_protocol": protocol},
        )
    label = "OTLP/HTTP (http block)" if http is not None else "OTLP/gRPC (no http block)"
    right = _OTLP_HTTP_PORT if http is not None else _OTLP_GRPC_PORT
    if port in _PORT_OWNERS and port != right:
        fix = (
            f"OTLP/HTTP listens on {right}: set port: {right}"
            if http is not None
            else f"OTLP/gRPC listens on {right}; for OTLP/HTTP add http: {{path: {OTLP_HTTP_PATH}}}"
        )
        return Check(
            name,
            CheckStatus.WARN,
            f"{label} to port {port}, which is {_PORT_OWNERS[port]}",
            fix,
            data={"otlp_protocol": protocol},
        )
    details = (
        ()
        if http is not None
        else (
            "the collector's Service port must be HTTP/2 for Envoy: name it grpc-* or set appProtocol: grpc",
        )
    )
    default = "" if http is not None else ", Istio's default"
    return Check(
        name,
        CheckStatus.PASS,
        f"{label}{default} to port {port}",
        details=details,
        data={"otlp_protocol": protocol},
    )


def _otel_http_path_check(http: Mapping[str, Any], prefix: str) -> Check:
    path = str(http.get("path") or "")
    name = f"{prefix}http_path"
    if path.endswith(OTLP_HTTP_PATH):
        return Check(name, CheckStatus.PASS, f"http.path {path}")
    hint = f"set http.path: {OTLP_HTTP_PATH} (OTLP/HTTP's traces path)"
    if not path or path.rstrip("/") in ("", V2_ENDPOINT, "/api/v1/spans"):
        what = "missing (REQUIRED)" if not path else f"{path}, a Zipkin path"
        return Check(
            name,
            CheckStatus.FAIL,
            f"http.path {what}: istiod joins it to the host, Envoy posts OTLP there and (measured) every span "
            f"is lost while Envoy counts it sent; OTLP/HTTP receivers take {OTLP_HTTP_PATH}",
            hint,
        )
    return Check(
        name,
        CheckStatus.WARN,
        f"http.path {path} is not {OTLP_HTTP_PATH}: right only if a vendor serves OTLP there",
        hint,
    )


def _otel_sampler_check(body: Mapping[str, Any], http: Mapping[str, Any] | None, prefix: str) -> Check:
    sampler = camel_keys(body.get("dynatraceSampler"))
    if http is None and not sampler.get("httpService"):
        return Check(
            f"{prefix}sampler",
            CheckStatus.FAIL,
            "dynatraceSampler without http and without httpService: istiod refuses the provider "
            "('dynatrace sampler could not get http settings'), so the proxy gets no tracing",
            "give the provider an http block or the sampler an httpService",
        )
    return Check(
        f"{prefix}sampler",
        CheckStatus.WARN,
        "dynatraceSampler: istiod sets Envoy's random sampling to 100 % so the sampler decides; "
        "randomSamplingPercentage no longer applies and loadgen cannot predict decisions from x-request-id",
        "remove the sampler to measure randomSamplingPercentage; keep it to measure the sampler",
    )


def lint_zipkin_provider(provider: TracingProvider) -> list[Check]:
    """The `zipkin` provider's fields: required service/port, the span path, the ids, W3C."""
    body, prefix = provider.body, "istio.zipkin."
    checks = [
        c for c in (_unknown_fields(body, ZIPKIN_FIELDS, f"{prefix}fields", "ZipkinTracingProvider"),) if c
    ]
    checks += _required(body, prefix)
    path = str(body.get("path") or V2_ENDPOINT)
    status, why, hint = collector_path_problem(path)
    shown = why if status is not CheckStatus.PASS else f"path {path} (Zipkin v2 JSON)"
    checks.append(Check(f"{prefix}path", status, shown, hint.replace("collectorEndpoint", "path")))
    option = body.get("traceContextOption", _TRACE_CONTEXT_OPTIONS[0])
    if option not in _TRACE_CONTEXT_OPTIONS:
        checks.append(
            Check(
                f"{prefix}trace_context_option",
                CheckStatus.FAIL,
                f"traceContextOption {option!r} is not USE_B3 or USE_B3_WITH_W3C_PROPAGATION",
                "use one of the two (USE_B3 is the default)",
            )
        )
    if body.get("enable64bitTraceId") is True:
        checks.append(
            Check(
                f"{prefix}trace_id_bits",
                CheckStatus.WARN,
                "enable64bitTraceId: true: new trace ids are 64-bit, unlike Istio's default 128",
                "remove enable64bitTraceId",
            )
        )
    return checks


def _custom_tags_check(choice: ProviderChoice) -> Check:
    """`istio.custom_tags`: the run-id tag loadgen searches by (Telemetry customTags)."""
    name = "istio.custom_tags"
    fix = f"add to the Telemetry tracing entry: {RUN_TAG_SNIPPET}"
    if choice.custom_tags is None:
        return Check(
            name,
            CheckStatus.WARN,
            f"no Telemetry level sets customTags: spans carry no {DEFAULT_RUN_ID_TAG} tag, so a run's traces cannot be "
            "searched by tag (loadgen still finds them by trace id)",
            fix,
        )
    for tag, spec in choice.custom_tags.items():
        header = camel_keys(camel_keys(spec).get("header")).get("name")
        if isinstance(header, str) and header.lower() == RUN_ID_HEADER:
            return Check(
                name,
                CheckStatus.PASS,
                f"customTags {tag} from header {RUN_ID_HEADER} ({choice.tags_where})",
                data={"run_id_tag": tag},
            )
    return Check(
        name,
        CheckStatus.WARN,
        f"customTags ({choice.tags_where}) has no tag from header {RUN_ID_HEADER}: a more specific level's "
        "customTags replace the parent's whole map",
        fix,
        data={"tags": sorted(choice.custom_tags)},
    )
