"""`python -m loadgen.stack.collector`: run the embedded Zipkin-v2-compatible collector.

Prints exactly one JSON line once listening, then serves until SIGINT/SIGTERM and exits 0:

    {"ready": true, "url": "http://127.0.0.1:PORT", "pid": N}
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from loadgen.stack.collector.server import DEFAULT_MAX_BODY_BYTES, Faults, make_app, start_server
from loadgen.stack.collector.store import SpanStore

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
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when `stop` is None); then close everything."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    # "localhost" may resolve to two addresses, each getting a different free port for port 0.
    bind_host = "127.0.0.1" if host == "localhost" else host
    with SpanStore(data_dir, fsync=fsync) as store:
        runner, url = await start_server(
            make_app(store, max_body_bytes=max_body_bytes, faults=faults), bind_host, port
        )
        try:
            if ready_callback is not None:
                ready_callback(url)
            await stop.wait()
        finally:
            await runner.cleanup()  # lets in-flight POSTs finish before the store file closes


def run_collector(
    host: str,
    port: int,
    data_dir: Path | None,
    faults: Faults | None = None,
    ready_callback: Callable[[str], None] | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    fsync: bool = False,
) -> None:
    """Blocking form of serve_collector: runs its own event loop until SIGINT/SIGTERM."""
    asyncio.run(
        serve_collector(
            host, port, data_dir, faults, ready_callback, max_body_bytes=max_body_bytes, fsync=fsync
        )
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadgen.stack.collector",
        description="Zipkin-v2-compatible span collector (POST /api/v2/spans, query API).",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only by default)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (see the ready line)")
    p.add_argument("--data-dir", type=Path, help="keep spans in DIR/spans.jsonl across restarts")
    p.add_argument("--fsync", action="store_true", help="fsync every batch (survives a machine crash)")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
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
    p.add_argument("--allow-non-loopback", action="store_true", help="allow binding a non-loopback address")
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
    except ValueError as exc:
        parser.error(str(exc))

    def ready(url: str) -> None:
        print(json.dumps({"ready": True, "url": url, "pid": os.getpid()}), flush=True)

    try:
        run_collector(
            args.host,
            args.port,
            args.data_dir,
            faults,
            ready,
            max_body_bytes=args.max_body_bytes,
            fsync=args.fsync,
        )
    except (OSError, ValueError) as exc:  # port in use, unwritable data dir, bad size
        print(f"collector: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
