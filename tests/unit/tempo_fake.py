"""A loopback Grafana-Tempo-shaped query API for the reader tests (shared/specs/tempo/).

`FakeTempo` is a LoopbackServer (tests/unit/backend_contract.py: the contract's fault knobs) whose
answers are built by loadgen.stack.collector.tempo_api, the collector's Tempo stand-in, so the
reader contract runs against the same shapes the collector's `--tempo-port` serves (those shapes
are checked by hand against the spec in test_tempo_api.py). Extra knobs: `v2_absent` (a Tempo
before v2: `/api/v2/...` is Go's "404 page not found"), `max_trace_spans` (v2 cuts longer traces,
PARTIAL), `v1_bodies` (a trace id's v1 body served verbatim, e.g. the spec's example),
`version` (buildinfo's), `traceql` (False: `q=` is refused with a 400, as before TraceQL).

`InProcessCollector` runs the real collector with its Tempo-shaped port in a thread.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadgen.mesh.ids import normalize_trace_id
from loadgen.stack.collector.__main__ import serve_collector
from loadgen.stack.collector.tempo_api import (
    BUILD_INFO,
    SearchRequest,
    TempoQueryError,
    parse_search,
    parse_trace_id,
    search_response,
    trace_by_id_v1,
    trace_by_id_v2,
)
from loadgen.stack.collector.tempo_server import TempoOptions
from tests.unit.backend_contract import GO_404, LoopbackServer

Span = dict[str, Any]

TEMPO_NOT_FOUND = (404, "", "text/plain; charset=utf-8")
"""Tempo's answer to an unknown trace id: 404 and no body."""


def _service(span: Span) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "")


class FakeTempo(LoopbackServer):
    api_root = "/api"

    def __init__(self, prefix: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(prefix, ssl_context)
        self.spans: list[Span] = []
        self.v2_absent = False
        self.max_trace_spans = 0
        self.v1_bodies: dict[str, Any] = {}
        self.version = BUILD_INFO["version"]
        self.traceql = True

    def add_trace(self, spans: list[Span]) -> None:
        self.spans.extend(spans)

    def is_fetch(self, path: str, params: dict[str, list[str]]) -> bool:
        return path.startswith(("/v2/traces/", "/traces/"))

    def search_params(self) -> list[dict[str, list[str]]]:
        return [q for p, q, _ in self.requests if p == "/search"]

    def _trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if normalize_trace_id(s["traceId"]) == trace_id]

    def _traces(self) -> list[list[Span]]:
        by_id: dict[str, list[Span]] = {}
        for span in self.spans:
            by_id.setdefault(normalize_trace_id(span["traceId"]), []).append(span)
        return list(by_id.values())

    def _search(self, request: SearchRequest) -> list[list[Span]]:
        def trace_time(trace: list[Span]) -> int:
            root = next((s for s in trace if not s.get("parentId")), None)
            return int((root or min(trace, key=lambda s: s.get("timestamp", 0))).get("timestamp", 0))

        def hit(trace: list[Span]) -> bool:
            windowed = request.start_s is not None and request.end_s is not None
            if (
                windowed
                and not (request.start_s or 0) * 1_000_000
                <= trace_time(trace)
                <= (request.end_s or 0) * 1_000_000
            ):
                return False
            return any(
                (request.service is None or _service(s) == request.service)
                and all((s.get("tags") or {}).get(k) == v for k, v in request.tags.items())
                for s in trace
            )

        found = sorted((t for t in self._traces() if hit(t)), key=trace_time, reverse=True)
        return found[: request.limit]

    def _by_id(self, raw: str, v2: bool) -> tuple[int, Any, str | None]:
        try:
            trace_id = parse_trace_id(raw)
        except TempoQueryError as exc:
            return 400, str(exc), "text/plain"
        if not v2 and trace_id in self.v1_bodies:
            return 200, self.v1_bodies[trace_id], None
        spans = self._trace(trace_id)
        if not spans:
            return TEMPO_NOT_FOUND
        return 200, trace_by_id_v2(spans, self.max_trace_spans) if v2 else trace_by_id_v1(spans), None

    def answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        if path == "/echo":
            return 200, "echo", "text/plain"
        if path == "/status/buildinfo":
            return 200, {**BUILD_INFO, "version": self.version}, None
        if path == "/search":
            flat = {k: v[0] for k, v in params.items()}
            if not self.traceql and "q" in flat:
                return 400, "invalid TraceQL query: parse error", "text/plain"
            try:
                request = parse_search(flat)
            except TempoQueryError as exc:
                return 400, str(exc), "text/plain"
            return 200, search_response(self._search(request), request, len(self.spans)), None
        if path.startswith("/v2/traces/"):
            return GO_404 if self.v2_absent else self._by_id(path[len("/v2/traces/") :], v2=True)
        if path.startswith("/traces/"):
            return self._by_id(path[len("/traces/") :], v2=False)
        return GO_404


class InProcessCollector:
    """The real collector (`serve_collector`) on 127.0.0.1 free ports in a thread of this process,
    with its Tempo-shaped query port: `zipkin_url`, `tempo_url`. Stopped by `stop()`."""

    def __init__(self, data_dir: Path | None, tempo: TempoOptions | None = None) -> None:
        self.data_dir = data_dir
        self.tempo = tempo or TempoOptions()
        self.zipkin_url = ""
        self.tempo_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

        def tempo_ready(url: str) -> None:
            self.tempo_url = url

        def ready(url: str) -> None:
            self.zipkin_url = url
            self._ready.set()

        try:
            await serve_collector(
                "127.0.0.1", 0, self.data_dir, ready_callback=ready, stop=self._stop,
                tempo=replace(self.tempo, ready=tempo_ready),
            )  # fmt: skip
        finally:
            self._ready.set()

    def start(self) -> InProcessCollector:
        self._thread.start()
        if not self._ready.wait(15.0) or not self.tempo_url:
            raise RuntimeError("the in-process collector did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10.0)
