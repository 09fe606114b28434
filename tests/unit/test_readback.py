"""loadgen.readback: read-back memory is bounded per trace. Each trace becomes its small
TraceObservation as soon as its batch is decoded; raw spans are never kept for a whole poll.

Measured with bench/reconcile.py (100k traces, tracemalloc): the read-back peaked at ~11.9 KB of
Python allocations per trace when every decoded span of a poll was held until the poll ended,
~2.2 KB of which stayed (the observations). The bounds below sit far from both sides: a third
of the old peak for the peak, half the old figure for what stays.
"""

from __future__ import annotations

import json
import tracemalloc
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from loadgen.analysis.reconcile import TraceObservation
from loadgen.backends import ZipkinBackend
from loadgen.backends.base import REDUCED_CHUNK_IDS, Fetched, FetchStatus, TraceBackend
from loadgen.mesh.ids import normalize_trace_id
from loadgen.readback import read_back

RUN_TAG, RUN_ID = "loadgen.run_id", "run-1"
OLD_PEAK_PER_TRACE = 11_900  # bytes, bench/reconcile.py before read-back streamed observations
OLD_KEPT_PER_TRACE = 2_200


def trace_id(n: int) -> str:
    return f"{0x5EED0000 + n:016x}{n + 1:016x}"


def mesh_trace(tid: str, n: int) -> list[dict[str, Any]]:
    """Three Envoy-like spans (gateway SERVER + CLIENT, sidecar SERVER), tags as Envoy sends."""
    ts = 1_700_000_000_000_000 + n * 1000
    tags = {
        "component": "proxy", "http.protocol": "HTTP/1.1", "http.status_code": "200",
        "response_flags": "-", "http.method": "GET", "http.url": "http://httpbin.example/headers",
        "request_size": "0", "response_size": "493", "user_agent": "python-httpx/0.28.1",
        "guid:x-request-id": f"{n:08x}-7311-d8a3-c2ce-6f447ed4d57b", RUN_TAG: RUN_ID,
        "upstream_cluster": "outbound|8000||httpbin.example", "peer.address": "127.0.0.1",
    }  # fmt: skip
    root, client, server = tid[16:], f"{n + 7:016x}", f"{n + 9:016x}"

    def span(sid: str, parent: str | None, kind: str, service: str, start: int) -> dict[str, Any]:
        out = {
            "traceId": tid, "id": sid, "kind": kind, "name": "httpbin.example",
            "timestamp": ts + start, "duration": 1500 - start,
            "localEndpoint": {"serviceName": service, "ipv4": "192.0.2.2"},
            "annotations": [{"timestamp": ts + 1500, "value": "ss"}], "tags": dict(tags),
        }  # fmt: skip
        if parent:
            out["parentId"] = parent
        return out

    return [
        span(root, None, "SERVER", "istio-ingressgateway", 0),
        span(client, root, "CLIENT", "istio-ingressgateway", 10),
        span(server, client, "SERVER", "httpbin", 20),
    ]


def zipkin_over(traces: dict[str, list[dict[str, Any]]]) -> ZipkinBackend:
    """A real ZipkinBackend (batching, threads, JSON decoding) whose HTTP answers come from
    `traces`, in process. Small batches, so that the few batches in flight weigh little
    against 3000 traces, as they do against the 100k of the benchmark."""

    def handler(request: httpx.Request) -> httpx.Response:
        url = urlsplit(str(request.url))
        if url.path.endswith("/traceMany"):
            ids = parse_qs(url.query)["traceIds"][0].split(",")
            return httpx.Response(200, json=[traces[t] for t in ids if t in traces])
        tid = url.path.rsplit("/", 1)[1]
        if tid in traces:
            return httpx.Response(200, json=traces[tid])
        return httpx.Response(404, text=f"{tid} not found", headers={"content-type": "text/plain"})

    backend = ZipkinBackend("http://zipkin.invalid:9411", batch_size=20, concurrency=2)
    backend._http._client = httpx.Client(transport=httpx.MockTransport(handler))
    return backend


def test_read_back_peak_memory_per_trace_is_bounded() -> None:
    n = 3000
    ids = [trace_id(i) for i in range(n)]
    # Served pre-encoded: the fake's own JSON is not what is measured.
    traces = {t: mesh_trace(t, i) for i, t in enumerate(ids)}
    with zipkin_over(traces) as backend:
        read_back(backend, dict.fromkeys(ids[:10], 3), quiet_s=0, poll_interval_s=0)  # warm up
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            result = read_back(
                backend, dict.fromkeys(ids, 3), quiet_s=0, poll_interval_s=0,
                run_id_tag=RUN_TAG, run_id=RUN_ID,
            )  # fmt: skip
            kept, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.stable and len(result.complete_at) == n
    obs = result.observations[ids[0]]
    assert (obs.status, obs.span_count, obs.run_tagged) == (FetchStatus.FOUND, 3, 3)
    assert obs.services == ("httpbin", "istio-ingressgateway")
    assert (peak - base) / n < OLD_PEAK_PER_TRACE / 3
    assert (kept - base) / n < OLD_KEPT_PER_TRACE / 2


class _Span(dict[str, Any]):
    """A span dict that can be watched with a weak reference."""

    __slots__ = ("__weakref__",)


class _WatchingBackend(TraceBackend):
    """Answers every id with 3 watched spans (any reader that implements only fetch_many)."""

    name, url = "fake", "fake://"

    def __init__(self) -> None:
        self.alive = 0
        self.most_alive = 0
        self.refs: list[weakref.ref[_Span]] = []

    def _gone(self, _ref: object) -> None:
        self.alive -= 1

    def fetch_many(self, trace_ids: Sequence[str], on_progress: Any = None) -> dict[str, Fetched]:
        out = {}
        for raw in trace_ids:
            tid = normalize_trace_id(raw)
            spans = []
            for s in mesh_trace(tid, len(self.refs)):
                span = _Span(s)
                self.refs.append(weakref.ref(span, self._gone))
                spans.append(span)
            self.alive += len(spans)
            self.most_alive = max(self.most_alive, self.alive)
            out[tid] = Fetched(FetchStatus.FOUND, tuple(spans))
        if on_progress is not None:
            on_progress(len(out), len(out))
        return out

    def search(self, **_: Any) -> list[list[dict[str, Any]]]:
        return []

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_read_back_keeps_no_raw_span_and_few_at_once_from_any_reader() -> None:
    n = 3 * REDUCED_CHUNK_IDS
    ids = [trace_id(i) for i in range(n)]
    backend = _WatchingBackend()
    said: list[str] = []
    result = read_back(
        backend, dict.fromkeys(ids, 3), quiet_s=0, poll_interval_s=0, run_id_tag=RUN_TAG, run_id=RUN_ID,
        on_status=said.append,
    )  # fmt: skip
    assert len(result.complete_at) == n and len(backend.refs) == 3 * n
    assert all(ref() is None for ref in backend.refs)  # no raw span survives the read-back
    assert backend.most_alive <= 3 * REDUCED_CHUNK_IDS < 3 * n  # never every trace's spans at once
    assert f"querying backend: {n}/{n} trace ids" in said and "querying backend: 1000/3000 trace ids" in said
    assert all(isinstance(o, TraceObservation) and o.shape is not None for o in result.observations.values())


def test_observations_are_what_they_were_before_streaming() -> None:
    """The reduced answer is TraceObservation.from_fetched of the whole answer, as before."""
    ids = [trace_id(i) for i in range(250)]
    traces = {t: mesh_trace(t, i) for i, t in enumerate(ids)}
    with zipkin_over(traces) as backend:
        fetched = backend.fetch_many([*ids, "0123456789abcdef"])
        reduced = backend.fetch_reduced(
            [*ids, "0123456789abcdef"], lambda f: TraceObservation.from_fetched(f, RUN_TAG, RUN_ID)
        )
    assert reduced == {t: TraceObservation.from_fetched(f, RUN_TAG, RUN_ID) for t, f in fetched.items()}
    assert reduced["0123456789abcdef"].status is FetchStatus.MISSING
    assert json.dumps(reduced[ids[1]].to_dict()) == json.dumps(
        TraceObservation.from_fetched(
            Fetched(FetchStatus.FOUND, tuple(traces[ids[1]])), RUN_TAG, RUN_ID
        ).to_dict()
    )
