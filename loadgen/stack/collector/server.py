"""aiohttp application serving the Zipkin v2 API (shared/specs/zipkin2-api.yaml) over a SpanStore.

Ingest follows what Envoy's Zipkin tracer needs (shared/ENVOY-NOTES.md, "Delivery to the
collector"): HTTP/1.1 chunked bodies without content-length, JSON or proto3, and **202** on success
(Envoy counts a 200 as dropped). Bad input is always a 4xx with a plain-text reason, never a 5xx.

OTLP/HTTP ingest (`POST /v1/traces`, loadgen/stack/collector/otlp.py for the decoding and the
mapping to Zipkin v2): binary protobuf or JSON, gzip; **200** with an ExportTraceServiceResponse in
the request's encoding once the spans are stored, else a google.rpc.Status body: 400 bad data,
413 too large, 415 unsupported type, and the same 503/408/500 as the Zipkin POST. OTLP/gRPC
(otlp_grpc.py) shares `_Collector.ingest`.

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
import json
import random
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field

from aiohttp import hdrs, web
from aiohttp.http_exceptions import ContentEncodingError

from loadgen.mesh.ids import normalize_trace_id
from loadgen.stack.collector import otlp
from loadgen.stack.collector.deadline import LIMITS_KEY, mark_busy, start_server
from loadgen.stack.collector.decode import (
    JSON_TYPES,
    PROTO_TYPES,
    SUPPORTED_ENCODINGS,
    BadRequest,
    TooLarge,
    decode_json_spans,
    decode_proto_spans,
    inflate,
)
from loadgen.stack.collector.limits import Faults, IngestCounters, Limits, TokenBucket
from loadgen.stack.collector.normalize import Span, ZipkinSpan
from loadgen.stack.collector.store import SpanStore, SpanValidationError, StoreError, validate_spans

__all__ = [
    "COLLECTOR_KEY",
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
_TRACE_ID_RE = re.compile(r"[0-9a-fA-F]{16,32}")
_INT_RE = re.compile(r"-?[0-9]{1,19}")


class _Busy(Exception):
    """Answer 503 with Retry-After: too many body bytes buffered at once."""


_Answer = Callable[[int, str], web.Response]  # (status, message) -> the response, in the API's format
_REFUSALS = (_Busy, TimeoutError, TooLarge, BadRequest, SpanValidationError)


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
        raise BadRequest(f"{name}: expected an integer, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise BadRequest(f"{name}: must be >= {minimum}, got {value}")
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
        # wire; `inflate` caps the inflated body too. Chunks are joined once at the end (growing
        # one buffer reallocates it over and over and leaves the heap fragmented).
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise TooLarge
        if declared:
            reservation.take(declared)  # refuse before reading anything
        chunks: list[bytes] = []

        async def read_all() -> None:
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise TooLarge
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
            raise BadRequest(f"cannot read body: {exc}") from exc
        except ConnectionResetError as exc:  # the sender went away mid-body: nobody reads the answer
            raise BadRequest(f"cannot read body: {exc}") from exc
        body = b"".join(chunks)
        chunks.clear()
        return body

    async def post_spans(self, request: web.Request) -> web.Response:
        return await self._reserving(request, self._post_spans)

    async def post_otlp_traces(self, request: web.Request) -> web.Response:
        return await self._reserving(request, self._post_otlp_traces)

    async def _reserving(
        self, request: web.Request, handler: Callable[[web.Request, _Reservation], Awaitable[web.Response]]
    ) -> web.Response:
        """Run a span POST handler with its body reservation, released when it is answered."""
        reservation = _Reservation(self)
        try:
            return await handler(request, reservation)
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
            body = inflate(await self._read_body(request, reservation), encoding, self.max_body_bytes)
            spans: Sequence[Span | ZipkinSpan]
            if media_type in PROTO_TYPES:
                spans = validate_spans(decode_proto_spans(body))
            else:
                spans = decode_json_spans(body)  # decoded and validated in one step
            del body
        except _REFUSALS as exc:
            return self._refuse(exc, _text)
        failure = await self.ingest(spans)
        return web.Response(status=202) if failure is None else _text(*failure)

    def _refuse(self, exc: Exception, answer: _Answer, *, otlp_http: bool = False) -> web.Response:
        """The answer to a body that could not be read or decoded, counted."""
        if isinstance(exc, _Busy):
            self.counters.busy += 1
            busy = answer(503, f"over {self.max_buffered_bytes} body bytes in flight: retry later")
            busy.headers[hdrs.RETRY_AFTER] = str(RETRY_AFTER_S)
            busy.force_close()  # the body was not read: the connection cannot carry another request
            return busy
        if isinstance(exc, TimeoutError):
            self.counters.body_timeouts += 1
            slow = answer(408, f"body not received within {self.limits.body_timeout_s:g} s")
            slow.force_close()
            return slow
        if isinstance(exc, TooLarge):
            self.counters.too_large += 1
            return answer(413, f"body exceeds {self.max_body_bytes} bytes")
        if otlp_http:
            self.counters.otlp_http_bad_requests += 1
        else:
            self.counters.bad_requests += 1
        return answer(400, str(exc))

    async def ingest(self, spans: Sequence[Span | ZipkinSpan]) -> tuple[int, str] | None:
        """Keep validated spans (after the faults): None once they are committed, else the HTTP
        status and reason of the failure (503 injected fault, 500 the store could not keep them)."""
        self.counters.spans_received += len(spans)
        faults = self.faults
        if faults.added_latency_ms > 0:
            await asyncio.sleep(faults.added_latency_ms / 1000)
        if faults.error_rate > 0 and self.rng.random() < faults.error_rate:
            self.counters.fault_errors += 1
            self.counters.fault_error_spans += len(spans)
            return 503, "injected fault: error_rate"
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
            # One transaction, shared with the POSTs queued at the same time (group commit),
            # committed before the answer.
            await self.store.add_async(spans, validated=True)
        except StoreError as exc:
            self.counters.store_errors += 1
            self.counters.store_error_spans += len(spans)
            return 500, f"spans not stored: {exc}"
        return None

    async def _post_otlp_traces(self, request: web.Request, reservation: _Reservation) -> web.Response:
        self.counters.otlp_http_posts += 1
        media_type = request.content_type.lower() if hdrs.CONTENT_TYPE in request.headers else ""
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
        if media_type not in otlp.OTLP_TYPES or encoding not in SUPPORTED_ENCODINGS:
            self.counters.otlp_http_unsupported_media_type += 1
            message = f"unsupported content-type {media_type!r} / content-encoding {encoding!r}"
            return _otlp_status(otlp.PROTO_TYPE, 415, message)

        def answer(status: int, message: str) -> web.Response:
            return _otlp_status(media_type, status, message)

        try:
            body = inflate(await self._read_body(request, reservation), encoding, self.max_body_bytes)
            parsed = otlp.parse_json(body) if media_type == otlp.JSON_TYPE else otlp.parse_proto(body)
            del body
            spans = otlp.request_to_structs(parsed)  # mapped and normalized in one step
            del parsed
        except _REFUSALS as exc:
            return self._refuse(exc, answer, otlp_http=True)
        failure = await self.ingest(spans)
        if failure is not None:
            return answer(*failure)
        return web.Response(status=200, body=otlp.success_body(media_type), content_type=media_type)

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
                    raise BadRequest("maxDuration is only valid with minDuration")
                if max_duration < min_duration:
                    raise BadRequest("maxDuration must be >= minDuration")
        except BadRequest as exc:
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


def _otlp_status(media_type: str, status: int, message: str) -> web.Response:
    """An OTLP/HTTP failure: `status` with a google.rpc.Status body in `media_type`."""
    return web.Response(status=status, body=otlp.status_body(media_type, message), content_type=media_type)


COLLECTOR_KEY = web.AppKey("collector", _Collector)


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
    app = web.Application(client_max_size=max_body_bytes + 1, middlewares=[mark_busy])
    app[LIMITS_KEY] = limits
    app[COLLECTOR_KEY] = collector  # for the OTLP/gRPC server (otlp_grpc.py), which shares its ingest
    app.add_routes(
        [
            web.post("/api/v2/spans", collector.post_spans),
            web.post("/v1/traces", collector.post_otlp_traces),
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
