"""The embedded mesh: collector, echo upstream, sidecar Envoy and gateway Envoy on 127.0.0.1.

    client -> gateway Envoy (edge, Host routing) -> sidecar Envoy -> echo upstream
                   \\______________ Zipkin v2 JSON spans ______________/-> collector
                                  (or OTLP over gRPC/HTTP: TracingConfig.tracer)

With `MeshConfig.fanout` (the default) a second hop stands behind the app, as in a two-service
Istio mesh: the echo app's `/fanout` routes call `backend.istioinaction` through the app's own
sidecar (an outbound listener, traced as egress), which routes to the backend's sidecar Envoy
(inbound) in front of a second echo process:

    ... -> sidecar Envoy (inbound) -> echo app --/fanout--> sidecar Envoy (outbound)
               -> backend sidecar Envoy (inbound) -> backend echo

Knobs on `TracingConfig` change the shape: `sidecar=False` takes the sidecar off the path (the
gateway routes straight to the echo upstream, and the second hop is not started: /fanout needs the
app's sidecar for its outbound call, see `MeshConfig.hops`); `echo_headers=False` makes the upstream
answer `{"ok": true}` instead of echoing headers; `overall_sampling_percent` goes on the gateway.

Started in dependency order on free ports, stopped in reverse order by PID.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.mesh.headers import DEFAULT_GATEWAY_HOST
from loadgen.mesh.hops import Hop
from loadgen.mesh.tracer import OtlpProtocol, TracerFamily
from loadgen.stack.envoy import EnvoyProcess, OutboundSpec, ProxySpec, TracingConfig, find_envoy_binary
from loadgen.stack.procs import ComponentDied, ManagedProcess, StackError, python_module_argv

GATEWAY_HOST = DEFAULT_GATEWAY_HOST
GATEWAY_SERVICE = "istio-ingressgateway"
SIDECAR_SERVICE = "httpbin.istioinaction"
BACKEND_HOST = "backend.istioinaction"  # the Host the app's fan-out calls (its sidecar routes on it)
BACKEND_SERVICE = "backend.istioinaction"  # the backend sidecar's Zipkin serviceName
FANOUT_PATHS = ("/fanout", "/fanout-nopropagate")


@dataclass(frozen=True)
class CollectorFaults:
    """Fault knobs of the embedded collector (all off by default)."""

    drop_probability: float = 0.0
    added_latency_ms: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None
    ingest_limit: float = 0.0  # spans/s kept; the excess is answered 202 and discarded (0 = no limit)

    def argv(self) -> list[str]:
        args = [
            "--drop-probability", str(self.drop_probability),
            "--added-latency-ms", str(self.added_latency_ms),
            "--error-rate", str(self.error_rate),
        ]  # fmt: skip
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        if self.ingest_limit:
            args += ["--ingest-limit", str(self.ingest_limit)]
        return args


@dataclass(frozen=True)
class UpstreamFaults:
    """Capacity knobs of the embedded echo upstream (all off by default)."""

    delay_ms_mean: float = 0.0
    delay_dist: str = "fixed"  # fixed | exp
    error_rate: float = 0.0  # answered 503
    seed: int | None = None

    def argv(self) -> list[str]:
        args: list[str] = []
        if self.delay_ms_mean:
            args += ["--delay-ms-mean", str(self.delay_ms_mean), "--delay-dist", self.delay_dist]
        if self.error_rate:
            args += ["--error-rate", str(self.error_rate)]
        if self.seed is not None and args:
            args += ["--seed", str(self.seed)]
        return args


@dataclass
class MeshConfig:
    tracing: TracingConfig = field(default_factory=TracingConfig)
    faults: CollectorFaults = field(default_factory=CollectorFaults)
    upstream: UpstreamFaults = field(default_factory=UpstreamFaults)
    envoy_concurrency: int = 1
    # The second hop (backend sidecar + backend echo) behind the app's /fanout routes. On by
    # default so any run can use /fanout: it costs two idle processes and one more Envoy start
    # (a few tenths of a second), and /headers traffic never touches it. Never started without
    # a sidecar (`tracing.sidecar=False`): the app's outbound calls need the sidecar's listener.
    fanout: bool = True
    # Send the proxies' OTLP (OpenTelemetry tracer) to a receiver on these 127.0.0.1 ports
    # (http, grpc) instead of the embedded collector: an external OpenTelemetry Collector, or a
    # test's own receiver. (0, 0): the embedded collector.
    otlp_sink: tuple[int, int] = (0, 0)

    @property
    def runs_fanout(self) -> bool:
        """Whether the second hop is started: asked for, and the app has a sidecar to call through."""
        return self.fanout and self.tracing.sidecar

    def hops(self, path: str = "/headers") -> tuple[Hop, ...]:
        """The hops a sampled request to `path` should leave spans on, in call order.

        Every Envoy HCM leaves one span per sampled request (SERVER inbound, CLIENT on the
        sidecar's egress listener) plus a CLIENT span when `spawn_upstream_span` is on (measured:
        the egress HCM span then turns SERVER, the router's span is the CLIENT). A fan-out
        request crosses the app's sidecar twice (inbound, then outbound: both are
        `SIDECAR_SERVICE`) and the backend's sidecar once. For /fanout-nopropagate these are
        the hops the request *should* reach; the outbound and backend spans land in a separate
        trace (that is the defect it demonstrates).

        Without a sidecar (`tracing.sidecar=False`) the gateway is the only hop, and /fanout
        paths are unavailable: the second hop is not started and this raises StackError (the
        app itself answers such requests 503, "no outbound listener configured")."""
        t = self.tracing
        sidecar_hcm = 1 + int(t.sidecar_spawn_upstream_span)
        gateway = Hop(GATEWAY_SERVICE, 1 + int(t.gateway_spawn_upstream_span))
        fanout_path = path.split("?", 1)[0] in FANOUT_PATHS
        if not t.sidecar:
            if fanout_path and self.fanout:
                raise StackError(
                    f"{path} is unavailable without the sidecar (--no-sidecar): the app's outbound call "
                    "goes through its sidecar's outbound listener; use /headers or keep the sidecar"
                )
            return (gateway,)
        if not (self.fanout and fanout_path):
            return (gateway, Hop(SIDECAR_SERVICE, sidecar_hcm))
        return (gateway, Hop(SIDECAR_SERVICE, 2 * sidecar_hcm), Hop(BACKEND_SERVICE, sidecar_hcm))

    def traced_hops(self, path: str = "/headers") -> tuple[Hop, ...]:
        """The hops whose spans land under the request's *own* trace id: all of `hops(path)`,
        except for /fanout-nopropagate, whose app starts a new trace for its outbound call (its
        sidecar's outbound span and the backend's spans form a separate trace). What collection
        should expect; `hops` is what integrity should expect."""
        hops = self.hops(path)
        if len(hops) > 2 and path.split("?", 1)[0] == "/fanout-nopropagate":
            sidecar_hcm = 1 + int(self.tracing.sidecar_spawn_upstream_span)
            return (hops[0], Hop(SIDECAR_SERVICE, sidecar_hcm))
        return hops

    def expected_spans_per_trace(self, path: str = "/headers") -> int:
        """Spans one sampled request to `path` leaves under its own trace id."""
        return sum(hop.spans for hop in self.traced_hops(path))


class EmbeddedMesh:
    """Context manager owning every process of the embedded mesh."""

    def __init__(self, workdir: Path, config: MeshConfig | None = None) -> None:
        self.workdir = workdir
        self.config = config or MeshConfig()
        self.collector = ManagedProcess(
            "collector",
            python_module_argv(
                "loadgen.stack.collector",
                "--host", "127.0.0.1", "--port", "0",
                "--data-dir", str(workdir / "collector"),
                # OTLP/gRPC on a free port too (its URL in the ready line): the OpenTelemetry
                # tracer's default export, and the side-emitter's --reference-protocol otlp-grpc.
                "--otlp-grpc-port", "0",
                # Its fault knobs can be changed while it runs (loopback only): `loadgen watch`
                # demos and tests turn collection loss on and off under a running canary.
                "--fault-control",
                *self.config.faults.argv(),
            ),
            workdir / "stack" / "collector.log",
        )  # fmt: skip
        self.echo = ManagedProcess(
            "echo upstream",
            python_module_argv("loadgen.stack.echo", "--port", "0", *self.config.upstream.argv()),
            workdir / "stack" / "echo.log",
        )
        self.sidecar: EnvoyProcess | None = None
        self.gateway: EnvoyProcess | None = None
        self.collector_url = ""
        self.collector_grpc_url = ""  # the collector's OTLP/gRPC endpoint (http://127.0.0.1:PORT)
        self._collector_ports = (0, 0)  # (HTTP, OTLP/gRPC) ports the proxies send spans to
        self.echo_url = ""
        # The second hop (MeshConfig.fanout): where the app's outbound listener is, for the app.
        self.outbound_file = workdir / "stack" / "echo-outbound.json"
        self.backend_echo: ManagedProcess | None = None
        self.backend_sidecar: EnvoyProcess | None = None
        self.backend_echo_url = ""
        if not self.config.tracing.echo_headers:
            self.echo.argv.append("--no-echo")
        if self.config.runs_fanout:
            self.echo.argv += ["--outbound-file", str(self.outbound_file)]
            no_echo = [] if self.config.tracing.echo_headers else ["--no-echo"]
            self.backend_echo = ManagedProcess(
                "backend echo",
                python_module_argv("loadgen.stack.echo", "--port", "0", *no_echo),
                workdir / "stack" / "backend-echo.log",
            )

    @property
    def gateway_url(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.port}"

    @property
    def host_header(self) -> str:
        return GATEWAY_HOST

    def start(self) -> EmbeddedMesh:
        find_envoy_binary()  # without the `mesh` extra: one clear error before anything starts
        try:
            if self.backend_echo is not None:
                # Its own process with nothing to wait for: let it start while the others do.
                self.backend_echo.start(stdout_pipe=True)
            self.collector.start(stdout_pipe=True)
            ready = self.collector.read_ready_line(15.0)
            self.collector_url = str(ready["url"])
            self.collector_grpc_url = str(ready.get("otlp_grpc_url") or "")
            self._collector_ports = self._span_ports()
            self.echo.start(stdout_pipe=True)
            self.echo_url = str(self.echo.read_ready_line(15.0)["url"])
            tracing = self.config.tracing
            collector_port = self._collector_ports[0]
            outbound = self._start_backend(collector_port) if self.config.runs_fanout else None
            # Without a sidecar the gateway's upstream is the app itself.
            gateway_upstream_port = _port(self.echo_url)
            if tracing.sidecar:
                self.sidecar = self._sidecar(
                    "sidecar", SIDECAR_SERVICE, self.echo_url, collector_port, outbound
                )
                self.sidecar.start()
                gateway_upstream_port = self.sidecar.port
                if outbound is not None:
                    self._write_outbound_file(f"http://127.0.0.1:{self.sidecar.outbound_port}", outbound.host)
            self.gateway = self._envoy(
                ProxySpec(
                    role="gateway",
                    service_name=GATEWAY_SERVICE,
                    upstream_cluster=f"outbound|8000||{GATEWAY_HOST}",
                    upstream_port=gateway_upstream_port,
                    collector_port=collector_port,
                    collector_grpc_port=self._collector_ports[1],
                    domains=(GATEWAY_HOST,),
                    edge=tracing.gateway_use_remote_address,
                    spawn_upstream_span=tracing.gateway_spawn_upstream_span,
                    preserve_external_request_id=tracing.gateway_preserve_external_request_id,
                    internal_cidrs=tracing.gateway_internal_cidrs,
                    overall_sampling_percent=tracing.overall_sampling_percent,
                )
            )
            self.gateway.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _span_ports(self) -> tuple[int, int]:
        """Where the proxies send spans: (HTTP port, OTLP/gRPC port). The embedded collector's
        (Zipkin and OTLP/HTTP on its HTTP port, OTLP/gRPC on the port its ready line names), or
        `MeshConfig.otlp_sink` for the OpenTelemetry tracer."""
        tracing = self.config.tracing
        ports = self.config.otlp_sink
        if not any(ports) or tracing.tracer is not TracerFamily.OPENTELEMETRY:
            grpc_url = self.collector_grpc_url
            ports = (_port(self.collector_url), _port(grpc_url) if grpc_url else 0)
        wanted = 1 if tracing.otlp_protocol is OtlpProtocol.GRPC else 0
        if tracing.tracer is TracerFamily.OPENTELEMETRY and not ports[wanted]:
            raise StackError(
                f"no OTLP/{tracing.otlp_protocol.value} port to export to: the collector did not announce one"
            )
        return ports

    def _start_backend(self, collector_port: int) -> OutboundSpec:
        """The second hop: backend echo and its sidecar (inbound), started before the app's
        sidecar, whose outbound listener routes to it."""
        assert self.backend_echo is not None
        self.backend_echo_url = str(self.backend_echo.read_ready_line(15.0)["url"])
        tracing = self.config.tracing
        self.backend_sidecar = self._sidecar(
            "backend-sidecar", BACKEND_SERVICE, self.backend_echo_url, collector_port
        )
        self.backend_sidecar.start()
        return OutboundSpec(
            host=BACKEND_HOST,
            upstream_cluster=f"outbound|8000||{BACKEND_HOST}",
            upstream_port=self.backend_sidecar.port,
            spawn_upstream_span=tracing.sidecar_spawn_upstream_span,
        )

    def _envoy(self, spec: ProxySpec) -> EnvoyProcess:
        return EnvoyProcess(spec, self.config.tracing, self.workdir / "stack", self.config.envoy_concurrency)

    def _sidecar(
        self, role: str, service: str, app_url: str, collector_port: int, outbound: OutboundSpec | None = None
    ) -> EnvoyProcess:
        """A sidecar Envoy in front of the app at `app_url` (inbound), with an egress listener
        when `outbound` is given."""
        return self._envoy(
            ProxySpec(
                role=role,
                service_name=service,
                upstream_cluster="inbound|8000||",
                upstream_port=_port(app_url),
                collector_port=collector_port,
                collector_grpc_port=self._collector_ports[1],
                spawn_upstream_span=self.config.tracing.sidecar_spawn_upstream_span,
                outbound=outbound,
            )
        )

    def _write_outbound_file(self, url: str, host: str) -> None:
        # Atomic: the app reads it per fan-out request until it parses.
        tmp = self.outbound_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "host": host}))
        os.replace(tmp, self.outbound_file)

    def check_alive(self) -> None:
        """Raise StackError naming the first part that died (for use during a run)."""
        parts: list[tuple[str, ManagedProcess | None]] = [
            ("collector", self.collector),
            ("echo upstream", self.echo),
            ("sidecar envoy", self.sidecar.process if self.sidecar else None),
            ("gateway envoy", self.gateway.process if self.gateway else None),
            ("backend echo", self.backend_echo),
            ("backend sidecar envoy", self.backend_sidecar.process if self.backend_sidecar else None),
        ]
        for name, proc in parts:
            if proc is not None and proc.proc is not None and not proc.alive():
                raise ComponentDied(name, proc.proc.returncode, proc.log_path)

    def stop(self) -> None:
        # Reverse order: the proxies flush their last spans to a still-running collector.
        for envoy in (self.gateway, self.sidecar, self.backend_sidecar):
            if envoy is not None:
                envoy.stop()
        self.echo.stop()
        if self.backend_echo is not None:
            self.backend_echo.stop()
        self.collector.stop()

    def __enter__(self) -> EmbeddedMesh:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))
