"""The Zipkin reader against the real embedded collector (`python -m loadgen.stack.collector`, a
subprocess on 127.0.0.1:0): spans posted over HTTP, read back by id and by run tag."""

from __future__ import annotations

import json
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadgen.backends import BackendError, FetchStatus, ZipkinBackend, parse_backend_spec
from loadgen.mesh.ids import normalize_trace_id

pytestmark = pytest.mark.integration

NOW_US = int(time.time() * 1_000_000)
RUN_ID = "run-" + secrets.token_hex(4)


def span(trace_id: str, *, ts_us: int = NOW_US, run_id: str = RUN_ID, **fields: Any) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "id": secrets.token_hex(8),
        "name": "get /headers",
        "kind": "SERVER",
        "timestamp": ts_us,
        "duration": 1234,
        "localEndpoint": {"serviceName": "istio-ingressgateway"},
        "tags": {"loadgen.run_id": run_id, "http.status_code": "200"},
        **fields,
    }


@pytest.fixture(scope="module")
def collector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("collector")
    stderr = (data_dir / "stderr.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen.stack.collector", "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stderr.close()
    assert proc.stdout is not None
    try:
        readable, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if readable else ""
        ready = json.loads(line) if line.startswith("{") else {}
        if ready.get("ready") is not True:
            pytest.fail(f"no ready line (got {line!r}); stderr: {Path(data_dir / 'stderr.log').read_text()}")
        yield str(ready["url"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=15)
        proc.stdout.close()


@pytest.fixture(scope="module")
def posted(collector_url: str) -> dict[str, list[dict[str, Any]]]:
    """Traces in the collector: by name -> spans as posted."""
    traces = {
        "two_spans_128": [span(secrets.token_hex(16)), span("")],
        "one_span_64": [span(secrets.token_hex(8))],
        "other_run": [span(secrets.token_hex(16), run_id="run-other")],
        "an_hour_ago": [span(secrets.token_hex(16), ts_us=NOW_US - 3_600_000_000)],
    }
    first = traces["two_spans_128"][0]
    traces["two_spans_128"][1].update(traceId=first["traceId"], parentId=first["id"], kind="CLIENT")
    body = [s for spans in traces.values() for s in spans]
    resp = httpx.post(f"{collector_url}/api/v2/spans", json=body, timeout=10)
    assert resp.status_code == 202, resp.text
    return traces


def ids(spans: Any) -> set[str]:
    return {s["id"] for s in spans}


def test_check_and_auto_detection(collector_url: str) -> None:
    with ZipkinBackend(collector_url) as backend:
        backend.check()
    with parse_backend_spec(f"auto:{collector_url}") as backend:
        assert isinstance(backend, ZipkinBackend) and backend.url == collector_url


@pytest.mark.parametrize("batch_size", [100, 1])  # /traceMany, and /trace/{id} per id
def test_fetch_found_and_missing(
    collector_url: str, posted: dict[str, list[dict[str, Any]]], batch_size: int
) -> None:
    wanted = {name: normalize_trace_id(spans[0]["traceId"]) for name, spans in posted.items()}
    missing = [secrets.token_hex(16), secrets.token_hex(8)]
    with ZipkinBackend(collector_url, batch_size=batch_size, concurrency=2) as backend:
        out = backend.fetch_many([*wanted.values(), *missing, wanted["one_span_64"].upper()])
    assert set(out) == set(wanted.values()) | set(missing)
    for name, trace_id in wanted.items():
        assert out[trace_id].status is FetchStatus.FOUND, name
        assert ids(out[trace_id].spans) == ids(posted[name]), name
    for trace_id in missing:
        assert out[trace_id].status is FetchStatus.MISSING


@pytest.mark.parametrize(
    "requested, echoed",
    [
        ("abcdef0123456789", "abcdef0123456789"),
        ("0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
        ("0000000000000000fedcba9876543210", "fedcba9876543210"),  # zero high half dropped
        ("123456789abcdef0123", "0000000000000123456789abcdef0123"),  # 17..31: padded to 32
    ],
)
def test_unknown_trace_answers_exactly_like_zipkin(collector_url: str, requested: str, echoed: str) -> None:
    # openzipkin/zipkin ZipkinQueryApiV2.getTrace: 404, Armeria's ANY_TEXT_TYPE, and
    # Span.normalizeTraceId(id) + " not found" with no newline.
    resp = httpx.get(f"{collector_url}/api/v2/trace/{requested}", timeout=10)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "text/*"
    assert resp.content == f"{echoed} not found".encode()


def test_trace_route_check_passes(collector_url: str) -> None:
    with ZipkinBackend(collector_url, retries=0) as backend:
        backend.check_trace_route()
    with parse_backend_spec(f"auto:{collector_url}") as backend:
        assert backend.name == "zipkin"
        backend.check_trace_route()


def test_search_by_run_tag_in_a_window(collector_url: str, posted: dict[str, list[dict[str, Any]]]) -> None:
    with ZipkinBackend(collector_url) as backend:
        traces = backend.search(
            tags={"loadgen.run_id": RUN_ID},
            service="istio-ingressgateway",
            start_us=NOW_US - 60_000_000,
            end_us=NOW_US + 60_000_000,
            limit=100,
        )
        found = {normalize_trace_id(t[0]["traceId"]): ids(t) for t in traces}
        assert found == {
            normalize_trace_id(posted[name][0]["traceId"]): ids(posted[name])
            for name in ("two_spans_128", "one_span_64")  # not the other run, not an hour ago
        }
        # The hour-old span is found when the window covers it, and only then.
        older = backend.search(
            tags={"loadgen.run_id": RUN_ID},
            service=None,
            start_us=NOW_US - 3_700_000_000,
            end_us=NOW_US - 3_500_000_000,
            limit=100,
        )
        assert [ids(t) for t in older] == [ids(posted["an_hour_ago"])]


def test_stopped_collector_is_error_never_missing(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen.stack.collector", "--port", "0", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        readable, _, _ = select.select([proc.stdout], [], [], 20)
        url = json.loads(proc.stdout.readline())["url"] if readable else pytest.fail("collector not ready")
        with ZipkinBackend(url, retries=1, backoff_s=0.01) as backend:
            backend.check()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=15)
            out = backend.fetch_many([secrets.token_hex(16), secrets.token_hex(16)])
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            with pytest.raises(BackendError, match="cannot reach Zipkin"):
                backend.check()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=15)
        proc.stdout.close()
