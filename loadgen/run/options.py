"""The options of a run, its result, and the checks every run makes of them first."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE
from loadgen.backends.base import redact_url
from loadgen.emitter import DEFAULT_SERVICE_NAME, check_reference_options
from loadgen.ledger import LiveCounts
from loadgen.mesh.modes import DEFAULT_MIX, format_mix
from loadgen.mesh.tracer import TracerFamily
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import (
    GATEWAY_HOST,
    CollectorFaults,
    UpstreamFaults,
)

if TYPE_CHECKING:
    from loadgen.run.webui import WebUi


class RunError(RuntimeError):
    """The run cannot proceed (bad configuration, unreachable target); the message says why."""


@dataclass
class RunOptions:
    run_id: str = ""
    output_dir: Path = Path("reports")
    duration_s: float = 10.0
    users: int = 10
    spawn_rate: float = 10.0
    rate: float = 0.0
    mix: str = field(default_factory=lambda: format_mix(DEFAULT_MIX))
    scenario: str = ""
    path: str = "/headers"  # /fanout: a second hop through the sidecar (propagation integrity)
    fanout: bool = True  # embedded mesh: run the second hop (backend sidecar + echo)
    seed: int | None = None
    max_requests: int = 0  # stop after this many requests (0 = run for duration_s)
    id_style: str = "random"  # trace ids: random | k6 (time-prefixed, like k6's)
    xrid_sampled_fraction: float | None = None  # crafted x-request-ids: share predicted sampled
    csv_prefix: str = ""  # --csv: Locust also writes its CSV statistics to PREFIX_*.csv
    processes: int = 1  # Locust worker processes on this machine (>1: master + N workers)
    expect_workers: int = 0  # >0: be a master and wait for this many `loadgen worker`s
    master_bind_host: str = "*"
    master_bind_port: int = 5557
    web: bool = False  # --web: Locust's web UI drives the load (loadgen.run.webui)
    web_host: str = "127.0.0.1"
    web_port: int = 8089
    # Hooks for jobs built on a run (capacity, calibration):
    extra_env: dict[str, str] = field(default_factory=dict)  # more LOADGEN_* for the locustfile
    on_tick: Callable[[LiveCounts, float], str | None] | None = None  # returns a reason to abort
    # the embedded mesh (used when gateway is empty)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    # --tracer as given (None: not given): overrides the tracer the probe learns, on any mesh
    tracer: TracerFamily | None = None
    faults: CollectorFaults = field(default_factory=CollectorFaults)
    upstream: UpstreamFaults = field(default_factory=UpstreamFaults)
    # an existing mesh
    gateway: str = ""
    host: str = GATEWAY_HOST
    collector: str = ""
    backend: str = ""
    backend_flags: dict[str, Any] = field(default_factory=dict)  # BackendOptions fields from flags
    search_service: str | None = (
        None  # Jaeger's search needs a service (e.g. istio-ingressgateway.istio-system)
    )
    expect_percent: float | None = None
    expected_spans: int | None = None  # overrides the probed shape's span count (with a warning)
    # side-emitter
    reference_rate: float = 50.0  # >= 400 reference traces in 10 s: enough for a Wilson pass at 0.99
    reference_children: int = 2
    reference_protocol: str = "zipkin"  # zipkin | otlp-http | otlp-grpc (loadgen.emitter.protocols)
    reference_grpc_endpoint: str = ""  # otlp-grpc: HOST:PORT (default: the collector's host on 4317)
    # the mesh profile (loadgen.probe): learned by a probe before the load, or read from a file
    probe: bool = True
    profile_path: Path | None = None
    # read-back
    quiet_s: float | None = None  # None: from the profile's time to queryable
    poll_interval_s: float = 1.0
    max_wait_s: float = 60.0
    min_collection: float = 0.99
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE  # load_delivered fails above this share of errors
    # fetched.jsonl (every queried trace's observation): kept for capacity's re-runnable analysis
    # and for tests; `loadgen run` writes it only with --keep-spans (its report needs it not).
    keep_spans: bool = True
    # a sampled read-back (loadgen.analysis.subsample): at most N ids per stratum, or a fraction
    # of them; both None: every id, or the automatic sample for a backend without multi-get
    readback_sample: int | None = None
    readback_fraction: float | None = None
    # the side-emitter's service.name (OTEL_SERVICE_NAME) and extra OTLP headers
    # (OTEL_EXPORTER_OTLP_HEADERS), both resolved by the CLI: loadgen.emitter.protocols.otel_env
    reference_service: str = DEFAULT_SERVICE_NAME
    reference_headers: tuple[tuple[str, str], ...] = ()

    def resolved_run_id(self) -> str:
        if not self.run_id:
            self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        return self.run_id


@dataclass
class RunResult:
    summary: dict[str, Any]
    run_dir: Path
    exit_code: int
    web: WebUi | None = None  # --web: Locust's web UI, still up after the report (close it)


Status = Callable[[str], None]


_RUN_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}")


def check_run_id(run_id: str) -> None:
    """A run id names a folder and travels in an HTTP header and a span tag: keep it to a safe
    alphabet (no path separators, no '..', no spaces or control characters)."""
    if not _RUN_ID_OK.fullmatch(run_id) or ".." in run_id:
        raise RunError(
            f"run id {run_id!r} is not usable: use letters, digits and . _ : @ + = - "
            "(up to 128 characters, not starting with a dot or dash)"
        )


def check_path(path: str) -> None:
    """The request path is appended to the gateway's address: without a leading '/' every request
    goes to another port or host (`http://gw:8080` + `headers`), so no request is ever answered."""
    if not path.startswith("/"):
        raise RunError(f"--path {path!r} must start with '/' (e.g. /headers, /fanout)")


def check_reference(protocol: str, grpc_endpoint: str) -> None:
    """--reference-protocol and --reference-grpc-endpoint, before anything starts."""
    try:
        check_reference_options(protocol, grpc_endpoint or None)
    except ValueError as exc:
        raise RunError(f"--reference-protocol/--reference-grpc-endpoint: {exc}") from exc


def options_dict(opts: RunOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["output_dir"] = str(opts.output_dir)
    # run.json is shared with reports: no credentials from URLs or backend flags.
    for key in ("backend", "collector", "gateway", "reference_grpc_endpoint"):
        d[key] = redact_url(str(d[key]))
    flags = dict(d.get("backend_flags") or {})
    if flags.get("headers"):
        flags["headers"] = {name: "<redacted>" for name in flags["headers"]}
    for secret in ("bearer_token", "basic_auth"):
        if flags.get(secret) is not None:
            flags[secret] = "<redacted>"
    d["backend_flags"] = flags
    d["reference_headers"] = [[name, "<redacted>"] for name, _ in opts.reference_headers]
    d["on_tick"] = None if opts.on_tick is None else getattr(opts.on_tick, "__qualname__", "hook")
    return d


_options_dict = options_dict  # the name tests import
