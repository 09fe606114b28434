"""OTLP -> Zipkin v2 mapping of the collector's OTLP ingest (loadgen/stack/collector/otlp.py) and the
value rules it shares with the readers (loadgen/mesh/otlp_values.py).

Expected values are written out from the OpenTelemetry specification ("OpenTelemetry to Zipkin
Transformation", "AnyValue representation for non-OTLP protocols", "Transformation to non-OTLP
Formats") and the OTLP specification's JSON encoding, not computed with the code under test.
"""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import msgspec
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from loadgen.mesh.otlp_values import annotation_value, tag_string
from loadgen.stack.collector.decode import BadRequest
from loadgen.stack.collector.normalize import ZipkinSpan, validate_spans
from loadgen.stack.collector.otlp import (
    parse_json,
    parse_proto,
    request_to_spans,
    request_to_structs,
    status_body,
    success_body,
)

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")
START_NS = 1_544_712_660_000_000_000


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def s(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def request(
    *spans: Span, resource: list[KeyValue] | None = None, scope: InstrumentationScope | None = None
) -> Any:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=resource if resource is not None else [kv("service.name", s("Checkout"))]
                ),
                scope_spans=[ScopeSpans(scope=scope, spans=list(spans))],
            )
        ]
    )


def span(**fields: Any) -> Span:
    return Span(**{"trace_id": TRACE, "span_id": SPAN, "name": "GET /cart", **fields})


def one(req: Any) -> dict[str, Any]:
    (converted,) = request_to_spans(req)
    return converted


class TestSpanMapping:
    def test_every_field(self) -> None:
        req = request(
            span(
                parent_span_id=PARENT,
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=START_NS,
                end_time_unix_nano=START_NS + 1_234_567,
                attributes=[kv("http.method", s("GET")), kv("retries", AnyValue(int_value=3))],
                events=[
                    Span.Event(time_unix_nano=START_NS + 500_999, name="sent"),
                    Span.Event(
                        time_unix_nano=START_NS + 700_000,
                        name="exception",
                        attributes=[kv("exception.type", s("IOError"))],
                    ),
                ],
                dropped_attributes_count=2,
                dropped_events_count=1,
                dropped_links_count=4,
                status=Status(code=Status.STATUS_CODE_OK),
            ),
            resource=[
                kv("service.name", s("Checkout")),
                kv("service.namespace", s("shop")),
                kv("k8s.pod.name", s("checkout-1")),
            ],
            scope=InstrumentationScope(name="io.opentelemetry.http", version="1.2.0"),
        )
        assert one(req) == {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "id": "eee19b7ec3c1b174",
            "parentId": "eee19b7ec3c1b173",
            "kind": "SERVER",
            "name": "get /cart",  # normalized as Zipkin does: lowercase names
            "timestamp": 1_544_712_660_000_000,
            "duration": 1234,  # 1,234,567 ns: whole microseconds
            "localEndpoint": {"serviceName": "checkout"},
            "annotations": [
                {"timestamp": 1_544_712_660_000_500, "value": "sent"},
                {"timestamp": 1_544_712_660_000_700, "value": '{"exception":{"exception.type":"IOError"}}'},
            ],
            "tags": {
                "service.namespace": "shop",  # a tag, never the service name
                "k8s.pod.name": "checkout-1",
                "http.method": "GET",
                "retries": "3",
                "otel.dropped_attributes_count": "2",
                "otel.dropped_events_count": "1",
                "otel.dropped_links_count": "4",
                "otel.status_code": "OK",
                "otel.scope.name": "io.opentelemetry.http",
                "otel.scope.version": "1.2.0",
                "otel.library.name": "io.opentelemetry.http",
                "otel.library.version": "1.2.0",
            },
        }

    def test_minimal_span_omits_empty_fields(self) -> None:
        # No parent, INTERNAL kind, no times, no attributes: nothing but ids, name and service.
        assert one(request(span(kind=Span.SPAN_KIND_INTERNAL), resource=[])) == {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "id": "eee19b7ec3c1b174",
            "name": "get /cart",
            "localEndpoint": {"serviceName": "unknown_service"},  # the default resource's
        }

    @pytest.mark.parametrize(
        "kind, expected",
        [(0, None), (1, None), (2, "SERVER"), (3, "CLIENT"), (4, "PRODUCER"), (5, "CONSUMER"), (9, None)],
    )
    def test_kinds(self, kind: int, expected: str | None) -> None:
        assert one(request(span(kind=kind))).get("kind") == expected

    @pytest.mark.parametrize(
        "start, end, timestamp, duration",
        [
            (START_NS, START_NS + 1234, 1_544_712_660_000_000, 1),  # the spec's example: 1234 ns -> 1 µs
            (START_NS + 999, START_NS + 1998, 1_544_712_660_000_000, None),  # 999 ns: under a µs
            (START_NS, START_NS - 5, 1_544_712_660_000_000, None),  # ends before it starts
            (0, START_NS, None, None),
        ],
    )
    def test_unit_of_time(self, start: int, end: int, timestamp: int | None, duration: int | None) -> None:
        converted = one(request(span(start_time_unix_nano=start, end_time_unix_nano=end)))
        assert (converted.get("timestamp"), converted.get("duration")) == (timestamp, duration)

    def test_spans_in_request_order_across_resources(self) -> None:
        other = bytes.fromhex("0000000000000001")
        req = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(attributes=[kv("service.name", s("a"))]),
                    scope_spans=[ScopeSpans(spans=[span()]), ScopeSpans(spans=[span(span_id=other)])],
                ),
                ResourceSpans(scope_spans=[ScopeSpans(spans=[span()])]),
            ]
        )
        got = [(x["id"], x["localEndpoint"]["serviceName"]) for x in request_to_spans(req)]
        assert got == [
            ("eee19b7ec3c1b174", "a"),
            ("0000000000000001", "a"),
            ("eee19b7ec3c1b174", "unknown_service"),
        ]


class TestTyped:
    def test_typed_spans_are_already_what_validation_makes_of_them(self) -> None:
        """The ingest paths store request_to_structs' spans without validate_spans: they must
        already be normalized (lowercase names and services, no empty fields) and valid."""
        req = request(
            span(kind=Span.SPAN_KIND_CLIENT, attributes=[kv("peer.service", s("Cart-SVC")), kv("e", s(""))]),
            span(span_id=PARENT, name="", parent_span_id=bytes(8), start_time_unix_nano=999),
            resource=[kv("service.name", s("WEB")), kv("Region", s("EU"))],
        )
        typed = request_to_structs(req)
        assert all(type(x) is ZipkinSpan for x in typed)
        spans = msgspec.to_builtins(typed)
        assert validate_spans(spans) == spans == request_to_spans(req)
        assert [x.get("name") for x in spans] == ["get /cart", None]
        assert spans[0]["localEndpoint"] == {"serviceName": "web"}
        assert spans[0]["remoteEndpoint"] == {"serviceName": "cart-svc"}
        assert spans[1] == {
            "traceId": TRACE.hex(),
            "id": PARENT.hex(),
            "localEndpoint": {"serviceName": "web"},
            "tags": {"Region": "EU"},
        }


class TestStatus:
    def test_error_without_message_sets_empty_error(self) -> None:
        converted = one(request(span(status=Status(code=Status.STATUS_CODE_ERROR))))
        assert converted["tags"] == {"otel.status_code": "ERROR", "error": ""}

    def test_error_message_wins_over_an_error_attribute(self) -> None:
        converted = one(
            request(
                span(
                    attributes=[kv("error", s("something"))],
                    status=Status(code=Status.STATUS_CODE_ERROR, message="upstream reset"),
                )
            )
        )
        assert converted["tags"] == {"otel.status_code": "ERROR", "error": "upstream reset"}

    @pytest.mark.parametrize("value", [s("false"), AnyValue(bool_value=False)])
    def test_false_error_attribute_removed_unless_error(self, value: AnyValue) -> None:
        ok = one(request(span(attributes=[kv("error", value)], status=Status(code=Status.STATUS_CODE_OK))))
        unset = one(request(span(attributes=[kv("error", value), kv("x", s("y"))])))
        assert ok["tags"] == {"otel.status_code": "OK"}
        assert unset["tags"] == {"x": "y"}

    def test_unset_reports_nothing(self) -> None:
        assert "tags" not in one(request(span(status=Status(message="ignored"))))


class TestAttributes:
    @pytest.mark.parametrize(
        "value, expected",
        [
            (s("hello world"), "hello world"),
            (s(""), ""),
            (AnyValue(bool_value=True), "true"),
            (AnyValue(bool_value=False), "false"),
            (AnyValue(int_value=-123), "-123"),
            (AnyValue(int_value=9223372036854775807), "9223372036854775807"),
            (AnyValue(double_value=3.14159), "3.14159"),
            (AnyValue(double_value=5.0), "5"),
            (AnyValue(double_value=1.23e10), "12300000000"),
            (AnyValue(double_value=math.nan), "NaN"),
            (AnyValue(double_value=math.inf), "Infinity"),
            (AnyValue(double_value=-math.inf), "-Infinity"),
            (AnyValue(bytes_value=b"hello world"), "aGVsbG8gd29ybGQ="),
            (AnyValue(), ""),
            (AnyValue(array_value=ArrayValue()), "[]"),
            (
                AnyValue(
                    array_value=ArrayValue(
                        values=[
                            AnyValue(int_value=1),
                            AnyValue(double_value=-math.inf),
                            s("a"),
                            AnyValue(bool_value=True),
                            AnyValue(
                                kvlist_value=KeyValueList(
                                    values=[kv("nested", AnyValue(bytes_value=b"hello world"))]
                                )
                            ),
                        ]
                    )
                ),
                '[1,"-Infinity","a",true,{"nested":"aGVsbG8gd29ybGQ="}]',
            ),
            (
                AnyValue(
                    kvlist_value=KeyValueList(
                        values=[
                            kv("a", AnyValue(double_value=-math.inf)),
                            kv("b", AnyValue(int_value=2)),
                            kv(
                                "c",
                                AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=3), AnyValue()])),
                            ),
                        ]
                    )
                ),
                '{"a":"-Infinity","b":2,"c":[3,null]}',
            ),
        ],
    )
    def test_any_value_as_tag(self, value: AnyValue, expected: str) -> None:
        assert one(request(span(attributes=[kv("v", value)])))["tags"] == {"v": expected}

    def test_precedence_resource_scope_span(self) -> None:
        req = request(
            span(attributes=[kv("shared", s("span")), kv("otel.scope.name", s("spoofed"))]),
            resource=[kv("service.name", s("svc")), kv("shared", s("resource")), kv("res", s("r"))],
            scope=InstrumentationScope(name="lib", attributes=[kv("shared", s("scope")), kv("sc", s("s"))]),
        )
        assert one(req)["tags"] == {
            "shared": "span",
            "res": "r",
            "sc": "s",
            "otel.scope.name": "lib",
            "otel.library.name": "lib",
        }

    def test_event_attribute_values_are_tag_strings(self) -> None:
        event = Span.Event(
            time_unix_nano=START_NS,
            name="retry",
            attributes=[kv("n", AnyValue(int_value=2)), kv("ok", AnyValue(bool_value=False))],
        )
        untimed = Span.Event(name="no time")
        converted = one(request(span(events=[event, untimed])))
        assert converted["annotations"] == [
            {"timestamp": 1_544_712_660_000_000, "value": '{"retry":{"n":"2","ok":"false"}}'}
        ]


class TestRemoteEndpoint:
    @pytest.mark.parametrize(
        "attributes, expected",
        [
            (
                [kv("server.address", s("cart")), kv("peer.service", s("Cart-Svc"))],
                {"serviceName": "cart-svc"},
            ),
            (
                [
                    kv("network.peer.address", s("10.0.0.7")),
                    kv("network.peer.port", AnyValue(int_value=8080)),
                ],
                {"ipv4": "10.0.0.7", "port": 8080},
            ),
            (
                [kv("net.sock.peer.addr", s("::1")), kv("net.sock.peer.port", s("443"))],
                {"ipv6": "::1", "port": 443},
            ),
            ([kv("db.name", s("orders")), kv("peer.hostname", s("db-1"))], {"serviceName": "db-1"}),
            ([kv("http.method", s("GET"))], None),
        ],
    )
    def test_client_ranking(self, attributes: list[KeyValue], expected: dict[str, Any] | None) -> None:
        converted = one(request(span(kind=Span.SPAN_KIND_CLIENT, attributes=attributes)))
        assert converted.get("remoteEndpoint") == expected

    def test_server_spans_get_none(self) -> None:
        converted = one(request(span(kind=Span.SPAN_KIND_SERVER, attributes=[kv("peer.service", s("x"))])))
        assert "remoteEndpoint" not in converted


class TestIds:
    @pytest.mark.parametrize(
        "fields, message",
        [
            ({"trace_id": TRACE[:15]}, "traceId: expected 16 non-zero bytes (32 hex), got 15 bytes"),
            ({"trace_id": b""}, "traceId: expected 16 non-zero bytes (32 hex), got 0 bytes"),
            ({"trace_id": bytes(16)}, "traceId: expected 16 non-zero bytes (32 hex), got all zeros"),
            ({"span_id": SPAN + b"\x01"}, "spanId: expected 8 non-zero bytes (16 hex), got 9 bytes"),
            ({"parent_span_id": PARENT[:4]}, "parentSpanId: expected 8 non-zero bytes (16 hex), got 4 bytes"),
        ],
    )
    def test_malformed_ids_reject_the_request(self, fields: dict[str, Any], message: str) -> None:
        req = request(span(), span(**fields))
        with pytest.raises(BadRequest) as caught:
            request_to_spans(req)
        assert str(caught.value) == f"resourceSpans[0].scopeSpans[0].spans[1].{message}"

    def test_all_zero_parent_is_a_root(self) -> None:
        assert "parentId" not in one(request(span(parent_span_id=bytes(8))))


def json_request(span_fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
                "scopeSpans": [{"scope": {"name": "s"}, "spans": [span_fields]}],
            }
        ]
    }


JSON_SPAN = {
    "traceId": "5B8EFFF798038103D269B633813FC60C",  # hex, case-insensitive (OTLP/JSON)
    "spanId": "EEE19B7EC3C1B174",
    "parentSpanId": "",
    "name": "GET /cart",
    "kind": 3,
    "startTimeUnixNano": "1544712660000000000",  # 64-bit integers: strings ...
    "endTimeUnixNano": 1544712660001000000,  # ... or numbers
    "attributes": [{"key": "n", "value": {"intValue": "7"}}, {"key": "d", "value": {"doubleValue": 0.5}}],
    "status": {"code": 2, "message": "boom"},
    "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002"}],
    "someFutureField": {"ignored": True},  # unknown fields MUST be ignored
}


class TestJson:
    def test_otlp_json_span(self) -> None:
        assert request_to_spans(parse_json(json.dumps(json_request(JSON_SPAN)).encode())) == [
            {
                "traceId": "5b8efff798038103d269b633813fc60c",
                "id": "eee19b7ec3c1b174",
                "kind": "CLIENT",
                "name": "get /cart",
                "timestamp": 1_544_712_660_000_000,
                "duration": 1000,
                "localEndpoint": {"serviceName": "web"},
                "tags": {
                    "n": "7",
                    "d": "0.5",
                    "otel.status_code": "ERROR",
                    "error": "boom",
                    "otel.scope.name": "s",
                    "otel.library.name": "s",
                },
            }
        ]

    def test_empty_request_is_valid(self) -> None:
        assert request_to_spans(parse_json(b"{}")) == []

    @pytest.mark.parametrize(
        "change, fragment",
        [
            ({"name": 5}, "malformed OTLP/JSON"),
            ({"attributes": "x"}, "attributes: expected an object, got str"),
            ({"startTimeUnixNano": "soon"}, "malformed OTLP/JSON"),
            ({"kind": "sideways"}, "kind: expected an integer enum value"),
            ({"status": {"code": "BAD"}}, "status.code: expected an integer enum value"),
            ({"status": "ok"}, "spans\\[0\\].status: expected an object, got str"),
            ({"events": [{"timeUnixNano": [1]}]}, "malformed OTLP/JSON"),
            ({"events": ["e"]}, "events\\[0\\]: expected an object"),
            ({"links": [{"traceId": "zz"}]}, "links\\[0\\].traceId: expected hex"),
            ({"spanId": 12}, "malformed OTLP/JSON"),
            ({"spanId": "xyz0123456789abc"}, "spanId: expected hex"),
            ({"traceId": "5b8efff798038103d269b633813fc60"}, "traceId: expected hex"),  # odd length
            ({"traceId": "5b8efff798038103d269b633813fc6"}, "traceId: expected 16 non-zero bytes"),
        ],
    )
    def test_wrong_types_and_ids_are_bad_requests(self, change: dict[str, Any], fragment: str) -> None:
        body = json.dumps(json_request({**JSON_SPAN, **change})).encode()
        with pytest.raises(BadRequest, match=fragment):
            request_to_spans(parse_json(body))

    @pytest.mark.parametrize(
        "body", [b"[]", b'"x"', b"{not json", b'{"resourceSpans": {"a": 1}}', b'{"resourceSpans": [5]}']
    )
    def test_not_a_request(self, body: bytes) -> None:
        with pytest.raises(BadRequest):
            request_to_spans(parse_json(body))


class TestProto:
    def test_round_trip(self) -> None:
        body = request(span()).SerializeToString()
        assert one(parse_proto(body))["id"] == "eee19b7ec3c1b174"

    @pytest.mark.parametrize("cut", [1, 5, 20])
    def test_truncated_body(self, cut: int) -> None:
        body = request(span(attributes=[kv("k", s("v" * 50))])).SerializeToString()
        with pytest.raises(BadRequest, match="malformed ExportTraceServiceRequest"):
            parse_proto(body[:-cut])

    def test_gzip_is_not_protobuf(self) -> None:
        with pytest.raises(BadRequest):
            parse_proto(gzip.compress(b"\xff" * 64))


class TestAnswers:
    def test_success_bodies(self) -> None:
        assert success_body("application/json") == b"{}"
        assert ExportTraceServiceResponse.FromString(success_body("application/x-protobuf")) == (
            ExportTraceServiceResponse()
        )
        assert not ExportTraceServiceResponse.FromString(success_body("application/x-protobuf")).HasField(
            "partial_success"
        )

    def test_status_bodies(self) -> None:
        assert json.loads(status_body("application/json", "bad id")) == {"message": "bad id"}
        assert (
            status_pb2.Status.FromString(status_body("application/x-protobuf", "bad id")).message == "bad id"
        )


class TestSharedValues:
    def test_annotation_value(self) -> None:
        assert annotation_value("ev", {}) == "ev"
        assert annotation_value("ev", {"b": "2", "a": "1"}) == '{"ev":{"a":"1","b":"2"}}'

    def test_plain_values(self) -> None:
        assert tag_string(None) == ""
        assert tag_string(b"hi") == "aGk="
        assert tag_string({"x": [math.nan, None]}) == '{"x":["NaN",null]}'
