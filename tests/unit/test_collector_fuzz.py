"""The embedded collector under fuzzing, as a real subprocess over loopback HTTP.

- schemathesis generates schema-valid and schema-violating requests for every operation of
  shared/specs/zipkin2-api.yaml (the collector's contract);
- hypothesis generates Zipkin v2 span batches, valid and hostile (any text in names, tags and
  annotations; 64- and 128-bit ids in any case; JSON and gzip), plus malformed and oversized bodies.

Properties: never a 5xx; the process never dies (it exits 0 on SIGTERM at the end); every span of
a batch answered 202 is readable afterwards by its trace id, with its text intact; a body over
the limit is 413, chunked or not, compressed or not. Bounded: fixed example counts, derandomized
(the same examples on every run, so CI cannot flake), no deadline (the machine is shared).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from loadgen.mesh.ids import normalize_trace_id

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024


def _spec_path() -> Path:
    candidates = [
        os.environ.get("LOADGEN_SHARED_SPECS", ""),
        str(Path(__file__).resolve().parents[3] / "shared" / "specs"),  # shared/ beside the clone
        "/work/shared/specs",
    ]
    for folder in candidates:
        if folder and (Path(folder) / "zipkin2-api.yaml").is_file():
            return Path(folder) / "zipkin2-api.yaml"
    pytest.skip("shared/specs/zipkin2-api.yaml not found (set LOADGEN_SHARED_SPECS)")


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@dataclass
class Collector:
    proc: subprocess.Popen[bytes]
    url: str

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, f"the collector died (exit {self.proc.returncode})"
        assert httpx.get(f"{self.url}/health", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    data = tmp_path_factory.mktemp("fuzz-collector")
    with open(data / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "loadgen.stack.collector", "--port", "0",
                "--data-dir", str(data), "--max-body-bytes", str(MAX_BODY),
            ],
            stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        yield Collector(proc, ready["url"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()
    # A crash shows as a non-zero exit; an error in our code as a traceback through loadgen/ or
    # aiohttp's "Unhandled exception". (aiohttp logs its own 400 for an invalid header byte with
    # a traceback of its parser: that is an answer, not an error.)
    log = (data / "stderr.log").read_text()
    assert code == 0, log
    assert "Unhandled exception" not in log and not re.search(r'File "[^"]*/loadgen/', log), log


@pytest.fixture
def client(collector: Collector) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=collector.url, timeout=10) as c:
        yield c


# --- schemathesis, from the contract ---------------------------------------------------------------


def _fuzz_operation(operation: Any, generation: Any, seen: set[int]) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    @fuzz_settings(25)
    @given(case=operation.as_strategy(generation_mode=generation))
    def check(case: Any) -> None:
        # Only what the contract promises: no 5xx, and 2xx bodies in the documented shape.
        # (Rejections are 4xx; the spec lists few of them, so status conformance is not asked.)
        response = case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
        seen.add(response.status_code)

    check()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_of_the_spec_never_answers_5xx(collector: Collector, mode: str) -> None:
    schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[dev]' (schemathesis)")
    schema = schemathesis.openapi.from_path(_spec_path())
    schema.config.update(base_url=f"{collector.url}/api/v2")
    generation = schemathesis.GenerationMode(mode)
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        statuses[name] = set()
        try:
            _fuzz_operation(operation, generation, statuses[name])
        except Unsatisfiable:
            # An operation without parameters (GET /services) has no schema-violating request.
            assert mode == "negative", name
            del statuses[name]
    collector.assert_alive()
    # Not vacuous: every operation was called, spans were accepted and queries answered.
    assert all(statuses.values()), statuses
    if mode == "positive":
        assert 202 in statuses["POST /spans"] and 200 in statuses["GET /traces"], statuses


# --- hypothesis span batches ------------------------------------------------------------------------

HEX = "0123456789abcdefABCDEF"
text = st.text(max_size=40)  # any Unicode, control characters and surrogate-free by construction
span_id = st.text(HEX, min_size=16, max_size=16).filter(lambda s: s.strip("0"))
trace_id = st.one_of(st.text(HEX, min_size=16, max_size=16), st.text(HEX, min_size=32, max_size=32)).filter(
    lambda s: s.strip("0")
)
endpoint = st.fixed_dictionaries(
    {},
    optional={
        "serviceName": text,
        "ipv4": st.ip_addresses(v=4).map(str),
        "ipv6": st.ip_addresses(v=6).map(str),
        "port": st.integers(0, 65535),
    },
)
span = st.fixed_dictionaries(
    {"traceId": trace_id, "id": span_id},
    optional={
        "parentId": span_id,
        "name": text,
        "kind": st.sampled_from(["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]),
        "timestamp": st.integers(0, 2**53),
        "duration": st.integers(0, 2**40),
        "debug": st.booleans(),
        "shared": st.booleans(),
        "localEndpoint": endpoint,
        "remoteEndpoint": endpoint,
        "annotations": st.lists(
            st.fixed_dictionaries({"timestamp": st.integers(0, 2**53), "value": text}), max_size=3
        ),
        "tags": st.dictionaries(text, text, max_size=4),
    },
)
batch = st.lists(span, min_size=1, max_size=8)


@fuzz_settings(120)
@given(spans=batch, gzipped=st.booleans())
def test_every_accepted_span_is_readable_with_its_text_intact(
    client: httpx.Client, spans: list[dict[str, Any]], gzipped: bool
) -> None:
    body = json.dumps(spans).encode()
    headers = {"content-type": "application/json"}
    if gzipped:
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    resp = client.post("/api/v2/spans", content=body, headers=headers)
    assert resp.status_code in (202, 400), resp.text  # 400: e.g. a parentId of all zeros is fine, too
    if resp.status_code != 202:
        assert resp.text.strip(), "a rejection says why"
        return
    for sent in spans:
        trace = client.get(f"/api/v2/trace/{sent['traceId']}")
        assert trace.status_code == 200, sent["traceId"]
        stored = [s for s in trace.json() if s["id"] == sent["id"].lower()]
        assert stored, (sent, trace.json())
        assert any(s["traceId"] == normalize_trace_id(sent["traceId"]) for s in stored)
        # Text comes back byte for byte (names are lowercased: Zipkin lookup labels).
        if sent.get("tags"):
            assert any(s.get("tags") == sent["tags"] for s in stored)
        if sent.get("name"):
            assert any(s.get("name") == sent["name"].lower() for s in stored)


# --- malformed and oversized bodies ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
malformed = st.one_of(
    st.binary(max_size=300),  # anything at all
    json_values.map(lambda v: json.dumps(v).encode()),  # JSON, mostly not a span list
    batch.map(lambda b: json.dumps(b).encode()[:-3]),  # truncated
    st.integers(10_000, 200_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.binary(min_size=1, max_size=64).map(lambda b: b"\x1f\x8b\x08\x00" + b),  # gzip magic, garbage
    batch.map(lambda b: json.dumps(b).encode("utf-16")),
)


@fuzz_settings(80)
@given(
    body=malformed,
    content_type=st.sampled_from(
        ["application/json", "application/x-protobuf", "text/plain", "", "a/b;x=\x7f"]
    ),
    encoding=st.sampled_from(["", "gzip", "deflate", "br", "identity, gzip"]),
)
def test_malformed_bodies_are_4xx_never_5xx(
    collector: Collector, client: httpx.Client, body: bytes, content_type: str, encoding: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    if encoding:
        headers["content-encoding"] = encoding
    try:
        resp = client.post("/api/v2/spans", content=body, headers=headers)
    except httpx.RemoteProtocolError:
        # aiohttp may refuse a header value outright and close the connection: still no crash.
        collector.assert_alive()
        return
    assert resp.status_code < 500, (resp.status_code, resp.text)
    assert resp.status_code in (202, 400, 413, 415), resp.status_code


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@fuzz_settings(12)
@given(
    excess=st.integers(1, 3 * MAX_BODY),
    how=st.sampled_from(["content-length", "chunked", "gzip", "deflate-chunked"]),
)
def test_oversized_bodies_are_413(client: httpx.Client, excess: int, how: str) -> None:
    """Over the limit by any amount, declared up front or discovered while streaming, and also
    when only the *inflated* body is too large (a compression bomb is cut off, not buffered)."""
    payload = b"[" + b" " * (MAX_BODY + excess) + b"]"  # valid JSON once read whole
    headers = {"content-type": "application/json"}
    if how == "content-length":
        content: Any = payload
    elif how == "chunked":
        content = _chunks(payload, 8192)
    elif how == "gzip":
        content, headers["content-encoding"] = gzip.compress(payload), "gzip"
        assert len(content) < MAX_BODY  # small on the wire: only the inflated size is over
    else:
        content, headers["content-encoding"] = _chunks(zlib.compress(payload), 1024), "deflate"
    resp = client.post("/api/v2/spans", content=content, headers=headers)
    assert resp.status_code == 413, (how, resp.status_code, resp.text)


def test_a_corrupt_compressed_body_is_answered_at_once_and_the_connection_stays_usable(
    client: httpx.Client,
) -> None:
    """Found by the fuzzer: a body labelled deflate that is no deflate stream used to leave the
    handler waiting for a body that never came (the client hung until its timeout), and a stream
    corrupt mid-way reset the keep-alive connection after the 400."""
    good = json.dumps([{"traceId": "1" * 32, "id": "2" * 16}]).encode()
    cases = [
        (b"[" * 10_000 + b"]" * 10_000, "deflate", "truncated deflate stream"),
        (b"garbage", "deflate", "corrupt deflate stream"),
        (gzip.compress(good)[:-8], "gzip", "truncated gzip stream"),
        (gzip.compress(good)[:10] + b"\xff" * 20, "gzip", "corrupt gzip stream"),
    ]
    for body, encoding, reason in cases:
        resp = client.post(
            "/api/v2/spans",
            content=body,
            headers={"content-type": "application/json", "content-encoding": encoding},
            timeout=2.0,
        )
        assert resp.status_code == 400 and reason in resp.text, (encoding, resp.text)
        # The same keep-alive connection serves the next request.
        assert (
            client.post(
                "/api/v2/spans", content=good, headers={"content-type": "application/json"}
            ).status_code
            == 202
        )
    # Several gzip members, and raw deflate, are accepted like zlib deflate.
    for body, encoding in (
        (gzip.compress(good[:10]) + gzip.compress(good[10:]), "gzip"),
        (zlib.compress(good)[2:-4], "deflate"),
    ):
        resp = client.post(
            "/api/v2/spans",
            content=body,
            headers={"content-type": "application/json", "content-encoding": encoding},
        )
        assert resp.status_code == 202, (encoding, resp.text)


def test_the_collector_is_still_healthy_after_all_of_it(collector: Collector) -> None:
    collector.assert_alive()
    stats = httpx.get(f"{collector.url}/loadgen/stats", timeout=5).json()
    assert stats["spans_accepted"] > 0 and stats["ingest"]["bad_requests"] > 0
    assert stats["ingest"]["too_large"] > 0
