"""Collector probe logic: URL/candidate rules (pure) and the outcomes the real embedded collector
cannot produce (a 200, a trace that never shows up, a misparsed span), via httpx.MockTransport."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest

from loadgen.backends.base import Fetched, FetchStatus, TraceBackend
from loadgen.doctor import CheckStatus, check_collector
from loadgen.doctor.collector import (
    PROBE_SERVICE,
    SpanFormat,
    endpoint_candidates,
    fidelity_problems,
    probe_spans,
    split_collector_url,
)


class FakeBackend(TraceBackend):
    """Answers fetch_many from spans the mock collector stored (optionally transformed)."""

    name = "fake"
    url = "http://backend.test"

    def __init__(self, store: dict[str, list[dict[str, Any]]], visible: bool = True) -> None:
        self.store = store
        self.visible = visible
        self.fetches = 0

    def check(self) -> None:
        pass

    def fetch_many(self, trace_ids: Sequence[str], on_progress: Any = None) -> dict[str, Fetched]:
        self.fetches += 1
        out = {}
        for tid in trace_ids:
            spans = self.store.get(tid) if self.visible else None
            out[tid] = Fetched(FetchStatus.FOUND, tuple(spans)) if spans else Fetched(FetchStatus.MISSING)
        return out

    def search(self, **_: Any) -> list[list[dict[str, Any]]]:
        return []

    def close(self) -> None:
        pass


def _collector(
    answers: dict[str, int],
    store: dict[str, list[dict[str, Any]]],
    mangle: Callable[[Any], Any] = lambda s: s,
) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        status = answers.get(request.url.path, 404)
        if status in (200, 202):
            for span in mangle(json.loads(request.content)):
                store.setdefault(span["traceId"], []).append(span)
        return httpx.Response(status, text="" if status in (200, 202) else "Not Found")

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://zipkin:9411", ("http://zipkin:9411", "/api/v2/spans")),
        ("http://zipkin:9411/", ("http://zipkin:9411", "/api/v2/spans")),
        ("http://zipkin:9411/api/v2/spans", ("http://zipkin:9411", "/api/v2/spans")),
        ("http://h/zipkin/api/v1/spans", ("http://h", "/zipkin/api/v1/spans")),
        ("https://h/zipkin", ("https://h", "/zipkin/api/v2/spans")),
    ],
)
def test_split_collector_url(url: str, expected: tuple[str, str]) -> None:
    assert split_collector_url(url) == expected


def test_split_collector_url_rejects_non_http() -> None:
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        split_collector_url("zipkin:9411")


def test_endpoint_candidates_try_v2_before_v1_with_and_without_prefix() -> None:
    assert endpoint_candidates("/zipkin/api/v1/spans") == [
        ("/zipkin/api/v2/spans", SpanFormat.V2_JSON),
        ("/api/v2/spans", SpanFormat.V2_JSON),
        ("/zipkin/api/v1/spans", SpanFormat.V1_JSON),
        ("/api/v1/spans", SpanFormat.V1_JSON),
    ]
    assert endpoint_candidates("/api/v2/spans") == [("/api/v1/spans", SpanFormat.V1_JSON)]


def test_probe_spans_and_fidelity() -> None:
    tid = "0123456789abcdef0123456789abcdef"
    (v2,) = probe_spans(SpanFormat.V2_JSON, tid, 1_000)
    assert v2["localEndpoint"] == {"serviceName": PROBE_SERVICE} and v2["id"] == tid[16:]
    assert fidelity_problems([v2]) == []
    (v1,) = probe_spans(SpanFormat.V1_JSON, tid, 1_000)
    assert "localEndpoint" not in v1 and v1["binaryAnnotations"][0]["key"] == "loadgen.probe"
    stripped = {k: v for k, v in v1.items() if k != "binaryAnnotations"}
    assert fidelity_problems([stripped]) == [
        "service name 'loadgen-doctor' lost (got none)",
        "tag loadgen.probe=1 lost",
    ]
    assert fidelity_problems([]) == ["no span came back"]


def test_refused_path_names_the_working_one() -> None:
    store: dict[str, list[dict[str, Any]]] = {}
    client = _collector({"/api/v2/spans": 202}, store)
    endpoint, readback = check_collector(
        "http://c:9411/zipkin/api/v1/spans", FakeBackend(store), client=client, rng=random.Random(1)
    )
    assert endpoint.status is CheckStatus.FAIL
    assert endpoint.fix_hint.startswith(
        "use collectorEndpoint /api/v2/spans with collectorEndpointVersion HTTP_JSON"
    )
    assert "accepted and read back" in endpoint.fix_hint
    assert endpoint.data["working_endpoint"] == "/api/v2/spans"
    assert len(endpoint.details) == 3  # configured, /zipkin/api/v2/spans, /api/v2/spans; no v1 needed
    assert readback.status is CheckStatus.PASS


def test_only_v1_accepted_says_envoy_cannot_send_it() -> None:
    store: dict[str, list[dict[str, Any]]] = {}

    def v1_to_v2(spans: Any) -> Any:  # what Zipkin does with v1 input
        return [
            {**s, "localEndpoint": {"serviceName": PROBE_SERVICE}, "tags": {"loadgen.probe": "1"}}
            for s in spans
        ]

    client = _collector({"/api/v1/spans": 202}, store, v1_to_v2)
    endpoint, readback = check_collector("http://c:9411", FakeBackend(store), client=client)
    assert endpoint.status is CheckStatus.FAIL
    assert "Envoy cannot send v1" in endpoint.fix_hint
    assert readback.status is CheckStatus.SKIP


def test_nothing_accepted() -> None:
    endpoint, _ = check_collector("http://c:9411", None, client=_collector({}, {}))
    assert endpoint.status is CheckStatus.FAIL
    assert "no path accepted a span" in endpoint.fix_hint


def test_200_instead_of_202_warns() -> None:
    store: dict[str, list[dict[str, Any]]] = {}
    endpoint, readback = check_collector(
        "http://c:9411", FakeBackend(store), client=_collector({"/api/v2/spans": 200}, store)
    )
    assert endpoint.status is CheckStatus.WARN and "reports_dropped" in endpoint.summary
    assert readback.status is CheckStatus.PASS


def test_accepted_but_never_readable_fails_with_hint() -> None:
    store: dict[str, list[dict[str, Any]]] = {}
    backend = FakeBackend(store, visible=False)
    endpoint, readback = check_collector(
        "http://c:9411",
        backend,
        client=_collector({"/api/v2/spans": 202}, store),
        readback_timeout_s=0.3,
        poll_interval_s=0.1,
    )
    assert endpoint.status is CheckStatus.PASS
    assert readback.status is CheckStatus.FAIL
    assert "does not have it" in readback.summary
    assert "different storage" in readback.fix_hint and "samples or drops" in readback.fix_hint
    assert backend.fetches >= 2  # it polled


def test_accepted_but_misparsed_is_a_format_mismatch() -> None:
    store: dict[str, list[dict[str, Any]]] = {}

    def drop_endpoint(spans: Any) -> Any:  # a v1 parser reading a v2 body keeps ids, loses the rest
        return [{"traceId": s["traceId"], "id": s["id"], "name": s["name"]} for s in spans]

    endpoint, readback = check_collector(
        "http://c:9411/api/v1/spans",
        FakeBackend(store),
        client=_collector({"/api/v1/spans": 202}, store, drop_endpoint),
    )
    assert endpoint.status is CheckStatus.FAIL and "misread" in endpoint.summary
    assert endpoint.fix_hint == "use collectorEndpoint /api/v2/spans with collectorEndpointVersion HTTP_JSON"
    assert readback.status is CheckStatus.FAIL and "another format" in readback.summary


def test_no_backend_skips_readback_and_bad_url_fails() -> None:
    _, readback = check_collector("http://c:9411", None, client=_collector({"/api/v2/spans": 202}, {}))
    assert readback.status is CheckStatus.SKIP
    endpoint, _ = check_collector("c:9411", None)
    assert endpoint.status is CheckStatus.FAIL
