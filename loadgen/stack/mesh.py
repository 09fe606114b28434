"""The embedded mesh: collector, echo upstream, sidecar Envoy and gateway Envoy on 127.0.0.1.

    client -> gateway Envoy (edge, Host routing) -> sidecar Envoy -> echo upstream
                   \\______________ Zipkin v2 JSON spans ______________/-> collector

Started in dependency order on free ports, stopped in reverse order by PID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loadgen.stack.envoy import EnvoyProcess, ProxySpec, TracingConfig
from loadgen.stack.procs import ManagedProcess, StackError, python_module_argv

GATEWAY_HOST = "httpbin.istioinaction.io"
GATEWAY_SERVICE = "istio-ingressgateway"
SIDECAR_SERVICE = "httpbin.istioinaction"


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


@dataclass
class MeshConfig:
    tracing: TracingConfig = field(default_factory=TracingConfig)
    faults: CollectorFaults = field(default_factory=CollectorFaults)
    envoy_concurrency: int = 1


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
                *self.config.faults.argv(),
            ),
            workdir / "stack" / "collector.log",
        )  # fmt: skip
        self.echo = ManagedProcess(
            "echo upstream",
            python_module_argv("loadgen.stack.echo", "--port", "0"),
            workdir / "stack" / "echo.log",
        )
        self.sidecar: EnvoyProcess | None = None
        self.gateway: EnvoyProcess | None = None
        self.collector_url = ""
        self.echo_url = ""

    @property
    def gateway_url(self) -> str:
        assert self.gateway is not None
        return f"http://127.0.0.1:{self.gateway.port}"

    @property
    def host_header(self) -> str:
        return GATEWAY_HOST

    def start(self) -> EmbeddedMesh:
        try:
            self.collector.start(stdout_pipe=True)
            self.collector_url = str(self.collector.read_ready_line(15.0)["url"])
            self.echo.start(stdout_pipe=True)
            self.echo_url = str(self.echo.read_ready_line(15.0)["url"])
            tracing = self.config.tracing
            collector_port = _port(self.collector_url)
            self.sidecar = EnvoyProcess(
                ProxySpec(
                    role="sidecar",
                    service_name=SIDECAR_SERVICE,
                    upstream_cluster="inbound|8000||",
                    upstream_port=_port(self.echo_url),
                    collector_port=collector_port,
                    spawn_upstream_span=tracing.sidecar_spawn_upstream_span,
                ),
                tracing,
                self.workdir / "stack",
                self.config.envoy_concurrency,
            )
            self.sidecar.start()
            self.gateway = EnvoyProcess(
                ProxySpec(
                    role="gateway",
                    service_name=GATEWAY_SERVICE,
                    upstream_cluster=f"outbound|8000||{GATEWAY_HOST}",
                    upstream_port=self.sidecar.port,
                    collector_port=collector_port,
                    domains=(GATEWAY_HOST,),
                    edge=tracing.gateway_use_remote_address,
                    spawn_upstream_span=tracing.gateway_spawn_upstream_span,
                    preserve_external_request_id=tracing.gateway_preserve_external_request_id,
                    internal_cidrs=tracing.gateway_internal_cidrs,
                ),
                tracing,
                self.workdir / "stack",
                self.config.envoy_concurrency,
            )
            self.gateway.start()
        except BaseException:
            self.stop()
            raise
        return self

    def check_alive(self) -> None:
        """Raise StackError naming the first part that died (for use during a run)."""
        parts: list[tuple[str, ManagedProcess | None]] = [
            ("collector", self.collector),
            ("echo upstream", self.echo),
            ("sidecar envoy", self.sidecar.process if self.sidecar else None),
            ("gateway envoy", self.gateway.process if self.gateway else None),
        ]
        for name, proc in parts:
            if proc is not None and proc.proc is not None and not proc.alive():
                raise StackError(f"{name} died (exit {proc.proc.returncode}); see {proc.log_path}")

    def stop(self) -> None:
        # Reverse order: the proxies flush their last spans to a still-running collector.
        for envoy in (self.gateway, self.sidecar):
            if envoy is not None:
                envoy.stop()
        self.echo.stop()
        self.collector.stop()

    def __enter__(self) -> EmbeddedMesh:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))
