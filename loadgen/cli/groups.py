"""Option groups: a frozen dataclass whose fields are options (`sampling: SamplingOpt = 100.0`),
declared once and taken whole by every command that needs them.

A command names a group as one keyword-only parameter (`tracing: TracingFlags`); `@option_groups`
spreads the group's fields into the signature Typer reads, and hands the command one instance.
The groups here are the embedded mesh's (run, capacity, calibrate, probe, `stack up`); a command's
own groups live in its module."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from loadgen.cli.console import fatal
from loadgen.cli.options import (
    ClientSamplingOpt,
    CollectorDropOpt,
    CollectorLatencyOpt,
    ContextOpt,
    EchoOpt,
    FlushOpt,
    InternalCidrOpt,
    OtlpProtocolOpt,
    OverallSamplingOpt,
    PreserveOpt,
    RemoteAddrOpt,
    RunIdTagOpt,
    SamplingOpt,
    SidecarOpt,
    SpawnGwOpt,
    SpawnScOpt,
    TracerOpt,
    UpstreamDelayOpt,
    UpstreamDistOpt,
    UpstreamErrorOpt,
)
from loadgen.mesh.headers import DEFAULT_RUN_ID_TAG
from loadgen.mesh.tracer import OtlpProtocol, TracerFamily
from loadgen.stack.envoy import TraceContextOption, TracingConfig
from loadgen.stack.mesh import CollectorFaults, UpstreamFaults

R = TypeVar("R")


def option_groups(command: Callable[..., R]) -> Callable[..., R]:
    """`command` as Typer sees it: each dataclass-typed parameter replaced by that dataclass's
    fields (flags, defaults and help from their annotations), rebuilt into one instance per call."""
    hints = typing.get_type_hints(command, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type[Any], list[str]]] = {}
    for param in inspect.signature(command).parameters.values():
        hint = hints[param.name]
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint))
            continue
        field_hints = typing.get_type_hints(hint, include_extras=True)
        fields = dataclasses.fields(hint)
        groups[param.name] = (hint, [f.name for f in fields])
        params += [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=field_hints[f.name]
            )
            for f in fields
        ]
    names = [p.name for p in params] + list(groups)  # a group's own name, too, is taken
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise TypeError(f"{command.__name__}: option groups repeat the parameters {clashes}")

    @functools.wraps(command)
    def typed(**values: Any) -> R:
        for name, (group, fields) in groups.items():
            values[name] = group(**{f: values.pop(f) for f in fields})
        return command(**values)

    typed.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    typed.__annotations__ = {p.name: p.annotation for p in params}
    return typed


@dataclasses.dataclass(frozen=True)
class TracingFlags:
    """The embedded mesh's Envoy tracing."""

    # 10 %: a run that shows the proxy deciding (at 100 every verdict reads 1.0000 vs 1.0000);
    # the default 10 s run at 500 req/s still decides every verdict (README, Two commands)
    sampling: SamplingOpt = 10.0
    spawn_gateway: SpawnGwOpt = True
    spawn_sidecar: SpawnScOpt = False
    flush_ms: FlushOpt = 1000
    context: ContextOpt = TraceContextOption.USE_B3


@dataclasses.dataclass(frozen=True)
class GatewayFlags:
    """How the gateway treats x-request-id and forcing headers (embedded mesh: configures it;
    existing mesh: declares it, so each header mode's expectation is right)."""

    preserve_request_id: PreserveOpt = False
    use_remote_address: RemoteAddrOpt = True
    internal_cidr: InternalCidrOpt = None
    client_sampling: ClientSamplingOpt = 100.0


@dataclasses.dataclass(frozen=True)
class MeshFlags:
    """The embedded mesh's shape, for testing verdicts on meshes unlike the default one."""

    sidecar: SidecarOpt = True
    run_id_tag: RunIdTagOpt = True
    echo: EchoOpt = True
    overall_sampling: OverallSamplingOpt = 100.0
    tracer: TracerOpt = None  # None: not given (zipkin on the embedded mesh)
    otlp_protocol: OtlpProtocolOpt = None  # None: not given (grpc under opentelemetry)


@dataclasses.dataclass(frozen=True)
class FaultFlags:
    """Faults the embedded mesh injects: a slow or failing upstream, a slow or lossy collector."""

    upstream_delay_ms: UpstreamDelayOpt = 0.0
    upstream_delay_dist: UpstreamDistOpt = "fixed"
    upstream_error_rate: UpstreamErrorOpt = 0.0
    collector_latency_ms: CollectorLatencyOpt = 0.0
    collector_drop: CollectorDropOpt = 0.0


def tracing_config(
    tracing: TracingFlags, gateway: GatewayFlags | None = None, mesh: MeshFlags | None = None
) -> TracingConfig:
    """The embedded mesh's Envoy configuration from the three groups (defaults for a missing one)."""
    if not 0.0 <= tracing.sampling <= 100.0:
        fatal(f"--sampling must be a percentage in [0, 100], got {tracing.sampling}")
    gw = gateway or GatewayFlags()
    mesh = mesh or MeshFlags()
    tracer, protocol = tracer_choice(mesh, tracing.context)
    return TracingConfig(
        sampling_percent=tracing.sampling,
        tracer=tracer,
        otlp_protocol=protocol,
        gateway_spawn_upstream_span=tracing.spawn_gateway,
        sidecar_spawn_upstream_span=tracing.spawn_sidecar,
        flush_interval_ms=tracing.flush_ms,
        trace_context_option=tracing.context,
        gateway_use_remote_address=gw.use_remote_address,
        gateway_preserve_external_request_id=gw.preserve_request_id,
        gateway_internal_cidrs=tuple(gw.internal_cidr or ()),
        client_sampling_percent=gw.client_sampling,
        overall_sampling_percent=mesh.overall_sampling,
        sidecar=mesh.sidecar,
        echo_headers=mesh.echo,
        run_id_tag=DEFAULT_RUN_ID_TAG if mesh.run_id_tag else "",
    )


def tracer_choice(mesh: MeshFlags, context: TraceContextOption) -> tuple[TracerFamily, OtlpProtocol]:
    """The embedded mesh's tracer and OTLP protocol (zipkin; grpc under opentelemetry). Options
    that belong to the other tracer are one clear error, not silently ignored."""
    tracer = mesh.tracer or TracerFamily.ZIPKIN
    if tracer is TracerFamily.ZIPKIN and mesh.otlp_protocol is not None:
        fatal("--otlp-protocol applies to --tracer opentelemetry only (the zipkin tracer sends Zipkin JSON)")
    if tracer is TracerFamily.OPENTELEMETRY and context is not TraceContextOption.USE_B3:
        fatal(
            f"--trace-context {context.value} is the zipkin tracer's option; --tracer opentelemetry "
            "always propagates W3C traceparent"
        )
    return tracer, mesh.otlp_protocol or OtlpProtocol.GRPC


def upstream_faults(faults: FaultFlags, seed: int | None) -> UpstreamFaults:
    if faults.upstream_delay_dist not in ("fixed", "exp"):
        fatal(f"--upstream-delay-dist must be fixed or exp, got {faults.upstream_delay_dist!r}")
    return UpstreamFaults(
        delay_ms_mean=faults.upstream_delay_ms,
        delay_dist=faults.upstream_delay_dist,
        error_rate=faults.upstream_error_rate,
        seed=seed,
    )


def collector_faults(faults: FaultFlags, ingest_limit: float = 0.0) -> CollectorFaults:
    return CollectorFaults(
        drop_probability=faults.collector_drop,
        added_latency_ms=faults.collector_latency_ms,
        ingest_limit=ingest_limit,
    )
