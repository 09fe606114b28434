"""JaegerV3Backend against a real loopback Jaeger api_v3 replaying the OTLP JSON shapes of
shared/specs (tests/unit/backend_contract.py): the shared reader contract, then what only api_v3
does (per-id GET with the 404 trust probe, camelCase vs snake_case search parameters, RFC 3339
nanosecond windows, "No traces found" 404s, client-side tag filtering before v2.19)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from loadgen.backends import BackendError, Fetched, FetchStatus, JaegerV3Backend, ParamStyle, TraceBackend
from loadgen.backends._otlp import any_value_str, otlp_id, traces_data_to_spans
from loadgen.backends.jaeger_v3 import rfc3339_nanos
from tests.unit.backend_contract import (
    V3_GETTRACE_EXAMPLE,
    V3_OPENAPI,
    V3_OPENAPI_SNAKE,
    FakeJaegerV3,
    TraceBackendContract,
    clean_backend_env,
    comparable,
    envoy_spans,
    load,
    multi_hop_trace,
    parse_rfc3339_nanos,
    tid,
    zipkin_to_otlp,
    zspan,
)

__all__ = ["clean_backend_env", "envoy_spans"]  # fixtures, imported to be active here

TS = 1_700_000_000_000_000


@pytest.fixture
def fake() -> Iterator[FakeJaegerV3]:
    server = FakeJaegerV3()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_backend(fake: FakeJaegerV3) -> Iterator[Callable[..., TraceBackend]]:
    made: list[TraceBackend] = []

    def make(**options: Any) -> TraceBackend:
        options.setdefault("backoff_s", 0.01)
        backend = JaegerV3Backend(options.pop("url", fake.url), **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def search_params(fake: FakeJaegerV3) -> list[dict[str, list[str]]]:
    return [q for p, q, _ in fake.requests if p == "/traces"]


class TestJaegerV3Contract(TraceBackendContract):
    @staticmethod
    def requests_for(n_ids: int, batch_size: int = 100) -> int:
        return n_ids  # no batch endpoint: one GET per id


class TestOtlpConversion:
    def test_gettrace_example_field_by_field(self) -> None:
        example = load(V3_GETTRACE_EXAMPLE)
        (span,) = traces_data_to_spans(example["result"])
        assert span == {
            "traceId": "0000000000000001",  # 32 hex with a zero high half -> canonical 16
            "id": "0000000000000002",
            "kind": "SERVER",  # kind 2
            "name": "foobar",
            # status.code 2 = ERROR, as the OTel Zipkin translator tags it
            "tags": {"otel.status_code": "ERROR", "error": "true"},
        }
        # Absent in the example, so absent here: parentSpanId (a root), times, service.name.
        assert not {"parentId", "timestamp", "duration", "localEndpoint"} & set(span)

    def test_fake_encoder_uses_only_spec_fields(self) -> None:
        schemas = yaml.safe_load(V3_OPENAPI.read_text())["components"]["schemas"]
        span_fields = set(schemas["opentelemetry.proto.trace.v1.Span"]["properties"])
        encoded = zipkin_to_otlp(multi_hop_trace(tid(1)))
        for resource_spans in encoded:
            assert set(resource_spans) <= set(
                schemas["opentelemetry.proto.trace.v1.ResourceSpans"]["properties"]
            )
            for span in resource_spans["scopeSpans"][0]["spans"]:
                assert set(span) <= span_fields
        example_span = load(V3_GETTRACE_EXAMPLE)["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert set(example_span) <= span_fields

    def test_full_span(self) -> None:
        traces_data = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "istio-ingressgateway"}},
                            {"key": "host.ip", "value": {"stringValue": "10.0.0.1"}},
                        ]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "envoy"},
                            "spans": [
                                {
                                    "traceId": "83a9efd15c1c98a977e0711cc93ee28b",
                                    "spanId": "e127af99e3b3e074",
                                    "parentSpanId": "909541b92cf05311",
                                    "name": "ingress",
                                    "kind": "SPAN_KIND_CLIENT",
                                    "startTimeUnixNano": "1706678909209712345",
                                    "endTimeUnixNano": "1706678909209835999",
                                    "attributes": [
                                        {"key": "s", "value": {"stringValue": "x"}},
                                        {"key": "i", "value": {"intValue": "9223372036854775807"}},
                                        {"key": "b", "value": {"boolValue": False}},
                                        {"key": "d", "value": {"doubleValue": 72.5}},
                                        {"key": "by", "value": {"bytesValue": "AAAwOQ=="}},
                                        {
                                            "key": "a",
                                            "value": {
                                                "arrayValue": {
                                                    "values": [{"stringValue": "p"}, {"intValue": "2"}]
                                                }
                                            },
                                        },
                                        {
                                            "key": "m",
                                            "value": {
                                                "kvlistValue": {
                                                    "values": [{"key": "k", "value": {"boolValue": True}}]
                                                }
                                            },
                                        },
                                        {"key": "empty", "value": {}},
                                    ],
                                    "events": [
                                        {"timeUnixNano": "1706678909209800000", "name": "wr"},
                                        {
                                            "timeUnixNano": "1706678909209801000",
                                            "name": "exception",
                                            "attributes": [
                                                {"key": "exception.type", "value": {"stringValue": "E"}}
                                            ],
                                        },
                                    ],
                                    "status": {"code": "STATUS_CODE_ERROR", "message": "upstream reset"},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
        (span,) = traces_data_to_spans(traces_data)
        assert span == {
            "traceId": "83a9efd15c1c98a977e0711cc93ee28b",
            "id": "e127af99e3b3e074",
            "parentId": "909541b92cf05311",
            "kind": "CLIENT",
            "name": "ingress",
            "timestamp": 1706678909209712,  # ns // 1000, as Jaeger truncates
            "duration": 123,  # (end - start) // 1000
            "localEndpoint": {"serviceName": "istio-ingressgateway"},
            "annotations": [
                {"timestamp": 1706678909209800, "value": "wr"},
                {"timestamp": 1706678909209801, "value": '{"exception":{"exception.type":"E"}}'},
            ],
            "tags": {
                "s": "x",
                "i": "9223372036854775807",
                "b": "false",
                "d": "72.5",
                "by": "AAAwOQ==",
                "a": '["p",2]',
                "m": '{"k":true}',
                "empty": "",
                "otel.status_code": "ERROR",
                "error": "upstream reset",
                "otel.status_description": "upstream reset",
            },
        }

    @pytest.mark.parametrize(
        "kind, expected",
        [(0, None), (1, None), (2, "SERVER"), (3, "CLIENT"), (4, "PRODUCER"), (5, "CONSUMER")],
    )
    def test_kinds(self, kind: int, expected: str | None) -> None:
        data = {
            "resourceSpans": [
                {"scopeSpans": [{"spans": [{"traceId": "1" * 32, "spanId": "2" * 16, "kind": kind}]}]}
            ]
        }
        (span,) = traces_data_to_spans(data)
        assert span.get("kind") == expected  # INTERNAL/UNSPECIFIED: no kind, Zipkin's local span

    def test_status_ok_and_existing_error_tag(self) -> None:
        spans = [
            {"traceId": "1" * 32, "spanId": "2" * 16, "status": {"code": 1}},
            {
                "traceId": "1" * 32,
                "spanId": "3" * 16,
                "status": {"code": 2},
                "attributes": [{"key": "error", "value": {"stringValue": "timeout"}}],
            },
        ]
        ok, err = traces_data_to_spans({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
        assert ok["tags"] == {"otel.status_code": "OK"}
        assert err["tags"] == {"error": "timeout", "otel.status_code": "ERROR"}

    @pytest.mark.parametrize(
        "value, n_bytes, expected",
        [
            ("00000000000000000000000000000001", 16, "00000000000000000000000000000001"),
            ("83A9EFD15C1C98A977E0711CC93EE28B", 16, "83a9efd15c1c98a977e0711cc93ee28b"),
            ("g6nv0VwcmKl34HEcyT7iiw==", 16, "83a9efd15c1c98a977e0711cc93ee28b"),  # base64 bytes
            ("4SevmeOz4HQ=", 8, "e127af99e3b3e074"),
            ("978883983d506fa5", 16, "0000000000000000978883983d506fa5"),
            ("", 8, None),
            ("xyz", 8, None),
            (None, 8, None),
        ],
    )
    def test_ids(self, value: Any, n_bytes: int, expected: str | None) -> None:
        assert otlp_id(value, n_bytes) == expected

    @pytest.mark.parametrize(
        "value, expected",
        [
            ({"doubleValue": 5.0}, "5"),
            ({"intValue": 3}, "3"),
            ({"boolValue": True}, "true"),
            ({}, ""),
            (None, ""),
        ],
    )
    def test_any_value(self, value: Any, expected: str) -> None:
        assert any_value_str(value) == expected


class TestRfc3339:
    @pytest.mark.parametrize(
        "epoch_ns, text",
        [
            (0, "1970-01-01T00:00:00.000000000Z"),
            (1_570_523_661_059_232_000, "2019-10-08T08:34:21.059232000Z"),
            (1_570_523_661_059_232_001, "2019-10-08T08:34:21.059232001Z"),
            (1_700_000_000_999_999_999, "2023-11-14T22:13:20.999999999Z"),
        ],
    )
    def test_format(self, epoch_ns: int, text: str) -> None:
        assert rfc3339_nanos(epoch_ns) == text
        assert parse_rfc3339_nanos(text) == epoch_ns  # and the fake reads it back exactly


class TestJaegerV3Specific:
    def test_gettrace_example_served_verbatim(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.add_otlp(load(V3_GETTRACE_EXAMPLE)["result"])
        backend = make_backend(concurrency=1)
        out = backend.fetch_many(["3" * 32, "0000000000000001"])
        assert out["0000000000000001"] == Fetched(
            FetchStatus.FOUND,
            spans=(
                {
                    "traceId": "0000000000000001",
                    "id": "0000000000000002",
                    "kind": "SERVER",
                    "name": "foobar",
                    "tags": {"otel.status_code": "ERROR", "error": "true"},
                },
            ),
        )
        assert out["3" * 32] == Fetched(FetchStatus.MISSING)
        # Ids travel as 32 hex; Jaeger's own 404 body is the proof, no /services probe.
        assert [p for p, _, _ in fake.requests] == [
            "/traces/" + "3" * 32,
            "/traces/00000000000000000000000000000001",
        ]

    @pytest.mark.parametrize(
        "body, status",
        [
            ({"error": {"httpCode": 404, "message": "No traces found"}}, FetchStatus.MISSING),
            ({"error": {"httpCode": 404, "message": "trace not found"}}, FetchStatus.MISSING),
            ({"error": {"message": "No traces found"}}, FetchStatus.MISSING),
            ({"error": {"httpCode": 500, "message": "No traces found"}}, FetchStatus.ERROR),
            ({"error": {"httpCode": 404, "message": "tenant not found"}}, FetchStatus.ERROR),
            ({"error": "No traces found"}, FetchStatus.ERROR),
            ({"code": 5, "message": "not found"}, FetchStatus.ERROR),
        ],
    )
    def test_only_jaegers_own_404_body_is_missing(
        self, fake: FakeJaegerV3, make_backend: Any, body: dict[str, Any], status: FetchStatus
    ) -> None:
        fake.fetch_answer = (404, json.dumps(body) + "\n", "text/plain; charset=utf-8")
        out = make_backend().fetch_many(["1" * 16])
        assert out["1" * 16].status is status
        if status is FetchStatus.ERROR:
            assert out["1" * 16].error == (
                f'/api/v3/traces/{{id}}: 404 text/plain "{json.dumps(body)}" '
                'is not Jaeger\'s "No traces found" answer'
            )

    def test_wrong_base_path_is_error_without_probes(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.not_found_everywhere = True
        backend = make_backend()
        for _ in range(2):
            out = backend.fetch_many(["1" * 16, "2" * 16])
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert '404 text/plain "404 page not found"' in (out["1" * 16].error or "")
        assert fake.count("/services") == 0

    def test_camel_parameters(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.add_trace(multi_hop_trace(tid(1), ts_us=TS))
        backend = make_backend(param_style="camel")
        traces = backend.search(
            tags={"loadgen.run_id": "run-1"}, service="app", start_us=TS - 1, end_us=TS + 20, limit=7
        )
        assert [t[0]["traceId"] for t in traces] == [tid(1)]
        (query,) = search_params(fake)
        assert query == {
            "query.startTimeMin": ["2023-11-14T22:13:19.999999000Z"],
            "query.startTimeMax": ["2023-11-14T22:13:20.000021000Z"],  # exclusive: end + 1 µs
            "query.searchDepth": ["7"],
            "query.serviceName": ["app"],
            "query.attributes": ['{"loadgen.run_id":"run-1"}'],
        }

    def test_snake_parameters(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.generation = "2.18"
        fake.add_trace(multi_hop_trace(tid(1), ts_us=TS))
        backend = make_backend(param_style=ParamStyle.SNAKE)
        traces = backend.search(tags=None, service="app", start_us=TS, end_us=TS + 20, limit=3)
        assert [t[0]["traceId"] for t in traces] == [tid(1)]
        (query,) = search_params(fake)
        assert query == {
            "query.start_time_min": ["2023-11-14T22:13:20.000000000Z"],
            "query.start_time_max": ["2023-11-14T22:13:20.000021000Z"],
            "query.num_traces": ["3"],
            "query.service_name": ["app"],
        }
        snake_spec = V3_OPENAPI_SNAKE.read_text()
        assert all(name in snake_spec for name in query if name != "query.num_traces")

    def test_camel_names_are_in_the_spec(self) -> None:
        spec = yaml.safe_load(V3_OPENAPI.read_text())
        names = {p["name"] for p in spec["paths"]["/api/v3/traces"]["get"]["parameters"]}
        assert {"query.startTimeMin", "query.startTimeMax", "query.searchDepth", "query.serviceName"} <= names

    def test_auto_settles_on_snake_for_v2_18(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.generation = "2.18"
        fake.add_trace(multi_hop_trace(tid(1), ts_us=TS))
        fake.add_trace([zspan(tid(2), ts_us=TS, service="app", tags={"loadgen.run_id": "other"})])
        backend = make_backend()
        assert backend.param_style is ParamStyle.AUTO
        for _ in range(2):
            traces = backend.search(
                tags={"loadgen.run_id": "run-1"}, service="app", start_us=TS, end_us=TS + 100, limit=5
            )
            assert [t[0]["traceId"] for t in traces] == [tid(1)]  # filtered here, not by the server
        assert backend.param_style.value == "snake"
        styles = ["camel" if "query.startTimeMin" in q else "snake" for q in search_params(fake)]
        assert styles == ["camel", "snake", "snake"]  # one failed camel probe, then snake only

    def test_auto_settles_on_camel_for_v2_20(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        backend = make_backend()
        for _ in range(2):
            assert backend.search(tags={"k": "v"}, service="app", start_us=TS, end_us=TS, limit=5) == []
        assert backend.param_style is ParamStyle.CAMEL
        assert all("query.startTimeMin" in q and "query.attributes" in q for q in search_params(fake))

    def test_snake_filter_splits_full_pages(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        # 150 traces of one service in the window, only the earliest carries the tag: a 2.18
        # server returns 100 unfiltered traces, so the reader must split the window to find it.
        fake.generation = "2.18"
        for i in range(150):
            tags = {"loadgen.run_id": "run-1" if i == 0 else "other"}
            fake.add_trace([zspan(tid(i), ts_us=TS + i * 1000, service="app", tags=tags)])
        backend = make_backend(param_style="snake")
        traces = backend.search(
            tags={"loadgen.run_id": "run-1"}, service="app", start_us=TS, end_us=TS + 200_000, limit=10
        )
        assert [t[0]["traceId"] for t in traces] == [tid(0)]
        assert len(search_params(fake)) > 1
        assert all(q["query.num_traces"] == ["100"] for q in search_params(fake))

    def test_snake_filter_gives_up_on_a_crowded_millisecond(
        self, fake: FakeJaegerV3, make_backend: Any
    ) -> None:
        fake.generation = "2.18"
        for i in range(120):
            fake.add_trace([zspan(tid(i), ts_us=TS, service="app")])
        with pytest.raises(BackendError, match="cannot filter by tag on the server"):
            make_backend(param_style="snake").search(
                tags={"k": "v"}, service="app", start_us=TS, end_us=TS + 10_000, limit=5
            )

    def test_snake_filter_matches_resource_attributes(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.generation = "2.18"
        data = {"resourceSpans": zipkin_to_otlp([zspan(tid(1), ts_us=TS, service="app")])}
        data["resourceSpans"][0]["resource"]["attributes"].append(
            {"key": "k8s.namespace.name", "value": {"stringValue": "istio-system"}}
        )
        fake.add_otlp(data)
        traces = make_backend(param_style="snake").search(
            tags={"k8s.namespace.name": "istio-system"}, service="app", start_us=TS, end_us=TS, limit=5
        )
        assert len(traces) == 1

    def test_no_traces_found_404_is_empty(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        backend = make_backend()
        assert backend.search(tags=None, service="app", start_us=TS, end_us=TS + 1, limit=5) == []
        assert fake.requests[-1][0] == "/traces"
        fake.not_found_everywhere = True  # a 404 that is not Jaeger's must not read as "nothing"
        with pytest.raises(BackendError, match="answered|HTTP 404"):
            backend.search(tags=None, service="app", start_us=TS, end_us=TS + 1, limit=5)

    def test_search_returns_whole_converted_traces(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        trace = multi_hop_trace(tid(1), ts_us=TS)
        fake.add_trace(trace)
        fake.add_trace(multi_hop_trace(tid(2), ts_us=TS))
        traces = make_backend().search(tags=None, service="app", start_us=TS, end_us=TS + 100, limit=1)
        assert [[comparable(s) for s in t] for t in traces] == [[comparable(s) for s in trace]]

    def test_bad_param_style(self) -> None:
        with pytest.raises(ValueError, match="param_style"):
            JaegerV3Backend("http://127.0.0.1:1", param_style="kebab")

    def test_base_path_jaeger(self, make_backend: Any) -> None:
        server = FakeJaegerV3(prefix="/jaeger")
        server.add_trace([zspan(tid(1))])
        server.start()
        try:
            backend = make_backend(url=server.url)
            backend.check()
            assert backend.fetch_many([tid(1)])[tid(1)].status is FetchStatus.FOUND
            root = server.url[: -len("/jaeger")]
            with pytest.raises(BackendError, match=f"try {root}/jaeger"):
                make_backend(url=root).check()
            with pytest.raises(BackendError, match=f"try {root}/jaeger\\.$"):
                make_backend(url=root).check_trace_route()
            # A wrong path is replaced in the hint, not extended with /jaeger.
            with pytest.raises(BackendError) as info:
                make_backend(url=f"{root}/foo").check()
            assert f"try {root}/jaeger or {root}." in str(info.value)
            assert "/foo/jaeger" not in str(info.value)
        finally:
            server.stop()

    def test_check_hints(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.status_for["/services"] = 400
        with pytest.raises(BackendError, match="Zipkin receiver on 9411"):
            make_backend().check()
        fake.status_for["/services"] = 404
        with pytest.raises(BackendError, match="may still serve --backend jaeger:"):
            make_backend().check()

    def test_attributes_json_is_url_encoded(self, fake: FakeJaegerV3, make_backend: Any) -> None:
        fake.add_trace([zspan(tid(1), ts_us=TS, tags={"http.url": "http://h/p?a=1&b=2#f"})])
        tags = {"http.url": "http://h/p?a=1&b=2#f"}
        traces = make_backend().search(tags=tags, service=None, start_us=TS, end_us=TS, limit=5)
        assert len(traces) == 1
        assert json.loads(search_params(fake)[0]["query.attributes"][0]) == tags
