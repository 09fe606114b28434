"""Options that more than one command takes, each declared once: a command names one in its
signature (`output: OutputOpt = Path("reports")`) or through an option group (loadgen.cli.groups).
The default stays in the command's signature; flag, help, range and panel live here."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from loadgen.cli.settings import load_config
from loadgen.emitter import ReferenceProtocol
from loadgen.mesh.modes import DEFAULT_MIX, MODE_SPECS, format_mix
from loadgen.mesh.tracer import OtlpProtocol, TracerFamily
from loadgen.stack.envoy import TraceContextOption
from loadgen.stack.mesh import GATEWAY_HOST

DEFAULT_HOST = GATEWAY_HOST
DEFAULT_MIX_TEXT = format_mix(DEFAULT_MIX)
MODES_HELP = ", ".join(m.value for m in MODE_SPECS) + " (what each sends and expects: docs/header-modes.md)"

EMBEDDED = "Embedded mesh"
EXISTING = "Existing mesh"
GATEWAY_BEHAVIOUR = "Gateway behaviour"
MESH_PROFILE = "Mesh profile"
READ_BACK_PANEL = "Read-back"

# --- durations, as Locust and k6 write them ----------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: object) -> float:
    """Seconds from `90`, `30s`, `5m`, `1h30m`, `1m30.5s` or `500ms` (Locust's -t, k6's
    --duration); a number (a config file's `duration = 30`) is seconds. typer.BadParameter says
    what a duration looks like."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise typer.BadParameter(
                    f"{value!r} is not a duration: give seconds or e.g. 30s, 5m, 1h30m"
                ) from None
            seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise typer.BadParameter(f"{value!r} is not a duration: it must be finite and not negative")
    return seconds


def duration_at_least(minimum: float) -> Callable[[object], float]:
    """A --duration-like option's parser: `parse_duration`, then at least `minimum` seconds."""

    def parse(value: object) -> float:
        seconds = parse_duration(value)
        if seconds < minimum:
            raise typer.BadParameter(f"{value!r} is shorter than {minimum:g} s")
        return seconds

    return parse


# --- where the run goes, what it sends ------------------------------------------------------------

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML whose table of this command's name ([run], [capacity]) sets options: keys are "
        "flag names (reference-rate = 20, probe = false). Default ./loadgen.toml when it exists. "
        "Flags win over LOADGEN_<FLAG> variables, which win over the file.",
        dir_okay=False,
        is_eager=True,
        callback=load_config,
    ),
]

OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Parent folder of the run folder.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for the header-mode sequence.")]
RunIdOpt = Annotated[str, typer.Option("--run-id", help="Run id (default: timestamp + random suffix).")]
RunDirArg = Annotated[
    Path, typer.Argument(help="A run folder (reports/<run-id>).", exists=True, file_okay=False)
]
UsersOpt = Annotated[int, typer.Option("--users", "-u", help="Concurrent Locust users.", min=1)]
RateOpt = Annotated[
    float, typer.Option("--rate", help="Target requests/s over all users (0 = as fast as they go).", min=0)
]
MixOpt = Annotated[str, typer.Option("--mix", help=f"Header-mode weights MODE=W,... Modes: {MODES_HELP}.")]
ReferenceRateOpt = Annotated[
    float,
    typer.Option(
        "--reference-rate", help="Reference traces/s sent straight to the collector (0 = off).",
        min=0, rich_help_panel="Reference spans",
    ),
]  # fmt: skip
ReferenceProtocolOpt = Annotated[
    ReferenceProtocol | None,
    typer.Option(
        "--reference-protocol",
        help="How reference spans reach the collector: zipkin (POST /api/v2/spans), otlp-http "
        "(POST /v1/traces, protobuf) or otlp-grpc (TraceService/Export, to the endpoint below). "
        "Default zipkin, or what OTEL_EXPORTER_OTLP_PROTOCOL says (grpc, http/protobuf).",
        rich_help_panel="Reference spans",
    ),
]
ReferenceGrpcEndpointOpt = Annotated[
    str,
    typer.Option(
        "--reference-grpc-endpoint",
        help="otlp-grpc: HOST:PORT (https://HOST:PORT for TLS). Default: the embedded collector's "
        "OTLP/gRPC port, else the --collector host on 4317.",
        rich_help_panel="Reference spans",
    ),
]

# --- an existing mesh ---------------------------------------------------------------------------

GatewayOpt = Annotated[
    str,
    typer.Option(
        "--gateway", help="An existing gateway URL, e.g. http://127.0.0.1:30000.", rich_help_panel=EXISTING
    ),
]
HostOpt = Annotated[
    str, typer.Option("--host", help="Host header the gateway routes on.", rich_help_panel=EXISTING)
]
CollectorOpt = Annotated[
    str,
    typer.Option(
        "--collector",
        help="Where reference spans go, e.g. http://127.0.0.1:9411 (Zipkin) or http://otel:4318 "
        "(--reference-protocol otlp-http).",
        rich_help_panel=EXISTING,
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Where traces are read back: zipkin:URL | jaeger:URL | jaeger-v3:URL | tempo:URL | auto:URL.",
        rich_help_panel=EXISTING,
    ),
]
ExpectOpt = Annotated[
    float | None,
    typer.Option(
        "--expect",
        help="Expected sampling percent (default: --sampling on the embedded mesh).",
        rich_help_panel=EXISTING,
    ),
]

# --- the mesh profile ---------------------------------------------------------------------------

ProbeOpt = Annotated[
    bool,
    typer.Option(
        "--probe/--no-probe",
        help="Learn the mesh first (trace shape, echo, x-request-id handling, forcing headers, "
        "run-id tag, time to queryable) with a few crafted requests; its profile sets the expectations. "
        "--no-probe leaves unlearned facts unknown: the verdicts that need them are inconclusive.",
        rich_help_panel=MESH_PROFILE,
    ),
]
ProfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--profile",
        help="Reuse a saved mesh-profile.json (from `loadgen probe` or an earlier run) instead of probing.",
        rich_help_panel=MESH_PROFILE,
        dir_okay=False,
    ),
]

# --- how the gateway treats x-request-id and forcing headers ------------------------------------

PreserveOpt = Annotated[
    bool,
    typer.Option(
        "--gateway-preserve-request-id",
        help="The gateway keeps a client x-request-id (preserve_external_request_id; Istio: off). "
        "Then crafted ids (mode xrid_crafted) make each sampling decision known before sending.",
        rich_help_panel=GATEWAY_BEHAVIOUR,
    ),
]
RemoteAddrOpt = Annotated[
    bool,
    typer.Option(
        "--gateway-use-remote-address/--no-gateway-use-remote-address",
        help="The gateway is an edge (use_remote_address; Istio: on).",
        rich_help_panel=GATEWAY_BEHAVIOUR,
    ),
]
InternalCidrOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--gateway-internal-cidr",
        help="Clients the gateway treats as internal (internal_address_config; allows x-envoy-force-trace). Repeatable.",
        rich_help_panel=GATEWAY_BEHAVIOUR,
    ),
]
ClientSamplingOpt = Annotated[
    float,
    typer.Option(
        "--client-sampling",
        help="Envoy tracing.client_sampling percent (x-client-trace-id forcing; default 100).",
        min=0, max=100, rich_help_panel=GATEWAY_BEHAVIOUR,
    ),
]  # fmt: skip

# --- the embedded mesh's Envoy tracing ----------------------------------------------------------

SamplingOpt = Annotated[
    float,
    typer.Option(
        "--sampling",
        help="Embedded mesh: Envoy random_sampling percent (default 10; Istio's is 1). Also the expected rate.",
        min=0, max=100, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip
SpawnGwOpt = Annotated[
    bool,
    typer.Option(
        "--gateway-upstream-span/--no-gateway-upstream-span",
        help="Embedded mesh: the gateway adds a CLIENT span per request (spawn_upstream_span; Istio >= 1.28 default).",
        rich_help_panel=EMBEDDED,
    ),
]
SpawnScOpt = Annotated[
    bool,
    typer.Option(
        "--sidecar-upstream-span/--no-sidecar-upstream-span",
        help="Embedded mesh: the sidecar adds a CLIENT span per request.",
        rich_help_panel=EMBEDDED,
    ),
]
FlushOpt = Annotated[
    int,
    typer.Option(
        "--flush-interval-ms",
        help="Embedded mesh: Envoy's Zipkin flush timer (tracing.zipkin.flush_interval_ms; Envoy default 5000).",
        min=1, max=3_600_000, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip
ContextOpt = Annotated[
    TraceContextOption,
    typer.Option(
        "--trace-context", help="Embedded mesh: Zipkin trace_context_option.", rich_help_panel=EMBEDDED
    ),
]

# --- the embedded mesh's shape ------------------------------------------------------------------

SidecarOpt = Annotated[
    bool,
    typer.Option(
        "--sidecar/--no-sidecar",
        help="Embedded mesh: a sidecar Envoy stands in front of the app; --no-sidecar routes the gateway straight to it (no /fanout).",
        rich_help_panel=EMBEDDED,
    ),
]
RunIdTagOpt = Annotated[
    bool,
    typer.Option(
        "--run-id-tag/--no-run-id-tag",
        help="Embedded mesh: the Envoys tag every span with the run id (custom tag loadgen.run_id).",
        rich_help_panel=EMBEDDED,
    ),
]
EchoOpt = Annotated[
    bool,
    typer.Option(
        "--echo/--no-echo",
        help='Embedded mesh: the upstream echoes the request headers like httpbin; --no-echo answers {"ok": true}.',
        rich_help_panel=EMBEDDED,
    ),
]
OverallSamplingOpt = Annotated[
    float,
    typer.Option(
        "--overall-sampling",
        help="Embedded mesh: Envoy tracing.overall_sampling percent on the gateway (Istio: 100), which the header-mode expectations follow.",
        min=0, max=100, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip
TracerOpt = Annotated[
    TracerFamily | None,
    typer.Option(
        "--tracer",
        help="The Envoys' tracer, Istio's provider: zipkin (B3, Zipkin JSON) or opentelemetry (W3C traceparent, OTLP). It decides which header carries each request's sampled fact. Embedded mesh: the tracer it runs (default zipkin). Existing mesh: overrides the tracer the probe learns (default: learned).",
        case_sensitive=False,
    ),
]  # fmt: skip
OtlpProtocolOpt = Annotated[
    OtlpProtocol | None,
    typer.Option(
        "--otlp-protocol",
        help="Embedded mesh, --tracer opentelemetry: the Envoys export OTLP over grpc (Istio's default) or http (/v1/traces).",
        case_sensitive=False, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip

# --- faults the embedded mesh can inject ---------------------------------------------------------

UpstreamDelayOpt = Annotated[
    float,
    typer.Option(
        "--upstream-delay-ms", help="Embedded mesh: the echo upstream delays every answer this long on average.",
        min=0, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip
UpstreamDistOpt = Annotated[
    str,
    typer.Option(
        "--upstream-delay-dist", help="fixed or exp (exponential) upstream delay.", rich_help_panel=EMBEDDED
    ),
]
UpstreamErrorOpt = Annotated[
    float,
    typer.Option(
        "--upstream-error-rate", help="Embedded mesh: the echo upstream answers 503 to this fraction.",
        min=0, max=1, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip
CollectorLatencyOpt = Annotated[
    float,
    typer.Option(
        "--collector-latency-ms", help="Embedded mesh: the collector answers every POST this much later.",
        min=0, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip
CollectorDropOpt = Annotated[
    float,
    typer.Option(
        "--collector-drop",
        help="Embedded mesh: the collector silently drops each span with this probability (demonstrates loss).",
        min=0.0, max=1.0, rich_help_panel=EMBEDDED,
    ),
]  # fmt: skip


def _fraction(value: float | None) -> float | None:
    """A fraction in (0, 1]: typer.BadParameter for anything else."""
    if value is not None and not 0.0 < value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not in (0, 1]")
    return value


ReadbackSampleOpt = Annotated[
    int | None,
    typer.Option(
        "--readback-sample",
        help="Query at most N random decided-sampled traces and N others (the leak check) "
        "instead of all; the collection interval is the sample's. Default: all, or 10000 "
        "each for a backend without multi-get (Tempo, Jaeger api_v3) and over 20000 ids.",
        metavar="N",
        min=1,
        rich_help_panel=READ_BACK_PANEL,
    ),
]
ReadbackFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--readback-fraction",
        help="Query this random fraction (0-1] of each kind of trace instead; 1 queries all.",
        metavar="F",
        callback=_fraction,
        rich_help_panel=READ_BACK_PANEL,
    ),
]
