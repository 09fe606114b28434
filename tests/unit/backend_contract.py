"""The backend-agnostic reader contract, and loopback fakes of the three query APIs it runs against.

Every fake is a real HTTP server on 127.0.0.1:<free port> that replays the response shapes of
/work/shared/specs: Zipkin v2 lists, Jaeger's `{data, total, limit, offset, errors}` envelope with
UI-model traces (typed tags, references, processes), and Jaeger api_v3 `{"result": TracesData}`
OTLP JSON, including each API's real 404 bodies. Spans are stored in Zipkin v2 shape and encoded
per API the way Jaeger's Zipkin receiver + query service would print them, or stored verbatim
from the spec examples.

`TraceBackendContract` holds the checks every reader must pass; a test class per reader supplies
the `fake` and `make_backend` fixtures and `requests_for(n_ids, batch_size)`, the number of fetch
requests that reader needs for n ids without failures.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from loadgen.backends import BackendError, Fetched, FetchStatus
from loadgen.mesh.ids import is_hex_id, normalize_trace_id

SPECS = Path(os.environ.get("LOADGEN_SHARED_SPECS", "/work/shared/specs"))
ENVOY_EXAMPLE = SPECS / "zipkin-envoy-spans-example.json"
ENVOY_TRACE_ID = "978883983d506fa5"
JAEGER_API_EXAMPLE = SPECS / "jaeger-api-trace-example.json"
JAEGER_UI_EXAMPLE = SPECS / "jaeger-uimodel-trace-example.json"
V3_GETTRACE_EXAMPLE = SPECS / "jaeger-api-v3-gettrace-example.json"
V3_SERVICES_EXAMPLE = SPECS / "jaeger-api-v3-services-example.json"
V3_OPENAPI = SPECS / "jaeger-api-v3-query_service.openapi.yaml"
V3_OPENAPI_SNAKE = SPECS / "jaeger-api-v3-query_service.snake_case.openapi.yaml"

Span = dict[str, Any]


def load(path: Path) -> Any:
    return json.loads(path.read_text())


# -- test data ---------------------------------------------------------------------------------


def zspan(
    trace_id: str,
    span_id: str = "a" * 16,
    *,
    ts_us: int = 1_700_000_000_000_000,
    service: str = "istio-ingressgateway",
    **extra: Any,
) -> Span:
    """A Zipkin v2 span as Envoy would report it."""
    span: Span = {
        "traceId": trace_id,
        "id": span_id,
        "kind": "SERVER",
        "name": "get /headers",
        "timestamp": ts_us,
        "duration": 1000,
        "localEndpoint": {"serviceName": service},
    }
    span.update(extra)
    return span


def tid(n: int, bits: int = 128) -> str:
    """A deterministic trace id; 128-bit ones have a non-zero high half with leading zeros
    (Jaeger prints those with 17..31 characters)."""
    return f"{0xABC00000 + n:016x}{n + 1:016x}" if bits == 128 else f"{n + 1:016x}"


def comparable(span: Span) -> dict[str, Any]:
    """What every reader must preserve of a span, whatever API it went through."""
    return {
        "traceId": normalize_trace_id(span["traceId"]),
        "id": span.get("id"),
        "parentId": span.get("parentId"),
        "kind": span.get("kind"),
        "name": span.get("name"),
        "timestamp": span.get("timestamp"),
        "duration": span.get("duration"),
        "service": (span.get("localEndpoint") or {}).get("serviceName"),
        "tags": span.get("tags") or {},
        "annotations": [(a["timestamp"], a["value"]) for a in span.get("annotations") or ()],
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def multi_hop_trace(trace_id: str, ts_us: int = 1_700_000_000_000_000) -> list[Span]:
    """Gateway SERVER -> gateway CLIENT -> app SERVER, with tags and an annotation."""
    return [
        zspan(trace_id, "1" * 16, ts_us=ts_us, tags={"guid:x-request-id": "r-1", "http.status_code": "200"}),
        zspan(
            trace_id,
            "2" * 16,
            ts_us=ts_us + 10,
            kind="CLIENT",
            name="router app egress",
            parentId="1" * 16,
            tags={"upstream_cluster": "app"},
        ),
        zspan(
            trace_id,
            "3" * 16,
            ts_us=ts_us + 20,
            service="app",
            parentId="2" * 16,
            annotations=[{"timestamp": ts_us + 25, "value": "wr"}],
            tags={"loadgen.run_id": "run-1"},
        ),
    ]


# -- a loopback HTTP server with fault knobs ---------------------------------------------------

GO_404 = (404, "404 page not found\n", "text/plain; charset=utf-8")
"""What Go's net/http answers for an unrouted path, e.g. behind a proxy that routes only some."""

# Answers that are not a backend's own not-found form, as (status, body, content type), with the
# start of the note a reader must give for each: the status and media type, then the body.
FOREIGN_ANSWERS = {
    "go-404": (GO_404, '404 text/plain "404 page not found"'),
    "html-404": ((404, "<html><body><h1>Not Found</h1></body></html>", "text/html"), "404 text/html"),
    "json-404": ((404, '{"message": "no route"}', "application/json"), "404 application/json"),
    "500": ((500, "upstream connect error", "text/plain"), '500 text/plain "upstream connect error"'),
    "non-json-200": ((200, "OK", "text/plain"), '200 text/plain "OK"'),
}


class LoopbackServer:
    """A real HTTP(S) server on 127.0.0.1:<free port>; subclasses answer the API.

    Knobs: `delay_s` (every request), `fail_next(n, status)`, `fetch_status` (forced status for
    fetch-by-id requests), `fetch_answer` (a forced (status, body, content type) for them),
    `status_for[path]`, `html_200` (a login page), `not_found_everywhere` (a wrong base path),
    `routed` (a proxy that routes only these paths below the API root; Go's 404 for the rest),
    `echo_headers_status` (answer that status with the request headers in the body, as some proxies
    do). Requests are logged as (path below prefix+api_root, query, headers).
    """

    api_root = ""

    def __init__(self, prefix: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        self.prefix = prefix
        self.delay_s = 0.0
        self.not_found_everywhere = False
        self.html_200 = False
        self.fetch_status: int | None = None
        self.fetch_answer: tuple[int, str, str] | None = None
        self.routed: set[str] | None = None
        self.echo_headers_status: int | None = None
        self.status_for: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        self.max_inflight = 0
        self._inflight = 0
        self._fail_left = 0
        self._fail_status = 503
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._scheme = "http"
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}{self.prefix}"

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail_left, self._fail_status = n, status

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path or (path.endswith("/") and p.startswith(path)))

    def is_fetch(self, path: str, params: dict[str, list[str]]) -> bool:
        raise NotImplementedError

    def fetch_requests(self) -> int:
        return sum(1 for p, q, _ in self.requests if self.is_fetch(p, q))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        """(status, body, content type): a str body is sent as is, anything else as JSON."""
        raise NotImplementedError

    def not_found(self) -> tuple[int, Any, str | None]:
        return GO_404

    def _handle(self, raw_path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        parts = urlsplit(raw_path)
        params = parse_qs(parts.query)
        root = self.prefix + self.api_root
        inside = parts.path == root or parts.path.startswith(root + "/")
        path = parts.path[len(root) :] if inside else parts.path
        with self._lock:
            self._inflight += 1
            self.max_inflight = max(self.max_inflight, self._inflight)
            self.requests.append((path, params, headers))
            failing = self._fail_left > 0
            if failing:
                self._fail_left -= 1
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if failing:
                return self._fail_status, b"try again later", "text/plain"
            if self.echo_headers_status is not None:
                return self.echo_headers_status, json.dumps(headers).encode(), "application/json"
            if self.html_200:
                return 200, b"<html>Please log in</html>", "text/html"
            if self.routed is not None and (not inside or path not in self.routed):
                return GO_404[0], GO_404[1].encode(), GO_404[2]
            if self.fetch_answer is not None and self.is_fetch(path, params):
                return self.fetch_answer[0], self.fetch_answer[1].encode(), self.fetch_answer[2]
            forced = self.status_for.get(path)
            if forced is None and self.fetch_status is not None and self.is_fetch(path, params):
                forced = self.fetch_status
            if forced is not None:
                return forced, b'{"error": "forced"}', "application/json"
            if self.not_found_everywhere or not inside:
                status, body, ctype = self.not_found()
            else:
                status, body, ctype = self.answer(path, params)
            if isinstance(body, str):
                return status, body.encode(), ctype or "text/plain"
            return status, json.dumps(body).encode(), ctype or "application/json"
        finally:
            with self._lock:
                self._inflight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real server
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def do_GET(self) -> None:
                status, body, ctype = fake._handle(self.path, {k.lower(): v for k, v in self.headers.items()})
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# -- Zipkin v2 -----------------------------------------------------------------------------------


def zipkin_normalized_id(raw: str) -> str:
    """Zipkin's Span.normalizeTraceId (openzipkin/zipkin): shorter than 16 -> left-padded to 16,
    17..31 -> left-padded to 32, 32 with a zero high half -> its low 16, otherwise unchanged."""
    if len(raw) < 16:
        return raw.rjust(16, "0")
    if 16 < len(raw) < 32:
        return raw.rjust(32, "0")
    if len(raw) == 32 and raw.startswith("0" * 16):
        return raw[16:]
    return raw


ZIPKIN_NOT_FOUND_TYPE = "text/*"
"""The Content-Type of Zipkin's 404 for an unknown trace id: Armeria's MediaType.ANY_TEXT_TYPE
(openzipkin/zipkin ZipkinQueryApiV2.getTrace, since 2.17; `text/plain; charset=utf-8` before)."""


class FakeZipkin(LoopbackServer):
    """In-memory Zipkin v2 query API (shared/specs/zipkin2-api.yaml).

    Like Zipkin with `strictTraceId=false` when `lenient_ids`: a query id matches stored spans
    whose trace id has the same low 64 bits. An unknown id gets Zipkin's own answer: 404,
    `not_found_type` (ZIPKIN_NOT_FOUND_TYPE) and `<normalized id> not found`.
    """

    api_root = "/api/v2"

    def __init__(self, prefix: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(prefix, ssl_context)
        self.spans: list[Span] = []
        self.lenient_ids = True
        self.trace_many_404 = False
        self.not_found_type = ZIPKIN_NOT_FOUND_TYPE

    def add_trace(self, spans: list[Span]) -> None:
        self.spans.extend(spans)

    def is_fetch(self, path: str, params: dict[str, list[str]]) -> bool:
        return path == "/traceMany" or path.startswith("/trace/")

    def not_found(self) -> tuple[int, Any, str | None]:
        return 404, "<html>Not Found</html>", "text/html"

    def _matches(self, query_id: str, stored: str) -> bool:
        q, s = normalize_trace_id(query_id), normalize_trace_id(stored)
        return q == s or (self.lenient_ids and q[-16:] == s[-16:])

    def _trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if self._matches(trace_id, s["traceId"])]

    def _traces(self, params: dict[str, list[str]]) -> list[list[Span]]:
        end_ms = int(params.get("endTs", [str(int(time.time() * 1000))])[0])
        lookback_ms = int(params.get("lookback", [str(end_ms)])[0])
        limit = int(params.get("limit", ["10"])[0])
        service = params.get("serviceName", [None])[0]
        terms = [t for t in params.get("annotationQuery", [""])[0].split(" and ") if t]

        def span_ok(s: Span) -> bool:
            if not (end_ms - lookback_ms) * 1000 <= s.get("timestamp", 0) <= end_ms * 1000:
                return False
            if service and s.get("localEndpoint", {}).get("serviceName") != service:
                return False
            tags = s.get("tags", {})
            for term in terms:
                key, eq, value = term.partition("=")
                if (eq and tags.get(key) != value) or (not eq and key not in tags):
                    return False
            return True

        by_id: dict[str, list[Span]] = {}
        for s in self.spans:
            by_id.setdefault(normalize_trace_id(s["traceId"]), []).append(s)
        hits = [trace for trace in by_id.values() if any(span_ok(s) for s in trace)]
        return hits[:limit]

    def answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        if path == "/services":
            names = {s.get("localEndpoint", {}).get("serviceName") for s in self.spans}
            return 200, sorted(n for n in names if n), None
        if path.startswith("/trace/"):
            trace_id = path[len("/trace/") :]
            if not is_hex_id(trace_id):
                return 400, "bad traceId", None
            spans = self._trace(trace_id)
            if spans:
                return 200, spans, None
            return 404, f"{zipkin_normalized_id(trace_id)} not found", self.not_found_type
        if path == "/traceMany":
            if self.trace_many_404:
                return 404, "Not Found", None
            ids = params.get("traceIds", [""])[0].split(",")
            normalized = [normalize_trace_id(t) for t in ids]
            if len(set(normalized)) != len(normalized) or len(ids) < 2 or not all(map(is_hex_id, ids)):
                return 400, "Less than two traceIds, or the list was redundant or malformed", None
            traces = [self._trace(t) for t in ids]
            return 200, [t for t in traces if t], None
        if path == "/traces":
            return 200, self._traces(params), None
        return 404, "Not Found", None


# -- Jaeger /api (UI model) ----------------------------------------------------------------------

# The envelope around every answer, from the spec example: total/limit/offset (always 0), errors.
JAEGER_ENVELOPE = {k: v for k, v in load(JAEGER_API_EXAMPLE).items() if k != "data"}
JAEGER_NOT_FOUND = "trace not found"


def jaeger_envelope(data: Any, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"data": data, **JAEGER_ENVELOPE, "errors": errors}


def jaeger_printed_id(trace_id: str) -> str:
    """A trace id as Jaeger's TraceID.String() prints it: `%016x` of the low half when the high
    half is zero, else `%x%016x` (no leading zeros on the high half)."""
    full = trace_id.lower().zfill(32)
    high, low = int(full[:16], 16), full[16:]
    return low if high == 0 else f"{high:x}{low}"


def zipkin_to_ui_trace(spans: list[Span]) -> dict[str, Any]:
    """Zipkin v2 spans as Jaeger's query service prints them after its Zipkin receiver stored
    them: string tags, `span.kind` tag, CHILD_OF references, annotations as `event` logs, one
    process per service. Keys and their order follow jaeger-uimodel-trace-example.json."""
    processes: dict[str, dict[str, Any]] = {}
    process_of: dict[str, str] = {}
    ui_spans = []
    trace_id = jaeger_printed_id(spans[0]["traceId"])
    for s in spans:
        service = (s.get("localEndpoint") or {}).get("serviceName", "")
        if service not in process_of:
            process_of[service] = f"p{len(process_of) + 1}"
            processes[process_of[service]] = {"serviceName": service, "tags": []}
        tags = [{"key": k, "type": "string", "value": v} for k, v in (s.get("tags") or {}).items()]
        if s.get("kind"):
            tags.append({"key": "span.kind", "type": "string", "value": s["kind"].lower()})
        references = []
        if s.get("parentId"):
            references.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": s["parentId"]})
        logs = [
            {"timestamp": a["timestamp"], "fields": [{"key": "event", "type": "string", "value": a["value"]}]}
            for a in s.get("annotations") or ()
        ]
        ui_spans.append(
            {
                "traceID": trace_id,
                "spanID": s["id"],
                "operationName": s.get("name", ""),
                "references": references,
                "startTime": s.get("timestamp", 0),
                "duration": s.get("duration", 0),
                "tags": tags,
                "logs": logs,
                "processID": process_of[service],
                "warnings": None,
            }
        )
    return {"traceID": trace_id, "spans": ui_spans, "processes": processes, "warnings": None}


class FakeJaeger(LoopbackServer):
    """In-memory Jaeger query `/api` (shared/specs/README.md, "Jaeger internal HTTP JSON API").

    `missing_style`: "errors" lists ids not found in `errors[]` (Jaeger v1), "omit" leaves them
    out (Jaeger v2 storage). `error_for[id]` reports another per-id error message.
    `v3_only`: the search route and /api/services are gone (Jaeger after v2.20); /api/v3/services
    still answers.
    """

    api_root = "/api"

    def __init__(self, prefix: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(prefix, ssl_context)
        self.traces: list[dict[str, Any]] = []
        self.missing_style = "errors"
        self.error_for: dict[str, str] = {}
        self.v3_only = False

    def add_trace(self, spans: list[Span]) -> None:
        self.traces.append(zipkin_to_ui_trace(spans))

    def add_ui_trace(self, trace: dict[str, Any]) -> None:
        self.traces.append(trace)

    def is_fetch(self, path: str, params: dict[str, list[str]]) -> bool:
        return (path == "/traces" and "traceID" in params) or path.startswith("/traces/")

    def _find(self, trace_id: str) -> dict[str, Any] | None:
        wanted = normalize_trace_id(trace_id.zfill(32))
        for trace in self.traces:
            if normalize_trace_id(trace["traceID"].zfill(32)) == wanted:
                return trace
        return None

    def _search(self, params: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        service = params.get("service", [""])[0]
        if not service:
            errors = [{"code": 400, "msg": "parameter 'service' is required"}]
            return 400, json.dumps(jaeger_envelope(None, errors)) + "\n", "text/plain; charset=utf-8"
        tags = json.loads(params.get("tags", ["{}"])[0])
        start = int(params.get("start", ["0"])[0])
        end = int(params.get("end", [str(int(time.time() * 1_000_000))])[0])
        limit = int(params.get("limit", ["100"])[0])
        hits = []
        for trace in self.traces:
            for s in trace["spans"]:
                process = trace["processes"].get(s["processID"], {})
                span_tags = {t["key"]: str(t["value"]) for t in s["tags"] + process.get("tags", [])}
                if (
                    process.get("serviceName") == service
                    and start <= s["startTime"] <= end
                    and all(span_tags.get(k) == v for k, v in tags.items())
                ):
                    hits.append(trace)
                    break
        return 200, jaeger_envelope(hits[:limit]), None

    def answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        if path == "/v3/services":
            return 200, load(V3_SERVICES_EXAMPLE), None
        if self.v3_only and path in ("/services", "/traces"):
            return GO_404
        if path == "/services":
            names = sorted({p["serviceName"] for t in self.traces for p in t["processes"].values()})
            return 200, {**jaeger_envelope(names), "total": len(names)}, None
        if path == "/traces" and "traceID" in params:
            data, errors = [], []
            for raw in params["traceID"]:
                if len(raw) > 32 or not all(c in "0123456789abcdefABCDEF" for c in raw):
                    errors = [{"code": 400, "msg": f"cannot parse traceID {raw!r}"}]
                    return 400, json.dumps(jaeger_envelope(None, errors)) + "\n", "text/plain"
                trace = self._find(raw)
                printed = jaeger_printed_id(raw)
                if normalize_trace_id(raw.zfill(32)) in self.error_for:
                    errors.append(
                        {"msg": self.error_for[normalize_trace_id(raw.zfill(32))], "traceID": printed}
                    )
                elif trace is not None:
                    data.append(trace)
                elif self.missing_style == "errors":
                    errors.append({"msg": JAEGER_NOT_FOUND, "traceID": printed})
            return 200, jaeger_envelope(data, errors or None), None
        if path == "/traces":
            return self._search(params)
        if path.startswith("/traces/"):
            trace = self._find(path[len("/traces/") :])
            if trace is None:
                body = jaeger_envelope(None, [{"code": 404, "msg": JAEGER_NOT_FOUND}])
                # Go's http.Error: text/plain and a trailing newline around the JSON.
                return 404, json.dumps(body) + "\n", "text/plain; charset=utf-8"
            return 200, jaeger_envelope([trace]), None
        return GO_404


# -- Jaeger /api/v3 (OTLP JSON) -----------------------------------------------------------------

V3_NOT_FOUND = {"error": {"httpCode": 404, "message": "No traces found"}}
_KIND_NUMBERS = {"SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_RFC3339_NANO = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


def parse_rfc3339_nanos(text: str) -> int:
    """Epoch ns of an RFC 3339 time, as strictly as Go's time.RFC3339Nano layout reads it."""
    m = _RFC3339_NANO.fullmatch(text)
    if m is None:
        raise ValueError(f"not RFC 3339: {text!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    seconds = int(datetime.fromisoformat(m.group(1) + zone).timestamp())
    return seconds * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def zipkin_to_otlp(spans: list[Span]) -> list[dict[str, Any]]:
    """Zipkin v2 spans as api_v3 prints them after Jaeger's Zipkin receiver stored them: one
    resourceSpans per service (resource `service.name`), hex ids, numeric kind, ns times as
    strings, string attributes, events for annotations; empty fields omitted as protojson does."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        start_ns = s.get("timestamp", 0) * 1000
        otlp: dict[str, Any] = {
            "traceId": s["traceId"].zfill(32),
            "spanId": s["id"],
            "name": s.get("name", ""),
            "kind": _KIND_NUMBERS.get(s.get("kind", ""), 1),
            "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + s.get("duration", 0) * 1000),
            "status": {},
        }
        if s.get("parentId"):
            otlp["parentSpanId"] = s["parentId"]
        if s.get("tags"):
            otlp["attributes"] = [{"key": k, "value": {"stringValue": v}} for k, v in s["tags"].items()]
        if s.get("annotations"):
            otlp["events"] = [
                {"timeUnixNano": str(a["timestamp"] * 1000), "name": a["value"]} for a in s["annotations"]
            ]
        service = (s.get("localEndpoint") or {}).get("serviceName", "")
        by_service.setdefault(service, []).append(otlp)
    return [
        {
            "resource": (
                {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
                if service
                else {}
            ),
            "scopeSpans": [{"scope": {}, "spans": otlp_spans}],
        }
        for service, otlp_spans in by_service.items()
    ]


def _otlp_str(value: dict[str, Any]) -> str:
    for key in ("stringValue", "intValue", "doubleValue"):
        if key in value:
            return str(value[key])
    if "boolValue" in value:
        return "true" if value["boolValue"] else "false"
    return json.dumps(value)


class FakeJaegerV3(LoopbackServer):
    """In-memory Jaeger api_v3 (shared/specs/README.md, "Jaeger api_v3 HTTP").

    `generation` "2.20": camelCase names with the snake_case aliases, `query.attributes`;
    "2.18": snake_case only (`query.num_traces`), no attribute filter on GET. Both answer
    `{"result": TracesData}` and 404 `{"error": {"httpCode": 404, "message": "No traces found"}}`.
    """

    api_root = "/api/v3"

    def __init__(self, prefix: str = "", ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(prefix, ssl_context)
        self.traces: list[list[dict[str, Any]]] = []  # each: the resourceSpans of one trace
        self.generation = "2.20"

    def add_trace(self, spans: list[Span]) -> None:
        self.traces.append(zipkin_to_otlp(spans))

    def add_otlp(self, traces_data: dict[str, Any]) -> None:
        self.traces.append(traces_data["resourceSpans"])

    def is_fetch(self, path: str, params: dict[str, list[str]]) -> bool:
        return path.startswith("/traces/")

    @staticmethod
    def _spans(trace: list[dict[str, Any]]) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
        for rs in trace:
            resource = {a["key"]: _otlp_str(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    yield resource, span

    def _trace_id(self, trace: list[dict[str, Any]]) -> str:
        return normalize_trace_id(next(self._spans(trace))[1]["traceId"])

    def _result(self, resource_spans: list[dict[str, Any]]) -> dict[str, Any]:
        # The spec example's envelope, with these resourceSpans.
        example = load(V3_GETTRACE_EXAMPLE)
        return {**example, "result": {**example["result"], "resourceSpans": resource_spans}}

    @staticmethod
    def _error(status: int, message: str) -> tuple[int, Any, str | None]:
        body = {"error": {"httpCode": status, "message": message}}
        return status, json.dumps(body) + "\n", "text/plain; charset=utf-8"  # Go's http.Error

    def _param(self, params: dict[str, list[str]], camel: str, *snake: str) -> str:
        names = ((camel,) if self.generation >= "2.19" else ()) + snake
        for name in names:
            if params.get(name, [""])[0]:
                return params[name][0]
        return ""

    def _search(self, params: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        lo_text = self._param(params, "query.startTimeMin", "query.start_time_min")
        hi_text = self._param(params, "query.startTimeMax", "query.start_time_max")
        if not lo_text or not hi_text:
            names = ("query.startTimeMin", "query.startTimeMax")
            if self.generation < "2.19":
                names = ("query.start_time_min", "query.start_time_max")
            return self._error(400, f"{names[0]} and {names[1]} are required")
        try:
            lo, hi = parse_rfc3339_nanos(lo_text), parse_rfc3339_nanos(hi_text)
        except ValueError as exc:
            return self._error(400, f"malformed parameter query.start_time_min: {exc}")
        if lo >= hi:
            return self._error(400, "start_time_min must be before start_time_max")
        service = self._param(params, "query.serviceName", "query.service_name")
        if self.generation >= "2.19":
            depth = int(
                self._param(params, "query.searchDepth", "query.search_depth", "query.num_traces") or 100
            )
            attributes = json.loads(params.get("query.attributes", ["{}"])[0])
        else:
            depth = int(self._param(params, "", "query.num_traces") or 100)
            attributes = {}
        hits: list[dict[str, Any]] = []
        matched = 0
        for trace in self.traces:
            for resource, span in self._spans(trace):
                attrs = {**resource, **{a["key"]: _otlp_str(a["value"]) for a in span.get("attributes", [])}}
                if (
                    (not service or resource.get("service.name") == service)
                    and lo <= int(span.get("startTimeUnixNano", "0")) < hi
                    and all(attrs.get(k) == v for k, v in attributes.items())
                ):
                    if matched < depth:
                        hits.extend(trace)  # all traces are combined into one TracesData
                        matched += 1
                    break
        if not hits:
            return self._error(404, "No traces found")
        return 200, self._result(hits), None

    def answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        if path == "/services":
            names = sorted({r.get("service.name", "") for t in self.traces for r, _ in self._spans(t)} - {""})
            return 200, {**load(V3_SERVICES_EXAMPLE), "services": names}, None
        if path == "/traces":
            return self._search(params)
        if path.startswith("/traces/"):
            raw = path[len("/traces/") :]
            if len(raw) > 32 or not all(c in "0123456789abcdef" for c in raw.lower()):
                return self._error(400, "malformed parameter trace_id")
            wanted = normalize_trace_id(raw.zfill(32))
            for trace in self.traces:
                if self._trace_id(trace) == wanted:
                    return 200, self._result(trace), None
            return self._error(404, "No traces found")
        return GO_404


# -- fixtures and the contract -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers built by parse_backend_spec read LOADGEN_BACKEND_*: tests start without any."""
    for name in list(os.environ):
        if name.startswith("LOADGEN_BACKEND_"):
            monkeypatch.delenv(name)


@pytest.fixture
def envoy_spans() -> list[Span]:
    spans: list[Span] = load(ENVOY_EXAMPLE)
    return spans


class TraceBackendContract:
    """Checks every reader must pass; fixtures `fake` and `make_backend` come from the subclass."""

    @staticmethod
    def requests_for(n_ids: int, batch_size: int = 100) -> int:
        """Fetch requests this reader needs for n valid ids when nothing fails."""
        return math.ceil(n_ids / batch_size)

    def test_found_and_missing(self, fake: Any, make_backend: Any, envoy_spans: list[Span]) -> None:
        fake.add_trace(envoy_spans)
        missing = "0123456789abcdef"
        out = make_backend().fetch_many([ENVOY_TRACE_ID, missing])
        assert set(out) == {ENVOY_TRACE_ID, missing}
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND
        assert [comparable(s) for s in out[ENVOY_TRACE_ID].spans] == [comparable(s) for s in envoy_spans]
        assert out[missing] == Fetched(FetchStatus.MISSING)

    def test_multi_hop_trace_keeps_parents_kinds_services_tags(self, fake: Any, make_backend: Any) -> None:
        trace = multi_hop_trace(tid(1))
        fake.add_trace(trace)
        out = make_backend().fetch_many([tid(1), tid(2)])
        assert out[tid(1)].status is FetchStatus.FOUND
        assert [comparable(s) for s in out[tid(1)].spans] == [comparable(s) for s in trace]
        assert out[tid(2)].status is FetchStatus.MISSING

    def test_keys_are_normalized_and_deduplicated(
        self, fake: Any, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        ids = [ENVOY_TRACE_ID.upper(), "0" * 16 + ENVOY_TRACE_ID, ENVOY_TRACE_ID, "fedcba9876543210"]
        out = make_backend().fetch_many(ids)
        assert set(out) == {ENVOY_TRACE_ID, "fedcba9876543210"}
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND
        assert out["fedcba9876543210"].status is FetchStatus.MISSING

    def test_empty_input(self, fake: Any, make_backend: Any) -> None:
        calls: list[tuple[int, int]] = []
        assert make_backend().fetch_many([], on_progress=lambda d, t: calls.append((d, t))) == {}
        assert fake.requests == [] and calls == []

    def test_invalid_id_is_error_without_poisoning_the_batch(
        self, fake: Any, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        out = make_backend().fetch_many(["not-hex", ENVOY_TRACE_ID, "1" * 16])
        assert out["not-hex"].status is FetchStatus.ERROR
        assert "not a 16 or 32 hex" in (out["not-hex"].error or "")
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND
        assert out["1" * 16].status is FetchStatus.MISSING

    def test_other_128_bit_trace_sharing_the_low_half_is_not_counted(
        self, fake: Any, make_backend: Any
    ) -> None:
        # A lenient server answers X with spans of Z (same low 64 bits, other high half):
        # that is another trace, so X must stay MISSING.
        x = tid(5)
        z = "f" * 16 + x[16:]
        fake.add_trace([zspan(z)])
        out = make_backend().fetch_many([x, tid(6)])
        assert out[x].status is FetchStatus.MISSING

    def test_retry_then_success(self, fake: Any, make_backend: Any, envoy_spans: list[Span]) -> None:
        fake.add_trace(envoy_spans)
        fake.fail_next(2, 503)
        out = make_backend(retries=3).fetch_many([ENVOY_TRACE_ID, "1" * 16])
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND
        assert out["1" * 16].status is FetchStatus.MISSING
        # Two failed attempts on top of what the ids need; a 404 may add one API probe.
        assert fake.fetch_requests() == self.requests_for(2) + 2

    @pytest.mark.parametrize("status", [503, 429, 500])
    def test_retry_exhaustion_is_error_never_missing(
        self, fake: Any, make_backend: Any, envoy_spans: list[Span], status: int
    ) -> None:
        fake.add_trace(envoy_spans)
        fake.fail_next(1000, status)
        out = make_backend(retries=2).fetch_many([ENVOY_TRACE_ID, "1" * 16, "2" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        for fetched in out.values():
            assert str(status) in (fetched.error or "")
            assert "3 attempts" in (fetched.error or "")
        assert fake.fetch_requests() == self.requests_for(3) * 3  # first try + 2 retries each

    def test_timeout_is_retried_then_error(self, fake: Any, make_backend: Any) -> None:
        fake.delay_s = 0.5
        out = make_backend(timeout_s=0.1, retries=1).fetch_many(["1" * 16, "2" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        assert "Timeout" in (out["1" * 16].error or "")
        assert fake.fetch_requests() == self.requests_for(2) * 2

    def test_400_is_not_retried(self, fake: Any, make_backend: Any) -> None:
        fake.fetch_status = 400
        out = make_backend(retries=3).fetch_many(["1" * 16, "2" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        assert '400 application/json "{"error": "forced"}"' in (out["1" * 16].error or "")
        assert fake.fetch_requests() == self.requests_for(2)

    # -- "unknown, not missing": only the backend's own not-found answer is MISSING --------------

    def test_unknown_id_alone_is_missing_without_other_requests(self, fake: Any, make_backend: Any) -> None:
        # The backend's own not-found answer is the proof; nothing else (/services) is asked.
        out = make_backend().fetch_many(["1" * 32])
        assert out == {"1" * 32: Fetched(FetchStatus.MISSING)}
        assert len(fake.requests) == 1 and fake.fetch_requests() == 1

    @pytest.mark.parametrize("answer", sorted(FOREIGN_ANSWERS))
    def test_foreign_answer_is_error_naming_status_and_type(
        self, fake: Any, make_backend: Any, answer: str
    ) -> None:
        fake.fetch_answer, note = FOREIGN_ANSWERS[answer]
        backend = make_backend(retries=0)
        for ids in (["1" * 16], ["1" * 16, "2" * 16, "3" * 32]):
            out = backend.fetch_many(ids)
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}, out
            for fetched in out.values():
                error = fetched.error or ""
                assert note in error, error
                assert "\n" not in error and len(error) < 200, error

    def test_timeout_is_error_not_missing(self, fake: Any, make_backend: Any) -> None:
        fake.delay_s = 0.5
        out = make_backend(timeout_s=0.1, retries=0).fetch_many(["1" * 16])
        assert out["1" * 16].status is FetchStatus.ERROR
        assert "ReadTimeout" in (out["1" * 16].error or "")

    def test_proxy_routing_only_the_listing_path(
        self, fake: Any, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        # Issue 9: a proxy routed only /services; the trace routes answered Go's plain-text 404,
        # and every trace was counted MISSING (a false FAIL). They are unknown.
        fake.add_trace(envoy_spans)
        fake.routed = {"/services"}
        backend = make_backend()
        backend.check()  # the listing answers, which proves nothing about the trace routes
        for ids in ([ENVOY_TRACE_ID], [ENVOY_TRACE_ID, "1" * 16, "2" * 32]):
            out = backend.fetch_many(ids)
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}, out
        with pytest.raises(BackendError, match='404 text/plain "404 page not found"'):
            backend.check_trace_route()

    def test_check_trace_route_passes_on_the_own_not_found(self, fake: Any, make_backend: Any) -> None:
        backend = make_backend()
        backend.check_trace_route()
        backend.check_trace_route()
        paths = [p for p, _, _ in fake.requests]
        assert len(paths) == 2, paths  # one GET of the trace route each, nothing else
        ids = [re.fullmatch(r"/traces?/([0-9a-f]{32})", p) for p in paths]
        assert all(ids), paths
        first, second = (m.group(1) for m in ids if m)
        assert first != second  # random: no id is probed twice
        assert not first.startswith("0" * 16)  # a full 128-bit id, which no reader shortens

    @pytest.mark.parametrize("answer", sorted(FOREIGN_ANSWERS))
    def test_check_trace_route_raises_on_a_foreign_answer(
        self, fake: Any, make_backend: Any, answer: str
    ) -> None:
        fake.fetch_answer, note = FOREIGN_ANSWERS[answer]
        with pytest.raises(BackendError) as info:
            make_backend(retries=0).check_trace_route()
        message = str(info.value)
        assert note in message, message
        assert "may route only some paths; check the base path / tenant" in message
        assert fake.url in message and "\n" not in message

    def test_check_trace_route_raises_on_timeout_and_closed_port(self, fake: Any, make_backend: Any) -> None:
        fake.delay_s = 0.5
        with pytest.raises(BackendError, match="ReadTimeout"):
            make_backend(timeout_s=0.1, retries=0).check_trace_route()
        with pytest.raises(BackendError, match="ConnectError"):
            make_backend(url=f"http://127.0.0.1:{closed_port()}", retries=0).check_trace_route()

    def test_check_trace_route_raises_when_the_random_id_has_spans(
        self, fake: Any, make_backend: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A route that answers spans for an id that cannot exist is not answering by id.
        probe = tid(42)
        monkeypatch.setattr("loadgen.backends.base._unknown_trace_id", lambda: probe)
        fake.add_trace([zspan(probe)])
        with pytest.raises(BackendError, match=r"1 span\(s\) for it"):
            make_backend().check_trace_route()

    def test_wrong_base_path_is_error_not_missing(self, fake: Any, make_backend: Any) -> None:
        fake.not_found_everywhere = True
        backend = make_backend()
        for ids in (["1" * 16], ["1" * 16, "2" * 16]):
            out = backend.fetch_many(ids)
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}, out

    def test_non_json_200_is_error(self, fake: Any, make_backend: Any) -> None:
        fake.html_200 = True
        backend = make_backend()
        for ids in (["1" * 16], ["1" * 16, "2" * 16]):
            out = backend.fetch_many(ids)
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert '200 text/html "<html>Please log in</html>" is not' in (out["1" * 16].error or "")
        with pytest.raises(BackendError, match="login page or proxy"):
            backend.check()

    def test_closed_port_fetch_is_error(self, make_backend: Any) -> None:
        out = make_backend(url=f"http://127.0.0.1:{closed_port()}", retries=1).fetch_many(["1" * 16])
        assert out["1" * 16].status is FetchStatus.ERROR
        assert "ConnectError" in (out["1" * 16].error or "")

    def test_progress_after_each_batch(self, fake: Any, make_backend: Any) -> None:
        calls: list[tuple[int, int]] = []
        ids = [tid(i) for i in range(25)]
        make_backend(batch_size=10, concurrency=1).fetch_many(
            ids, on_progress=lambda d, t: calls.append((d, t))
        )
        assert calls == [(10, 25), (20, 25), (25, 25)]

    def test_progress_with_concurrency(self, fake: Any, make_backend: Any) -> None:
        calls: list[tuple[int, int]] = []
        ids = [tid(i) for i in range(95)]
        out = make_backend(batch_size=10, concurrency=4).fetch_many(
            ids, on_progress=lambda d, t: calls.append((d, t))
        )
        assert len(out) == 95
        assert len(calls) == 10
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        assert calls[-1] == (95, 95) and {t for _, t in calls} == {95}

    def test_concurrency_is_bounded(self, fake: Any, make_backend: Any) -> None:
        fake.delay_s = 0.05
        make_backend(batch_size=2, concurrency=3, adaptive=False).fetch_many([tid(i) for i in range(20)])
        assert 2 <= fake.max_inflight <= 3

    def test_adaptive_concurrency_is_bounded_by_its_maximum(self, fake: Any, make_backend: Any) -> None:
        fake.delay_s = 0.02
        backend = make_backend(batch_size=1, concurrency=2, max_concurrency=3)
        backend.fetch_many([tid(i) for i in range(60)])
        stats = backend.query_stats()
        assert 2 <= fake.max_inflight <= 3
        assert stats.highest_concurrency <= 3 and stats.max_concurrency == 3
        assert stats.requests == fake.fetch_requests()

    def test_search_by_tag_service_and_window(self, fake: Any, make_backend: Any) -> None:
        ts = 1_700_000_000_000_000
        wanted = multi_hop_trace(tid(1), ts_us=ts)
        fake.add_trace(wanted)
        fake.add_trace([zspan(tid(2), ts_us=ts, tags={"loadgen.run_id": "other-run"})])
        fake.add_trace([zspan(tid(3), ts_us=ts + 5_000_000, tags={"loadgen.run_id": "run-1"})])  # later
        fake.add_trace([zspan(tid(4), ts_us=ts, service="elsewhere", tags={"loadgen.run_id": "run-1"})])
        traces = make_backend().search(
            tags={"loadgen.run_id": "run-1"},
            service="app",
            start_us=ts - 1_000_000,
            end_us=ts + 1_000_000,
            limit=10,
        )
        assert [[comparable(s) for s in t] for t in traces] == [[comparable(s) for s in wanted]]

    def test_search_window_is_inclusive_at_both_ends(self, fake: Any, make_backend: Any) -> None:
        # A span exactly at both ends is in; 1 ms off is out (Zipkin only knows milliseconds).
        ts = 1_700_000_000_123_456
        fake.add_trace([zspan(tid(1), ts_us=ts, tags={"k": "v"})])
        backend = make_backend()
        windows = ((ts, ts, 1), (ts - 10_000, ts - 1_000, 0), (ts + 1_000, ts + 10_000, 0))
        for start_us, end_us, hits in windows:
            found = backend.search(
                tags={"k": "v"}, service="istio-ingressgateway", start_us=start_us, end_us=end_us, limit=5
            )
            assert len(found) == hits, (start_us - ts, end_us - ts)

    def test_search_without_matches_is_empty(self, fake: Any, make_backend: Any) -> None:
        fake.add_trace([zspan(tid(1), tags={"loadgen.run_id": "run-1"})])
        traces = make_backend().search(
            tags={"loadgen.run_id": "nope"},
            service="istio-ingressgateway",
            start_us=1_699_999_999_000_000,
            end_us=1_700_000_001_000_000,
            limit=10,
        )
        assert traces == []

    def test_search_failure_raises(self, fake: Any, make_backend: Any) -> None:
        fake.fail_next(10, 503)
        with pytest.raises(BackendError, match="503"):
            make_backend(retries=1).search(
                tags=None, service="istio-ingressgateway", start_us=0, end_us=1000, limit=1
            )
        with pytest.raises(ValueError):
            make_backend().search(tags=None, service="x", start_us=10, end_us=1, limit=1)

    def test_check_ok(self, fake: Any, make_backend: Any) -> None:
        fake.add_trace([zspan(tid(1))])
        make_backend().check()
        assert len(fake.requests) == 1

    def test_check_closed_port(self, make_backend: Any) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        with pytest.raises(BackendError, match=r"cannot reach .* ConnectError") as info:
            make_backend(url=url).check()
        assert url in str(info.value)

    def test_check_wrong_path(self, fake: Any, make_backend: Any) -> None:
        fake.not_found_everywhere = True
        with pytest.raises(BackendError, match="answered 404"):
            make_backend().check()

    @pytest.mark.parametrize("status", [401, 403])
    def test_check_wants_credentials(self, fake: Any, make_backend: Any, status: int) -> None:
        fake.fail_next(1, status)
        with pytest.raises(BackendError, match="credentials"):
            make_backend().check()

    def test_repr_and_url_hide_credentials(self, fake: Any, make_backend: Any) -> None:
        backend = make_backend(url=fake.url.replace("//", "//user:pa55word@"))
        assert backend.url == fake.url
        assert "pa55word" not in repr(backend) and fake.url in repr(backend)
