"""Propagation integrity: is each request's trace one connected tree across every hop? (pure)

Collection (reconcile.py) asks "is the trace there, with enough spans?". Integrity asks whether
those spans form the tree the request really took:

    client span (injected) -> gateway SERVER -> gateway CLIENT -> sidecar SERVER
        -> [app] -> sidecar CLIENT (outbound) -> backend SERVER

Per trace, `TraceShape.from_spans` reduces the Zipkin v2 spans to a small, config-free shape (it
is stored per trace in fetched.jsonl): spans per service and kind, parent links by service and kind,
roots, references to spans outside the trace, shared-span-context use, and each service's time
window. `fold_integrity` then judges the shapes against the ledger (what was injected) and the
hops the configuration implies (`Hop`, in call order):

- **entry link**: the gateway SERVER span's parent is the injected span id (or, with
  `shared_span_context`, the span *is* the injected span id);
- **broken links**: a parent id that is neither in the trace nor the injected span;
- **extra roots**: more roots than one request makes (1 without injected context, 0 with);
- **flattened links**: a hop's entry span points at an earlier span (the client's, the
  gateway's) instead of the previous hop's (its CLIENT span, when it recorded one);
- **completeness per hop**: spans per service against `Hop.spans`;
- **fragmentation**: a downstream hop recorded under a *new* trace id (an app that does not
  forward trace headers). Method: search the backend for traces holding a downstream hop's spans
  in the run's time window (`search_hop_traces`, the only function here that does I/O, through the
  TraceBackend seam); an *orphan* is such a trace whose id the run never produced and that holds
  no span of the first hop (a request through the gateway always does). Orphans are attributed to
  the run's requests by x-request-id (the `guid:x-request-id` tag against the id the app
  received, ignoring character 14 where Envoy writes its decision) when the app forwarded it,
  else by time: the orphan's root span lies inside the app-side hop's window of a trace of this
  run that lacks the downstream hop (both spans come from the same sidecar's clock), as a
  maximum matching, so concurrency cannot lower the count (which fragment goes with which of two
  overlapping requests may swap). Only attributed orphans count as fragmented traces; the rest
  are reported as unattributed (other clients' traffic on a shared mesh, or fragments of
  requests whose own trace was not sampled).
"""

from __future__ import annotations

import bisect
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from loadgen.analysis.stats import Proportion
from loadgen.backends.base import BackendError, FetchStatus, Span, TraceBackend
from loadgen.mesh.hops import Hop
from loadgen.mesh.ids import normalize_trace_id

if TYPE_CHECKING:
    from loadgen.analysis.reconcile import TraceObservation

GUID_TAG = "guid:x-request-id"
EXTERNAL_LIMIT = 8  # external references kept per trace shape (a sane trace has at most one)
CANONICAL_LIMIT = 4096  # distinct span counts / links / service lists shared between shapes

_V = TypeVar("_V")
# Span counts, links and service lists are the same for nearly every trace of a run: one shared
# (never mutated) object per distinct value instead of one per trace keeps a read-back of 100k
# traces small (loadgen.readback). A full table is emptied, never grown: values already handed
# out stay valid, only later equal ones are no longer shared with them.
_canonical_values: dict[Hashable, Any] = {}


def _canonical(key: Hashable, build: Callable[[], _V]) -> _V:
    """The one shared value for `key`, built on first use."""
    value: _V | None = _canonical_values.get(key)
    if value is None:
        if len(_canonical_values) >= CANONICAL_LIMIT:
            _canonical_values.clear()
        value = _canonical_values[key] = build()
    return value


def _nested_counts(items: Sequence[tuple[tuple[str, str], int]]) -> dict[str, dict[str, int]]:
    """((service, kind), n) pairs, sorted, as service -> kind -> n."""
    out: dict[str, dict[str, int]] = {}
    for (service, kind), n in items:
        out.setdefault(sys.intern(service), {})[sys.intern(kind)] = n
    return out


EXPLANATIONS = {
    "entry_parent_mismatch": (
        "The gateway's SERVER span does not name the client's injected span as its parent (nor "
        "reuse it as a shared span), so the client's trace and the mesh's trace do not join up."
    ),
    "broken_parent_links": (
        "A span names a parent that is not in the trace and is not the client's injected span: the "
        "parent span was lost on its way to the backend, or a proxy or app forwarded a wrong span "
        "id. Trace views show such spans as detached subtrees."
    ),
    "extra_roots": (
        "The trace has more root spans than one request makes (one when the client sent no trace "
        "context, none when it did): part of the request started a new tree under the same trace id."
    ),
    "incomplete_hops": (
        "A hop left fewer spans than the proxy configuration implies: spans lost on the way to "
        "the backend, or recorded under another trace id (see fragmented)."
    ),
    "fragmented": (
        "A downstream hop was recorded under a new trace id: the app between two proxies did not "
        "forward the trace headers it received (x-b3-*, b3, traceparent), so its sidecar started "
        "a new trace for the outbound call. One request shows up as two unrelated traces."
    ),
    "flattened_parent_links": (
        "A hop's span points at an earlier span (the client's or the gateway's) instead of the "
        "previous hop's: every span is there but the call chain shows as siblings. Reported cause: "
        "a proxy forwarding the single `b3` header unchanged instead of rewriting it "
        "(envoyproxy/envoy#47515); Envoy 1.40.0 rewrites it in the embedded mesh (measured)."
    ),
}


def _service(span: Mapping[str, Any]) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "")


def _kind(span: Mapping[str, Any]) -> str:
    return str(span.get("kind") or "-")


_Row = tuple[Mapping[str, Any], str, str, str]
"""A span with its service, kind and normalized id (`TraceShape.from_spans`)."""


def _span_id(value: object) -> str:
    """Zipkin span ids are 16 lowercase hex; some writers drop leading zeros."""
    return str(value).strip().lower().zfill(16)


def mask_request_id(xrid: str) -> str:
    """x-request-id without character 14, where Envoy writes its trace decision (so the id an
    app received and the one its sidecar saw on the way out compare equal)."""
    x = xrid.strip().lower()
    return x[:14] + x[15:] if len(x) > 14 else x


@dataclass(frozen=True)
class ExternalRef:
    """A span whose parent is not in the trace: `parent_id` is the parentId it names; a shared
    span (the server half of a client's span) whose client half is absent also carries its own
    id in `shared_id` (that id *is* the client's span id)."""

    service: str
    kind: str
    parent_id: str | None = None
    shared_id: str | None = None


@dataclass(frozen=True, slots=True)
class TraceShape:
    """What integrity needs from one trace, without the configuration (stored per trace).

    Kept for every trace of a read-back, so it is small: its `spans` and `links` (and
    `services()`) are shared between shapes that have equal ones. They must not be mutated."""

    spans: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> kind -> count
    # (child service, child kind, parent service, parent kind) -> count
    links: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    roots: int = 0  # spans with no parentId and no client half in the trace
    external: tuple[ExternalRef, ...] = ()
    shared: int = 0  # spans with "shared": true (shared_span_context)
    windows_us: dict[str, tuple[int, int]] = field(default_factory=dict)  # service -> (first start, last end)

    @classmethod
    def from_spans(cls, spans: Sequence[Mapping[str, Any]]) -> TraceShape:
        # One row per span, (span, service, kind, its id), computed once: this runs for every
        # trace of a read-back.
        rows: list[_Row] = []
        by_id: dict[str, list[_Row]] = defaultdict(list)
        for s in spans:
            raw_id = s.get("id")
            row = (s, _service(s), _kind(s), _span_id(raw_id))
            rows.append(row)
            if raw_id is not None:
                by_id[row[3]].append(row)
        counts: dict[tuple[str, str], int] = {}
        links: dict[tuple[str, str, str, str], int] = {}
        external: list[ExternalRef] = []
        windows: dict[str, list[int]] = {}
        roots = shared = 0
        for row in rows:
            x, service, kind, xid = row
            counts[(service, kind)] = counts.get((service, kind), 0) + 1
            ts, dur = x.get("timestamp"), x.get("duration")
            if isinstance(ts, int):
                end = ts + (dur if isinstance(dur, int) else 0)
                w = windows.setdefault(service, [ts, end])
                w[0], w[1] = min(w[0], ts), max(w[1], end)
            pid = _span_id(x["parentId"]) if x.get("parentId") else None
            is_shared = bool(x.get("shared"))
            shared += int(is_shared)
            parent = _effective_parent(row, pid, is_shared, by_id)
            if parent is not None:
                link = (service, kind, parent[1], parent[2])
                links[link] = links.get(link, 0) + 1
                continue
            if pid is None:
                roots += 1
            if (pid is not None or is_shared) and len(external) < EXTERNAL_LIMIT:
                external.append(ExternalRef(sys.intern(service), kind, pid, xid if is_shared else None))
        span_counts = tuple(sorted(counts.items()))
        link_counts = tuple(sorted(links.items()))
        return cls(
            spans=_canonical(("spans", span_counts), lambda: _nested_counts(span_counts)),
            links=_canonical(("links", link_counts), lambda: dict(link_counts)),
            roots=roots,
            external=tuple(external),
            shared=shared,
            windows_us={sys.intern(svc): (w[0], w[1]) for svc, w in sorted(windows.items())},
        )

    def spans_of(self, service: str) -> int:
        return sum(self.spans.get(service, {}).values())

    def services(self) -> tuple[str, ...]:
        """The services with spans in the trace, sorted, without the empty name (shared)."""
        names = tuple(self.spans)
        return _canonical(("services", names), lambda: tuple(sorted(n for n in names if n)))

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON (one per trace in fetched.jsonl): service names once in `svc`, referred
        to by index; spans as [svc, kind, n]; links as [svc, kind, parent svc, parent kind, n];
        external refs as [svc, kind, parent id, shared id]; windows as [svc, start µs, end µs]."""
        names = sorted(
            set(self.spans)
            | set(self.windows_us)
            | {e.service for e in self.external}
            | {svc for link in self.links for svc in (link[0], link[2])}
        )
        ix = {name: i for i, name in enumerate(names)}
        return {
            "svc": names,
            "spans": [[ix[svc], kind, n] for svc, kinds in self.spans.items() for kind, n in kinds.items()],
            "links": [[ix[cs], ck, ix[ps], pk, n] for (cs, ck, ps, pk), n in self.links.items()],
            "roots": self.roots,
            "ext": [[ix[e.service], e.kind, e.parent_id, e.shared_id] for e in self.external],
            "shared": self.shared,
            "win": [[ix[svc], lo, hi] for svc, (lo, hi) in self.windows_us.items()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TraceShape:
        names = [str(n) for n in d.get("svc", ())]
        spans: dict[str, dict[str, int]] = {}
        for i, kind, n in d.get("spans", ()):
            spans.setdefault(names[i], {})[str(kind)] = int(n)
        return cls(
            spans=spans,
            links={(names[c], str(ck), names[p], str(pk)): int(n) for c, ck, p, pk, n in d.get("links", ())},
            roots=int(d.get("roots", 0)),
            external=tuple(ExternalRef(names[i], str(k), pid, sid) for i, k, pid, sid in d.get("ext", ())),
            shared=int(d.get("shared", 0)),
            windows_us={names[i]: (int(lo), int(hi)) for i, lo, hi in d.get("win", ())},
        )


def _effective_parent(
    row: _Row, pid: str | None, is_shared: bool, by_id: Mapping[str, list[_Row]]
) -> _Row | None:
    """The row of the span `row` hangs under. A shared span (server half) hangs under its client
    half (same id); otherwise the span named by parentId. With shared spans, one id names two
    spans (client half and server half): a child of the same service as the server half was
    started by that proxy after receiving the request, so it hangs under the server half,
    anything else under the client half."""
    x, service, _, xid = row
    if is_shared:
        for r in by_id.get(xid, ()):
            if r[0] is not x and not r[0].get("shared"):
                return r
    if pid is None:
        return None
    candidates = [r for r in by_id.get(pid, ()) if r[0] is not x]
    if not candidates:
        return None
    same = [r for r in candidates if r[1] == service]
    unshared = [r for r in candidates if not r[0].get("shared")]
    return (same or unshared or candidates)[0]


# --- per trace judgement ---------------------------------------------------------------------


@dataclass(frozen=True)
class TraceVerdict:
    """One trace judged against its request's injection and the expected hops."""

    entry_ok: bool | None  # None: nothing injected, or the first hop's SERVER span is absent
    broken: int
    flattened: int
    roots: int  # roots not counting a shared entry span that is the injected span
    expected_roots: int
    missing_hops: tuple[str, ...]  # services with fewer spans than expected
    all_hops_present: bool

    @property
    def links_ok(self) -> bool:
        return (
            self.entry_ok is not False
            and self.broken == 0
            and self.flattened == 0
            and self.roots <= self.expected_roots
        )


def judge_trace(shape: TraceShape, injected_span: str | None, hops: Sequence[Hop] | None) -> TraceVerdict:
    """Pure: one trace against what was injected and the configured hops (None: unknown layout,
    only the config-free checks)."""
    inj = _span_id(injected_span) if injected_span else None
    first = hops[0].service if hops else None
    order = {hop.service: i for i, hop in enumerate(hops or ())}
    entry_ok: bool | None = None
    shared_entry = False
    if inj is not None and first is not None and shape.spans.get(first, {}).get("SERVER"):
        entry_ok = False
        for ref in shape.external:
            if (ref.service, ref.kind) == (first, "SERVER") and inj in (ref.parent_id, ref.shared_id):
                entry_ok = True
                shared_entry = ref.shared_id == inj and ref.parent_id is None
    broken = flattened = 0
    for ref in shape.external:
        if ref.parent_id is None:
            continue  # a shared root: counted with the roots
        service = ref.service
        if inj is not None and ref.parent_id == inj:
            # Pointing at the client's span is right for the first hop only.
            if first is not None and service != first and order.get(service, 0) > 0:
                flattened += 1
        else:
            broken += 1
    for (cs, _, ps, pk), n in shape.links.items():
        if cs == ps or cs not in order or ps not in order:
            continue
        i, j = order[cs], order[ps]
        previous_has_client = shape.spans.get(ps, {}).get("CLIENT", 0) > 0
        if j < i - 1 or (j == i - 1 and pk == "SERVER" and previous_has_client):
            flattened += n
    roots = shape.roots - int(shared_entry)
    missing = tuple(hop.service for hop in hops or () if shape.spans_of(hop.service) < hop.spans)
    present = all(shape.spans_of(hop.service) > 0 for hop in hops or ())
    return TraceVerdict(entry_ok, broken, flattened, roots, 0 if inj else 1, missing, present)


# --- fragmentation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Orphan:
    """A trace holding downstream-hop spans that no request of the run produced."""

    trace_id: str
    services: frozenset[str]
    root_service: str
    start_us: int
    end_us: int
    request_ids: frozenset[str]  # masked guid:x-request-id values
    run_tagged: bool


def find_orphans(
    traces: Iterable[Sequence[Mapping[str, Any]]],
    known_trace_ids: set[str],
    first_hop_service: str,
    *,
    run_id_tag: str = "",
    run_id: str = "",
) -> list[Orphan]:
    """Pure: traces whose id the run never produced and which hold no first-hop (gateway) span:
    a request through the gateway always leaves one, so such a trace started mid-mesh."""
    orphans: dict[str, Orphan] = {}
    for trace in traces:
        spans = [s for s in trace if s.get("traceId")]
        if not spans:
            continue
        tid = normalize_trace_id(str(spans[0]["traceId"]))
        if tid in known_trace_ids or tid in orphans:
            continue
        services = frozenset(_service(s) for s in spans)
        if first_hop_service in services:
            continue
        ids = {_span_id(s.get("id")) for s in spans}
        roots = [s for s in spans if not s.get("parentId") or _span_id(s["parentId"]) not in ids]
        root = min(roots or spans, key=lambda s: int(s.get("timestamp") or 0))
        start = int(root.get("timestamp") or 0)
        orphans[tid] = Orphan(
            trace_id=tid,
            services=services,
            root_service=_service(root),
            start_us=start,
            end_us=start + int(root.get("duration") or 0),
            request_ids=frozenset(
                mask_request_id(str(v)) for s in spans if (v := (s.get("tags") or {}).get(GUID_TAG))
            ),
            run_tagged=bool(run_id) and any((s.get("tags") or {}).get(run_id_tag) == run_id for s in spans),
        )
    return sorted(orphans.values(), key=lambda o: (o.start_us, o.trace_id))


def search_hop_traces(
    backend: TraceBackend,
    *,
    service: str,
    start_us: int,
    end_us: int,
    limit: int = 10_000,
    min_window_us: int = 1_000,
) -> list[list[Span]]:
    """Every trace holding a span of `service` in [start_us, end_us] (the only I/O here, through
    the injected reader). A full page may hide more: the window is split and searched again.

    No tag filter on purpose: an app that drops trace headers usually drops the run-id header
    too, so a fragment's spans carry no run tag."""
    found: dict[str, list[Span]] = {}
    stack = [(start_us, end_us)]
    while stack:
        lo, hi = stack.pop()
        traces = backend.search(tags=None, service=service, start_us=lo, end_us=hi, limit=limit)
        for trace in traces:
            for span in trace:
                if span.get("traceId"):
                    found.setdefault(normalize_trace_id(str(span["traceId"])), list(trace))
                    break
        if len(traces) >= limit:
            if hi - lo <= min_window_us:
                raise BackendError(f"more than {limit} traces in a {hi - lo} µs window: raise the limit")
            mid = (lo + hi) // 2
            stack += [(lo, mid), (mid + 1, hi)]
    return list(found.values())


def downstream_service(hops: Sequence[Hop]) -> str | None:
    """The service to search for fragments: the last hop, when there is a hop behind the app."""
    return hops[-1].service if len(hops) > 2 else None


# --- the run's fold --------------------------------------------------------------------------


@dataclass
class _Defect:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, trace_id: str, limit: int) -> None:
        self.count += 1
        if trace_id not in self.examples and len(self.examples) < limit:
            self.examples.append(trace_id)

    def to_dict(self, name: str) -> dict[str, Any]:
        return {"count": self.count, "examples": self.examples, "explanation": EXPLANATIONS[name]}


@dataclass
class _Candidate:
    """A request whose trace lacks a hop: it may have been split off (time attribution)."""

    trace_id: str
    missing: frozenset[str]
    windows_us: dict[str, tuple[int, int]]


def _path_of(rec: Mapping[str, Any]) -> str:
    return str(rec.get("path") or "").split("?", 1)[0]


def fold_integrity(
    ledger: Iterable[Mapping[str, Any]],
    observations: Mapping[str, TraceObservation],
    hops: Sequence[Hop] | None,
    *,
    hops_by_path: Mapping[str, Sequence[Hop]] | None = None,
    hop_traces: Iterable[Sequence[Mapping[str, Any]]] | None = None,
    run_id_tag: str = "",
    run_id: str = "",
    example_limit: int = 5,
    slack_us: int = 1_000,
) -> dict[str, Any]:
    """The `integrity` section of summary.json (pure).

    `hops`: the layout of a request (None: unknown, only config-free checks); `hops_by_path`
    overrides it per ledger `path` field. `hop_traces`: what `search_hop_traces` returned for
    the run's window (None: fragmentation not searched, its count is null).

    Judged: every request with a 200 whose trace the backend holds (status FOUND with a shape)."""
    from loadgen.analysis.reconcile import ledger_trace_id  # reconcile imports this module

    defects = {name: _Defect() for name in EXPLANATIONS}
    kept = [0, 0]
    links_ok = [0, 0]
    completeness: dict[str, list[int]] = {}
    roots_hist: Counter[int] = Counter()
    shared_traces = shared_spans = 0
    judged = 0
    explained_by_fragments = 0
    known: set[str] = set(observations)
    candidates: list[_Candidate] = []
    by_xrid: dict[str, str] = {}  # masked x-request-id the app received -> the request's trace id

    for rec in ledger:
        tid = ledger_trace_id(rec)
        if tid:
            known.add(tid)
        if rec.get("status") != 200 or not tid:
            continue
        if rec.get("up_xrid"):
            by_xrid[mask_request_id(str(rec["up_xrid"]))] = tid
        obs = observations.get(tid)
        if obs is None or obs.status is not FetchStatus.FOUND or obs.shape is None:
            continue
        shape = obs.shape
        layout = (hops_by_path or {}).get(_path_of(rec)) or hops
        inj_span = rec.get("inj_span") if rec.get("inj_trace") else None
        verdict = judge_trace(shape, inj_span, layout)
        judged += 1
        roots_hist[verdict.roots] += 1
        if shape.shared:
            shared_traces += 1
            shared_spans += shape.shared
        if inj_span:
            # Kept end to end: the trace found under the injected id holds every hop.
            kept[1] += 1
            under_injected = normalize_trace_id(str(rec["inj_trace"])) == tid
            kept[0] += int(under_injected and verdict.all_hops_present)
        links_ok[1] += 1
        links_ok[0] += int(verdict.links_ok)
        for hop in layout or ():
            c = completeness.setdefault(hop.service, [0, 0])
            c[1] += 1
            c[0] += int(shape.spans_of(hop.service) >= hop.spans)
        if verdict.entry_ok is False:
            defects["entry_parent_mismatch"].add(tid, example_limit)
        if verdict.broken:
            defects["broken_parent_links"].add(tid, example_limit)
        if verdict.roots > verdict.expected_roots:
            defects["extra_roots"].add(tid, example_limit)
        if verdict.flattened:
            defects["flattened_parent_links"].add(tid, example_limit)
        if verdict.missing_hops:
            defects["incomplete_hops"].add(tid, example_limit)
            candidates.append(_Candidate(tid, frozenset(verdict.missing_hops), dict(shape.windows_us)))

    fragments: dict[str, Any] = {"searched": hop_traces is not None}
    frag = defects["fragmented"]
    if hop_traces is None:
        frag_count: int | None = None
    else:
        first = hops[0].service if hops else ""
        orphans = find_orphans(hop_traces, known, first, run_id_tag=run_id_tag, run_id=run_id)
        matched, by_method = _attribute(orphans, candidates, by_xrid, slack_us)
        pairs: list[list[str]] = []  # [request's trace id, the fragment's trace id]
        for orphan in orphans:
            original = matched.get(orphan.trace_id)
            if original is None:
                continue
            frag.add(original, example_limit)
            if len(pairs) < example_limit:
                pairs.append([original, orphan.trace_id])
        matched_originals = set(matched.values())
        explained_by_fragments = sum(1 for c in candidates if c.trace_id in matched_originals)
        frag_count = frag.count
        fragments.update(
            orphans=len(orphans),
            attributed=len(matched),
            unattributed=len(orphans) - len(matched),
            attributed_by=by_method,
            orphans_with_run_tag=sum(1 for o in orphans if o.run_tagged),
            pairs=pairs,
            unattributed_examples=[o.trace_id for o in orphans if o.trace_id not in matched][:example_limit],
        )

    out_defects = {name: d.to_dict(name) for name, d in defects.items()}
    out_defects["fragmented"]["count"] = frag_count
    out_defects["fragmented"].update(fragments)
    out_defects["incomplete_hops"]["explained_by_fragmentation"] = explained_by_fragments
    return {
        "layout": [{"service": h.service, "spans": h.spans} for h in hops or ()],
        "layout_by_path": {
            path: [{"service": h.service, "spans": h.spans} for h in layout]
            for path, layout in sorted((hops_by_path or {}).items())
        },
        "traces": judged,
        "injected_kept_end_to_end": Proportion(kept[0], kept[1]).to_dict(),
        "parent_links_ok": Proportion(links_ok[0], links_ok[1]).to_dict(),
        "completeness": {svc: Proportion(k, n).to_dict() for svc, (k, n) in completeness.items()},
        "roots": {str(k): v for k, v in sorted(roots_hist.items())},
        "shared_span_context": {"traces": shared_traces, "spans": shared_spans},
        "defects": out_defects,
    }


def _attribute(
    orphans: Sequence[Orphan],
    candidates: Sequence[_Candidate],
    by_xrid: Mapping[str, str],
    slack_us: int,
) -> tuple[dict[str, str], dict[str, int]]:
    """Orphan trace id -> the request trace it was split from.

    First by x-request-id (exact). Then by time: a candidate is a trace of the run that lacks
    one of the orphan's services and whose window for the orphan's root service (the app's
    sidecar: the same clock) contains the orphan's root span. Under concurrency several windows
    contain a fragment, so this is a matching: greedy (orphans with fewest candidates first,
    each taking the window that started closest before it, as the app calls out right after
    the request reaches it), then augmenting paths, so the number attributed is the maximum
    possible. Which of two overlapping requests gets which fragment can still be swapped; the
    count is what the report relies on."""
    matched: dict[str, str] = {}
    used: set[str] = set()
    by_method = {"x_request_id": 0, "time": 0}
    for orphan in orphans:
        for xrid in sorted(orphan.request_ids):
            original = by_xrid.get(xrid)
            if original is not None and original not in used:
                matched[orphan.trace_id] = original
                used.add(original)
                by_method["x_request_id"] += 1
                break
    # Per service, candidate windows sorted by start: an orphan only needs the windows that
    # start between (its start - the widest window) and its start.
    index: dict[str, list[tuple[int, int, str, frozenset[str]]]] = defaultdict(list)
    widest: dict[str, int] = defaultdict(int)
    for cand in candidates:
        if cand.trace_id in used:
            continue
        for service, (lo, hi) in cand.windows_us.items():
            index[service].append((lo, hi, cand.trace_id, cand.missing))
            widest[service] = max(widest[service], hi - lo)
    for windows in index.values():
        windows.sort()
    options: dict[str, list[str]] = {}  # orphan -> candidate traces, preferred first
    for orphan in orphans:
        if orphan.trace_id in matched:
            continue
        windows = index.get(orphan.root_service, [])
        first = bisect.bisect_left(windows, (orphan.start_us - widest[orphan.root_service] - slack_us,))
        fits: list[tuple[int, str]] = []
        for lo, hi, trace_id, missing in windows[first:]:
            if lo - slack_us > orphan.start_us:
                break
            if missing & orphan.services and orphan.end_us <= hi + slack_us:
                fits.append((abs(orphan.start_us - lo), trace_id))
        if fits:
            options[orphan.trace_id] = [tid for _, tid in sorted(fits)]
    owner: dict[str, str] = {}  # candidate trace -> orphan
    for orphan_id in sorted(options, key=lambda o: (len(options[o]), o)):
        for tid in options[orphan_id]:
            if tid not in owner:
                owner[tid] = orphan_id
                break
    assigned = {o: t for t, o in owner.items()}
    for orphan_id in sorted(set(options) - set(assigned)):
        _augment(orphan_id, options, owner, assigned)
    for orphan_id, tid in assigned.items():
        matched[orphan_id] = tid
        by_method["time"] += 1
    return matched, by_method


def _augment(
    start: str, options: Mapping[str, list[str]], owner: dict[str, str], assigned: dict[str, str]
) -> bool:
    """One augmenting path (breadth first, iterative) from an unassigned orphan: reassign
    orphans along it so that one more is matched. Kuhn's step of maximum bipartite matching."""
    came_from: dict[str, tuple[str, str | None]] = {}  # candidate -> (orphan that reached it, prev)
    queue = [start]
    seen_orphans = {start}
    while queue:
        orphan_id = queue.pop(0)
        for tid in options[orphan_id]:
            if tid in came_from:
                continue
            came_from[tid] = (orphan_id, assigned.get(orphan_id))
            holder = owner.get(tid)
            if holder is None:
                # Walk back: each orphan on the path takes the candidate that reached it.
                cur: str | None = tid
                while cur is not None:
                    o, previous = came_from[cur]
                    owner[cur] = o
                    assigned[o] = cur
                    cur = previous
                return True
            if holder not in seen_orphans:
                seen_orphans.add(holder)
                queue.append(holder)
    return False
