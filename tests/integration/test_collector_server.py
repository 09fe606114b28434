"""The collector as users run it: `python -m loadgen.stack.collector` in a subprocess, over HTTP."""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from loadgen.stack.collector.store import SpanStore

SPECS = Path(os.environ.get("LOADGEN_SHARED_SPECS", "/work/shared/specs"))
ENVOY_EXAMPLE = SPECS / "zipkin-envoy-spans-example.json"
READY_RE = re.compile(r'\{"ready": true, "url": "http://127\.0\.0\.1:(\d+)", "pid": (\d+)\}\n')
MAX_BODY = 64 * 1024
JSON_CT = {"content-type": "application/json"}
NOW_US = int(time.time() * 1_000_000)


@dataclass
class Collector:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    ready_line: str

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=15)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc


def _start(data_dir: Path, *args: str, timeout_s: float = 20.0) -> Collector:
    data_dir.mkdir(parents=True, exist_ok=True)
    stderr = (data_dir / "stderr.log").open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen.stack.collector", "--port", "0", "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stderr.close()
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if readable else ""
    if not READY_RE.fullmatch(line):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail(f"no ready line (got {line!r}); stderr: {(data_dir / 'stderr.log').read_text()}")
    return Collector(proc, json.loads(line)["url"], data_dir, line)


@pytest.fixture
def start_collector(tmp_path: Path) -> Iterator[Any]:
    started: list[Collector] = []

    def start(*args: str, data_dir: Path | None = None) -> Collector:
        collector = _start(data_dir or tmp_path / f"data{len(started)}", *args)
        started.append(collector)
        return collector

    yield start
    for collector in started:  # always reap, whatever the test did
        collector.stop()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    c = _start(tmp_path_factory.mktemp("collector"), "--max-body-bytes", str(MAX_BODY))
    yield c
    c.stop()


@pytest.fixture
def client(collector: Collector) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=collector.url, timeout=10) as c:
        yield c


def new_trace_id() -> str:
    return secrets.token_hex(16)


def make_span(trace_id: str, span_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "id": span_id or secrets.token_hex(8),
        "name": "get /headers",
        "kind": "SERVER",
        "timestamp": NOW_US,
        "duration": 1234,
        "localEndpoint": {"serviceName": "istio-ingressgateway", "ipv4": "127.0.0.1"},
        **fields,
    }


def post_json(client: httpx.Client, spans: object) -> httpx.Response:
    return client.post("/api/v2/spans", content=json.dumps(spans), headers=JSON_CT)


# --- process contract ----------------------------------------------------------------------------


def test_ready_line_health_and_tcp_nodelay(collector: Collector, client: httpx.Client) -> None:
    port, pid = READY_RE.fullmatch(collector.ready_line).groups()  # type: ignore[union-attr]
    assert int(port) > 0 and int(pid) == collector.proc.pid
    health = client.get("/health")
    assert (health.status_code, health.text) == (200, "ok")
    stats = client.get("/loadgen/stats").json()
    assert stats["tcp_nodelay"] is True
    assert stats["max_body_bytes"] == MAX_BODY


def test_sigterm_exits_zero_and_keeps_data(start_collector: Any, tmp_path: Path) -> None:
    c = start_collector(data_dir=tmp_path / "term")
    tid = new_trace_id()
    assert post_json(httpx.Client(base_url=c.url), [make_span(tid)]).status_code == 202
    assert c.stop(signal.SIGTERM) == 0
    with SpanStore(tmp_path / "term") as store:
        assert store.get_trace(tid) is not None


def test_sigint_exits_zero(start_collector: Any) -> None:
    assert start_collector().stop(signal.SIGINT) == 0


def test_refuses_non_loopback_host(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadgen.stack.collector", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "--allow-non-loopback" in result.stderr


# --- ingest --------------------------------------------------------------------------------------


def test_post_json_202_and_read_back(client: httpx.Client) -> None:
    tid = new_trace_id()
    spans = [
        make_span(tid, "0000000000000001"),
        make_span(tid, "0000000000000002", parentId="0000000000000001"),
    ]
    response = post_json(client, spans)
    assert (response.status_code, response.content) == (202, b"")
    got = client.get(f"/api/v2/trace/{tid}")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("application/json")
    assert got.json() == spans


def test_post_without_content_type_is_json(client: httpx.Client) -> None:
    tid = new_trace_id()
    response = client.post("/api/v2/spans", content=json.dumps([make_span(tid)]).encode())
    assert response.status_code == 202
    assert client.get(f"/api/v2/trace/{tid}").status_code == 200


def test_post_chunked_body(client: httpx.Client) -> None:
    tid = new_trace_id()
    body = json.dumps([make_span(tid), make_span(tid)]).encode()

    def chunks() -> Iterator[bytes]:  # a generator makes httpx send Transfer-Encoding: chunked
        for i in range(0, len(body), 7):  # splits mid-token on purpose
            yield body[i : i + 7]

    request = client.build_request("POST", "/api/v2/spans", content=chunks(), headers=JSON_CT)
    assert request.headers["transfer-encoding"] == "chunked" and "content-length" not in request.headers
    assert client.send(request).status_code == 202
    assert len(client.get(f"/api/v2/trace/{tid}").json()) == 2


def test_post_like_envoy_raw_chunked_http11(collector: Collector, client: httpx.Client) -> None:
    """Byte-for-byte the shape of Envoy's report: chunked, Host = cluster name, keep-alive."""
    tid = new_trace_id()
    body = json.dumps([make_span(tid)]).encode()
    half = len(body) // 2
    chunked = (
        b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:])) + b"0\r\n\r\n"
    )
    head = (
        b"POST /api/v2/spans HTTP/1.1\r\nhost: zipkin\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    split = urlsplit(collector.url)
    with socket.create_connection((split.hostname, split.port), timeout=10) as sock:
        sock.sendall(head + chunked)
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(4096)
            assert data, f"connection closed early: {reply!r}"
            reply += data
    assert reply.startswith(b"HTTP/1.1 202 ")
    assert client.get(f"/api/v2/trace/{tid}").status_code == 200


def test_post_gzip(client: httpx.Client) -> None:
    tid = new_trace_id()
    body = gzip.compress(json.dumps([make_span(tid)]).encode())
    response = client.post("/api/v2/spans", content=body, headers={**JSON_CT, "content-encoding": "gzip"})
    assert response.status_code == 202
    assert client.get(f"/api/v2/trace/{tid}").json()[0]["traceId"] == tid


def test_post_proto3(client: httpx.Client) -> None:
    from loadgen.stack.collector import zipkin_pb2

    tid = new_trace_id()
    message = zipkin_pb2.ListOfSpans(
        spans=[
            zipkin_pb2.Span(
                trace_id=bytes.fromhex(tid),
                id=bytes.fromhex("00000000000000b2"),
                parent_id=bytes.fromhex("00000000000000b1"),
                kind=zipkin_pb2.Span.CLIENT,
                name="Router Egress",
                timestamp=NOW_US,
                duration=42,
                local_endpoint=zipkin_pb2.Endpoint(service_name="gw", ipv4=bytes([10, 0, 0, 1]), port=8080),
                remote_endpoint=zipkin_pb2.Endpoint(ipv6=bytes(15) + b"\x01"),
                annotations=[zipkin_pb2.Annotation(timestamp=NOW_US + 1, value="cr")],
                tags={"http.status_code": "200"},
                shared=True,
            ),
            zipkin_pb2.Span(trace_id=bytes.fromhex(tid), id=bytes.fromhex("00000000000000b1")),
        ]
    )
    response = client.post(
        "/api/v2/spans",
        content=message.SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 202, response.text
    assert client.get(f"/api/v2/trace/{tid}").json() == [
        {
            "traceId": tid,
            "id": "00000000000000b2",
            "parentId": "00000000000000b1",
            "kind": "CLIENT",
            "name": "router egress",
            "timestamp": NOW_US,
            "duration": 42,
            "localEndpoint": {"serviceName": "gw", "ipv4": "10.0.0.1", "port": 8080},
            "remoteEndpoint": {"ipv6": "::1"},
            "annotations": [{"timestamp": NOW_US + 1, "value": "cr"}],
            "tags": {"http.status_code": "200"},
            "shared": True,
        },
        {"traceId": tid, "id": "00000000000000b1"},
    ]


def test_envoy_example_accepted_and_read_back(client: httpx.Client) -> None:
    example = json.loads(ENVOY_EXAMPLE.read_text())
    trace_id = example[0]["traceId"]
    before = client.get(f"/api/v2/trace/{trace_id}")
    already = before.json() if before.status_code == 200 else []
    assert post_json(client, example).status_code == 202
    # The example is already in normalized form, so it comes back unchanged.
    assert client.get(f"/api/v2/trace/{trace_id}").json() == already + example
    found = client.get("/api/v2/traces", params={"annotationQuery": "upstream_cluster=service_google and component",
                                                  "endTs": 1570523662000, "lookback": 60_000}).json()  # fmt: skip
    assert [t[0]["traceId"] for t in found] == [trace_id]


@pytest.mark.parametrize(
    ("content", "headers", "status", "fragment"),
    [
        (b"[{", JSON_CT, 400, "malformed JSON"),
        (b"", JSON_CT, 400, "malformed JSON"),
        (b"[" * 50_000, JSON_CT, 400, "malformed JSON"),  # deep nesting must not become a 500
        (b"\xff\xfe\x00", JSON_CT, 400, "malformed JSON"),
        (b'{"traceId": "1"}', JSON_CT, 400, "expected a JSON list"),
        (b'[{"traceId": "463ac35c9f6413ad", "id": "12"}]', JSON_CT, 400, "span[0].id"),
        (b"\x0a\x05\x0a\x03abc\xff", {"content-type": "application/x-protobuf"}, 400, "proto"),
        (b"not gzip at all", {**JSON_CT, "content-encoding": "gzip"}, 400, "cannot read body"),
        (b"[]", {"content-type": "text/plain"}, 415, "text/plain"),
        (b"[]", {**JSON_CT, "content-encoding": "compress"}, 415, "compress"),
    ],
)
def test_post_rejects_bad_input(
    client: httpx.Client, content: bytes, headers: dict[str, str], status: int, fragment: str
) -> None:
    response = client.post("/api/v2/spans", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert fragment in response.text


def test_proto3_with_bad_ids_is_400(client: httpx.Client) -> None:
    from loadgen.stack.collector import zipkin_pb2

    body = zipkin_pb2.ListOfSpans(
        spans=[zipkin_pb2.Span(trace_id=b"\x01" * 5, id=b"\x02" * 8)]
    ).SerializeToString()
    response = client.post("/api/v2/spans", content=body, headers={"content-type": "application/x-protobuf"})
    assert response.status_code == 400 and "span[0].traceId" in response.text


def test_oversized_bodies_are_413(client: httpx.Client) -> None:
    stats_before = client.get("/loadgen/stats").json()["ingest"]["too_large"]
    big = b"[" + b" " * MAX_BODY + b"]"
    assert client.post("/api/v2/spans", content=big, headers=JSON_CT).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b" " * (MAX_BODY // 2)

    assert client.post("/api/v2/spans", content=chunks(), headers=JSON_CT).status_code == 413
    bomb = gzip.compress(b" " * (MAX_BODY * 20))  # small on the wire, too large once inflated
    assert len(bomb) < MAX_BODY
    response = client.post("/api/v2/spans", content=bomb, headers={**JSON_CT, "content-encoding": "gzip"})
    assert response.status_code == 413
    assert client.get("/loadgen/stats").json()["ingest"]["too_large"] == stats_before + 3
    assert client.get("/health").status_code == 200  # still serving


# --- query API -----------------------------------------------------------------------------------


def test_get_trace_validation(client: httpx.Client) -> None:
    tid = new_trace_id()
    assert post_json(client, [make_span(tid)]).status_code == 202
    assert client.get(f"/api/v2/trace/{tid.upper()}").status_code == 200
    assert client.get("/api/v2/trace/xyz").status_code == 400
    assert client.get(f"/api/v2/trace/{'a' * 33}").status_code == 400
    missing = client.get(f"/api/v2/trace/{new_trace_id()}")
    assert missing.status_code == 404


def test_get_trace_zero_padded_and_short_forms_meet(client: httpx.Client) -> None:
    low = secrets.token_hex(8)
    assert post_json(client, [make_span("0" * 16 + low)]).status_code == 202
    assert client.get(f"/api/v2/trace/{low}").json()[0]["traceId"] == low
    assert client.get(f"/api/v2/trace/{'0' * 16 + low}").status_code == 200


def test_trace_many(client: httpx.Client) -> None:
    a, b, absent = new_trace_id(), new_trace_id(), new_trace_id()
    assert post_json(client, [make_span(a), make_span(b), make_span(b)]).status_code == 202
    found = client.get("/api/v2/traceMany", params={"traceIds": f"{a},{absent},{b}"})
    assert found.status_code == 200
    assert sorted((t[0]["traceId"], len(t)) for t in found.json()) == sorted([(a, 1), (b, 2)])
    none = client.get("/api/v2/traceMany", params={"traceIds": f"{absent},{new_trace_id()}"})
    assert (none.status_code, none.json()) == (200, [])
    for bad in (a, f"{a},{a}", f"{a},{a.upper()}", f"{a},xyz", f"{a},,{b}", ""):
        assert client.get("/api/v2/traceMany", params={"traceIds": bad}).status_code == 400, bad
    assert client.get("/api/v2/traceMany").status_code == 400


def test_services_and_span_names(client: httpx.Client) -> None:
    service = f"svc-{secrets.token_hex(4)}"
    tid = new_trace_id()
    spans = [make_span(tid, name="Op-A", localEndpoint={"serviceName": service.upper()},
                       remoteEndpoint={"serviceName": f"{service}-peer"}),
             make_span(tid, name="op-b", localEndpoint={"serviceName": service})]  # fmt: skip
    assert post_json(client, spans).status_code == 202
    services = client.get("/api/v2/services")
    assert services.headers["content-type"].startswith("application/json")
    assert {service, f"{service}-peer"} <= set(services.json())
    assert services.json() == sorted(services.json())
    assert client.get("/api/v2/spans", params={"serviceName": service}).json() == ["op-a", "op-b"]
    assert client.get("/api/v2/spans", params={"serviceName": "no-such"}).json() == []
    assert client.get("/api/v2/spans").status_code == 400


def test_search_traces(client: httpx.Client) -> None:
    service = f"svc-{secrets.token_hex(4)}"
    base_ms = 1_600_000_000_000
    ids = []
    for i in range(3):  # traces at base+1s, base+2s, base+3s
        tid = new_trace_id()
        ids.append(tid)
        span = make_span(tid, timestamp=(base_ms + (i + 1) * 1000) * 1000, duration=(i + 1) * 100,
                         localEndpoint={"serviceName": service}, tags={"run": "r1", "i": str(i)})  # fmt: skip
        assert post_json(client, [span]).status_code == 202

    def search(**params: Any) -> list[str]:
        response = client.get("/api/v2/traces", params={"serviceName": service, **params})
        assert response.status_code == 200, response.text
        return [t[0]["traceId"] for t in response.json()]

    assert search() == ids[::-1]
    assert search(endTs=base_ms + 2000, lookback=1000) == ids[1::-1]
    assert search(endTs=base_ms + 3000, limit=1) == [ids[2]]
    assert search(annotationQuery="run=r1 and i=1") == [ids[1]]
    assert search(annotationQuery="run and i=2") == [ids[2]]
    assert search(minDuration=150, maxDuration=250) == [ids[1]]
    assert search(spanName="GET /headers") == ids[::-1]
    assert search(spanName="other") == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "abc"},
        {"limit": "0"},
        {"endTs": "-5"},
        {"endTs": "1.5"},
        {"lookback": "0"},
        {"minDuration": "x"},
        {"maxDuration": "10"},
        {"minDuration": "20", "maxDuration": "10"},
        {"limit": "9" * 30},
    ],
)
def test_search_rejects_bad_parameters(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/api/v2/traces", params=params)
    assert response.status_code == 400, response.text


# --- durability and faults -----------------------------------------------------------------------


def test_sigkill_then_restart_keeps_accepted_traces(start_collector: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "durable"
    first = start_collector(data_dir=data_dir)
    ids = [new_trace_id() for _ in range(20)]
    with httpx.Client(base_url=first.url) as c:
        for tid in ids:
            assert post_json(c, [make_span(tid)]).status_code == 202
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # no chance to clean up

    second = start_collector(data_dir=data_dir)
    with httpx.Client(base_url=second.url) as c:
        found = c.get("/api/v2/traceMany", params={"traceIds": ",".join(ids)}).json()
        assert sorted(t[0]["traceId"] for t in found) == sorted(ids)
        assert c.get("/loadgen/stats").json()["spans_accepted"] == 20


def test_drop_probability_one_accepts_but_stores_nothing(start_collector: Any) -> None:
    c = start_collector("--drop-probability", "1.0", "--seed", "7")
    tid = new_trace_id()
    with httpx.Client(base_url=c.url) as http:
        assert post_json(http, [make_span(tid), make_span(tid), make_span(tid)]).status_code == 202
        assert http.get(f"/api/v2/trace/{tid}").status_code == 404
        stats = http.get("/loadgen/stats").json()
    assert (stats["spans_accepted"], stats["spans_dropped"], stats["traces"]) == (0, 3, 0)
    assert stats["ingest"]["spans_received"] == 3
    assert stats["faults"]["drop_probability"] == 1.0


def test_error_rate_one_answers_503_and_stores_nothing(start_collector: Any) -> None:
    c = start_collector("--error-rate", "1", "--added-latency-ms", "1")
    tid = new_trace_id()
    with httpx.Client(base_url=c.url) as http:
        assert post_json(http, [make_span(tid)]).status_code == 503
        assert http.get(f"/api/v2/trace/{tid}").status_code == 404
        ingest = http.get("/loadgen/stats").json()["ingest"]
    assert (ingest["fault_errors"], ingest["fault_error_spans"]) == (1, 1)


# --- a real tracer -------------------------------------------------------------------------------


def test_opentelemetry_zipkin_exporter_round_trip(client: httpx.Client, collector: Collector) -> None:
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "Loadgen-Emitter"}))
    provider.add_span_processor(SimpleSpanProcessor(ZipkinExporter(endpoint=collector.url + "/api/v2/spans")))
    tracer = provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("parent") as parent, tracer.start_as_current_span("child") as child:
            child.set_attribute("loadgen.case", "otel")
        trace_id = format(parent.get_span_context().trace_id, "032x")
        parent_id = format(parent.get_span_context().span_id, "016x")
    finally:
        provider.shutdown()

    response = client.get(f"/api/v2/trace/{trace_id}")
    assert response.status_code == 200
    by_name = {s["name"]: s for s in response.json()}
    assert set(by_name) == {"parent", "child"}
    assert by_name["child"]["parentId"] == parent_id
    assert by_name["child"]["tags"]["loadgen.case"] == "otel"
    assert by_name["parent"]["localEndpoint"]["serviceName"] == "loadgen-emitter"
    assert "kind" not in by_name["parent"]  # INTERNAL spans are sent with kind null
