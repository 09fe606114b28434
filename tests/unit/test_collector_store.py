"""SpanStore and validate_spans: validation, normalization, search semantics, durability."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tracemalloc
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from loadgen.stack.collector.store import (
    LEGACY_SPANS_FILE_NAME,
    SPANS_DB_NAME,
    SpanStore,
    SpanValidationError,
    StoreError,
    parse_annotation_query,
    validate_spans,
)

T1 = "463ac35c9f6413ad48485a3953bb6124"
T2 = "0000000000000000a3ce929d0e0e4736"  # 128-bit with zero high half: collapses to 64 bits
T3 = "d2f9288a2904503d"
BASE_US = 1_700_000_000_000_000  # epoch µs
BASE_MS = BASE_US // 1000


def span(trace_id: str = T1, span_id: str = "0000000000000001", **fields: Any) -> dict[str, Any]:
    return {"traceId": trace_id, "id": span_id, **fields}


# --- validation ----------------------------------------------------------------------------------


def test_validate_accepts_and_normalizes_full_span() -> None:
    raw = span(
        trace_id=T1.upper(),
        span_id="ABCDEF0123456789",
        parentId="00000000000000AA",
        kind="SERVER",
        name="GET /Headers",
        timestamp=BASE_US,
        duration=1500,
        localEndpoint={"serviceName": "Istio-IngressGateway", "ipv4": "10.0.0.1", "port": 8080},
        remoteEndpoint={"serviceName": "", "ipv6": "::1", "port": 0},
        annotations=[{"timestamp": BASE_US, "value": "ss"}],
        tags={"http.method": "GET"},
        debug=False,
        shared=True,
        unknownField="dropped",
    )
    [out] = validate_spans([raw])
    assert out == {
        "traceId": T1,
        "id": "abcdef0123456789",
        "parentId": "00000000000000aa",
        "kind": "SERVER",
        "name": "get /headers",
        "timestamp": BASE_US,
        "duration": 1500,
        "localEndpoint": {"serviceName": "istio-ingressgateway", "ipv4": "10.0.0.1", "port": 8080},
        "remoteEndpoint": {"ipv6": "::1"},
        "annotations": [{"timestamp": BASE_US, "value": "ss"}],
        "tags": {"http.method": "GET"},
        "shared": True,
    }
    assert validate_spans([out]) == [out]  # idempotent


def test_validate_normalizes_ids_zero_fields_and_nulls() -> None:
    [out] = validate_spans(
        [span(trace_id=T2, parentId="0000000000000000", kind=None, timestamp=0, duration=None, tags={})]
    )
    assert out == {"traceId": "a3ce929d0e0e4736", "id": "0000000000000001"}


def test_validate_left_pads_17_to_31_hex_trace_ids_like_zipkin() -> None:
    out = validate_spans([span(trace_id="a" * 20)])
    assert out[0]["traceId"] == "0" * 12 + "a" * 20


def test_validate_accepts_empty_list() -> None:
    assert validate_spans([]) == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"traceId": T1}, "body: expected a JSON list"),
        ([1], "span[0]: expected an object"),
        ([span(trace_id="xyz")], "span[0].traceId"),
        ([span(trace_id="a" * 33)], "span[0].traceId"),
        ([span(trace_id="a" * 15)], "span[0].traceId"),
        ([{"traceId": None, "id": "0000000000000001"}], "span[0].traceId"),
        ([{"id": "0000000000000001"}], "span[0].traceId"),
        ([span(), span(span_id="123")], "span[1].id"),
        ([span(span_id="g" * 16)], "span[0].id"),
        ([span(parentId="1")], "span[0].parentId"),
        ([span(kind="INTERNAL")], "span[0].kind"),
        ([span(kind="server")], "span[0].kind"),
        ([span(timestamp=-1)], "span[0].timestamp"),
        ([span(timestamp=1.5)], "span[0].timestamp"),
        ([span(duration=True)], "span[0].duration"),
        ([span(timestamp=2**63)], "span[0].timestamp"),  # int64 in Zipkin and in SQLite
        ([span(annotations=[{"timestamp": 2**64, "value": "x"}])], "span[0].annotations[0].timestamp"),
        ([span(duration="10")], "span[0].duration"),
        ([span(tags=["a"])], "span[0].tags"),
        ([span(tags={"a": 1})], "span[0].tags['a']"),
        ([span(annotations={"value": "x"})], "span[0].annotations"),
        ([span(annotations=[{"value": "x"}])], "span[0].annotations[0].timestamp"),
        ([span(annotations=[{"timestamp": 1, "value": 2}])], "span[0].annotations[0].value"),
        ([span(localEndpoint="svc")], "span[0].localEndpoint"),
        ([span(remoteEndpoint={"serviceName": 3})], "span[0].remoteEndpoint.serviceName"),
        ([span(localEndpoint={"port": 70000})], "span[0].localEndpoint.port"),
        ([span(name=5)], "span[0].name"),
        ([span(shared="true")], "span[0].shared"),
    ],
)
def test_validate_rejects(body: object, fragment: str) -> None:
    with pytest.raises(SpanValidationError) as info:
        validate_spans(body)
    assert fragment in str(info.value)


def test_add_rejects_whole_batch_and_stores_nothing() -> None:
    store = SpanStore(None)
    with pytest.raises(SpanValidationError):
        store.add([span(), span(span_id="bad")])
    assert store.stats() == {"spans_accepted": 0, "batches": 0, "spans_dropped": 0, "traces": 0, "commits": 0}


# --- basic queries -------------------------------------------------------------------------------


def test_add_get_trace_normalized_lookup_and_duplicates_kept() -> None:
    store = SpanStore(None)
    assert store.add([span(trace_id=T2), span(trace_id=T2, span_id="0000000000000002")]) == 2
    assert store.add([span(trace_id=T2)]) == 1  # the same span again: a raw store keeps both
    for key in (T2, T2.upper(), "a3ce929d0e0e4736"):
        trace = store.get_trace(key)
        assert trace is not None
        assert [s["id"] for s in trace] == ["0000000000000001", "0000000000000002", "0000000000000001"]
    assert store.get_trace(T1) is None
    assert store.stats() == {"spans_accepted": 3, "batches": 2, "spans_dropped": 0, "traces": 1, "commits": 2}
    assert store.add([]) == 0
    assert store.stats()["batches"] == 2


def test_get_many_returns_found_traces_in_request_order() -> None:
    store = SpanStore(None)
    store.add([span(trace_id=T1), span(trace_id=T3)])
    found = store.get_many([T3, "ffffffffffffffff", T1, T3.upper()])
    assert [t[0]["traceId"] for t in found] == [T3, T1]
    assert store.get_many(["ffffffffffffffff", "eeeeeeeeeeeeeeee"]) == []


def test_services_and_span_names() -> None:
    store = SpanStore(None)
    store.add(
        [
            span(
                name="Ingress",
                localEndpoint={"serviceName": "Gateway"},
                remoteEndpoint={"serviceName": "Web"},
            ),
            span(span_id="0000000000000002", name="egress", localEndpoint={"serviceName": "gateway"}),
            span(span_id="0000000000000003", name="backend", localEndpoint={"serviceName": "app"}),
            span(span_id="0000000000000004", localEndpoint={"ipv4": "1.2.3.4"}),
        ]
    )
    assert store.services() == ["app", "gateway", "web"]
    assert store.span_names("GATEWAY") == ["egress", "ingress"]
    assert store.span_names("web") == []  # remote-only: no spans recorded *by* it
    assert store.span_names("nope") == []


def test_count_dropped_shows_in_stats() -> None:
    store = SpanStore(None)
    store.count_dropped(3)
    assert store.stats()["spans_dropped"] == 3


# --- search --------------------------------------------------------------------------------------


def _trace(trace_id: str, ts_us: int, service: str = "gw", **root: Any) -> list[dict[str, Any]]:
    return [
        span(trace_id, "00000000000000a1", timestamp=ts_us, localEndpoint={"serviceName": service}, **root),
        span(trace_id, "00000000000000a2", parentId="00000000000000a1", timestamp=ts_us + 10, duration=5,
             name="child", localEndpoint={"serviceName": "backend"}),
    ]  # fmt: skip


def _ids(traces: list[list[dict[str, Any]]]) -> list[str]:
    return [t[0]["traceId"] for t in traces]


@pytest.fixture
def timed_store() -> SpanStore:
    store = SpanStore(None)
    # Traces 1..5 start 1, 2, ... 5 seconds after BASE.
    for i in range(1, 6):
        store.add(_trace(f"{i:016x}", BASE_US + i * 1_000_000, name=f"op{i % 2}", duration=i * 1000))
    return store


def test_search_time_window_is_milliseconds_against_microsecond_spans(timed_store: SpanStore) -> None:
    # [BASE+2s, BASE+4s] inclusive, expressed in ms.
    found = timed_store.search(end_ts_ms=BASE_MS + 4000, lookback_ms=2000)
    assert _ids(found) == [f"{i:016x}" for i in (4, 3, 2)]
    # The same numbers read as µs would select nothing near BASE.
    assert timed_store.search(end_ts_ms=BASE_MS + 4, lookback_ms=2) == []


def test_search_window_beyond_int64_is_clamped(timed_store: SpanStore) -> None:
    assert len(timed_store.search(end_ts_ms=2**63, lookback_ms=10**19, limit=100)) == 5


def test_search_defaults_cover_all_history_nearest_first(timed_store: SpanStore) -> None:
    assert _ids(timed_store.search()) == [f"{i:016x}" for i in (5, 4, 3, 2, 1)]


def test_search_limit_keeps_the_traces_nearest_end_ts(timed_store: SpanStore) -> None:
    found = timed_store.search(end_ts_ms=BASE_MS + 4000, limit=2)
    assert _ids(found) == [f"{4:016x}", f"{3:016x}"]
    with pytest.raises(ValueError):
        timed_store.search(limit=0)


def test_search_trace_time_is_root_timestamp() -> None:
    store = SpanStore(None)
    # Child reported with an earlier clock than its root: the root's timestamp decides.
    store.add(
        [
            span(T1, "00000000000000a1", timestamp=BASE_US + 5_000_000),
            span(T1, "00000000000000a2", parentId="00000000000000a1", timestamp=BASE_US),
        ]
    )
    # No root at all: the earliest timestamp decides.
    store.add([span(T3, "00000000000000b2", parentId="00000000000000b1", timestamp=BASE_US + 3_000_000)])
    assert _ids(store.search(end_ts_ms=BASE_MS + 1000, lookback_ms=1000)) == []
    assert _ids(store.search(end_ts_ms=BASE_MS + 5000, lookback_ms=2000)) == [T1, T3]


def test_search_service_and_span_name(timed_store: SpanStore) -> None:
    assert _ids(timed_store.search(service_name="GW", span_name="OP1")) == [f"{i:016x}" for i in (5, 3, 1)]
    # spanName is matched within the named service only.
    assert timed_store.search(service_name="gw", span_name="child") == []
    assert len(timed_store.search(service_name="backend", span_name="child")) == 5
    assert timed_store.search(service_name="nobody") == []


def test_search_duration_range(timed_store: SpanStore) -> None:
    found = timed_store.search(service_name="gw", min_duration=2000, max_duration=3000)
    assert _ids(found) == [f"{3:016x}", f"{2:016x}"]
    assert len(timed_store.search(service_name="gw", min_duration=4000)) == 2
    with pytest.raises(ValueError):
        timed_store.search(max_duration=10)


def test_parse_annotation_query() -> None:
    assert parse_annotation_query("http.uri=/foo and retried") == [("http.uri", "/foo"), ("retried", None)]
    assert parse_annotation_query("k=a=b and  and x") == [("k", "a=b"), ("x", None)]
    assert parse_annotation_query("empty=") == [("empty", "")]


@pytest.fixture
def annotated_store() -> SpanStore:
    store = SpanStore(None)
    ts = BASE_US
    store.add(
        [
            # trace A: one span has both the tag and the annotation
            span("000000000000000a", "0000000000000001", timestamp=ts, localEndpoint={"serviceName": "gw"},
                 tags={"http.uri": "/foo", "error": "true"}, annotations=[{"timestamp": ts, "value": "retried"}]),
            # trace B: tag on one span, annotation on another
            span("000000000000000b", "0000000000000001", timestamp=ts, localEndpoint={"serviceName": "gw"},
                 tags={"http.uri": "/foo"}),
            span("000000000000000b", "0000000000000002", parentId="0000000000000001", timestamp=ts,
                 localEndpoint={"serviceName": "gw"}, annotations=[{"timestamp": ts, "value": "retried"}]),
            # trace C: other tag value
            span("000000000000000c", "0000000000000001", timestamp=ts, localEndpoint={"serviceName": "gw"},
                 tags={"http.uri": "/bar", "retried": "1"}),
        ]
    )  # fmt: skip
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("http.uri=/foo", ["000000000000000a", "000000000000000b"]),
        ("http.uri=/foo and retried", ["000000000000000a"]),  # one span must match every term
        ("retried", ["000000000000000a", "000000000000000b", "000000000000000c"]),  # annotation or tag key
        ("error", ["000000000000000a"]),  # bare word matches a tag key
        ("error=false", []),
        ("http.uri=/bar and retried", ["000000000000000c"]),
        ("/foo", []),  # a bare word never matches a tag value
    ],
)
def test_search_annotation_query(annotated_store: SpanStore, query: str, expected: list[str]) -> None:
    assert sorted(_ids(annotated_store.search(annotation_query=query))) == expected


# --- durability ----------------------------------------------------------------------------------


def test_reload_after_restart(tmp_path: Path) -> None:
    with SpanStore(tmp_path) as store:
        store.add(_trace(T1, BASE_US, name="root"))
        store.add([span(T2, localEndpoint={"serviceName": "late"})])
    assert (tmp_path / SPANS_DB_NAME).is_file()

    with SpanStore(tmp_path) as again:
        assert again.stats() == {
            "spans_accepted": 3,
            "batches": 2,
            "spans_dropped": 0,
            "traces": 2,
            "commits": 0,
        }
        assert again.get_trace(T2) is not None
        assert again.services() == ["backend", "gw", "late"]
        assert again.span_names("gw") == ["root"]
        assert _ids(again.search(service_name="gw", span_name="root")) == [T1]
        again.add([span(T3)])  # batch numbers go on after a restart
        assert again.stats()["batches"] == 3


def test_commit_is_readable_by_another_connection_when_add_returns(tmp_path: Path) -> None:
    store = SpanStore(tmp_path, fsync=True)
    try:
        store.add([span(T1)])
        # A second connection sees only committed data: add() returned after COMMIT.
        other = sqlite3.connect(tmp_path / SPANS_DB_NAME)
        try:
            rows = other.execute("SELECT json FROM spans").fetchall()
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            other.close()
        assert [json.loads(f"[{text}]") for (text,) in rows] == [[{"traceId": T1, "id": "0000000000000001"}]]
    finally:
        store.close()


def _fill_up(store: SpanStore) -> None:
    """Cap the database at its current size plus a few pages: SQLite answers SQLITE_FULL, exactly
    as on a full disk (the subprocess test in test_collector_server.py uses a real file-size
    limit)."""
    assert store._db is not None
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count={pages + 8}")


def test_full_database_refuses_the_batch_whole_and_keeps_working(tmp_path: Path) -> None:
    big = [span(T3, f"{i:016x}", tags={"blob": "x" * 2000}) for i in range(1, 60)]  # ~120 KB
    with SpanStore(tmp_path) as store:
        store.add([span(T1)])
        _fill_up(store)
        with pytest.raises(StoreError, match="full"):
            store.add(big)
        # Nothing of the refused batch is visible, and the counters did not move.
        assert store.get_trace(T3) is None
        assert store.stats() == {
            "spans_accepted": 1,
            "batches": 1,
            "spans_dropped": 0,
            "traces": 1,
            "commits": 1,
        }
        store.add([span(T2)])  # small enough: accepted after the failure, not glued to anything
    with SpanStore(tmp_path) as store:
        assert store.get_trace(T3) is None  # a refused batch never reappears
        assert store.get_trace(T1) is not None and store.get_trace(T2) is not None
        assert store.stats()["spans_accepted"] == 2


# --- group commit (add_async, the server's path) ----------------------------------------------------


async def _gathered(*calls: Coroutine[Any, Any, int]) -> list[int]:
    return list(await asyncio.gather(*calls))


def _traces(store: SpanStore, *trace_ids: str) -> list[bool]:
    return [store.get_trace(t) is not None for t in trace_ids]


def test_concurrent_batches_share_one_commit_and_each_is_stored(tmp_path: Path) -> None:
    async def post_all(store: SpanStore) -> list[int]:
        return await _gathered(
            store.add_async([span(T1), span(T1, "0000000000000002")]),
            store.add_async([span(T2)]),
            store.add_async([span(T3, name="X")]),
        )

    with SpanStore(tmp_path) as store:
        assert asyncio.run(post_all(store)) == [2, 1, 1]
        assert store.stats() == {
            "spans_accepted": 4,
            "batches": 3,
            "spans_dropped": 0,
            "traces": 3,
            "commits": 1,
        }
        assert _traces(store, T1, T2, T3) == [True, True, True]
    with SpanStore(tmp_path) as again:  # each batch kept its own batch number
        assert again.stats()["batches"] == 3
        assert [s["name"] for s in again.get_trace(T3) or []] == ["x"]


def test_a_failed_group_commit_fails_every_batch_and_keeps_none(tmp_path: Path) -> None:
    big = [span(T3, f"{i:016x}", tags={"blob": "x" * 2000}) for i in range(1, 60)]  # ~120 KB

    async def together(store: SpanStore) -> tuple[object, object]:
        return await asyncio.gather(store.add_async([span(T2)]), store.add_async(big), return_exceptions=True)

    with SpanStore(tmp_path) as store:
        store.add([span(T1)])
        _fill_up(store)
        small, large = results = asyncio.run(together(store))
        assert [type(r) for r in results] == [StoreError, StoreError]
        assert "full" in str(small) and "full" in str(large)
        # The small batch would have fitted alone: it failed with its group and is not stored.
        assert _traces(store, T1, T2, T3) == [True, False, False]
        assert store.stats() == {
            "spans_accepted": 1,
            "batches": 1,
            "spans_dropped": 0,
            "traces": 1,
            "commits": 1,
        }
        assert asyncio.run(store.add_async([span(T2)])) == 1  # alone it is accepted
    with SpanStore(tmp_path) as store:
        assert _traces(store, T1, T2, T3) == [True, True, False]  # a refused batch never reappears
        assert store.stats()["spans_accepted"] == 2


def test_a_batch_whose_caller_is_cancelled_before_the_commit_is_left_out(tmp_path: Path) -> None:
    async def cancel_one(store: SpanStore) -> None:
        kept = asyncio.create_task(store.add_async([span(T1)]))
        dropped = asyncio.create_task(store.add_async([span(T2)]))
        await asyncio.sleep(0)  # both queued; the commit runs after this coroutine's next step
        dropped.cancel()
        assert await kept == 1
        with pytest.raises(asyncio.CancelledError):
            await dropped

    with SpanStore(tmp_path) as store:
        asyncio.run(cancel_one(store))
        assert _traces(store, T1, T2) == [True, False]
        assert store.stats()["batches"] == 1


def test_temporary_store_removes_its_directory(tmp_path: Path) -> None:
    store = SpanStore(None)
    store.add([span(T1)])
    folder = store.path.parent
    assert folder.is_dir() and store.path.is_file()
    store.close()
    assert not folder.exists()


def test_ingest_memory_does_not_grow_with_stored_spans() -> None:
    """The old store kept every span dict in memory (1.4 GB per 10 minutes at 300 req/s)."""
    batch_of = lambda i: [  # noqa: E731
        span(f"{i:016x}{j:016x}", f"{j + 1:016x}", timestamp=BASE_US + i, duration=100,
             name="ingress", localEndpoint={"serviceName": "gw"}, tags={"http.url": f"/p/{i}/{j}" * 4})
        for j in range(10)
    ]  # fmt: skip
    with SpanStore(None) as store:
        for i in range(200):  # warm up: caches, statements
            store.add(batch_of(i))
        tracemalloc.start()
        try:
            for i in range(200, 1200):  # 10,000 spans
                store.add(batch_of(i))
            current, _peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert store.stats()["spans_accepted"] == 12_000
        assert current < 1_000_000, current  # the old dict store held ~12 MB here
        assert len(store.search(limit=5)) == 5


# --- the JSON-lines store before spans.db ----------------------------------------------------------


def test_legacy_jsonl_is_imported_once(tmp_path: Path) -> None:
    legacy = tmp_path / LEGACY_SPANS_FILE_NAME
    lines = [json.dumps([span(T1)]), "{not json", json.dumps([span(T3), span(T3, "0000000000000002")])]
    legacy.write_text("\n".join(lines) + "\n" + json.dumps([span(T2)])[:25])  # torn final line
    content = legacy.read_bytes()
    with SpanStore(tmp_path) as store:
        assert store.stats() == {
            "spans_accepted": 3,
            "batches": 2,
            "spans_dropped": 0,
            "traces": 2,
            "commits": 1,
        }
        assert store.get_trace(T2) is None
    assert not legacy.exists()
    assert (tmp_path / (LEGACY_SPANS_FILE_NAME + ".imported")).read_bytes() == content

    # Killed between COMMIT and the rename: the same file again is not imported twice.
    legacy.write_bytes(content)
    with SpanStore(tmp_path) as store:
        assert store.stats()["spans_accepted"] == 3
    assert (tmp_path / (LEGACY_SPANS_FILE_NAME + ".imported.2")).is_file()

    # New lines written to a fresh spans.jsonl (late spans, by hand) are imported.
    legacy.write_text(json.dumps([span(T2)]) + "\n")
    with SpanStore(tmp_path) as store:
        assert store.stats()["spans_accepted"] == 4 and store.get_trace(T2) is not None
