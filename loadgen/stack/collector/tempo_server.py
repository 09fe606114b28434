"""aiohttp application serving a Grafana-Tempo-shaped query API over the collector's SpanStore, on
its own port (`python -m loadgen.stack.collector --tempo-port N`): a stand-in replaying Tempo's
documented answers (loadgen.stack.collector.tempo_api builds them), so that a run on the embedded
mesh can be read back through the `tempo:` reader. Not verified against a real Tempo.

Routes: `GET /api/echo` (`echo`), `/ready`, `/api/status/buildinfo`, `/api/traces/{id}` (v1),
`/api/v2/traces/{id}` (v2), `/api/search`. `Accept: application/protobuf` on trace by id answers
protobuf: v1 a `tempopb.Trace` (the wire form of OTLP `TracesData`), v2 a `TraceByIDResponse`.

Multi-tenancy: with a `tenant`, every query route wants `X-Scope-OrgID`: missing, it is a 401
`no org id` (Tempo with multitenancy on); another tenant sees an empty store (its traces are 404
without a body, its searches find nothing), as a real Tempo shows an unknown tenant. Echo, ready
and buildinfo need no tenant.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from loadgen.stack.collector.deadline import start_server
from loadgen.stack.collector.store import SpanStore, StoreError
from loadgen.stack.collector.tempo_api import (
    BUILD_INFO,
    TempoQueryError,
    parse_search,
    parse_trace_id,
    search_response,
    trace_by_id_v1,
    trace_by_id_v2,
)

__all__ = ["PROTOBUF", "TENANT_HEADER", "TempoOptions", "make_tempo_app", "start_tempo"]

TENANT_HEADER = "X-Scope-OrgID"
PROTOBUF = "application/protobuf"
_OPEN_PATHS = frozenset({"/api/echo", "/ready", "/api/status/buildinfo"})
_PARTIAL = 1  # tempopb.PartialStatus.PARTIAL


def _json(body: Any) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), content_type="application/json")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")


def _not_found() -> web.Response:
    """Tempo's answer for an unknown trace id: 404, no body."""
    return web.Response(status=404)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _traces_data(resource_spans: list[dict[str, Any]]) -> bytes:
    message = json_format.ParseDict({"resourceSpans": resource_spans}, TracesData())
    encoded: bytes = message.SerializeToString()
    return encoded


def v2_protobuf(body: dict[str, Any]) -> bytes:
    """A v2 JSON body as `TraceByIDResponse` protobuf: trace = 1, status = 3, message = 4."""
    out = _field(1, _traces_data(body["trace"]["resourceSpans"]))
    if body.get("status") == "PARTIAL":
        out += _varint(3 << 3) + _varint(_PARTIAL)
    if body.get("message"):
        out += _field(4, str(body["message"]).encode())
    return out


class _TempoApi:
    def __init__(self, store: SpanStore, tenant: str | None, max_trace_spans: int) -> None:
        self.store = store
        self.tenant = tenant
        self.max_trace_spans = max_trace_spans

    def _spans(self, request: web.Request) -> list[dict[str, Any]] | web.Response:
        """The stored spans of the path's trace id, or the answer to give instead."""
        try:
            trace_id = parse_trace_id(request.match_info["trace_id"])
        except TempoQueryError as exc:
            return _text(400, str(exc))
        trace = self.store.get_trace(trace_id) if self._sees_spans(request) else None
        return trace or _not_found()

    async def trace_v1(self, request: web.Request) -> web.Response:
        spans = self._spans(request)
        if isinstance(spans, web.Response):
            return spans
        body = trace_by_id_v1(spans)
        if PROTOBUF in request.headers.get("Accept", ""):
            return web.Response(body=_traces_data(body["batches"]), content_type=PROTOBUF)
        return _json(body)

    async def trace_v2(self, request: web.Request) -> web.Response:
        spans = self._spans(request)
        if isinstance(spans, web.Response):
            return spans
        body = trace_by_id_v2(spans, self.max_trace_spans)
        if PROTOBUF in request.headers.get("Accept", ""):
            return web.Response(body=v2_protobuf(body), content_type=PROTOBUF)
        return _json(body)

    async def search(self, request: web.Request) -> web.Response:
        try:
            query = parse_search(request.query)
            terms = [f"{k}={v}" for k, v in query.tags.items()]
            if any("=" in k or " and " in f"{k}={v}" for k, v in query.tags.items()):
                raise TempoQueryError("the stand-in cannot search for a tag whose name has '=' or ' and '")
        except TempoQueryError as exc:
            return _text(400, str(exc))
        if not self._sees_spans(request):
            return _json(search_response([], query, 0))
        end_ms = lookback_ms = None
        if query.start_s is not None and query.end_s is not None:
            end_ms, lookback_ms = query.end_s * 1000, (query.end_s - query.start_s) * 1000
        try:
            traces = self.store.search(
                service_name=query.service,
                annotation_query=" and ".join(terms) or None,
                end_ts_ms=end_ms,
                lookback_ms=lookback_ms,
                limit=query.limit,
            )
        except StoreError as exc:
            return _text(500, f"search unavailable: {exc}")
        return _json(search_response(traces, query, len(traces)))

    async def echo(self, request: web.Request) -> web.Response:
        return _text(200, "echo")

    async def ready(self, request: web.Request) -> web.Response:
        return _text(200, "ready")

    async def buildinfo(self, request: web.Request) -> web.Response:
        return _json(BUILD_INFO)

    @web.middleware
    async def tenancy(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        given = request.headers.get(TENANT_HEADER)
        if self.tenant is not None and request.path not in _OPEN_PATHS and not given:
            return _text(401, "no org id")
        return await handler(request)

    def _sees_spans(self, request: web.Request) -> bool:
        """Whether the request's tenant holds the stored spans (any, without multi-tenancy)."""
        return self.tenant is None or request.headers.get(TENANT_HEADER) == self.tenant


def make_tempo_app(
    store: SpanStore, *, tenant: str | None = None, max_trace_spans: int = 0
) -> web.Application:
    """Tempo's query routes over `store` (the caller owns it). `tenant`: multi-tenancy on, with
    this one tenant holding every span. `max_trace_spans` > 0: v2 cuts longer traces and marks
    them PARTIAL (as Tempo does over its trace size limit)."""
    if tenant is not None and not tenant.strip():
        raise ValueError("the Tempo tenant must not be empty")
    api = _TempoApi(store, tenant, max_trace_spans)
    app = web.Application(middlewares=[api.tenancy])
    app.add_routes(
        [
            web.get("/api/echo", api.echo),
            web.get("/ready", api.ready),
            web.get("/api/status/buildinfo", api.buildinfo),
            web.get("/api/traces/{trace_id}", api.trace_v1),
            web.get("/api/v2/traces/{trace_id}", api.trace_v2),
            web.get("/api/search", api.search),
        ]
    )
    return app


@dataclass(frozen=True)
class TempoOptions:
    """The collector's Tempo-shaped query port (`--tempo-port`, `--tempo-tenant`)."""

    port: int = 0
    """0 picks a free port."""
    tenant: str | None = None
    """Multi-tenancy on, with this tenant (`X-Scope-OrgID`) holding every span."""
    max_trace_spans: int = 0
    """> 0: v2 trace-by-id cuts longer traces and marks them PARTIAL."""
    ready: Callable[[str], None] | None = None
    """Called with the port's base URL once it listens (before the collector's ready callback)."""


async def start_tempo(store: SpanStore, host: str, options: TempoOptions) -> tuple[web.AppRunner, str]:
    """Serve the Tempo-shaped API over `store` on host:options.port; the runner (to `cleanup()`)
    and the base URL, also handed to `options.ready`."""
    app = make_tempo_app(store, tenant=options.tenant, max_trace_spans=options.max_trace_spans)
    runner, url = await start_server(app, host, options.port)
    if options.ready is not None:
        options.ready(url)
    return runner, url
