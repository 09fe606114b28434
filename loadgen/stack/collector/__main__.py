"""`python -m loadgen.stack.collector`: run the embedded Zipkin-v2-compatible collector.

Prints exactly one JSON line once listening, then serves until SIGINT/SIGTERM and exits 0:

    {"ready": true, "url": "http://127.0.0.1:PORT", "pid": N}

OTLP/HTTP (`POST /v1/traces`) is served on the same port as the Zipkin API. With
`--otlp-grpc-port`, OTLP/gRPC (TraceService/Export) listens there too and the ready line adds
`"otlp_grpc_url": "http://127.0.0.1:PORT"`.

With `--tempo-port`, a Grafana-Tempo-shaped query API over the same spans listens there too
(loadgen.stack.collector.tempo_server, a stand-in), and the ready line adds `"tempo_url"`.

With `--fault-control`, `GET/POST /control/faults` reads and changes the fault knobs
(drop_probability, error_rate, added_latency_ms) while it runs, for loopback clients only
(loadgen.stack.collector.control); the embedded mesh passes it.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from loadgen.stack.collector.control import add_fault_control
from loadgen.stack.collector.server import DEFAULT_MAX_BODY_BYTES, Faults, Limits, make_app, start_server
from loadgen.stack.collector.store import SPANS_DB_NAME, SpanStore, StoreError
from loadgen.stack.collector.tempo_server import TempoOptions, start_tempo

__all__ = ["is_loopback", "main", "run_collector", "serve_collector"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost: cannot promise it stays local
        return False


async def serve_collector(
    host: str,
    port: int,
    data_dir: Path | None,
    faults: Faults | None = None,
    ready_callback: Callable[[str], None] | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    fsync: bool = False,
    limits: Limits | None = None,
    stop: asyncio.Event | None = None,
    tempo: TempoOptions | None = None,
    otlp_grpc_port: int | None = None,
    otlp_grpc_ready: Callable[[str], None] | None = None,
    fault_control: bool = False,
) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when `stop` is None); then close everything.
    `tempo`: also serve the Tempo-shaped query API on its own port. `otlp_grpc_port`: also serve
    OTLP/gRPC there (0 = a free port), its URL handed to `otlp_grpc_ready` before `ready_callback`.
    `fault_control`: serve `GET/POST /control/faults` to loopback clients
    (loadgen.stack.collector.control)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    # "localhost" may resolve to two addresses, each getting a different free port for port 0.
    bind_host = "127.0.0.1" if host == "localhost" else host
    with SpanStore(data_dir, fsync=fsync) as store:
        app = make_app(store, max_body_bytes=max_body_bytes, faults=faults, limits=limits)
        if fault_control:
            add_fault_control(app)
        runner, url = await start_server(app, bind_host, port)
        grpc_server = tempo_runner = None
        try:
            if tempo is not None:  # inside the try: a Tempo port that cannot listen closes `runner` too
                tempo_runner, _ = await start_tempo(store, bind_host, tempo)
            if otlp_grpc_port is not None:
                from loadgen.stack.collector.otlp_grpc import start_otlp_grpc  # grpc only when asked for

                grpc_server, grpc_url = await start_otlp_grpc(app, bind_host, otlp_grpc_port, max_body_bytes)
                if otlp_grpc_ready is not None:
                    otlp_grpc_ready(grpc_url)
            if ready_callback is not None:
                ready_callback(url)
            await stop.wait()
        finally:
            if grpc_server is not None:
                await grpc_server.stop(5.0)  # in-flight exports finish before the store closes
            if tempo_runner is not None:
                await tempo_runner.cleanup()
            await runner.cleanup()  # lets in-flight POSTs finish before the store closes


def run_collector(
    host: str,
    port: int,
    data_dir: Path | None,
    faults: Faults | None = None,
    ready_callback: Callable[[str], None] | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    fsync: bool = False,
    limits: Limits | None = None,
    tempo: TempoOptions | None = None,
    otlp_grpc_port: int | None = None,
    otlp_grpc_ready: Callable[[str], None] | None = None,
    fault_control: bool = False,
) -> None:
    """Blocking form of serve_collector: runs its own event loop until SIGINT/SIGTERM."""
    asyncio.run(
        serve_collector(
            host,
            port,
            data_dir,
            faults,
            ready_callback,
            max_body_bytes=max_body_bytes,
            fsync=fsync,
            limits=limits,
            tempo=tempo,
            otlp_grpc_port=otlp_grpc_port,
            otlp_grpc_ready=otlp_grpc_ready,
            fault_control=fault_control,
        )
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadgen.stack.collector",
        description="Zipkin-v2-compatible span collector (POST /api/v2/spans, query API) that also "
        "ingests OTLP traces (POST /v1/traces; gRPC with --otlp-grpc-port).",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only by default)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (see the ready line)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"keep spans in DIR/{SPANS_DB_NAME} (SQLite) across restarts; without it, a temporary "
        "database removed at exit. An old DIR/spans.jsonl is imported once",
    )
    p.add_argument(
        "--fsync",
        action="store_true",
        help="fsync every accepted batch (synchronous=FULL: a 202'd batch survives a machine crash; "
        "the default survives the collector being killed)",
    )
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument(
        "--header-timeout",
        type=float,
        default=Limits.header_timeout_s,
        help="seconds a request head may take from its first byte (default %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=Limits.body_timeout_s,
        help="seconds a span POST body may take, else 408 (default %(default)s)",
    )
    p.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=0,
        help="body bytes all POSTs in progress may hold together; above it 503 + Retry-After "
        "(default 4 x --max-body-bytes)",
    )
    p.add_argument("--drop-probability", type=float, default=0.0, help="fault: 202 but discard spans")
    p.add_argument("--added-latency-ms", type=float, default=0.0, help="fault: delay every span POST")
    p.add_argument("--error-rate", type=float, default=0.0, help="fault: 503 this fraction of POSTs")
    p.add_argument("--seed", type=int, help="seed for the fault draws")
    p.add_argument(
        "--ingest-limit",
        type=float,
        default=0.0,
        help="fault: keep at most this many spans/s (token bucket, 1 s burst); the excess is answered "
        "202 and discarded, like an overloaded collector (0 = no limit)",
    )
    p.add_argument(
        "--fault-control",
        action="store_true",
        help="serve GET/POST /control/faults (JSON drop_probability, error_rate, added_latency_ms) to "
        "loopback clients: change the fault knobs while the collector runs",
    )
    p.add_argument("--allow-non-loopback", action="store_true", help="allow binding a non-loopback address")
    p.add_argument(
        "--otlp-grpc-port",
        type=int,
        help="also serve OTLP/gRPC (TraceService/Export) on this port, 0 = a free one (see the ready "
        "line's otlp_grpc_url); OTLP/HTTP is always on --port at /v1/traces",
    )
    p.add_argument(
        "--tempo-port",
        type=int,
        help="also serve a Grafana-Tempo-shaped query API (a stand-in) on this port (0 = a free one)",
    )
    p.add_argument("--tempo-tenant", help="Tempo API: multi-tenancy on, X-Scope-OrgID must be this tenant")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # stdout carries only the ready line; diagnostics (torn file tail, aiohttp errors) go to stderr.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (is_loopback(args.host) or args.allow_non_loopback):
        parser.error(f"refusing to listen on {args.host!r}: pass --allow-non-loopback to expose spans")
    try:
        faults = Faults(
            drop_probability=args.drop_probability,
            added_latency_ms=args.added_latency_ms,
            error_rate=args.error_rate,
            seed=args.seed,
            ingest_limit=args.ingest_limit,
        )
        limits = Limits(
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
            max_buffered_bytes=args.max_buffered_bytes,
        )
        if args.max_body_bytes <= 0:
            raise ValueError(f"--max-body-bytes must be positive, got {args.max_body_bytes}")
        limits.buffered_cap(args.max_body_bytes)
    except ValueError as exc:
        parser.error(str(exc))

    tempo_urls: list[str] = []
    tempo = None
    if args.tempo_port is not None:
        tempo = TempoOptions(args.tempo_port, args.tempo_tenant, ready=tempo_urls.append)
    elif args.tempo_tenant:
        parser.error("--tempo-tenant needs --tempo-port")

    if args.otlp_grpc_port is not None and not 0 <= args.otlp_grpc_port < 65536:
        parser.error(f"--otlp-grpc-port must be within [0, 65535], got {args.otlp_grpc_port}")
    grpc_urls: list[str] = []

    def ready(url: str) -> None:
        line: dict[str, object] = {"ready": True, "url": url, "pid": os.getpid()}
        if grpc_urls:
            line["otlp_grpc_url"] = grpc_urls[0]
        if tempo_urls:
            line["tempo_url"] = tempo_urls[0]
        print(json.dumps(line), flush=True)

    try:
        run_collector(
            args.host,
            args.port,
            args.data_dir,
            faults,
            ready,
            max_body_bytes=args.max_body_bytes,
            fsync=args.fsync,
            limits=limits,
            tempo=tempo,
            otlp_grpc_port=args.otlp_grpc_port,
            otlp_grpc_ready=grpc_urls.append,
            fault_control=args.fault_control,
        )
    except (OSError, ValueError, StoreError, sqlite3.Error) as exc:  # port in use, unwritable data dir
        print(f"collector: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
