"""aiohttp application serving the Zipkin v2 API (shared/specs/zipkin2-api.yaml) over a SpanStore.

Ingest follows what Envoy's Zipkin tracer needs (shared/ENVOY-NOTES.md, "Delivery to the
collector"): HTTP/1.1 chunked bodies without content-length, JSON or proto3, and **202** on success
(Envoy counts a 200 as dropped). Bad input is always a 4xx with a plain-text reason, never a 5xx.

Non-spec extras: `GET /health` and `GET /loadgen/stats`, plus optional fault injection (`Faults`)
so collection loss can be produced on purpose and the measuring instrument checked against it.

A batch the store cannot keep (disk full, I/O error) is a **500** and is never stored: the 202
comes only after the store's COMMIT (loadgen/stack/collector/store.py).

Resources are bounded (`Limits`): a request head must arrive within `header_timeout_s` of its
first byte (slowloris), a span body within `body_timeout_s` (408 otherwise); bodies being read
at once may hold at most `max_buffered_bytes` together (503 with `Retry-After` above it); after a
large body, freed memory is handed back to the OS (glibc `malloc_trim`).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import json
import random
import re
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestHandler

from loadgen.mesh.propagation import normalize_trace_id
from loadgen.stack.collector.store import SpanStore, SpanValidationError, StoreError, validate_spans

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "Faults",
    "IngestCounters",
    "Limits",
    "TokenBucket",
    "decode_proto_spans",
    "make_app",
    "start_server",
]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
RETRY_AFTER_S = 1  # what a 503 for "too many bodies in flight" asks the sender to wait
TRIM_AFTER_BYTES = 1024 * 1024  # hand freed memory back to the OS after a body this large
JSON_TYPES = frozenset({"application/json"})
PROTO_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
# Inflated by the handler (`_inflate`), bounded by max_body_bytes, never by aiohttp: see start_server.
SUPPORTED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
_TRACE_ID_RE = re.compile(r"[0-9a-fA-F]{16,32}")
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_PROTO_KINDS = {1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}


@dataclass(frozen=True)
class Faults:
    """Deliberate ingest failures, all off by default.

    drop_probability: answer 202 but discard each span with this probability (silent loss).
    added_latency_ms: delay every span POST answer by this much (slow backend).
    error_rate: answer 503 to this fraction of valid POSTs, storing nothing (failed delivery).
    seed: seeds the one random.Random behind both draws, so a run is reproducible.
    ingest_limit: spans/s the collector keeps (a token bucket holding one second of spans, full
        at start; 0 = no limit). Spans beyond it are answered **202 and discarded**, counted in
        `ingest.limited_spans` and the store's `spans_dropped`: an overloaded collector whose
        queue is full (Jaeger's collector drops and still answers 202). A 429/503 would lose the
        same spans (Envoy's Zipkin tracer does not retry a report) but would show up in the
        sender's failure counters; a silent drop is the case only read-back can find, which is
        what capacity runs must prove they detect. The reference emitter likewise sees "exported".
    """

    drop_probability: float = 0.0
    added_latency_ms: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None
    ingest_limit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop_probability", "error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.added_latency_ms < 0:
            raise ValueError(f"added_latency_ms must be >= 0, got {self.added_latency_ms}")
        if not 0.0 <= self.ingest_limit < float("inf"):
            raise ValueError(f"ingest_limit must be a finite number of spans/s >= 0, got {self.ingest_limit}")


@dataclass(frozen=True)
class Limits:
    """Resource bounds of the HTTP layer (the store bounds its own memory).

    header_timeout_s: a request head must be complete this long after its first byte, else the
        connection is closed (slowloris). Idle keep-alive connections are not affected.
    body_timeout_s: a span POST body must be read completely within this long, else 408 and the
        connection is closed.
    max_buffered_bytes: span bodies being read or decoded at the same time hold at most this
        many bytes together (wire size; a declared content-length is reserved up front); a POST
        that would go over it is answered 503 with Retry-After and its connection closed.
        0 means 4 x max_body_bytes. Must be at least max_body_bytes.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_buffered_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not 0.0 < value < float("inf"):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
        if self.max_buffered_bytes < 0:
            raise ValueError(f"max_buffered_bytes must be >= 0, got {self.max_buffered_bytes}")

    def buffered_cap(self, max_body_bytes: int) -> int:
        cap = self.max_buffered_bytes or 4 * max_body_bytes
        if cap < max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes ({cap}) must be >= max_body_bytes ({max_body_bytes}): "
                "a body of the maximum size could never be read"
            )
        return cap


@dataclass
class IngestCounters:
    """What happened to span POSTs at the HTTP layer (the store counts what it kept)."""

    posts: int = 0
    spans_received: int = 0  # valid spans decoded, before faults
    bad_requests: int = 0  # 400
    too_large: int = 0  # 413
    unsupported_media_type: int = 0  # 415
    fault_errors: int = 0  # 503 answered on purpose
    fault_error_spans: int = 0  # spans inside those 503'd POSTs
    limited_spans: int = 0  # answered 202 but discarded: over Faults.ingest_limit
    store_errors: int = 0  # 500: the store could not keep the batch (disk full, I/O error)
    store_error_spans: int = 0  # spans inside those POSTs: none of them stored
    busy: int = 0  # 503 + Retry-After: over Limits.max_buffered_bytes
    body_timeouts: int = 0  # 408: the body did not arrive within Limits.body_timeout_s


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity` (full at start); `take(n)` returns how
    many of n are granted (whole tokens only). `clock` is injectable for tests."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate and capacity must be > 0, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._last = float(clock())

    def take(self, n: int) -> int:
        now = float(self._clock())
        self._tokens = min(self.capacity, self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = now
        granted = min(n, int(self._tokens))
        self._tokens -= granted
        return granted


class _BadRequest(Exception):
    """Answer 400 with this message."""


class _TooLarge(Exception):
    """Answer 413."""


class _Busy(Exception):
    """Answer 503 with Retry-After: too many body bytes buffered at once."""


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0): returns freed heap memory to the OS. None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


_TRIM = _malloc_trim()


# --- proto3 decoding -----------------------------------------------------------------------------


def _ip_text(raw: bytes, version: int, where: str) -> str:
    try:
        address = ipaddress.IPv4Address(raw) if version == 4 else ipaddress.IPv6Address(raw)
    except ValueError as exc:
        raise SpanValidationError(f"{where}: {exc}") from exc
    return str(address)


def _proto_endpoint(endpoint: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if endpoint.service_name:
        out["serviceName"] = endpoint.service_name
    if endpoint.ipv4:
        out["ipv4"] = _ip_text(endpoint.ipv4, 4, f"{where}.ipv4")
    if endpoint.ipv6:
        out["ipv6"] = _ip_text(endpoint.ipv6, 6, f"{where}.ipv6")
    if endpoint.port:
        out["port"] = endpoint.port
    return out


def decode_proto_spans(body: bytes) -> list[dict[str, Any]]:
    """`zipkin.proto3.ListOfSpans` bytes -> raw Zipkin v2 JSON-shaped dicts (not yet validated).

    proto3 cannot tell "absent" from zero/empty, so zero values map to absent fields.
    """
    try:
        from opentelemetry.exporter.zipkin.proto.http.v2.gen import zipkin_pb2
    except ImportError as exc:  # a declared dependency, but be explicit about what is missing
        raise _BadRequest(
            "application/x-protobuf needs opentelemetry-exporter-zipkin-proto-http installed"
        ) from exc
    try:
        message = zipkin_pb2.ListOfSpans.FromString(body)
    except Exception as exc:  # third-party decoder: any failure here means a bad body
        raise _BadRequest(f"malformed zipkin.proto3.ListOfSpans: {exc}") from exc

    spans: list[dict[str, Any]] = []
    for i, pspan in enumerate(message.spans):
        where = f"span[{i}]"
        span: dict[str, Any] = {"traceId": pspan.trace_id.hex(), "id": pspan.id.hex()}
        if pspan.parent_id:
            span["parentId"] = pspan.parent_id.hex()
        if pspan.kind:
            kind = _PROTO_KINDS.get(pspan.kind)
            if kind is None:
                raise SpanValidationError(f"{where}.kind: unknown enum value {pspan.kind}")
            span["kind"] = kind
        if pspan.name:
            span["name"] = pspan.name
        if pspan.timestamp:
            span["timestamp"] = pspan.timestamp
        if pspan.duration:
            span["duration"] = pspan.duration
        if pspan.HasField("local_endpoint"):
            span["localEndpoint"] = _proto_endpoint(pspan.local_endpoint, f"{where}.localEndpoint")
        if pspan.HasField("remote_endpoint"):
            span["remoteEndpoint"] = _proto_endpoint(pspan.remote_endpoint, f"{where}.remoteEndpoint")
        if pspan.annotations:
            span["annotations"] = [{"timestamp": a.timestamp, "value": a.value} for a in pspan.annotations]
        if pspan.tags:
            span["tags"] = dict(pspan.tags)
        if pspan.debug:
            span["debug"] = True
        if pspan.shared:
            span["shared"] = True
        spans.append(span)
    return spans


def _decode_json(body: bytes) -> object:
    try:
        return json.loads(body)  # bytes: UTF-8/16/32 detected per RFC 8259
    except (ValueError, RecursionError) as exc:  # JSONDecodeError/UnicodeDecodeError, deep nesting
        raise _BadRequest(f"malformed JSON: {exc}") from exc


# --- the application -----------------------------------------------------------------------------


def _json(data: object) -> web.Response:
    return web.json_response(data, dumps=lambda obj: json.dumps(obj, separators=(",", ":")))


def _json_text(text: str) -> web.Response:
    """JSON the store already serialized (compact, ASCII): sent as it is."""
    return web.Response(text=text, content_type="application/json")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def _pad_trace_id(raw: str) -> str:
    # The spec's pattern allows 17..31 characters; Zipkin left-pads those to 128 bits.
    return raw.rjust(32, "0") if 16 < len(raw) < 32 else raw


def _int_param(request: web.Request, name: str, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not _INT_RE.fullmatch(raw):
        raise _BadRequest(f"{name}: expected an integer, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise _BadRequest(f"{name}: must be >= {minimum}, got {value}")
    return value


def _tcp_nodelay(request: web.Request) -> bool | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class _Reservation:
    """Body bytes one POST holds against the collector-wide cap; released when it is answered."""

    def __init__(self, collector: _Collector) -> None:
        self._collector = collector
        self.held = 0

    def take(self, n: int) -> None:
        c = self._collector
        if c.buffered + n > c.max_buffered_bytes:
            raise _Busy
        c.buffered += n
        self.held += n

    def release(self) -> None:
        c = self._collector
        c.buffered -= self.held
        c.peak_held = max(c.peak_held, self.held)
        self.held = 0
        if c.buffered == 0 and c.peak_held >= TRIM_AFTER_BYTES and _TRIM is not None:
            c.peak_held = 0
            _TRIM()  # the large body and its decoded spans are gone: give the pages back


@dataclass
class _Collector:
    store: SpanStore
    max_body_bytes: int
    faults: Faults
    limits: Limits = field(default_factory=Limits)
    counters: IngestCounters = field(default_factory=IngestCounters)
    rng: random.Random = field(init=False)
    bucket: TokenBucket | None = field(init=False)
    max_buffered_bytes: int = field(init=False)
    buffered: int = 0  # body bytes held by POSTs in progress
    peak_held: int = 0  # the largest body since the last malloc_trim

    def __post_init__(self) -> None:
        self.max_buffered_bytes = self.limits.buffered_cap(self.max_body_bytes)
        self.rng = random.Random(self.faults.seed)
        limit = self.faults.ingest_limit
        # One second of spans: Envoy flushes about once per flush interval, so smaller would
        # punish its batching rather than the average rate.
        self.bucket = TokenBucket(limit, max(limit, 1.0)) if limit > 0 else None

    async def _read_body(self, request: web.Request, reservation: _Reservation) -> bytes:
        # Chunked bodies have no content-length: cap while streaming. These are the bytes on the
        # wire; `_inflate` caps the inflated body too. Chunks are joined once at the end (growing
        # one buffer reallocates it over and over and leaves the heap fragmented).
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise _TooLarge
        if declared:
            reservation.take(declared)  # refuse before reading anything
        chunks: list[bytes] = []

        async def read_all() -> None:
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _TooLarge
                if size > reservation.held:
                    reservation.take(size - reservation.held)
                chunks.append(chunk)

        try:
            if request.content.is_eof():  # all of it arrived with the head: nothing to wait for
                await read_all()
            else:
                async with asyncio.timeout(self.limits.body_timeout_s):
                    await read_all()
        except (web.RequestPayloadError, ContentEncodingError) as exc:  # corrupt gzip, bad chunking
            raise _BadRequest(f"cannot read body: {exc}") from exc
        except ConnectionResetError as exc:  # the sender went away mid-body: nobody reads the answer
            raise _BadRequest(f"cannot read body: {exc}") from exc
        body = b"".join(chunks)
        chunks.clear()
        return body

    async def post_spans(self, request: web.Request) -> web.Response:
        reservation = _Reservation(self)
        try:
            return await self._post_spans(request, reservation)
        finally:
            reservation.release()

    async def _post_spans(self, request: web.Request, reservation: _Reservation) -> web.Response:
        self.counters.posts += 1
        # Envoy and most tracers send application/json; an absent type is treated the same way.
        media_type = (
            request.content_type.lower() if hdrs.CONTENT_TYPE in request.headers else "application/json"
        )
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if media_type not in JSON_TYPES | PROTO_TYPES or encoding not in SUPPORTED_ENCODINGS:
            self.counters.unsupported_media_type += 1
            return _text(415, f"unsupported content-type {media_type!r} / content-encoding {encoding!r}")
        try:
            body = _inflate(await self._read_body(request, reservation), encoding, self.max_body_bytes)
            raw = decode_proto_spans(body) if media_type in PROTO_TYPES else _decode_json(body)
            del body
            spans = validate_spans(raw)
            del raw
        except _Busy:
            self.counters.busy += 1
            busy = _text(503, f"over {self.max_buffered_bytes} body bytes in flight: retry later")
            busy.headers[hdrs.RETRY_AFTER] = str(RETRY_AFTER_S)
            busy.force_close()  # the body was not read: the connection cannot carry another request
            return busy
        except TimeoutError:
            self.counters.body_timeouts += 1
            slow = _text(408, f"body not received within {self.limits.body_timeout_s:g} s")
            slow.force_close()
            return slow
        except _TooLarge:
            self.counters.too_large += 1
            return _text(413, f"body exceeds {self.max_body_bytes} bytes")
        except (_BadRequest, SpanValidationError) as exc:
            self.counters.bad_requests += 1
            return _text(400, str(exc))
        self.counters.spans_received += len(spans)

        faults = self.faults
        if faults.added_latency_ms > 0:
            await asyncio.sleep(faults.added_latency_ms / 1000)
        if faults.error_rate > 0 and self.rng.random() < faults.error_rate:
            self.counters.fault_errors += 1
            self.counters.fault_error_spans += len(spans)
            return _text(503, "injected fault: error_rate")
        if self.bucket is not None:
            granted = self.bucket.take(len(spans))
            if granted < len(spans):
                # Keep the first `granted` spans of the batch, like a queue that fills up mid-batch.
                self.counters.limited_spans += len(spans) - granted
                self.store.count_dropped(len(spans) - granted)
                spans = spans[:granted]
        if faults.drop_probability > 0:
            kept = [s for s in spans if self.rng.random() >= faults.drop_probability]
            self.store.count_dropped(len(spans) - len(kept))
            spans = kept
        try:
            self.store.add(spans, validated=True)  # one transaction, committed before the 202
        except StoreError as exc:
            self.counters.store_errors += 1
            self.counters.store_error_spans += len(spans)
            return _text(500, f"spans not stored: {exc}")
        return web.Response(status=202)

    async def get_trace(self, request: web.Request) -> web.Response:
        raw = request.match_info["trace_id"]
        if not _TRACE_ID_RE.fullmatch(raw):
            return _text(400, f"traceId: expected 16 to 32 hex characters, got {raw!r}")
        trace_id = normalize_trace_id(_pad_trace_id(raw))
        trace = self.store.get_trace_json(trace_id)
        if trace is None:
            # Byte for byte what Zipkin answers (openzipkin/zipkin ZipkinQueryApiV2.getTrace):
            # Armeria's ANY_TEXT_TYPE, and the normalized id + " not found" without a newline.
            # Readers take exactly this form as "missing" (loadgen/backends/zipkin.py).
            return web.Response(status=404, body=f"{trace_id} not found".encode(), content_type="text/*")
        return _json_text(trace)

    async def get_trace_many(self, request: web.Request) -> web.Response:
        raw_ids = request.query.get("traceIds", "").split(",")
        ids: list[str] = []
        for raw in raw_ids:
            if not _TRACE_ID_RE.fullmatch(raw):
                return _text(400, f"traceIds: expected comma-separated hex trace ids, got {raw!r}")
            ids.append(normalize_trace_id(_pad_trace_id(raw)))
        if len(set(ids)) != len(ids):
            return _text(400, "traceIds: duplicate trace ids")
        if len(ids) < 2:
            return _text(400, "traceIds: needs at least 2 ids; use /api/v2/trace/{traceId} for one")
        return _json_text(self.store.get_many_json(ids))

    async def get_services(self, request: web.Request) -> web.Response:
        return _json(self.store.services())

    async def get_span_names(self, request: web.Request) -> web.Response:
        service = request.query.get("serviceName", "")
        if not service:
            return _text(400, "serviceName is required")
        return _json(self.store.span_names(service))

    async def get_traces(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            min_duration = _int_param(request, "minDuration", 1)
            max_duration = _int_param(request, "maxDuration", 1)
            end_ts = _int_param(request, "endTs", 1)
            lookback = _int_param(request, "lookback", 1)
            limit = _int_param(request, "limit", 1)
            if max_duration is not None:
                if min_duration is None:
                    raise _BadRequest("maxDuration is only valid with minDuration")
                if max_duration < min_duration:
                    raise _BadRequest("maxDuration must be >= minDuration")
        except _BadRequest as exc:
            return _text(400, str(exc))
        try:
            traces = self.store.search_json(
                service_name=query.get("serviceName") or None,
                span_name=query.get("spanName") or None,
                annotation_query=query.get("annotationQuery") or None,
                min_duration=min_duration,
                max_duration=max_duration,
                end_ts_ms=end_ts,
                lookback_ms=lookback,
                limit=10 if limit is None else limit,
            )
        except StoreError as exc:  # the disk is full and the indexes cannot catch up
            return _text(500, f"search unavailable: {exc}")
        return _json_text(traces)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(self, request: web.Request) -> web.Response:
        return _json(
            {
                **self.store.stats(),
                "ingest": asdict(self.counters),
                "faults": asdict(self.faults),
                "max_body_bytes": self.max_body_bytes,
                "limits": {**asdict(self.limits), "max_buffered_bytes": self.max_buffered_bytes},
                "buffered_bytes": self.buffered,
                # Self-check: Nagle on a loopback server stalls each response ~40 ms (ENVOY-NOTES).
                "tcp_nodelay": _tcp_nodelay(request),
            }
        )


def _inflate_stream(raw: bytes, wbits: int, limit: int, name: str) -> bytes:
    out = bytearray()
    data = raw
    while True:  # gzip allows several members, one after the other
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))  # never more than limit + 1
        except zlib.error as exc:
            raise _BadRequest(f"cannot read body: corrupt {name} stream: {exc}") from exc
        if len(out) > limit:
            raise _TooLarge
        if not inflater.eof:
            raise _BadRequest(f"cannot read body: truncated {name} stream")
        data = inflater.unused_data
        if wbits != 31 or not data:
            return bytes(out)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent, decoded per Content-Encoding: at most `limit` bytes (else _TooLarge, so
    a compression bomb is cut off after limit + 1 bytes), _BadRequest for a corrupt or truncated
    stream. HTTP's `deflate` is the zlib format; raw deflate, which some clients send, also works."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return _inflate_stream(body, 31, limit, "gzip")
    try:
        return _inflate_stream(body, 15, limit, "deflate")
    except _BadRequest:
        return _inflate_stream(body, -15, limit, "deflate")


def make_app(
    store: SpanStore,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    faults: Faults | None = None,
    limits: Limits | None = None,
) -> web.Application:
    """The collector's routes over `store`. The caller owns the store (and closes it).

    Serve it with `start_server` (auto_decompress=False: the span handler inflates bodies itself;
    and the request-head deadline of `limits`)."""
    if max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    limits = limits or Limits()
    collector = _Collector(
        store=store, max_body_bytes=max_body_bytes, faults=faults or Faults(), limits=limits
    )
    # aiohttp's own read limit stays out of the way: _read_body enforces max_body_bytes.
    app = web.Application(client_max_size=max_body_bytes + 1, middlewares=[_mark_busy])
    app[_LIMITS] = limits
    app.add_routes(
        [
            web.post("/api/v2/spans", collector.post_spans),
            web.get("/api/v2/spans", collector.get_span_names),
            web.get("/api/v2/trace/{trace_id}", collector.get_trace),
            web.get("/api/v2/traceMany", collector.get_trace_many),
            web.get("/api/v2/services", collector.get_services),
            web.get("/api/v2/traces", collector.get_traces),
            web.get("/health", collector.health),
            web.get("/loadgen/stats", collector.stats),
        ]
    )
    return app


# --- the request-head deadline ---------------------------------------------------------------------

_LIMITS = web.AppKey("limits", Limits)


class _HeadDeadline(asyncio.Protocol):
    """In front of aiohttp's RequestHandler (which has no header timeout): bytes arriving while no
    request is being handled start a request head, which must be complete within the timeout,
    else `_Sweeper` closes the connection. The clock stops when the request's handler starts
    (`_mark_busy`). An idle keep-alive connection sends no bytes and is left alone."""

    def __init__(self, handler: RequestHandler, sweeper: _Sweeper) -> None:
        self._handler = handler
        self._sweeper = sweeper
        self.transport: asyncio.Transport | None = None
        self.head_since: float | None = None  # loop time of the first byte of a pending head
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sweeper.guards[self._handler] = self
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.head_since is None:
            self.head_since = self._sweeper.loop.time()
        self._handler.data_received(data)

    def eof_received(self) -> None:
        self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweeper.guards.pop(self._handler, None)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class _Sweeper:
    """Closes connections whose request head is late. One timer per server, not one per request:
    a connection is cut between `timeout_s` and 1.25 x `timeout_s` after its head began."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.guards: dict[RequestHandler, _HeadDeadline] = {}
        self.cut = 0  # connections closed for a late head
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self.loop.call_later(self.timeout_s / 4, self._sweep)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        too_old = self.loop.time() - self.timeout_s
        for guard in list(self.guards.values()):
            since = guard.head_since
            if since is not None and since <= too_old and not guard.busy and guard.transport is not None:
                self.cut += 1
                guard.transport.close()
        self.start()


_SWEEPERS: list[_Sweeper] = []  # the servers running in this process (usually one)


def _guard_of(request: web.Request) -> _HeadDeadline | None:
    for sweeper in _SWEEPERS:
        guard = sweeper.guards.get(request.protocol)
        if guard is not None:
            return guard
    return None


@web.middleware
async def _mark_busy(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guard = _guard_of(request)
    if guard is None:
        return await handler(request)
    guard.busy = True
    guard.head_since = None
    try:
        return await handler(request)
    finally:
        guard.busy = False


class _Runner(web.AppRunner):
    """AppRunner whose sites accept connections through `_HeadDeadline`."""

    def __init__(self, app: web.Application, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s
        self.sweeper: _Sweeper | None = None

    async def setup(self) -> None:
        await super().setup()
        self.sweeper = _Sweeper(asyncio.get_running_loop(), self._header_timeout_s)
        self.sweeper.start()
        _SWEEPERS.append(self.sweeper)

    async def cleanup(self) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
            _SWEEPERS.remove(self.sweeper)
        await super().cleanup()

    @property
    def server(self) -> Any:  # sites call it as the protocol factory
        real = super().server
        sweeper = self.sweeper
        if real is None or sweeper is None:
            return real

        def protocol() -> _HeadDeadline:
            return _HeadDeadline(real(), sweeper)

        return protocol


async def start_server(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve `app` on host:port (0 = a free port); return the runner (to `cleanup()`) and base URL.

    Access logging is off: one log line per span POST costs more than handling it. aiohttp sets
    TCP_NODELAY on every accepted connection (base_protocol.connection_made); /loadgen/stats
    reports it.

    aiohttp's own decompression is off: its parser raises a corrupt deflate stream's error when
    the message ends, outside the handler, which then waits for a body that never comes (the
    client hangs, found by fuzzing), and a mid-stream error resurfaces after the 400 and resets
    the keep-alive connection. The handler inflates instead (`_inflate`).
    """
    limits = app.get(_LIMITS) or Limits()
    # lingering_time: after an early answer (408, 413, 503) aiohttp drains the unread body this
    # long before closing, so a stalled sender does not hold the connection for aiohttp's 10 s.
    runner = _Runner(
        app,
        limits.header_timeout_s,
        access_log=None,
        shutdown_timeout=5.0,
        auto_decompress=False,
        lingering_time=1.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{url_host}:{bound_port}"
