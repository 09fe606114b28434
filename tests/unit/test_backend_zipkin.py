"""ZipkinBackend against a real loopback Zipkin v2 query API (tests/unit/backend_contract.py):
the shared reader contract, then what only Zipkin does (traceMany batching, lenient 64/128-bit ids,
the /traceMany fallback, annotationQuery encoding, Zipkin's own not-found answer)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from loadgen.backends import (
    BackendError,
    Fetched,
    FetchStatus,
    TraceBackend,
    ZipkinBackend,
    parse_backend_spec,
)
from loadgen.backends.zipkin import is_not_found_answer
from tests.unit.backend_contract import (
    ENVOY_TRACE_ID,
    FakeZipkin,
    Span,
    TraceBackendContract,
    clean_backend_env,
    closed_port,
    envoy_spans,
    tid,
    zspan,
)

__all__ = ["clean_backend_env", "envoy_spans"]  # fixtures, imported to be active here


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


class TestZipkinContract(TraceBackendContract):
    def test_spans_are_returned_untouched(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        fake.add_trace(envoy_spans)
        out = make_backend().fetch_many([ENVOY_TRACE_ID, "1" * 16])
        assert list(out[ENVOY_TRACE_ID].spans) == envoy_spans


class TestZipkinNotFoundForm:
    """is_not_found_answer on hand-made answers: Zipkin's form, tolerant of how it prints the id."""

    @pytest.mark.parametrize(
        "requested, content_type, body, expected",
        [
            ("abcdef0123456789", "text/*", "abcdef0123456789 not found", True),
            ("abcdef0123456789", "text/plain; charset=utf-8", "abcdef0123456789 not found", True),
            ("abcdef0123456789", "TEXT/PLAIN", "abcdef0123456789 not found\n", True),
            ("abcdef0123456789", "text/*", "ABCDEF0123456789 not found", True),  # case
            ("abcdef0123456789", "text/*", "0000000000000000abcdef0123456789 not found", True),  # padded
            ("00000000000000000123456789abcdef", "text/*", "0123456789abcdef not found", True),  # shortened
            ("0abc" + "1" * 28, "text/*", "abc" + "1" * 28 + " not found", True),  # unpadded
            ("abcdef0123456789", "text/*", "abcdef0123456788 not found", False),  # another id
            ("abcdef0123456789", "text/*", "trace abcdef0123456789 not found", False),
            ("abcdef0123456789", "text/*", "abcdef0123456789 Not Found", False),
            ("abcdef0123456789", "text/*", "404 page not found", False),
            ("abcdef0123456789", "text/html", "abcdef0123456789 not found", False),
            ("abcdef0123456789", "application/json", "abcdef0123456789 not found", False),
            ("abcdef0123456789", None, "abcdef0123456789 not found", False),
        ],
    )
    def test_form(self, requested: str, content_type: str | None, body: str, expected: bool) -> None:
        headers = {"content-type": content_type} if content_type else {}
        resp = httpx.Response(404, headers=headers, content=body.encode())
        assert is_not_found_answer(resp, requested) is expected

    def test_only_a_404(self) -> None:
        for status in (200, 400, 410, 500):
            resp = httpx.Response(
                status, headers={"content-type": "text/*"}, content=b"1" * 16 + b" not found"
            )
            assert not is_not_found_answer(resp, "1" * 16)


class TestZipkinSpecific:
    @pytest.mark.parametrize(
        "n, batch_size, many, single", [(250, 100, 3, 0), (201, 100, 2, 1), (7, 3, 2, 1)]
    )
    def test_batching_request_count(
        self, fake: FakeZipkin, make_backend: Any, n: int, batch_size: int, many: int, single: int
    ) -> None:
        ids = [tid(i) for i in range(n)]
        fake.add_trace([zspan(t) for t in ids[::2]])
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

    def test_own_not_found_is_missing_without_a_services_probe(
        self, fake: FakeZipkin, make_backend: Any
    ) -> None:
        # Zipkin's 404 body names the id: that alone proves "missing"; /services is not asked.
        out = make_backend().fetch_many(["1" * 16])
        assert out["1" * 16] == Fetched(FetchStatus.MISSING)
        assert [p for p, _, _ in fake.requests] == ["/trace/" + "1" * 16]

    @pytest.mark.parametrize("content_type", ["text/*", "text/plain; charset=utf-8"])
    def test_both_generations_of_the_not_found_type(
        self, fake: FakeZipkin, make_backend: Any, content_type: str
    ) -> None:
        # Zipkin 2.17+ sends Armeria's ANY_TEXT_TYPE, 2.12-2.16 sent PLAIN_TEXT_UTF_8.
        fake.not_found_type = content_type
        out = make_backend().fetch_many(["1" * 16])
        assert out["1" * 16].status is FetchStatus.MISSING

    def test_wrong_base_path_is_error_not_missing(self, fake: FakeZipkin, make_backend: Any) -> None:
        fake.not_found_everywhere = True  # this fake's unknown routes answer an HTML 404
        backend = make_backend()
        for ids in (["1" * 16], ["1" * 16, "2" * 16]):
            out = backend.fetch_many(ids)
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert out["1" * 16].error == (
                '/trace/{id}: 404 text/html "<html>Not Found</html>" is not Zipkin\'s not-found answer'
            )
        assert fake.count("/services") == 0

    def test_old_collector_form_is_not_zipkins(self, fake: FakeZipkin, make_backend: Any) -> None:
        # What the embedded collector used to answer: close, but not Zipkin's form.
        fake.fetch_answer = (404, "trace " + "1" * 16 + " not found\n", "text/plain; charset=utf-8")
        out = make_backend().fetch_many(["1" * 16])
        assert out["1" * 16].status is FetchStatus.ERROR

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

    def test_trace_many_404_with_foreign_single_answers_keeps_trying_trace_many(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        # /traceMany's 404 is evidence of nothing (an old Zipkin's generic 404 looks like a
        # proxy's): the fallback asks per id, and those answers are not Zipkin's either, so every
        # id stays unknown and /traceMany is not given up for the session.
        fake.add_trace(envoy_spans)
        fake.fetch_answer = (404, "404 page not found\n", "text/plain; charset=utf-8")
        backend = make_backend(batch_size=10, concurrency=1)
        for round_ in (1, 2):
            out = backend.fetch_many([ENVOY_TRACE_ID, "1" * 16])
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert out["1" * 16].error == (
                '/trace/{id}: 404 text/plain "404 page not found" is not Zipkin\'s not-found answer'
            )
            assert (fake.count("/traceMany"), fake.count("/trace/")) == (round_, 2 * round_)

    def test_trace_many_404_after_it_answered_is_error_without_fallback(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        # This server has /traceMany (it answered a list): a later 404 comes from something in
        # between, not from an old Zipkin, so no fallback and no MISSING.
        fake.add_trace(envoy_spans)
        backend = make_backend(batch_size=10)
        assert backend.fetch_many([ENVOY_TRACE_ID, "1" * 16])["1" * 16].status is FetchStatus.MISSING
        fake.trace_many_404 = True
        out = backend.fetch_many([ENVOY_TRACE_ID, "1" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        assert out["1" * 16].error == '/traceMany answered 404 text/plain "Not Found"'
        assert (fake.count("/traceMany"), fake.count("/trace/")) == (2, 0)

    def test_non_json_200_is_error(self, fake: FakeZipkin, make_backend: Any) -> None:
        fake.html_200 = True
        backend = make_backend()
        out = backend.fetch_many(["1" * 16])
        assert out["1" * 16].error == (
            '/trace/{id}: 200 text/html "<html>Please log in</html>" is not a JSON list of spans'
        )
        out = backend.fetch_many(["1" * 16, "2" * 16])
        assert {f.status for f in out.values()} == {FetchStatus.ERROR}
        assert out["1" * 16].error == (
            '/traceMany: 200 text/html "<html>Please log in</html>" is not a JSON list of traces'
        )
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
        fake.add_trace([zspan(tid(1))])
        backend = make_backend(retries=0)
        traces = backend.search(
            tags=None,
            service="istio-ingressgateway",
            start_us=1_699_999_999_000_000,
            end_us=1_700_000_001_000_000,
            limit=3,
        )
        assert [t[0]["traceId"] for t in traces] == [tid(1)]
        query = fake.requests[-1][1]
        assert query["serviceName"] == ["istio-ingressgateway"] and "annotationQuery" not in query
        assert query["endTs"] == ["1700000001000"] and query["lookback"] == ["2000"]
        fake.fail_next(1, 503)
        with pytest.raises(BackendError, match="503"):
            backend.search(tags=None, service=None, start_us=0, end_us=1000, limit=1)
        with pytest.raises(ValueError):
            backend.search(tags={"a": "x and y"}, service=None, start_us=0, end_us=1000, limit=1)

    def test_check_closed_port(self, make_backend: Any) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
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

    def test_parse_backend_spec(self, fake: FakeZipkin) -> None:
        with parse_backend_spec(f"zipkin:{fake.url}", timeout_s=2.0) as backend:
            assert isinstance(backend, ZipkinBackend)
            assert (backend.name, backend.url) == ("zipkin", fake.url)
            backend.check()
        for bad in (fake.url, "zipkin:h:9411", "zipkin:"):
            with pytest.raises(ValueError, match=r"expected one of zipkin:http\[s\]://HOST:9411"):
                parse_backend_spec(bad)
        with pytest.raises(ValueError) as info:
            parse_backend_spec("nope:http://u:secret@h")
        assert "secret" not in str(info.value)

    def test_old_keyword_options_still_work(self, fake: FakeZipkin) -> None:
        # The constructor's first keyword form (no BackendOptions) keeps working.
        with ZipkinBackend(
            fake.url, batch_size=2, concurrency=1, timeout_s=2.0, retries=0, backoff_s=0.0, auth=("u", "p")
        ) as backend:
            backend.fetch_many([tid(i) for i in range(5)])
        assert fake.count("/traceMany") == 2 and fake.count("/trace/") == 1
        assert fake.requests[-1][2]["authorization"] == "Basic dTpw"

    def test_128_bit_request_matches_spans_stored_under_64_bit(
        self, fake: FakeZipkin, make_backend: Any
    ) -> None:
        full = tid(1)
        low = full[16:]
        fake.add_trace([zspan(low, "1" * 16), zspan(full, "2" * 16)])  # mixed forms, one trace
        out = make_backend().fetch_many([full, tid(2)])
        assert out[full].status is FetchStatus.FOUND
        assert sorted(s["id"] for s in out[full].spans) == ["1" * 16, "2" * 16]
        assert out[tid(2)].status is FetchStatus.MISSING

    def test_64_bit_request_matches_spans_stored_under_128_bit(
        self, fake: FakeZipkin, make_backend: Any
    ) -> None:
        full = tid(3)
        fake.add_trace([zspan(full)])
        out = make_backend().fetch_many([full[16:], tid(4)])
        assert out[full[16:]].status is FetchStatus.FOUND
        assert out[full[16:]].spans[0]["traceId"] == full  # spans are returned untouched

    def test_search_without_service(
        self, fake: FakeZipkin, make_backend: Any, envoy_spans: list[Span]
    ) -> None:
        # Zipkin, unlike Jaeger's /api/traces, searches every service when none is named.
        fake.add_trace(envoy_spans)
        fake.add_trace(
            [zspan(tid(7), ts_us=envoy_spans[0]["timestamp"], tags={"guid:x-request-id": "other"})]
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
        assert "serviceName" not in fake.requests[-1][1]
