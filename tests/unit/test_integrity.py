"""loadgen.analysis.integrity on hand-built Zipkin span lists.

The clean layouts copy what the real Envoy 1.40 wrote in the embedded fan-out mesh (gateway
SERVER + CLIENT, app sidecar SERVER inbound + CLIENT outbound, backend SERVER; with
shared_span_context the server half reuses its client's id). Each defect is built by changing
exactly the link that defect is about; the expected counts follow from that change."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from loadgen.analysis.integrity import (
    EXPLANATIONS,
    GUID_TAG,
    ExternalRef,
    Orphan,
    TraceShape,
    _attribute,
    _Candidate,
    find_orphans,
    fold_integrity,
    judge_trace,
    mask_request_id,
)
from loadgen.analysis.reconcile import TraceObservation
from loadgen.backends.base import Fetched, FetchStatus
from loadgen.mesh.hops import Hop
from loadgen.readback import search_hop_traces

GW, APP, BE = "istio-ingressgateway", "httpbin.istioinaction", "backend.istioinaction"
HOPS = (Hop(GW, 2), Hop(APP, 2), Hop(BE, 1))  # /fanout with the gateway's upstream span
INJ = "1111111111111111"


def sid(trace: int, n: int) -> str:
    return f"{trace:08x}{n:08x}"


def tid(trace: int) -> str:
    return f"{0xABCDEF00 + trace:016x}{trace:016x}"


def span(
    trace: int,
    service: str,
    kind: str,
    n: int,
    parent: str | None,
    *,
    ts: int = 1_000_000,
    dur: int = 1_000,
    shared: bool = False,
    tags: dict[str, str] | None = None,
    span_id: str | None = None,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "traceId": tid(trace),
        "id": span_id or sid(trace, n),
        "kind": kind,
        "name": "x",
        "timestamp": ts,
        "duration": dur,
        "localEndpoint": {"serviceName": service},
        "tags": tags or {},
    }
    if parent:
        s["parentId"] = parent
    if shared:
        s["shared"] = True
    return s


def chain(trace: int, inj: str | None = INJ, *, t0: int = 1_000_000) -> list[dict[str, Any]]:
    """The measured /fanout layout, shared_span_context false: each span under the previous one."""
    return [
        span(trace, GW, "SERVER", 1, inj, ts=t0, dur=5_000),
        span(trace, GW, "CLIENT", 2, sid(trace, 1), ts=t0 + 100, dur=4_800),
        span(trace, APP, "SERVER", 3, sid(trace, 2), ts=t0 + 200, dur=4_500),
        span(trace, APP, "CLIENT", 4, sid(trace, 3), ts=t0 + 1_000, dur=2_000),
        span(trace, BE, "SERVER", 5, sid(trace, 4), ts=t0 + 1_100, dur=1_500),
    ]


def shared_chain(trace: int, inj: str | None = INJ) -> list[dict[str, Any]]:
    """The measured layout with shared_span_context true: the gateway SERVER span *is* the
    client's span (or a root of Envoy's own id); each SERVER half reuses its client's id and
    names the client's parent."""
    root = inj or sid(trace, 1)
    return [
        span(trace, GW, "SERVER", 0, None, shared=True, span_id=root),
        span(trace, GW, "CLIENT", 2, root),
        span(trace, APP, "SERVER", 0, root, shared=True, span_id=sid(trace, 2)),
        span(trace, APP, "CLIENT", 4, sid(trace, 2)),
        span(trace, BE, "SERVER", 0, sid(trace, 2), shared=True, span_id=sid(trace, 4)),
    ]


def replace(spans: list[dict[str, Any]], index: int, **changes: Any) -> list[dict[str, Any]]:
    out = [dict(s) for s in spans]
    for key, value in changes.items():
        if value is None:
            out[index].pop(key, None)
        else:
            out[index][key] = value
    return out


def judge(spans: list[dict[str, Any]], inj: str | None = INJ, hops: tuple[Hop, ...] | None = HOPS):
    return judge_trace(TraceShape.from_spans(spans), inj, hops)


# --- one trace -----------------------------------------------------------------------------------


def test_clean_chain_with_injected_context() -> None:
    shape = TraceShape.from_spans(chain(1))
    assert shape.spans == {
        APP: {"CLIENT": 1, "SERVER": 1},
        BE: {"SERVER": 1},
        GW: {"CLIENT": 1, "SERVER": 1},
    }
    assert shape.links == {
        (APP, "CLIENT", APP, "SERVER"): 1,
        (APP, "SERVER", GW, "CLIENT"): 1,
        (BE, "SERVER", APP, "CLIENT"): 1,
        (GW, "CLIENT", GW, "SERVER"): 1,
    }
    assert shape.roots == 0 and shape.shared == 0
    assert shape.external == (ExternalRef(GW, "SERVER", INJ, None),)
    assert shape.windows_us[APP] == (1_000_200, 1_004_700)  # inbound start .. inbound end
    v = judge(chain(1))
    assert v.entry_ok is True and v.links_ok and v.all_hops_present
    assert (v.broken, v.flattened, v.roots, v.expected_roots, v.missing_hops) == (0, 0, 0, 0, ())


def test_clean_chain_without_injected_context_has_one_root() -> None:
    v = judge(chain(2, inj=None), inj=None)
    assert v.entry_ok is None and v.links_ok
    assert (v.roots, v.expected_roots, v.broken) == (1, 1, 0)


@pytest.mark.parametrize("inj", [INJ, None])
def test_shared_span_context_links_each_server_half_to_its_client(inj: str | None) -> None:
    shape = TraceShape.from_spans(shared_chain(3, inj))
    assert shape.shared == 3
    # The same links as without sharing: the shared id resolves to the client half.
    assert shape.links == TraceShape.from_spans(chain(3)).links
    v = judge_trace(shape, inj, HOPS)
    assert v.links_ok and v.broken == 0 and v.flattened == 0
    assert v.entry_ok is (True if inj else None)
    assert (v.roots, v.expected_roots) == ((0, 0) if inj else (1, 1))


def test_entry_span_not_under_the_injected_span() -> None:
    spans = replace(chain(4), 0, parentId="2222222222222222")
    v = judge(spans)
    assert v.entry_ok is False and v.broken == 1 and not v.links_ok


def test_lost_span_breaks_the_link_below_it() -> None:
    spans = [s for s in chain(5) if s["kind"] != "CLIENT" or s["localEndpoint"]["serviceName"] != GW]
    v = judge(spans)
    # The app's SERVER span names the lost gateway CLIENT span: neither in the trace nor injected.
    assert v.broken == 1 and v.entry_ok is True and not v.links_ok
    assert v.missing_hops == (GW,)


def test_second_root_under_the_same_trace_id() -> None:
    spans = replace(chain(6, inj=None), 4, parentId=None)  # the backend started its own tree
    v = judge(spans, inj=None)
    assert (v.roots, v.expected_roots) == (2, 1) and not v.links_ok
    assert v.broken == 0 and v.flattened == 0


def test_b3_forwarded_unchanged_flattens_every_hop_onto_the_client_span() -> None:
    """envoyproxy/envoy#47515: if `b3` crossed every proxy unchanged, each proxy would take the
    client's span as its parent."""
    spans = replace(replace(chain(7), 2, parentId=INJ), 4, parentId=INJ)
    v = judge(spans)
    assert v.flattened == 2 and v.broken == 0 and v.entry_ok is True and not v.links_ok


def test_hop_pointing_past_the_previous_hop_is_flattened() -> None:
    spans = replace(chain(8), 4, parentId=sid(8, 2))  # backend under the gateway CLIENT span
    assert judge(spans).flattened == 1


def test_hop_under_the_previous_proxys_server_span_while_it_has_a_client_span() -> None:
    spans = replace(chain(9), 2, parentId=sid(9, 1))  # app SERVER under gateway SERVER
    assert judge(spans).flattened == 1
    # Without a gateway CLIENT span (spawn_upstream_span off) that is the right parent.
    no_spawn = [s for i, s in enumerate(spans) if i != 1]
    v = judge(no_spawn, hops=(Hop(GW, 1), Hop(APP, 2), Hop(BE, 1)))
    assert v.flattened == 0 and v.links_ok and v.missing_hops == ()


def test_missing_hop_and_unknown_layout() -> None:
    spans = chain(10)[:3]
    v = judge(spans)
    assert v.missing_hops == (APP, BE) and not v.all_hops_present and v.links_ok
    # Without a layout only the config-free checks run: a flattened shape is not judged.
    flat = replace(chain(11), 4, parentId=INJ)
    v = judge(flat, hops=None)
    assert (v.flattened, v.broken, v.entry_ok, v.missing_hops) == (0, 0, None, ())


def test_shape_round_trips_through_json_and_stays_small() -> None:
    shape = TraceShape.from_spans(shared_chain(12))
    text = json.dumps(shape.to_dict(), separators=(",", ":"))  # as run.py writes fetched.jsonl
    assert TraceShape.from_dict(json.loads(text)) == shape
    assert len(text) < 500


def test_hostile_service_names_cannot_forge_links() -> None:
    """Service names are span data (untrusted): separators in them must not change the shape."""
    evil = f"{GW}:SERVER<{APP}"
    spans = chain(14)
    spans[2]["localEndpoint"] = {"serviceName": evil}
    shape = TraceShape.from_spans(spans)
    assert TraceShape.from_dict(json.loads(json.dumps(shape.to_dict()))) == shape
    assert (evil, "SERVER", GW, "CLIENT") in shape.links
    assert judge_trace(shape, INJ, HOPS).missing_hops == (APP,)


def test_trace_observation_carries_the_shape() -> None:
    obs = TraceObservation.from_fetched(Fetched(FetchStatus.FOUND, tuple(chain(13))))
    assert obs.shape == TraceShape.from_spans(chain(13))
    row = json.loads(json.dumps(obs.to_dict()))
    assert TraceObservation.from_dict(row) == obs
    assert TraceObservation.from_fetched(Fetched(FetchStatus.MISSING)).shape is None
    # fetched.jsonl rows written before the field existed still load.
    old = {k: v for k, v in row.items() if k != "shape"}
    assert TraceObservation.from_dict(old).shape is None


def test_mask_request_id_ignores_envoys_decision_character() -> None:
    a = "0f1e2d3c-4b5a-9687-a1b2-c3d4e5f60718"
    b = a[:14] + "4" + a[15:]
    assert mask_request_id(a) == mask_request_id(b.upper()) and a[14] == "9"
    assert mask_request_id(a) != mask_request_id("1" + a[1:])


# --- the run's fold --------------------------------------------------------------------------


def record(trace: int, path: str = "/fanout", *, inj: bool = True, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "rid": f"r{trace}",
        "mode": "b3_multi_sampled" if inj else "none",
        "path": path,
        "status": 200,
        "inj_trace": tid(trace) if inj else None,
        "inj_span": INJ if inj else None,
        "up_trace": tid(trace),
        "up_xrid": f"{trace:08x}-0000-4000-9000-000000000000",
    }
    rec.update(extra)
    return rec


def observe(spans: list[dict[str, Any]]) -> TraceObservation:
    return TraceObservation.from_fetched(Fetched(FetchStatus.FOUND, tuple(spans)))


def fold(ledger: list[dict[str, Any]], traces: dict[int, list[dict[str, Any]]], **kw: Any) -> dict[str, Any]:
    observations = {tid(t): observe(s) for t, s in traces.items()}
    kw.setdefault("hops_by_path", {"/fanout": HOPS, "/fanout-nopropagate": HOPS})
    return fold_integrity(ledger, observations, (Hop(GW, 2), Hop(APP, 1)), **kw)


def test_clean_run_has_no_defect() -> None:
    ledger = [record(1), record(2), record(3, inj=False)]
    out = fold(ledger, {1: chain(1), 2: shared_chain(2), 3: chain(3, inj=None)}, hop_traces=[])
    assert out["traces"] == 3
    for name, defect in out["defects"].items():
        assert defect["count"] == 0, name
        assert defect["explanation"] == EXPLANATIONS[name]
    assert out["parent_links_ok"]["k"] == out["parent_links_ok"]["n"] == 3
    assert out["injected_kept_end_to_end"]["k"] == out["injected_kept_end_to_end"]["n"] == 2
    assert {s: (p["k"], p["n"]) for s, p in out["completeness"].items()} == {
        GW: (3, 3),
        APP: (3, 3),
        BE: (3, 3),
    }
    assert out["roots"] == {"0": 2, "1": 1}
    assert out["shared_span_context"] == {"traces": 1, "spans": 3}
    assert out["defects"]["fragmented"]["searched"] is True
    assert out["defects"]["fragmented"]["orphans"] == 0


def test_not_searched_fragmentation_is_unknown_not_zero() -> None:
    out = fold([record(1)], {1: chain(1)})
    frag = out["defects"]["fragmented"]
    assert frag["count"] is None and frag["searched"] is False


@pytest.mark.parametrize(
    ("defect", "spoil"),
    [
        ("entry_parent_mismatch", lambda t: replace(chain(t), 0, parentId="2222222222222222")),
        ("broken_parent_links", lambda t: replace(chain(t), 2, parentId="3333333333333333")),
        ("extra_roots", lambda t: replace(chain(t), 4, parentId=None)),
        ("flattened_parent_links", lambda t: replace(chain(t), 4, parentId=INJ)),
        ("incomplete_hops", lambda t: chain(t)[:4]),
    ],
)
def test_each_defect_is_counted_with_at_most_five_examples(defect: str, spoil: Any) -> None:
    traces = {t: spoil(t) for t in range(1, 8)} | {t: chain(t) for t in range(8, 11)}
    out = fold([record(t) for t in traces], traces)
    d = out["defects"][defect]
    assert d["count"] == 7
    assert d["examples"] == [tid(t) for t in range(1, 6)]
    assert out["parent_links_ok"]["n"] == 10
    assert out["parent_links_ok"]["k"] == (10 if defect == "incomplete_hops" else 3)
    others = {n: v["count"] for n, v in out["defects"].items() if n not in (defect, "fragmented")}
    if defect == "entry_parent_mismatch":
        others.pop("broken_parent_links")  # a wrong entry parent is also a dangling reference
    assert set(others.values()) == {0}, others


def test_injected_id_not_kept_is_not_kept_end_to_end() -> None:
    # The proxy replaced the injected trace id: the request's spans live under another id.
    rec = record(1, up_trace=tid(2))
    out = fold([rec], {2: chain(2)})
    assert (out["injected_kept_end_to_end"]["k"], out["injected_kept_end_to_end"]["n"]) == (0, 1)


def test_a_trace_under_another_id_is_judged_without_the_injected_span() -> None:
    """Issue 12: a mesh that did not continue the injected trace id (B3 under the OpenTelemetry
    tracer, traceparent under USE_B3) roots the request's trace itself, so one root is right; a
    continued id whose entry span is a root is a defect. A gateway-only mesh: one span a trace."""
    layout = {"/headers": (Hop(GW, 1),)}
    root_only = {t: [span(t, GW, "SERVER", 1, None)] for t in (2, 3)}
    ledger = [record(1, "/headers", up_trace=tid(2)), record(3, "/headers")]
    out = fold(ledger, root_only, hops_by_path=layout)
    assert out["traces"] == 2 and out["roots"] == {"1": 2}
    assert (out["parent_links_ok"]["k"], out["parent_links_ok"]["n"]) == (1, 2)
    assert out["defects"]["entry_parent_mismatch"]["examples"] == [tid(3)]
    assert out["defects"]["extra_roots"]["examples"] == [tid(3)]
    assert (out["injected_kept_end_to_end"]["k"], out["injected_kept_end_to_end"]["n"]) == (1, 2)


def fragment(trace: int, *, t0: int, xrid: str | None = None) -> list[dict[str, Any]]:
    """What the app's sidecar and the backend write when the app forgot the headers: a new trace
    rooted at the app sidecar's outbound CLIENT span."""
    tags = {GUID_TAG: xrid} if xrid else {}
    return [
        span(trace, APP, "CLIENT", 1, None, ts=t0, dur=600, tags=tags),
        span(trace, BE, "SERVER", 2, sid(trace, 1), ts=t0 + 50, dur=400, tags=tags),
    ]


def test_fragments_are_found_and_attributed_to_the_requests_they_were_split_from() -> None:
    split_by_time = chain(1, t0=1_000_000)[:3]  # the outbound call left the trace
    split_keeping_xrid = chain(2, t0=5_000_000)[:3]
    intact = chain(3, t0=1_000_000)
    ledger = [
        record(1, "/fanout-nopropagate"),
        record(2, "/fanout-nopropagate?keep=x-request-id"),
        record(3),
    ]
    xrid2 = ledger[1]["up_xrid"]
    hop_traces = [
        fragment(101, t0=1_001_000),  # inside trace 1's app window (1_000_200 .. 1_004_700)
        # The x-request-id the app forwarded (Envoy's mark re-written): matched despite its time.
        fragment(102, t0=9_000_000, xrid=xrid2[:14] + "a" + xrid2[15:]),
        fragment(103, t0=50_000_000),  # nobody's: another client on a shared mesh
        intact,  # the run's own trace (its id is known): not an orphan
        chain(104, inj=None)[:1] + fragment(104, t0=1_001_000)[1:],  # via the gateway: not an orphan
    ]
    out = fold(ledger, {1: split_by_time, 2: split_keeping_xrid, 3: intact}, hop_traces=hop_traces)
    frag = out["defects"]["fragmented"]
    assert frag["orphans"] == 3 and frag["count"] == frag["attributed"] == 2
    assert frag["unattributed"] == 1 and frag["unattributed_examples"] == [tid(103)]
    assert frag["attributed_by"] == {"x_request_id": 1, "time": 1}
    assert sorted(frag["pairs"]) == sorted([[tid(1), tid(101)], [tid(2), tid(102)]])
    assert frag["examples"] == [tid(1), tid(2)]
    incomplete = out["defects"]["incomplete_hops"]
    assert incomplete["count"] == incomplete["explained_by_fragmentation"] == 2
    assert (out["completeness"][BE]["k"], out["completeness"][BE]["n"]) == (1, 3)
    assert out["defects"]["broken_parent_links"]["count"] == 0


def test_a_complete_trace_never_takes_a_fragment() -> None:
    """/fanout that propagates: even a stray orphan inside its window is not pinned on it."""
    out = fold([record(1)], {1: chain(1)}, hop_traces=[fragment(101, t0=1_001_000)])
    frag = out["defects"]["fragmented"]
    assert (frag["orphans"], frag["count"], frag["unattributed"]) == (1, 0, 1)


def test_find_orphans_reads_root_window_tags_and_run_tag() -> None:
    spans = fragment(5, t0=2_000, xrid="0f1e2d3c-4b5a-9687-a1b2-c3d4e5f60718")
    spans[0]["tags"]["loadgen.run_id"] = "run-1"
    (orphan,) = find_orphans([spans[::-1]], set(), GW, run_id_tag="loadgen.run_id", run_id="run-1")
    assert orphan == Orphan(
        trace_id=tid(5),
        services=frozenset({APP, BE}),
        root_service=APP,
        start_us=2_000,
        end_us=2_600,
        request_ids=frozenset({mask_request_id("0f1e2d3c-4b5a-9687-a1b2-c3d4e5f60718")}),
        run_tagged=True,
    )


def test_time_attribution_needs_augmenting_paths() -> None:
    """Windows t0 [0, 300], t1 [100, 800], t2 [200, 800]; fragments o0 [100, 300] fits t0 and
    t1, o1 and o2 [200, 600] fit t1 and t2. Taking the window that started closest before each
    fragment, o0 takes t1 and o1 takes t2, leaving o2 nothing; moving o0 to t0 frees t1 for o2."""
    cands = [
        _Candidate(name, frozenset({BE}), {APP: window})
        for name, window in (("t0", (0, 300)), ("t1", (100, 800)), ("t2", (200, 800)))
    ]
    orphans = [
        Orphan(name, frozenset({APP, BE}), APP, start, end, frozenset(), False)
        for name, start, end in (("o0", 100, 300), ("o1", 200, 600), ("o2", 200, 600))
    ]
    matched, by = _attribute(orphans, cands, {}, slack_us=0)
    assert matched["o0"] == "t0" and {matched["o1"], matched["o2"]} == {"t1", "t2"}
    assert by == {"x_request_id": 0, "time": 3}


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=1, max_value=40))
def test_time_attribution_is_a_maximum_matching(seed: int, n: int) -> None:
    """Against SciPy's maximum bipartite matching on the same containment graph."""
    rng = random.Random(seed)
    cands = []
    orphans = []
    for i in range(n):
        lo = rng.randrange(0, 20_000)
        hi = lo + rng.randrange(500, 8_000)
        cands.append(_Candidate(f"t{i}", frozenset({BE}), {APP: (lo, hi)}))
        if rng.random() < 0.8:  # most requests were split; the fragment lies inside some window
            host = rng.choice(cands)
            a, b = host.windows_us[APP]
            start = rng.randrange(a, b)
            orphans.append(
                Orphan(
                    f"o{i}", frozenset({APP, BE}), APP, start, rng.randrange(start, b + 1), frozenset(), False
                )
            )
    matched, _ = _attribute(orphans, cands, {}, slack_us=0)
    assert len(set(matched.values())) == len(matched)
    rows, cols = [], []
    for i, o in enumerate(orphans):
        for j, c in enumerate(cands):
            lo, hi = c.windows_us[APP]
            if lo <= o.start_us and o.end_us <= hi:
                rows.append(i)
                cols.append(j)
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(orphans), len(cands)))
    best = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum()) if orphans else 0
    assert len(matched) == best
    for o in orphans:  # every pair the code made is an edge of the graph
        if o.trace_id in matched:
            lo, hi = cands[int(matched[o.trace_id][1:])].windows_us[APP]
            assert lo <= o.start_us and o.end_us <= hi


class FakeBackend:
    """Answers `search` from a list of traces, at most `limit` per call (the newest first, as
    Zipkin does), and records the calls."""

    def __init__(self, traces: list[list[dict[str, Any]]]) -> None:
        self.traces = traces
        self.calls: list[dict[str, Any]] = []

    def search(self, *, tags: Any, service: Any, start_us: int, end_us: int, limit: int) -> list[list[dict]]:
        self.calls.append({"tags": tags, "service": service, "start": start_us, "end": end_us})
        hits = [
            t
            for t in self.traces
            if any(
                s["localEndpoint"]["serviceName"] == service and start_us <= s["timestamp"] <= end_us
                for s in t
            )
        ]
        return sorted(hits, key=lambda t: -t[0]["timestamp"])[:limit]


def test_search_hop_traces_splits_full_pages_and_needs_no_tag() -> None:
    traces = [fragment(i, t0=1_000 * i) for i in range(1, 26)] + [chain(99, t0=3_000)]
    backend = FakeBackend(traces)
    found = search_hop_traces(backend, service=BE, start_us=0, end_us=30_000, limit=10)  # type: ignore[arg-type]
    ids = sorted(t[0]["traceId"] for t in found)
    assert ids == sorted({tid(i) for i in range(1, 26)} | {tid(99)})
    assert len(backend.calls) > 1  # a full page was split
    assert all(c["tags"] is None and c["service"] == BE for c in backend.calls)
