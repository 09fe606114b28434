"""Ingest rate of the embedded collector: Zipkin v2 JSON spans/s and spans per collector CPU-second.

    python bench/collector_ingest.py [--quick] [--spans N] [--connections C] [--batch-sizes 5,100]
                                     [--protocol zipkin|otlp-http|otlp-grpc[,...]]

Starts `python -m loadgen.stack.collector --port 0 --data-dir TMP` (fresh per batch size, stopped by
PID), pre-builds Envoy-shaped spans (the 3 spans per request the embedded mesh really sends:
gateway SERVER + CLIENT, sidecar SERVER, with Envoy's tags; every span unique) serialized as POST
bodies of 5 spans (Envoy's default min_flush_spans) and of 100, then POSTs all of them from this
process (a separate client process from the collector) over C concurrent keep-alive connections
(aiohttp). Collector CPU comes from /proc/PID/stat (utime + stime) deltas.

Baseline: the span output of one Envoy gateway at 100 % sampling, taken from shared/ENVOY-NOTES.md
("Cost": ~6k req/s on this machine at best x 3 spans per request = 18k spans/s). The ratio says how
many such gateways one collector core keeps up with.

--protocol otlp-http / otlp-grpc (comma-separated for both): the same spans also as OTLP
ExportTraceServiceRequest protobuf (one ResourceSpans per service.name, Envoy's tags as string
attributes), same batch sizes, POSTed to /v1/traces or sent as TraceService/Export calls (grpc.aio,
C channels, bodies pre-serialized) to the collector's --otlp-grpc-port; each batch size is measured
over Zipkin first, then over each OTLP protocol, on fresh collectors. Extra ratio: OTLP spans per
collector CPU-second / Zipkin JSON's in the same run.

Collector CPU is read after the run's `GET /loadgen/stats`, which first indexes the spans ingest
left unindexed (the store indexes in bulk every few thousand rows): work every stored span costs.
"POSTs/commit" is the store's batches per transaction (group commit: POSTs that arrive together
share one COMMIT; 1.0 means every POST committed alone).

--floor: at each batch size, the same POSTs also go to two servers that do no span work at all:
loadgen's HTTP setup (aiohttp through the collector's start_server, with its request-head deadline
and middleware) with a handler that reads the body and answers 202, and a bare asyncio protocol
that finds Content-Length, skips the body and writes a canned 202 (not a server: the event loop
and the sockets alone). Extra ratios: the collector's spans per CPU-second / each floor's, i.e.
the share of the collector's CPU that is HTTP, not spans.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import grpc
from _common import (
    Collector,
    banner,
    envoy_trace,
    footer,
    print_table,
    proc_cpu_s,
    ratio_line,
    self_cpu_s,
    stop_pid,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

ENVOY_REQ_PER_S = 6000.0  # ENVOY-NOTES "Cost": gateway at 100 % sampling, ~4.7-6.2k req/s
SPANS_PER_REQUEST = 3  # gateway SERVER + gateway CLIENT + sidecar SERVER
ENVOY_SPANS_PER_S = ENVOY_REQ_PER_S * SPANS_PER_REQUEST
GOAL_SPANS_PER_CPU_S = 50_000.0
PROTOCOLS = ("zipkin", "otlp-http", "otlp-grpc")
OTLP_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
OTLP_KINDS = {"SERVER": Span.SPAN_KIND_SERVER, "CLIENT": Span.SPAN_KIND_CLIENT}

Body = tuple[bytes, int]  # a request body and the spans it holds


def otlp_body(spans: list[dict[str, Any]]) -> bytes:
    """Zipkin-shaped Envoy spans as the OTLP protobuf body Envoy's OpenTelemetry tracer would send:
    one ResourceSpans per service.name, the tags as string attributes (no Zipkin annotations)."""
    request = ExportTraceServiceRequest()
    by_service: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_service.setdefault(span["localEndpoint"]["serviceName"], []).append(span)
    for service, group in by_service.items():
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
        scope = rs.scope_spans.add()
        for z in group:
            sp = scope.spans.add(
                trace_id=bytes.fromhex(z["traceId"]), span_id=bytes.fromhex(z["id"]), name=z["name"],
                kind=OTLP_KINDS[z["kind"]], start_time_unix_nano=z["timestamp"] * 1000,
                end_time_unix_nano=(z["timestamp"] + z["duration"]) * 1000,
            )  # fmt: skip
            if "parentId" in z:
                sp.parent_span_id = bytes.fromhex(z["parentId"])
            for key, value in z["tags"].items():
                sp.attributes.add(key=key, value=AnyValue(string_value=value))
    body: bytes = request.SerializeToString()
    return body


def build_bodies(total_spans: int, batch_size: int, seed: int, protocol: str = "zipkin") -> list[Body]:
    rng = random.Random(seed)
    ts = int(time.time() * 1e6)
    spans: list[dict[str, Any]] = []
    while len(spans) < total_spans:
        spans.extend(envoy_trace(rng, ts))
        ts += 150
    spans = spans[:total_spans]
    batches = [spans[i : i + batch_size] for i in range(0, len(spans), batch_size)]
    if protocol == "zipkin":
        return [(json.dumps(b, separators=(",", ":")).encode(), len(b)) for b in batches]
    return [(otlp_body(b), len(b)) for b in batches]


async def post_all(
    url: str, bodies: list[Body], batch_size: int, connections: int, protocol: str = "zipkin"
) -> tuple[int, int, float]:
    """POST every body; returns (spans acknowledged with 202 (OTLP: 200), other answers, wall s)."""
    zipkin = protocol == "zipkin"
    endpoint = f"{url}/api/v2/spans" if zipkin else f"{url}/v1/traces"
    queue = iter(bodies)
    ok_spans = 0
    bad = 0
    headers = {"Content-Type": "application/json" if zipkin else "application/x-protobuf"}
    want = 202 if zipkin else 200

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok_spans, bad
        for body, n_spans in queue:  # the shared iterator hands each body to exactly one worker
            async with session.post(endpoint, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == want:
                    ok_spans += n_spans
                else:
                    bad += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm the connections so connection set-up is not in the measurement.
        await asyncio.gather(*(session.get(f"{url}/health") for _ in range(connections)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        wall = time.perf_counter() - t0
    return ok_spans, bad, wall


async def export_all(target: str, bodies: list[Body], connections: int) -> tuple[int, int, float]:
    """TraceService/Export every body over `connections` channels (each its own TCP connection);
    returns (spans answered OK, other answers, wall seconds)."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
    queue = iter(bodies)
    ok_spans = 0
    bad = 0

    async def worker(channel: grpc.aio.Channel) -> None:
        nonlocal ok_spans, bad
        export = channel.unary_unary(OTLP_EXPORT)  # no (de)serializer: the bodies are already bytes
        for body, n_spans in queue:
            try:
                await export(body, timeout=60)
                ok_spans += n_spans
            except grpc.aio.AioRpcError:
                bad += 1

    try:
        # Connect every channel first so connection set-up is not in the measurement.
        await asyncio.gather(*(ch.channel_ready() for ch in channels))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(ch) for ch in channels))
        wall = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    return ok_spans, bad, wall


def measure(
    batch_size: int, total_spans: int, connections: int, tmp: Path, protocol: str = "zipkin"
) -> list[object]:
    bodies = build_bodies(total_spans, batch_size, seed=batch_size, protocol=protocol)
    mean_bytes = sum(len(b) for b, _ in bodies) / len(bodies)
    workdir = tmp / f"batch{batch_size}-{protocol}"
    (workdir / "data").mkdir(parents=True)
    with Collector(workdir / "data", otlp_grpc=protocol == "otlp-grpc") as collector:
        cpu0, client0 = proc_cpu_s(collector.pid), self_cpu_s()
        if protocol == "otlp-grpc":
            sent = export_all(collector.grpc_target, bodies, connections)
        else:
            sent = post_all(collector.url, bodies, batch_size, connections, protocol)
        ok_spans, bad, wall = asyncio.run(sent)
        # Before reading the CPU: the stats query indexes what ingest left for later.
        with urllib.request.urlopen(f"{collector.url}/loadgen/stats") as resp:
            stats = json.load(resp)
        cpu = proc_cpu_s(collector.pid) - cpu0
        client_cpu = self_cpu_s() - client0
    if stats["spans_accepted"] != ok_spans or bad:
        print(
            f"   ! collector accepted {stats['spans_accepted']} spans, client saw {ok_spans} acknowledged, "
            f"{bad} {'non-202 answers' if protocol == 'zipkin' else protocol + ' refusals'}",
            file=sys.stderr,
        )
    rate = ok_spans / wall
    per_cpu_s = ok_spans / cpu if cpu > 0 else 0.0
    return [
        batch_size,
        len(bodies),
        round(mean_bytes),
        ok_spans,
        stats["spans_accepted"],
        bad,
        wall,
        rate,
        100.0 * cpu / wall,
        per_cpu_s,
        100.0 * client_cpu / wall,
        stats["batches"] / stats["commits"] if stats.get("commits") else None,
    ]


# --- the HTTP floor (--floor) ----------------------------------------------------------------------

FLOORS = ("aiohttp-floor", "asyncio-floor")


async def _serve_floor(kind: str) -> None:
    """A server that does no span work (see --floor in the module docstring), until SIGTERM."""
    import signal

    from aiohttp import web

    from loadgen.stack.collector.deadline import mark_busy, start_server

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "aiohttp-floor":

        async def accept(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=202)

        async def health(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application(middlewares=[mark_busy])
        app.add_routes([web.post("/api/v2/spans", accept), web.get("/health", health)])
        runner, url = await start_server(app)
        print(json.dumps({"ready": True, "url": url, "pid": os.getpid()}), flush=True)
        await stop.wait()
        await runner.cleanup()
        return
    server = await loop.create_server(_CannedHttp, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"ready": True, "url": f"http://127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
    await stop.wait()
    server.close()


class _CannedHttp(asyncio.Protocol):
    """HTTP/1.1 with Content-Length only, every request answered 202 (200 "ok" to a GET)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            size = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip() == b"content-length":
                    size = int(value)
            if len(self.buffer) < end + 4 + size:
                return
            self.buffer = self.buffer[end + 4 + size :]
            get = head.startswith(b"get")
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                if get
                else b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
            )


def measure_floor(kind: str, batch_size: int, total_spans: int, connections: int) -> list[object]:
    """The Zipkin POSTs of `measure` against a floor server: a row of the same columns."""
    bodies = build_bodies(total_spans, batch_size, seed=batch_size)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-floor", kind], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        cpu0, client0 = proc_cpu_s(proc.pid), self_cpu_s()
        ok_spans, bad, wall = asyncio.run(post_all(ready["url"], bodies, batch_size, connections))
        cpu = proc_cpu_s(proc.pid) - cpu0
        client_cpu = self_cpu_s() - client0
    finally:
        stop_pid(proc.pid)
        if proc.stdout is not None:
            proc.stdout.close()
    mean_bytes = sum(len(b) for b, _ in bodies) / len(bodies)
    return [
        batch_size, len(bodies), round(mean_bytes), ok_spans, None, bad, wall, ok_spans / wall,
        100.0 * cpu / wall, ok_spans / cpu if cpu > 0 else 0.0, 100.0 * client_cpu / wall, None,
    ]  # fmt: skip


COLUMNS = [
    "spans/POST",
    "POSTs",
    "bytes/POST",
    "spans 202'd",
    "spans stored",
    "non-202",
    "wall s",
    "spans/s",
    "collector CPU %",
    "spans/collector CPU-s",
    "client CPU %",
    "POSTs/commit",
]
OTLP_COLUMNS = [
    "protocol",
    "spans/request",
    "requests",
    "bytes/request",
    "spans acked",
    "spans stored",
    "refused",
]
OTLP_COLUMNS += COLUMNS[len(OTLP_COLUMNS) - 1 :]


def parse_protocols(text: str) -> list[str]:
    """`--protocol`: zipkin or a comma-separated list of OTLP protocols; Zipkin always comes first."""
    given = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in given if t not in PROTOCOLS]
    if bad or not given:
        raise argparse.ArgumentTypeError(f"must be {' or '.join(PROTOCOLS)} (comma-separated), got {text!r}")
    return ["zipkin", *(t for t in PROTOCOLS[1:] if t in given)]


def print_closing(rows: list[list[object]], protocols: list[str]) -> None:
    zipkin_per_cpu = {row[1]: float(row[10]) for row in rows if row[0] == "zipkin"}
    for row in rows:
        if row[0] != "zipkin":
            continue
        size, rate, per_cpu = row[1], float(row[8]), float(row[10])
        ratio_line(
            f"collector spans per CPU-second / {GOAL_SPANS_PER_CPU_S:,.0f} goal @ {size} spans/POST",
            per_cpu / GOAL_SPANS_PER_CPU_S,
            ">=",
            1.0,
            f"({per_cpu:,.0f} spans per collector CPU-s)",
        )
        ratio_line(
            f"collector spans per CPU-second / Envoy max span output @ {size} spans/POST",
            per_cpu / ENVOY_SPANS_PER_S,
            note=f"(wall rate {rate:,.0f} spans/s = {rate / ENVOY_SPANS_PER_S:.3f} x Envoy)",
        )
    for row in rows:
        if row[0] not in FLOORS:
            continue
        size, floor = row[1], float(row[10])
        collector = zipkin_per_cpu.get(size, 0.0)
        us_collector = 1e6 * int(size) / collector if collector else 0.0
        us_floor = 1e6 * int(size) / floor if floor else 0.0
        ratio_line(
            f"collector spans per CPU-second / {row[0]} @ {size} spans/POST",
            collector / floor if floor else None,
            note=f"(collector {us_collector:,.0f} CPU-us per POST, of which this floor's {us_floor:,.0f})",
        )
    for row in rows:
        if row[0] == "zipkin" or row[0] in FLOORS:
            continue
        size, per_cpu, base = row[1], float(row[10]), zipkin_per_cpu.get(row[1], 0.0)
        ratio_line(
            f"{row[0]} / zipkin JSON spans per collector CPU-second @ {size} spans/request",
            per_cpu / base if base else None,
            note=f"({per_cpu:,.0f} vs {base:,.0f} spans per collector CPU-s, same run)",
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument("--spans", type=int, default=200_000, help="spans POSTed per batch size (default 200000)")
    p.add_argument("--connections", type=int, default=4, help="concurrent connections (default 4)")
    p.add_argument("--batch-sizes", default="5,100", help="spans per POST (default 5,100)")
    p.add_argument(
        "--protocol",
        type=parse_protocols,
        default=["zipkin"],
        help="zipkin (default), otlp-http, otlp-grpc or otlp-http,otlp-grpc: OTLP is measured "
        "after Zipkin JSON at each batch size and compared with it",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="also POST the Zipkin bodies to servers that do no span work (aiohttp as the collector "
        "runs it; a bare asyncio protocol) and print the collector's share of CPU that is HTTP",
    )
    p.add_argument("--serve-floor", choices=FLOORS, help=argparse.SUPPRESS)  # the floor's own process
    args = p.parse_args()
    if args.serve_floor:
        asyncio.run(_serve_floor(args.serve_floor))
        return 0
    if args.quick:
        args.spans = 3000
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    protocols: list[str] = args.protocol
    banner(
        f"collector ingest: {args.spans:,} Envoy-shaped spans per batch size, {args.connections} connections"
        + (f"; protocols {', '.join(protocols)}" if len(protocols) > 1 else ""),
        args.quick,
    )
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        for size in sizes:
            for protocol in protocols:
                rows.append([protocol, *measure(size, args.spans, args.connections, Path(tmp), protocol)])
            for kind in FLOORS if args.floor else ():
                rows.append([kind, *measure_floor(kind, size, args.spans, args.connections)])
    if len(protocols) > 1 or args.floor:
        print_table(OTLP_COLUMNS, rows)
    else:
        print_table(COLUMNS, [row[1:] for row in rows])
    print(
        f"   baseline: Envoy gateway span output at 100 % sampling = {ENVOY_REQ_PER_S:,.0f} req/s x "
        f"{SPANS_PER_REQUEST} spans = {ENVOY_SPANS_PER_S:,.0f} spans/s (shared/ENVOY-NOTES.md, 'Cost')"
    )
    print()
    print_closing(rows, protocols)
    footer()
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
