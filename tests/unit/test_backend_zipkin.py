"""ZipkinBackend against a real loopback HTTP server that speaks enough of the Zipkin v2 query
API (shared/specs/zipkin2-api.yaml) over an in-memory store, with fault knobs.

`TraceBackendContract` holds the backend-agnostic checks; a Jaeger reader's tests can subclass it
with their own `fake` (same knobs: add_trace, fail_next, delay_s, fetch_requests) and
`make_backend` fixtures.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from loadgen.backends import (
    BackendError,
    Fetched,
    FetchStatus,
    TraceBackend,
    ZipkinBackend,
    parse_backend_spec,
)
from loadgen.propagation import is_hex_id, normalize_trace_id

ENVOY_EXAMPLE = Path("/work/shared/specs/zipkin-envoy-spans-example.json")
ENVOY_TRACE_ID = "978883983d506fa5"

Span = dict[str, Any]


def _span(
    trace_id: str, span_id: str = "a" * 16, *, ts_us: int = 1_700_000_000_000_000, **extra: Any
) -> Span:
    return {
        "traceId": trace_id,
        "id": span_id,
        "kind": "SERVER",
        "name": "get /headers",
        "timestamp": ts_us,
        "duration": 1000,
        "localEndpoint": {"serviceName": "istio-ingressgateway"},
        **extra,
    }


def _tid(n: int, bits: int = 128) -> str:
    """A deterministic trace id with a non-zero high half for 128-bit ids."""
    return f"{0xABC00000 + n:016x}{n + 1:016x}" if bits == 128 else f"{n + 1:016x}"


class FakeZipkin:
    """In-memory Zipkin v2 query API on 127.0.0.1:<free port>.

    Like Zipkin with `strictTraceId=false` when `lenient_ids`: a query id matches stored spans
    whose trace id has the same low 64 bits.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.spans: list[Span] = []
        self.lenient_ids = True
        self.delay_s = 0.0
        self.trace_many_404 = False
        self.not_found_everywhere = False
        self.status_for: dict[str, int] = {}  # path -> forced status (e.g. {"/traceMany": 400})
        self.html_200 = False  # a login page / proxy answering 200 with HTML
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        self.max_inflight = 0
        self._inflight = 0
        self._fail_left = 0
        self._fail_status = 503
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    # -- knobs and inspection ---------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"

    def add_trace(self, spans: list[Span]) -> None:
        self.spans.extend(spans)

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail_left, self._fail_status = n, status

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path or (path.endswith("/") and p.startswith(path)))

    def fetch_requests(self) -> int:
        return self.count("/traceMany") + self.count("/trace/")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- the API ----------------------------------------------------------------------------

    def _matches(self, query_id: str, stored: str) -> bool:
        q, s = normalize_trace_id(query_id), normalize_trace_id(stored)
        return q == s or (self.lenient_ids and q[-16:] == s[-16:])

    def _trace(self, tid: str) -> list[Span]:
        return [s for s in self.spans if self._matches(tid, s["traceId"])]

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

    def _answer(self, path: str, params: dict[str, list[str]]) -> tuple[int, Any]:
        forced = self.status_for.get(path) or self.status_for.get(path.rsplit("/", 1)[0] + "/")
        if forced:
            return forced, {"error": "forced"}
        if path == "/services":
            names = {s.get("localEndpoint", {}).get("serviceName") for s in self.spans}
            return 200, sorted(n for n in names if n)
        if path.startswith("/trace/"):
            tid = path[len("/trace/") :]
            if not is_hex_id(tid):
                return 400, "bad traceId"
            spans = self._trace(tid)
            return (200, spans) if spans else (404, f"{tid} not found")
        if path == "/traceMany":
            if self.trace_many_404:
                return 404, "Not Found"
            ids = params.get("traceIds", [""])[0].split(",")
            normalized = [normalize_trace_id(t) for t in ids]
            if len(set(normalized)) != len(normalized) or len(ids) < 2 or not all(map(is_hex_id, ids)):
                return 400, "Less than two traceIds, or the list was redundant or malformed"
            traces = [self._trace(t) for t in ids]
            return 200, [t for t in traces if t]
        if path == "/traces":
            return 200, self._traces(params)
        return 404, "Not Found"

    def _handle(self, raw_path: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        parts = urlsplit(raw_path)
        params = parse_qs(parts.query)
        with self._lock:
            self._inflight += 1
            self.max_inflight = max(self.max_inflight, self._inflight)
        try:
            with self._lock:
                api_root = f"{self.prefix}/api/v2"
                path = parts.path[len(api_root) :] if parts.path.startswith(api_root) else parts.path
                self.requests.append((path, params, headers))
                failing = self._fail_left > 0
                if failing:
                    self._fail_left -= 1
            if self.delay_s:
                time.sleep(self.delay_s)
            if failing:
                return self._fail_status, b"try again later", "text/plain"
            if self.html_200:
                return 200, b"<html>Please log in</html>", "text/html"
            if self.not_found_everywhere or not parts.path.startswith(api_root):
                return 404, b"<html>Not Found</html>", "text/html"
            status, body = self._answer(path, params)
            if isinstance(body, str):
                return status, body.encode(), "text/plain"
            return status, json.dumps(body).encode(), "application/json"
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


@pytest.fixture
def fake() -> Iterator[FakeZipkin]:
    server = FakeZipkin()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_backend(fake: FakeZipkin) -> Iterator[Callable[..., TraceBackend]]:
    made: list[TraceBackend] = []

    def make(**options: Any) -> TraceBackend:
        options.setdefault("backoff_s", 0.01)
        backend = ZipkinBackend(options.pop("url", fake.url), **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def envoy_spans() -> list[Span]:
    spans: list[Span] = json.loads(ENVOY_EXAMPLE.read_text())
    return spans


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TraceBackendContract:
    """Checks every reader must pass; fixtures `fake` and `make_backend` come from the subclass."""

    def test_found_and_missing(self, fake: Any, make_backend: Any, envoy_spans: list[Span]) -> None:
        fake.add_trace(envoy_spans)
        missing = "0123456789abcdef"
        out = make_backend().fetch_many([ENVOY_TRACE_ID, missing])
        assert set(out) == {ENVOY_TRACE_ID, missing}
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND
        assert list(out[ENVOY_TRACE_ID].spans) == envoy_spans
        assert out[missing] == Fetched(FetchStatus.MISSING)

    def test_keys_are_normalized_and_deduplicated(
        self, fake: Any, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        ids = [ENVOY_TRACE_ID.upper(), "0" * 16 + ENVOY_TRACE_ID, ENVOY_TRACE_ID, "fedcba9876543210"]
        out = make_backend().fetch_many(ids)
        assert set(out) == {ENVOY_TRACE_ID, "fedcba9876543210"}
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND

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

    def test_128_bit_request_matches_spans_stored_under_64_bit(self, fake: Any, make_backend: Any) -> None:
        full = _tid(1)
        low = full[16:]
        fake.add_trace([_span(low, "1" * 16), _span(full, "2" * 16)])  # mixed forms, one trace
        out = make_backend().fetch_many([full, _tid(2)])
        assert out[full].status is FetchStatus.FOUND
        assert sorted(s["id"] for s in out[full].spans) == ["1" * 16, "2" * 16]
        assert out[_tid(2)].status is FetchStatus.MISSING

    def test_64_bit_request_matches_spans_stored_under_128_bit(self, fake: Any, make_backend: Any) -> None:
        full = _tid(3)
        fake.add_trace([_span(full)])
        out = make_backend().fetch_many([full[16:], _tid(4)])
        assert out[full[16:]].status is FetchStatus.FOUND
        assert out[full[16:]].spans[0]["traceId"] == full  # spans are returned untouched

    def test_other_128_bit_trace_sharing_the_low_half_is_not_counted(
        self, fake: Any, make_backend: Any
    ) -> None:
        # A lenient server answers X with spans of Z (same low 64 bits, other high half):
        # that is another trace, so X must stay MISSING.
        x = _tid(5)
        z = "f" * 16 + x[16:]
        fake.add_trace([_span(z)])
        out = make_backend().fetch_many([x, _tid(6)])
        assert out[x].status is FetchStatus.MISSING

    def test_retry_then_success(self, fake: Any, make_backend: Any, envoy_spans: list[Span]) -> None:
        fake.add_trace(envoy_spans)
        fake.fail_next(2, 503)
        out = make_backend(retries=3).fetch_many([ENVOY_TRACE_ID, "1" * 16])
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND
        assert out["1" * 16].status is FetchStatus.MISSING
        assert fake.fetch_requests() == 3

    @pytest.mark.parametrize("status", [503, 429, 500])
    def test_retry_exhaustion_is_error_never_missing(
        self, fake: Any, make_backend: Any, envoy_spans: list[Span], status: int
    ) -> None:
        fake.add_trace(envoy_spans)
        fake.fail_next(100, status)
        out = make_backend(retries=2).fetch_many([ENVOY_TRACE_ID, "1" * 16, "2" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        for fetched in out.values():
            assert str(status) in (fetched.error or "")
            assert "3 attempts" in (fetched.error or "")
        assert fake.fetch_requests() == 3  # one batch, first try + 2 retries

    def test_timeout_is_retried_then_error(self, fake: Any, make_backend: Any) -> None:
        fake.delay_s = 0.5
        out = make_backend(timeout_s=0.1, retries=1).fetch_many(["1" * 16, "2" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        assert "Timeout" in (out["1" * 16].error or "")
        assert fake.fetch_requests() == 2

    def test_progress_after_each_batch(self, fake: Any, make_backend: Any) -> None:
        calls: list[tuple[int, int]] = []
        ids = [_tid(i) for i in range(25)]
        make_backend(batch_size=10, concurrency=1).fetch_many(
            ids, on_progress=lambda d, t: calls.append((d, t))
        )
        assert calls == [(10, 25), (20, 25), (25, 25)]

    def test_progress_with_concurrency(self, fake: Any, make_backend: Any) -> None:
        calls: list[tuple[int, int]] = []
        ids = [_tid(i) for i in range(95)]
        out = make_backend(batch_size=10, concurrency=4).fetch_many(
            ids, on_progress=lambda d, t: calls.append((d, t))
        )
        assert len(out) == 95
        assert len(calls) == 10
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        assert calls[-1] == (95, 95) and {t for _, t in calls} == {95}

    def test_search_by_tag_returns_zipkin_shaped_traces(
        self, fake: Any, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        fake.add_trace(
            [_span(_tid(7), ts_us=envoy_spans[0]["timestamp"], tags={"guid:x-request-id": "other"})]
        )
        ts = envoy_spans[0]["timestamp"]
        traces = make_backend().search(
            tags={"guid:x-request-id": "d709b78f-583e-988e-b581-25b72c63852d"},
            service=None,
            start_us=ts - 1_000_000,
            end_us=ts + 1_000_000,
            limit=10,
        )
        assert traces == [envoy_spans]


class TestZipkinContract(TraceBackendContract):
    pass


class TestZipkinSpecific:
    @pytest.mark.parametrize(
        "n, batch_size, many, single", [(250, 100, 3, 0), (201, 100, 2, 1), (7, 3, 2, 1)]
    )
    def test_batching_request_count(
        self, fake: FakeZipkin, make_backend: Any, n: int, batch_size: int, many: int, single: int
    ) -> None:
        ids = [_tid(i) for i in range(n)]
        fake.add_trace([_span(t) for t in ids[::2]])
        out = make_backend(batch_size=batch_size).fetch_many(ids)
        assert fake.fetch_requests() == math.ceil(n / batch_size)
        assert (fake.count("/traceMany"), fake.count("/trace/")) == (many, single)
        sent = [i for p, q, _ in fake.requests if p == "/traceMany" for i in q["traceIds"][0].split(",")]
        sent += [p[len("/trace/") :] for p, _, _ in fake.requests if p.startswith("/trace/")]
        assert sorted(sent) == sorted(ids)
        assert all(
            len(q["traceIds"][0].split(",")) <= batch_size for p, q, _ in fake.requests if p == "/traceMany"
        )
        assert [out[t].status for t in ids] == [FetchStatus.FOUND, FetchStatus.MISSING] * (n // 2) + [
            FetchStatus.FOUND
        ] * (n % 2)

    def test_single_id_uses_trace_endpoint(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        backend = make_backend()
        backend.check()
        assert backend.fetch_many([ENVOY_TRACE_ID])[ENVOY_TRACE_ID].spans == tuple(envoy_spans)
        assert backend.fetch_many(["1" * 32])["1" * 32] == Fetched(FetchStatus.MISSING)  # 404
        assert (fake.count("/traceMany"), fake.count("/trace/")) == (0, 2)

    def test_404_on_unverified_server_is_checked_before_missing(
        self, fake: FakeZipkin, make_backend: Any
    ) -> None:
        # A 404 for /trace/{id} only means MISSING once /services proved this is Zipkin.
        out = make_backend().fetch_many(["1" * 16])
        assert out["1" * 16].status is FetchStatus.MISSING
        assert fake.count("/services") == 1

    def test_wrong_base_path_is_error_not_missing(self, fake: FakeZipkin, make_backend: Any) -> None:
        fake.not_found_everywhere = True
        backend = make_backend()
        for ids in (["1" * 16], ["1" * 16, "2" * 16]):
            out = backend.fetch_many(ids)
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert "not a Zipkin query API" in (out["1" * 16].error or "")
        assert fake.count("/services") == 1  # the verdict is cached

    def test_400_is_not_retried(self, fake: FakeZipkin, make_backend: Any) -> None:
        fake.status_for["/traceMany"] = 400
        out = make_backend(retries=3).fetch_many(["1" * 16, "2" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        assert "HTTP 400 from /traceMany" in (out["1" * 16].error or "")
        assert fake.count("/traceMany") == 1

    def test_trace_many_404_falls_back_to_single_gets_for_the_session(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        fake.trace_many_404 = True
        backend = make_backend(batch_size=10, concurrency=1)
        out = backend.fetch_many([ENVOY_TRACE_ID, "1" * 16, "2" * 16])
        assert out[ENVOY_TRACE_ID].status is FetchStatus.FOUND
        assert out["1" * 16].status is FetchStatus.MISSING
        assert (fake.count("/traceMany"), fake.count("/trace/")) == (1, 3)
        backend.fetch_many(["3" * 16, "4" * 16])
        assert (fake.count("/traceMany"), fake.count("/trace/")) == (1, 5)

    def test_non_json_200_is_error(self, fake: FakeZipkin, make_backend: Any) -> None:
        fake.html_200 = True
        backend = make_backend()
        for ids in (["1" * 16], ["1" * 16, "2" * 16]):
            out = backend.fetch_many(ids)
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert "answered 200 but not with a list" in (out["1" * 16].error or "")
        with pytest.raises(BackendError, match="not a Zipkin query API"):
            backend.check()

    def test_path_prefix(self, make_backend: Any, envoy_spans: list[Span]) -> None:
        server = FakeZipkin(prefix="/zipkin")
        server.add_trace(envoy_spans)
        server.start()
        try:
            backend = make_backend(url=server.url + "/")
            backend.check()
            assert backend.fetch_many([ENVOY_TRACE_ID, "1" * 16])[ENVOY_TRACE_ID].status is FetchStatus.FOUND
            assert server.count("/traceMany") == 1
        finally:
            server.stop()

    def test_concurrency_is_bounded(self, fake: FakeZipkin, make_backend: Any) -> None:
        fake.delay_s = 0.05
        make_backend(batch_size=2, concurrency=3).fetch_many([_tid(i) for i in range(20)])
        assert 2 <= fake.max_inflight <= 3

    def test_search_parameter_encoding(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        ts = envoy_spans[0]["timestamp"]  # 1570523661059232 µs
        start_us, end_us = ts - 60_000_000 + 1, ts + 500  # not on ms boundaries
        traces = make_backend().search(
            tags={"http.method": "GET", "upstream_cluster": "service_google"},
            service="",
            start_us=start_us,
            end_us=end_us,
            limit=5,
        )
        assert traces == [envoy_spans]
        (_, query, _) = fake.requests[-1]
        assert query == {
            "annotationQuery": ["http.method=GET and upstream_cluster=service_google"],
            "endTs": ["1570523661060"],  # ceil(end_us / 1000)
            "lookback": ["60001"],  # reaches back to floor(start_us / 1000)
            "limit": ["5"],
        }
        (path, _, _) = fake.requests[-1]
        assert path == "/traces"

    def test_search_service_and_errors(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace([_span(_tid(1))])
        backend = make_backend(retries=0)
        traces = backend.search(
            tags=None,
            service="istio-ingressgateway",
            start_us=1_699_999_999_000_000,
            end_us=1_700_000_001_000_000,
            limit=3,
        )
        assert [t[0]["traceId"] for t in traces] == [_tid(1)]
        query = fake.requests[-1][1]
        assert query["serviceName"] == ["istio-ingressgateway"] and "annotationQuery" not in query
        assert query["endTs"] == ["1700000001000"] and query["lookback"] == ["2000"]
        fake.fail_next(1, 503)
        with pytest.raises(BackendError, match="503"):
            backend.search(tags=None, service=None, start_us=0, end_us=1000, limit=1)
        with pytest.raises(ValueError):
            backend.search(tags={"a": "x and y"}, service=None, start_us=0, end_us=1000, limit=1)

    def test_check_ok(self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]) -> None:
        make_backend().check()
        assert fake.count("/services") == 1

    def test_check_closed_port(self, make_backend: Any) -> None:
        url = f"http://127.0.0.1:{_closed_port()}"
        with pytest.raises(BackendError) as info:
            make_backend(url=url).check()
        message = str(info.value)
        assert message.startswith(f"cannot reach Zipkin at {url}: ConnectError")
        assert "Is the backend running? For Jaeger use --backend jaeger:URL" in message

    def test_check_404_server(self, fake: FakeZipkin, make_backend: Any) -> None:
        fake.not_found_everywhere = True
        with pytest.raises(BackendError, match="not a Zipkin query API") as info:
            make_backend().check()
        assert "Jaeger's Zipkin receiver on 9411 only accepts spans" in str(info.value)

    @pytest.mark.parametrize("status, hint", [(401, "credentials"), (400, "is this a Zipkin query API")])
    def test_check_other_statuses(self, fake: FakeZipkin, make_backend: Any, status: int, hint: str) -> None:
        fake.status_for["/services"] = status
        with pytest.raises(BackendError, match=hint):
            make_backend().check()

    def test_closed_port_fetch_is_error(self, make_backend: Any) -> None:
        out = make_backend(url=f"http://127.0.0.1:{_closed_port()}", retries=1).fetch_many(["1" * 16])
        assert out["1" * 16].status is FetchStatus.ERROR
        assert "ConnectError" in (out["1" * 16].error or "")

    @pytest.mark.parametrize(
        "userinfo, options",
        [
            ("user:pa55word@", {}),
            ("", {"headers": {"Authorization": "Bearer s3cret"}}),
            ("", {"auth": ("user", "pa55word")}),
        ],
    )
    def test_credentials_sent_but_never_in_messages(
        self, fake: FakeZipkin, make_backend: Any, userinfo: str, options: dict[str, Any]
    ) -> None:
        backend = make_backend(url=fake.url.replace("//", f"//{userinfo}"), retries=0, **options)
        assert "pa55word" not in backend.url
        fake.status_for["/traceMany"] = 401
        out = backend.fetch_many(["1" * 16, "2" * 16])
        assert fake.requests[-1][2]["authorization"].startswith(("Basic ", "Bearer "))
        fake.status_for["/services"] = 403
        with pytest.raises(BackendError) as info:
            backend.check()
        messages = [str(info.value)] + [f.error or "" for f in out.values()]
        for message in messages:
            assert message and "s3cret" not in message and "pa55word" not in message

    def test_parse_backend_spec(self, fake: FakeZipkin) -> None:
        with parse_backend_spec(f"zipkin:{fake.url}", timeout_s=2.0) as backend:
            assert isinstance(backend, ZipkinBackend)
            assert (backend.name, backend.url) == ("zipkin", fake.url)
            backend.check()
        for bad in ("jaeger:http://h:16686", fake.url, "zipkin:h:9411", "zipkin:"):
            with pytest.raises(ValueError, match=r"expected one of zipkin:http\[s\]://HOST:9411"):
                parse_backend_spec(bad)
        with pytest.raises(ValueError) as info:
            parse_backend_spec("nope:http://u:secret@h")
        assert "secret" not in str(info.value)
