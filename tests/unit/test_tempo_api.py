"""The collector's Tempo-shaped query API (loadgen.stack.collector.tempo_api, tempo_server): the
shapes of shared/specs/tempo/ written out by hand, then the real collector serving them on its
own port (in this process), with Tempo's bodiless 404, its tenant rule and protobuf answers."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from loadgen.stack.collector.tempo_api import (
    SearchRequest,
    TempoQueryError,
    b64_id,
    parse_search,
    parse_trace_id,
    search_response,
    trace_by_id_v1,
    trace_by_id_v2,
    trimmed_hex,
)
from loadgen.stack.collector.tempo_server import TempoOptions
from tests.unit.backend_contract import SPECS, load
from tests.unit.tempo_fake import InProcessCollector

TRACE = "00000000000000ab1111111111111111"
SPANS: list[dict[str, Any]] = [
    {
        "traceId": TRACE,
        "id": "1111111111111111",
        "kind": "SERVER",
        "name": "get /headers",
        "timestamp": 1_700_000_000_000_000,
        "duration": 1000,
        "localEndpoint": {"serviceName": "gw"},
        "tags": {"loadgen.run_id": "R"},
    },
    {
        "traceId": TRACE,
        "id": "2222222222222222",
        "parentId": "1111111111111111",
        "kind": "CLIENT",
        "name": "out",
        "timestamp": 1_700_000_000_000_010,
        "duration": 900,
        "localEndpoint": {"serviceName": "gw"},
        "annotations": [{"timestamp": 1_700_000_000_000_011, "value": "wr"}],
    },
    {
        "traceId": TRACE,
        "id": "3333333333333333",
        "parentId": "2222222222222222",
        "kind": "SERVER",
        "timestamp": 1_700_000_000_000_020,
        "duration": 500,
        "localEndpoint": {"serviceName": "app"},
    },
]
# TRACE's 16 bytes (00 00 00 00 00 00 00 ab, then eight 11s) and the span ids in base64.
B64_TRACE = "AAAAAAAAAKsREREREREREQ=="
B64_1, B64_2, B64_3 = "ERERERERERE=", "IiIiIiIiIiI=", "MzMzMzMzMzM="
GW_SPANS = [
    {
        "traceId": B64_TRACE,
        "spanId": B64_1,
        "name": "get /headers",
        "kind": "SPAN_KIND_SERVER",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000001000000",
        "attributes": [{"key": "loadgen.run_id", "value": {"stringValue": "R"}}],
        "status": {},
    },
    {
        "traceId": B64_TRACE,
        "spanId": B64_2,
        "parentSpanId": B64_1,
        "name": "out",
        "kind": "SPAN_KIND_CLIENT",
        "startTimeUnixNano": "1700000000000010000",
        "endTimeUnixNano": "1700000000000910000",
        "events": [{"timeUnixNano": "1700000000000011000", "name": "wr"}],
        "status": {},
    },
]
APP_SPAN = {
    "traceId": B64_TRACE,
    "spanId": B64_3,
    "parentSpanId": B64_2,
    "kind": "SPAN_KIND_SERVER",
    "startTimeUnixNano": "1700000000000020000",
    "endTimeUnixNano": "1700000000000520000",
    "status": {},
}


def resource(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {}, "spans": spans}],
    }


BATCHES = [resource("gw", GW_SPANS), resource("app", [APP_SPAN])]


class TestShapes:
    def test_base64_ids_as_in_the_spec_example(self) -> None:
        example_span = load(SPECS / "tempo" / "trace-by-id-v1-example.json")["resourceSpans"][0][
            "scopeSpans"
        ][0]["spans"][0]
        assert (
            b64_id("3149195ffb0bec05347b48efe8ecc1b0", 16)
            == example_span["traceId"]
            == "MUkZX/sL7AU0e0jv6OzBsA=="
        )
        assert b64_id("4b23de25d1fb6641", 8) == example_span["spanId"] == "SyPeJdH7ZkE="
        assert base64.b64decode(B64_TRACE).hex() == TRACE  # the constants above are right

    def test_v1_batches(self) -> None:
        assert trace_by_id_v1(SPANS) == {"batches": BATCHES}

    def test_v2_complete_has_no_status(self) -> None:
        body = trace_by_id_v2(SPANS)
        assert body["trace"] == {"resourceSpans": BATCHES}
        assert "status" not in body and "message" not in body
        assert set(body) == {"trace", "metrics"}

    def test_v2_partial(self) -> None:
        body = trace_by_id_v2(SPANS, max_spans=2)
        assert body["status"] == "PARTIAL" and "2 spans" in body["message"]
        assert body["trace"] == {"resourceSpans": [resource("gw", GW_SPANS)]}

    def test_search_answer_trims_the_id(self) -> None:
        request = SearchRequest(tags={"loadgen.run_id": "R"}, limit=20, spss=3)
        body = search_response([SPANS], request, 1)
        span_set = {
            "spans": [
                {
                    "spanID": "1111111111111111",
                    "startTimeUnixNano": "1700000000000000000",
                    "durationNanos": "1000000",
                    "name": "get /headers",
                }
            ],
            "matched": 1,
        }
        assert body == {
            "traces": [
                {
                    "traceID": "ab1111111111111111",
                    "rootServiceName": "gw",
                    "rootTraceName": "get /headers",
                    "startTimeUnixNano": "1700000000000000000",
                    "durationMs": 1,
                    "spanSet": span_set,
                    "spanSets": [span_set],
                }
            ],
            "metrics": {"completedJobs": 1, "totalJobs": 1, "inspectedTraces": 1},
        }

    def test_trimmed_hex(self) -> None:
        assert trimmed_hex("0" * 16 + "00ab" + "0" * 12) == "ab" + "0" * 12
        assert trimmed_hex("0" * 32) == "0"

    def test_parse_search(self) -> None:
        got = parse_search(
            {
                "q": '{ span.loadgen.run_id = "R \\"1\\"" && resource.service.name = "gw" }',
                "start": "5",
                "end": "9",
            }
        )
        assert got == SearchRequest("gw", {"loadgen.run_id": 'R "1"'}, 5, 9, 20, 3)
        assert parse_search({"tags": 'loadgen.run_id="R 1" service.name=gw', "limit": "7"}) == SearchRequest(
            "gw", {"loadgen.run_id": "R 1"}, None, None, 7, 3
        )
        assert parse_search({"q": "{}"}) == SearchRequest()

    @pytest.mark.parametrize(
        "params",
        [
            {"q": "{ span.a > 3 }"},
            {"q": "span.a = 1"},
            {"q": '{ resource.cluster = "x" }'},
            {"start": "5"},
            {"start": "9", "end": "5"},
            {"limit": "-1"},
            {"tags": "novalue"},
            {"q": "{}", "tags": "a=b"},
        ],
    )
    def test_parse_search_rejects(self, params: dict[str, str]) -> None:
        with pytest.raises(TempoQueryError):
            parse_search(params)

    def test_parse_trace_id(self) -> None:
        assert parse_trace_id("AB1111111111111111") == TRACE
        assert parse_trace_id("1" * 16) == "1" * 16
        for bad in ("", "g" * 16, "1" * 33):
            with pytest.raises(TempoQueryError):
                parse_trace_id(bad)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[InProcessCollector]:
    server = InProcessCollector(tmp_path / "store", TempoOptions(tenant="team-a", max_trace_spans=2)).start()
    try:
        assert httpx.post(f"{server.zipkin_url}/api/v2/spans", json=SPANS).status_code == 202
        yield server
    finally:
        server.stop()


class TestServed:
    def test_tenant_and_bodiless_404(self, collector: InProcessCollector) -> None:
        url = collector.tempo_url
        team = {"X-Scope-OrgID": "team-a"}
        assert httpx.get(f"{url}/api/echo").text == "echo"  # no tenant needed
        assert httpx.get(f"{url}/api/status/buildinfo").json()["version"]
        missing = httpx.get(f"{url}/api/traces/{TRACE}")
        assert (missing.status_code, missing.text) == (401, "no org id")
        other = httpx.get(f"{url}/api/traces/{TRACE}", headers={"X-Scope-OrgID": "team-b"})
        assert (other.status_code, other.content) == (404, b"")  # another tenant sees nothing
        unknown = httpx.get(f"{url}/api/v2/traces/{'2' * 32}", headers=team)
        assert (unknown.status_code, unknown.content) == (404, b"")
        assert httpx.get(f"{url}/api/v2/traces/xyz", headers=team).status_code == 400
        assert httpx.get(f"{url}/api/traces/{TRACE}", headers=team).json() == {"batches": BATCHES}
        v2 = httpx.get(f"{url}/api/v2/traces/ab1111111111111111", headers=team).json()
        assert v2["status"] == "PARTIAL"  # cut at max_trace_spans=2
        search = httpx.get(f"{url}/api/search", params={"q": '{ span.loadgen.run_id = "R" }'}, headers=team)
        assert [t["traceID"] for t in search.json()["traces"]] == ["ab1111111111111111"]
        bad = httpx.get(f"{url}/api/search", params={"q": "{ span.x > 1 }"}, headers=team)
        assert bad.status_code == 400 and "parse error" in bad.text

    def test_protobuf(self, collector: InProcessCollector) -> None:
        headers = {"X-Scope-OrgID": "team-a", "Accept": "application/protobuf"}
        v1 = httpx.get(f"{collector.tempo_url}/api/traces/{TRACE}", headers=headers)
        assert v1.headers["content-type"].startswith("application/protobuf")
        decoded = TracesData.FromString(v1.content)
        spans = [s for rs in decoded.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert [s.span_id.hex() for s in spans] == ["1" * 16, "2" * 16, "3" * 16]
        assert spans[0].trace_id.hex() == TRACE and spans[1].kind == 3  # SPAN_KIND_CLIENT
        v2 = httpx.get(f"{collector.tempo_url}/api/v2/traces/{TRACE}", headers=headers).content
        # TraceByIDResponse: field 1 (trace, length-delimited) first, then status = 3 PARTIAL (1).
        assert v2[0] == 0x0A and b"\x18\x01" in v2
