"""JaegerBackend against a real loopback Jaeger query `/api` replaying the UI-model shapes of
shared/specs (tests/unit/backend_contract.py): the shared reader contract, then what only this API
does (base path /jaeger, the multi-get and its errors[], typed tags, references, service-required
search, check() hints)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadgen.backends import BackendError, Fetched, FetchStatus, JaegerBackend, TraceBackend
from loadgen.backends._uimodel import jaeger_trace_id, tag_value, ui_trace_to_spans
from loadgen.backends.jaeger import base_path_hint
from tests.unit.backend_contract import (
    JAEGER_API_EXAMPLE,
    JAEGER_UI_EXAMPLE,
    FakeJaeger,
    TraceBackendContract,
    clean_backend_env,
    comparable,
    envoy_spans,
    jaeger_printed_id,
    load,
    multi_hop_trace,
    tid,
    zipkin_to_ui_trace,
    zspan,
)

__all__ = ["clean_backend_env", "envoy_spans"]  # fixtures, imported to be active here


@pytest.fixture
def fake() -> Iterator[FakeJaeger]:
    server = FakeJaeger()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_backend(fake: FakeJaeger) -> Iterator[Callable[..., TraceBackend]]:
    made: list[TraceBackend] = []

    def make(**options: Any) -> TraceBackend:
        options.setdefault("backoff_s", 0.01)
        backend = JaegerBackend(options.pop("url", fake.url), **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def ui_example() -> dict[str, Any]:
    trace: dict[str, Any] = load(JAEGER_UI_EXAMPLE)
    return trace


class TestJaegerContract(TraceBackendContract):
    pass


class TestUiModelConversion:
    """ui_trace_to_spans, field by field, on the spec's UI-model fixtures."""

    def test_fake_encoder_replays_the_spec_shape(self, ui_example: dict[str, Any]) -> None:
        # The fake's Zipkin -> UI encoder must produce exactly the keys Jaeger prints.
        encoded = zipkin_to_ui_trace(multi_hop_trace(tid(1)))
        assert set(encoded) == set(ui_example)
        for span in encoded["spans"]:
            assert list(span) == list(ui_example["spans"][0])
        assert set(encoded["processes"]["p1"]) == set(ui_example["processes"]["p1"])
        assert set(load(JAEGER_API_EXAMPLE)) == {"data", "total", "limit", "offset", "errors"}

    def test_typed_tags_become_strings(self, ui_example: dict[str, Any]) -> None:
        spans = ui_trace_to_spans(ui_example)
        assert spans[1]["tags"] == {
            "peer.service": "service-y",
            "peer.ipv4": "23456",
            "error": "true",
            "temperature": "72.5",
            "javascript_limit": "9223372036854775222",  # sent as a string: beyond 2**53
            "blob": "AAAwOQ==",  # binary stays base64
        }
        assert "tags" not in spans[0]  # an empty list of tags means no tags

    @pytest.mark.parametrize(
        "tag, expected",
        [
            ({"type": "bool", "value": False}, "false"),
            ({"type": "bool", "value": "TRUE"}, "true"),
            ({"type": "int64", "value": -7}, "-7"),
            ({"type": "float64", "value": 5.0}, "5"),  # Go prints 5, not 5.0
            ({"type": "float64", "value": 1e21}, "1000000000000000000000"),
            ({"type": "float64", "value": 0.1}, "0.1"),
            ({"type": "string", "value": "a:b"}, "a:b"),
            ({"value": "untyped"}, "untyped"),
        ],
    )
    def test_tag_value(self, tag: dict[str, Any], expected: str) -> None:
        assert tag_value({"key": "k", **tag}) == expected

    def test_references_to_parent_ids(self, ui_example: dict[str, Any]) -> None:
        spans = ui_trace_to_spans(ui_example)
        assert [s.get("parentId") for s in spans] == [
            None,
            None,
            "0000000000000002",
            # CHILD_OF into another trace (ff) is skipped; the first CHILD_OF in this trace wins
            # over the FOLLOWS_FROM after it.
            "0000000000000002",
            "0000000000000004",
        ]

    @pytest.mark.parametrize(
        "references, parent",
        [
            ([{"refType": "FOLLOWS_FROM", "spanID": "f1"}, {"refType": "CHILD_OF", "spanID": "c1"}], "c1"),
            (
                [{"refType": "FOLLOWS_FROM", "spanID": "f1"}, {"refType": "FOLLOWS_FROM", "spanID": "f2"}],
                "f1",
            ),
            ([{"refType": "CHILD_OF", "spanID": "c1", "traceID": "00000000000000ff"}], None),
            ([], None),
        ],
    )
    def test_parent_rule(self, references: list[dict[str, Any]], parent: str | None) -> None:
        refs = [{"traceID": "0000000000000001", **r} for r in references]
        span = {"traceID": "0000000000000001", "spanID": "0000000000000009", "references": refs}
        (converted,) = ui_trace_to_spans({"spans": [span], "processes": {}})
        assert converted.get("parentId") == parent

    def test_ids_times_names_services_logs(self, ui_example: dict[str, Any]) -> None:
        spans = ui_trace_to_spans(ui_example)
        first = spans[0]
        assert first["traceId"] == "0000000000000001" and first["id"] == "0000000000000002"
        assert (first["name"], first["timestamp"], first["duration"]) == (
            "test-general-conversion",
            1485467191639875,
            5,
        )
        assert [s["localEndpoint"]["serviceName"] for s in spans] == ["service-x"] * 2 + ["service-y"] * 3
        assert first["annotations"] == [
            {"timestamp": 1485467191639875, "value": "some-event"},  # the `event` field
            {"timestamp": 1485467191639875, "value": '{"x":"y"}'},  # other fields as JSON
        ]
        assert all("kind" not in s for s in spans)  # no span.kind tag in this fixture

    def test_span_kind_tag_becomes_kind(self) -> None:
        trace = load(JAEGER_API_EXAMPLE)["data"][0]
        spans = ui_trace_to_spans(trace)
        assert [s["kind"] for s in spans] == ["SERVER", "SERVER"]
        assert spans[0]["tags"] == {
            "otel.scope.name": "telemetrygen",
            "net.peer.ip": "1.2.3.4",
            "peer.service": "telemetrygen-client",
        }
        assert spans[0]["parentId"] == "909541b92cf05311"
        assert spans[0]["traceId"] == "83a9efd15c1c98a977e0711cc93ee28b"
        assert spans[0]["localEndpoint"] == {"serviceName": "telemetrygen"}
        internal = {
            "spanID": "1",
            "traceID": "1",
            "tags": [{"key": "span.kind", "type": "string", "value": "internal"}],
        }
        (span,) = ui_trace_to_spans({"spans": [internal]})
        assert "kind" not in span and "tags" not in span  # Zipkin has no INTERNAL kind

    @pytest.mark.parametrize(
        "printed, canonical",
        [
            ("0000000000000001", "0000000000000001"),
            ("abc00001" + "0" * 15 + "2", "00000000abc00001" + "0" * 15 + "2"),  # %x%016x
            ("1" + "0" * 15 + "2", "0" * 15 + "1" + "0" * 15 + "2"),
            ("1", "0000000000000001"),
            ("00000000000000000000000000000001", "0000000000000001"),
            ("83A9EFD15C1C98A977E0711CC93EE28B", "83a9efd15c1c98a977e0711cc93ee28b"),
        ],
    )
    def test_jaeger_trace_ids(self, printed: str, canonical: str) -> None:
        assert jaeger_trace_id(printed) == canonical
        assert jaeger_trace_id(jaeger_printed_id(canonical)) == canonical  # the fake prints like Jaeger


class TestBasePathHint:
    @pytest.mark.parametrize(
        "url, tries",
        [
            ("http://h:16686/foo", "try http://h:16686/jaeger or http://h:16686."),
            ("http://h:16686/foo/", "try http://h:16686/jaeger or http://h:16686."),
            ("https://h/a/b/jaeger", "try https://h/jaeger or https://h."),
            ("http://h:16686", "try http://h:16686/jaeger."),
            ("http://h:16686/", "try http://h:16686/jaeger."),
            ("http://tracing.istio-system/jaeger", "try http://tracing.istio-system."),
        ],
    )
    def test_replaces_the_path(self, url: str, tries: str) -> None:
        hint = base_path_hint(url)
        assert hint.endswith(tries), hint
        assert "/foo/jaeger" not in hint and "jaeger/jaeger" not in hint
        assert "jaeger_query.base_path" in hint


class TestJaegerSpecific:
    def test_spec_examples_served_verbatim_are_found(
        self, fake: FakeJaeger, make_backend: Any, ui_example: dict[str, Any]
    ) -> None:
        fake.add_ui_trace(ui_example)
        fake.add_ui_trace(load(JAEGER_API_EXAMPLE)["data"][0])
        out = make_backend().fetch_many(["1".zfill(32), "83a9efd15c1c98a977e0711cc93ee28b", "2" * 16])
        assert out["0000000000000001"].status is FetchStatus.FOUND
        assert [s["id"] for s in out["0000000000000001"].spans] == [s["spanID"] for s in ui_example["spans"]]
        assert len(out["83a9efd15c1c98a977e0711cc93ee28b"].spans) == 2
        assert out["2" * 16].status is FetchStatus.MISSING

    @pytest.mark.parametrize("n, batch_size", [(250, 100), (7, 3)])
    def test_multi_get_batches(self, fake: FakeJaeger, make_backend: Any, n: int, batch_size: int) -> None:
        ids = [tid(i) for i in range(n)]
        for t in ids[::2]:
            fake.add_trace([zspan(t)])
        out = make_backend(batch_size=batch_size).fetch_many(ids)
        batches = [q["traceID"] for p, q, _ in fake.requests if p == "/traces"]
        singles = [p for p, _, _ in fake.requests if p.startswith("/traces/")]
        assert sorted([i for b in batches for i in b] + [p[len("/traces/") :] for p in singles]) == sorted(
            ids
        )
        assert all(len(b) <= batch_size for b in batches)
        assert len(batches) + len(singles) == -(-n // batch_size)
        assert [out[t].status for t in ids] == [FetchStatus.FOUND, FetchStatus.MISSING] * (n // 2) + [
            FetchStatus.FOUND
        ] * (n % 2)

    @pytest.mark.parametrize("style", ["errors", "omit"])
    def test_not_found_in_errors_or_absent_is_missing(
        self, fake: FakeJaeger, make_backend: Any, style: str
    ) -> None:
        fake.missing_style = style
        fake.add_trace([zspan(tid(1))])
        out = make_backend().fetch_many([tid(1), tid(2), tid(3)])
        assert [out[t].status for t in (tid(1), tid(2), tid(3))] == [
            FetchStatus.FOUND,
            FetchStatus.MISSING,
            FetchStatus.MISSING,
        ]
        assert fake.fetch_requests() == 1

    def test_other_per_id_error_is_error(self, fake: FakeJaeger, make_backend: Any) -> None:
        fake.add_trace([zspan(tid(1))])
        fake.error_for[tid(2)] = "storage timeout for this trace"
        out = make_backend().fetch_many([tid(1), tid(2), tid(3)])
        assert out[tid(1)].status is FetchStatus.FOUND
        assert out[tid(2)] == Fetched(FetchStatus.ERROR, error="Jaeger: storage timeout for this trace")
        assert out[tid(3)].status is FetchStatus.MISSING

    def test_single_id_uses_the_trace_endpoint_and_its_404(self, fake: FakeJaeger, make_backend: Any) -> None:
        fake.add_trace([zspan(tid(1))])
        backend = make_backend()
        assert backend.fetch_many([tid(1)])[tid(1)].status is FetchStatus.FOUND
        assert backend.fetch_many([tid(2)])[tid(2)] == Fetched(FetchStatus.MISSING)  # 404 envelope
        assert [p for p, _, _ in fake.requests] == [f"/traces/{tid(1)}", f"/traces/{tid(2)}"]

    def test_base_path_jaeger(self, make_backend: Any) -> None:
        server = FakeJaeger(prefix="/jaeger")  # Istio's addon: jaeger_query.base_path /jaeger
        server.add_trace(multi_hop_trace(tid(1)))
        server.start()
        try:
            root = server.url[: -len("/jaeger")]
            backend = make_backend(url=server.url + "/")
            assert backend.url == server.url
            backend.check()
            assert backend.fetch_many([tid(1), tid(2)])[tid(1)].status is FetchStatus.FOUND
            assert backend.search(tags=None, service="app", start_us=0, end_us=2**60, limit=5) != []
            without = make_backend(url=root)
            with pytest.raises(BackendError, match=f"try {root}/jaeger"):
                without.check()
            out = without.fetch_many([tid(1), tid(2)])
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert '404 text/plain "404 page not found"' in (out[tid(1)].error or "")
            with pytest.raises(BackendError, match=f"try {root}/jaeger\\.$"):
                without.check_trace_route()  # the preflight carries the hint, not every id
            with pytest.raises(BackendError, match="answered 404") as info:
                make_backend(url=server.url + "/elsewhere").check()
            # The hint replaces the wrong path instead of appending /jaeger to it.
            assert f"try {root}/jaeger or {root}." in str(info.value)
            assert "/elsewhere/jaeger" not in str(info.value)
        finally:
            server.stop()

    def test_without_multi_get_reads_per_id_for_the_session(
        self, fake: FakeJaeger, make_backend: Any
    ) -> None:
        # Jaeger after v2.20: GET /api/traces (search and multi-get) is gone, /api/traces/{id} stays.
        fake.v3_only = True
        fake.add_trace([zspan(tid(1))])
        backend = make_backend(batch_size=10, concurrency=1)
        out = backend.fetch_many([tid(1), tid(2), tid(3)])
        assert [out[t].status for t in (tid(1), tid(2), tid(3))] == [
            FetchStatus.FOUND,
            FetchStatus.MISSING,
            FetchStatus.MISSING,
        ]
        assert (fake.count("/traces"), fake.count("/traces/")) == (1, 3)
        backend.fetch_many([tid(4), tid(5)])
        assert (fake.count("/traces"), fake.count("/traces/")) == (1, 5)
        with pytest.raises(BackendError, match="use --backend jaeger-v3:"):
            backend.check()

    def test_search_needs_a_service(self, fake: FakeJaeger, make_backend: Any) -> None:
        with pytest.raises(BackendError, match="needs a service name"):
            make_backend().search(tags={"k": "v"}, service=None, start_us=0, end_us=1, limit=1)
        assert fake.requests == []

    def test_search_parameters(self, fake: FakeJaeger, make_backend: Any) -> None:
        ts = 1_700_000_000_123_456
        fake.add_trace(multi_hop_trace(tid(1), ts_us=ts))
        traces = make_backend().search(
            tags={"loadgen.run_id": "run-1", "http.url": "http://h/a?b=c&d"},
            service="app",
            start_us=ts - 7,
            end_us=ts + 7_000,
            limit=20,
        )
        assert traces == []  # no span has both tags
        (path, query, _) = fake.requests[-1]
        assert path == "/traces"
        assert query == {
            "service": ["app"],
            "tags": ['{"loadgen.run_id":"run-1","http.url":"http://h/a?b=c&d"}'],
            "start": [str(ts - 7)],  # epoch µs, exactly
            "end": [str(ts + 7_000)],
            "limit": ["20"],
        }
        assert json.loads(query["tags"][0]) == {"loadgen.run_id": "run-1", "http.url": "http://h/a?b=c&d"}

    def test_search_returns_converted_traces(self, fake: FakeJaeger, make_backend: Any) -> None:
        trace = multi_hop_trace(tid(1))
        fake.add_trace(trace)
        (found,) = make_backend().search(
            tags={"upstream_cluster": "app"},
            service="istio-ingressgateway",
            start_us=0,
            end_us=2**60,
            limit=5,
        )
        assert [comparable(s) for s in found] == [comparable(s) for s in trace]
        assert found[1]["kind"] == "CLIENT" and "span.kind" not in found[1]["tags"]

    def test_check_hints(self, fake: FakeJaeger, make_backend: Any) -> None:
        fake.status_for["/services"] = 400  # what Jaeger's Zipkin receiver answers a GET
        with pytest.raises(BackendError, match="Zipkin receiver on 9411") as info:
            make_backend().check()
        assert "16686" in str(info.value)
        del fake.status_for["/services"]
        backend = make_backend()
        backend.check()
        assert fake.count("/services") == 2

    def test_check_on_a_zipkin_api(self, make_backend: Any) -> None:
        from tests.unit.backend_contract import FakeZipkin

        zipkin = FakeZipkin()
        zipkin.start()
        try:
            with pytest.raises(BackendError, match="answered 404"):
                make_backend(url=zipkin.url).check()
            zipkin_root = FakeZipkin(prefix="")
            zipkin_root.api_root = "/api"  # a Zipkin-shaped list where Jaeger's envelope belongs
            zipkin_root.start()
            try:
                with pytest.raises(BackendError, match="use --backend zipkin:"):
                    make_backend(url=zipkin_root.url).check()
            finally:
                zipkin_root.stop()
        finally:
            zipkin.stop()
