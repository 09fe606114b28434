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
  in the run's time window (`loadgen.readback.search_hop_traces`: the I/O stays at the edge, this
  module only judges what it returned); an *orphan* is such a trace whose id the run never produced and that holds
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
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from loadgen.analysis.ledgerfold import TRI, LedgerFold, ObservationIndex, as_fold, unique_inverse
from loadgen.analysis.ledgerfold import mask_request_id as mask_request_id  # re-exported
from loadgen.analysis.observation import ExternalRef as ExternalRef  # re-exported
from loadgen.analysis.observation import TraceObservation, normalize_span_id, span_service
from loadgen.analysis.observation import TraceShape as TraceShape  # re-exported
from loadgen.analysis.stats import Tally
from loadgen.analysis.textcols import Bools, Ints, all_lower_hex
from loadgen.backends.base import FetchStatus
from loadgen.ledger import LedgerRow
from loadgen.mesh.hops import Hop as Hop  # re-exported
from loadgen.mesh.ids import normalize_trace_id

GUID_TAG = "guid:x-request-id"
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
    def defects(self) -> tuple[str, ...]:
        """The names of the defects (`EXPLANATIONS`) this verdict shows, but fragmentation."""
        return tuple(
            name
            for name, found in (
                ("entry_parent_mismatch", self.entry_ok is False),
                ("broken_parent_links", self.broken > 0),
                ("extra_roots", self.roots > self.expected_roots),
                ("flattened_parent_links", self.flattened > 0),
                ("incomplete_hops", bool(self.missing_hops)),
            )
            if found
        )

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
    inj = normalize_span_id(injected_span) if injected_span else None
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
        services = frozenset(span_service(s) for s in spans)
        if first_hop_service in services:
            continue
        ids = {normalize_span_id(s.get("id")) for s in spans}
        roots = [s for s in spans if not s.get("parentId") or normalize_span_id(s["parentId"]) not in ids]
        root = min(roots or spans, key=lambda s: int(s.get("timestamp") or 0))
        start = int(root.get("timestamp") or 0)
        orphans[tid] = Orphan(
            trace_id=tid,
            services=services,
            root_service=span_service(root),
            start_us=start,
            end_us=start + int(root.get("duration") or 0),
            request_ids=frozenset(
                mask_request_id(str(v)) for s in spans if (v := (s.get("tags") or {}).get(GUID_TAG))
            ),
            run_tagged=bool(run_id) and any((s.get("tags") or {}).get(run_id_tag) == run_id for s in spans),
        )
    return sorted(orphans.values(), key=lambda o: (o.start_us, o.trace_id))


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
        self.add_example(trace_id, limit)

    def add_example(self, trace_id: str, limit: int) -> None:
        if len(self.examples) < limit and trace_id not in self.examples:
            self.examples.append(trace_id)

    def to_dict(self, name: str) -> dict[str, Any]:
        return {"count": self.count, "examples": self.examples, "explanation": EXPLANATIONS[name]}


@dataclass
class _Candidate:
    """A request whose trace lacks a hop: it may have been split off (time attribution)."""

    trace_id: str
    missing: frozenset[str]
    windows_us: dict[str, tuple[int, int]]


@dataclass
class _Judgement:
    """The traces of a run judged one by one, tallied."""

    judged: int = 0
    defects: dict[str, _Defect] = field(default_factory=lambda: {name: _Defect() for name in EXPLANATIONS})
    kept: Tally = field(default_factory=Tally)  # injected trace id kept end to end
    links_ok: Tally = field(default_factory=Tally)
    completeness: dict[str, Tally] = field(default_factory=dict)  # service -> traces with its spans
    roots: Counter[int] = field(default_factory=Counter)
    shared_traces: int = 0
    shared_spans: int = 0
    candidates: list[_Candidate] = field(default_factory=list)  # traces lacking a hop

    def add(
        self, shape: TraceShape, verdict: TraceVerdict, layout: Sequence[Hop], kept: bool | None, n: int
    ) -> None:
        """`n` judged traces with equal shapes (`_verdict_key`) and verdicts; `kept`: None when
        nothing was injected, else whether the trace was found under the injected id."""
        self.judged += n
        self.roots[verdict.roots] += n
        if shape.shared:
            self.shared_traces += n
            self.shared_spans += shape.shared * n
        if kept is not None:
            # Kept end to end: the trace found under the injected id holds every hop.
            self.kept.add(kept and verdict.all_hops_present, n)
        self.links_ok.add(verdict.links_ok, n)
        for hop in layout:
            self.completeness.setdefault(hop.service, Tally()).add(
                shape.spans_of(hop.service) >= hop.spans, n
            )

    def add_defects(self, fold: LedgerFold, rows: Ints, names: Sequence[str], limit: int) -> None:
        """`rows` (request indexes, in ledger order) have the defects `names`; examples are
        their trace ids, in ledger order."""
        for name in names:
            defect = self.defects[name]
            defect.count += len(rows)
            for i in rows.tolist():
                if len(defect.examples) >= limit:
                    break
                defect.add_example(str(fold.trace_ids[i]), limit)


def _verdict_key(shape: TraceShape, inj: str | None, layout: Sequence[Hop] | None) -> tuple[Any, ...]:
    """What `judge_trace` reads of a trace, its injected span and its layout: traces with equal
    keys get equal verdicts. Span and link counts are shared between equal shapes (`TraceShape`),
    so they are keyed by identity; the references out of the trace by how they relate to `inj`."""
    refs = tuple(
        (r.service, r.kind, r.parent_id is None, r.parent_id == inj, r.shared_id == inj)
        for r in shape.external
    )
    return id(shape.spans), id(shape.links), shape.roots, shape.shared, refs, inj is None, id(layout)


class _Eligible(NamedTuple):
    """The requests `_judge_all` judges, and what it reads of each (arrays over them)."""

    rows: Ints  # request indexes, in ledger order
    codes: Ints  # facts codes
    observed: Ints  # index into ObservationIndex.distinct
    spans: list[Any]  # the injected span ids
    kept: Ints  # 0: nothing injected, 1/2: the injected trace id was not / was continued
    relation: Ints  # `_span_relations`


def _eligible(fold: LedgerFold, seen: ObservationIndex) -> _Eligible:
    """Every answered request whose trace the backend holds (FOUND, with a shape)."""
    found = FetchStatus.FOUND
    usable = np.array([o is not None and o.status is found and o.shape is not None for o in seen.distinct])
    answered = np.array([f.answered for f in fold.facts], dtype=np.bool_)
    continued = np.array([f.under_injected for f in fold.facts], dtype=np.bool_)
    rows = np.flatnonzero(usable.astype(np.bool_)[seen.index] & answered[fold.codes] & fold.traced)
    codes = fold.codes[rows].astype(np.int64)
    spans = (
        list(itemgetter(*rows.tolist())(fold.injected_spans))
        if len(rows) > 1
        else [fold.injected_spans[i] for i in rows.tolist()]
    )
    injected = np.fromiter(map(bool, spans), dtype=np.bool_, count=len(spans))
    # The client's span is in the trace only when the mesh continued the injected trace id
    # (not, e.g., B3 under Envoy's OpenTelemetry tracer): else one root is right.
    kept = np.where(injected, continued[codes].astype(np.int64) + 1, 0)
    observed = seen.index[rows]
    refs = [seen.distinct[i] for i in np.unique(observed).tolist()]
    relation = _span_relations(
        spans, kept == 2, [o.shape for o in refs if o is not None and o.shape is not None]
    )
    return _Eligible(rows, codes, observed, spans, kept, relation)


def _span_relations(spans: list[Any], used: Bools, shapes: Sequence[TraceShape]) -> Ints:
    """Per request, how its injected span (where `used`) relates to the references out of the
    traces (`ExternalRef`), all `judge_trace` reads of it: 0 not used, 1 equal to none of their
    ids, 2 + j equal to the j-th of them. Requests alike in this get equal verdicts."""
    ids = sorted({i for shape in shapes for r in shape.external for i in (r.parent_id, r.shared_id) if i})
    relation = used.astype(np.int64)
    if not ids or not used.any():
        return relation
    which = {span_id: j + 2 for j, span_id in enumerate(ids)}
    picked = [spans[i] for i in np.flatnonzero(used).tolist()]
    # 16 lowercase hex digits are already what `normalize_span_id` makes of them
    normalized = picked if all_lower_hex(picked, 16) else [normalize_span_id(s) for s in picked]
    relation[used] = np.fromiter(map(which.get, normalized, repeat(1)), dtype=np.int64, count=len(picked))
    return relation


def _judge_all(
    fold: LedgerFold,
    observations: Mapping[str, TraceObservation],
    hops: Sequence[Hop] | None,
    hops_by_path: Mapping[str, Sequence[Hop]],
    limit: int,
) -> _Judgement:
    """Judge the trace of every answered request the backend holds (FOUND, with a shape).
    Requests alike in their observation, facts and injected span (`_span_relations`) get equal
    verdicts: a verdict is worked out once per such group, in the order the groups first occur
    in the ledger, and their requests tallied at once."""
    out = _Judgement()
    seen = fold.observation_index(observations)
    e = _eligible(fold, seen)
    if not len(e.rows):
        return out
    width = int(e.relation.max()) + 1
    groups, index = unique_inverse(
        ((e.observed * len(fold.facts) + e.codes) * width + e.relation) * 3 + e.kept
    )
    counts = np.bincount(index, minlength=len(groups)).tolist()
    _, first = np.unique(index, return_index=True)
    layouts = [hops_by_path.get(f.path) or hops for f in fold.facts]
    judged: dict[tuple[Any, ...], TraceVerdict] = {}
    verdicts: list[tuple[TraceVerdict, TraceShape]] = [None] * len(groups)  # type: ignore[list-item]
    for g in np.argsort(first).tolist():
        r = int(first[g])
        shape = seen.distinct[int(e.observed[r])].shape  # type: ignore[union-attr]
        assert shape is not None
        layout = layouts[int(e.codes[r])]
        inj_span = e.spans[r] if e.relation[r] else None
        key = _verdict_key(shape, normalize_span_id(inj_span) if inj_span else None, layout)
        verdict = judged.get(key)
        if verdict is None:
            verdict = judged[key] = judge_trace(shape, inj_span, layout)
        out.add(shape, verdict, layout or (), TRI[int(e.kept[r])], counts[g])
        verdicts[g] = (verdict, shape)
    _add_defects(out, fold, e.rows, index, verdicts, limit)
    return out


def _add_defects(
    out: _Judgement,
    fold: LedgerFold,
    rows: Ints,
    index: Ints,
    verdicts: Sequence[tuple[TraceVerdict, TraceShape]],
    limit: int,
) -> None:
    """Each defect's requests (the judged `rows`, in groups `index` with `verdicts`), and the
    requests whose trace lacks a hop (`_Judgement.candidates`), in ledger order."""
    for name in EXPLANATIONS:
        has = np.array([name in v.defects for v, _ in verdicts], dtype=np.bool_)
        if has.any():
            out.add_defects(fold, rows[has[index]], (name,), limit)
    lacking = np.array([bool(v.missing_hops) for v, _ in verdicts], dtype=np.bool_)
    for i, g in zip(rows[lacking[index]].tolist(), index[lacking[index]].tolist(), strict=True):
        verdict, shape = verdicts[g]
        tid = str(fold.trace_ids[i])
        out.candidates.append(_Candidate(tid, frozenset(verdict.missing_hops), dict(shape.windows_us)))


def _app_request_ids(fold: LedgerFold, wanted: set[str]) -> dict[str, str]:
    """Masked x-request-id the app received -> the trace id of the (last) answered request that
    carried it, for the `wanted` ids only."""
    out: dict[str, str] = {}
    if wanted:
        for xrid, tid in zip(fold.app_request_ids.tolist(), fold.trace_ids, strict=True):
            if xrid is not None and tid is not None and (masked := mask_request_id(str(xrid))) in wanted:
                out[masked] = tid
    return out


def _fragments(
    fold: LedgerFold,
    observations: Mapping[str, TraceObservation],
    first_hop: str,
    hop_traces: Iterable[Sequence[Mapping[str, Any]]],
    judgement: _Judgement,
    *,
    run_id_tag: str,
    run_id: str,
    limit: int,
    slack_us: int,
) -> dict[str, Any]:
    """The searched hop traces' orphans attributed to the run's requests; counts them into the
    `fragmented` defect and returns its details."""
    known = set(observations)
    known.update(tid for tid in fold.trace_ids if tid is not None)
    orphans = find_orphans(hop_traces, known, first_hop, run_id_tag=run_id_tag, run_id=run_id)
    by_xrid = _app_request_ids(fold, {x for o in orphans for x in o.request_ids})
    matched, by_method = _attribute(orphans, judgement.candidates, by_xrid, slack_us)
    frag = judgement.defects["fragmented"]
    pairs: list[list[str]] = []  # [request's trace id, the fragment's trace id]
    for orphan in orphans:
        original = matched.get(orphan.trace_id)
        if original is None:
            continue
        frag.add(original, limit)
        if len(pairs) < limit:
            pairs.append([original, orphan.trace_id])
    matched_originals = set(matched.values())
    return {
        "explained": sum(1 for c in judgement.candidates if c.trace_id in matched_originals),
        "orphans": len(orphans),
        "attributed": len(matched),
        "unattributed": len(orphans) - len(matched),
        "attributed_by": by_method,
        "orphans_with_run_tag": sum(1 for o in orphans if o.run_tagged),
        "pairs": pairs,
        "unattributed_examples": [o.trace_id for o in orphans if o.trace_id not in matched][:limit],
    }


def _layout(hops: Sequence[Hop]) -> list[dict[str, Any]]:
    return [{"service": h.service, "spans": h.spans} for h in hops]


def fold_integrity(
    ledger: LedgerFold | Iterable[LedgerRow | Mapping[str, Any]],
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
    """The `integrity` section of summary.json (pure), from the ledger's fold (or its records).

    `hops`: the layout of a request (None: unknown, only config-free checks); `hops_by_path`
    overrides it per ledger `path` field. `hop_traces`: what `loadgen.readback.search_hop_traces`
    returned for the run's window (None: fragmentation not searched, its count is null).

    Judged: every request with a 200 whose trace the backend holds (status FOUND with a shape)."""
    fold = as_fold(ledger)
    judgement = _judge_all(fold, observations, hops, hops_by_path or {}, example_limit)
    fragments: dict[str, Any] = {"searched": hop_traces is not None}
    if hop_traces is not None:
        first = hops[0].service if hops else ""
        fragments.update(
            _fragments(
                fold, observations, first, hop_traces, judgement,
                run_id_tag=run_id_tag, run_id=run_id, limit=example_limit, slack_us=slack_us,
            )
        )  # fmt: skip
    explained = fragments.pop("explained", 0)
    defects = {name: d.to_dict(name) for name, d in judgement.defects.items()}
    defects["fragmented"]["count"] = judgement.defects["fragmented"].count if hop_traces is not None else None
    defects["fragmented"].update(fragments)
    defects["incomplete_hops"]["explained_by_fragmentation"] = explained
    return {
        "layout": _layout(hops or ()),
        "layout_by_path": {path: _layout(layout) for path, layout in sorted((hops_by_path or {}).items())},
        "traces": judgement.judged,
        "injected_kept_end_to_end": judgement.kept.proportion().to_dict(),
        "parent_links_ok": judgement.links_ok.proportion().to_dict(),
        "completeness": {svc: t.proportion().to_dict() for svc, t in judgement.completeness.items()},
        "roots": {str(k): v for k, v in sorted(judgement.roots.items())},
        "shared_span_context": {"traces": judgement.shared_traces, "spans": judgement.shared_spans},
        "defects": defects,
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
    matched = _by_request_id(orphans, by_xrid)
    by_method = {"x_request_id": len(matched), "time": 0}
    used = set(matched.values())
    options = _time_options(
        [o for o in orphans if o.trace_id not in matched],
        [c for c in candidates if c.trace_id not in used],
        slack_us,
    )
    for orphan_id, tid in _max_matching(options).items():
        matched[orphan_id] = tid
        by_method["time"] += 1
    return matched, by_method


def _by_request_id(orphans: Sequence[Orphan], by_xrid: Mapping[str, str]) -> dict[str, str]:
    """Orphan -> the request trace whose x-request-id one of its spans carries (each request
    trace taken once, orphans in order)."""
    matched: dict[str, str] = {}
    used: set[str] = set()
    for orphan in orphans:
        for xrid in sorted(orphan.request_ids):
            original = by_xrid.get(xrid)
            if original is not None and original not in used:
                matched[orphan.trace_id] = original
                used.add(original)
                break
    return matched


def _time_options(
    orphans: Sequence[Orphan], candidates: Sequence[_Candidate], slack_us: int
) -> dict[str, list[str]]:
    """Orphan -> the candidate traces whose window could hold it, preferred first (the window
    that started closest to the orphan's root span)."""
    # Per service, candidate windows sorted by start: an orphan only needs the windows that
    # start between (its start - the widest window) and its start.
    index: dict[str, list[tuple[int, int, str, frozenset[str]]]] = defaultdict(list)
    widest: dict[str, int] = defaultdict(int)
    for cand in candidates:
        for service, (lo, hi) in cand.windows_us.items():
            index[service].append((lo, hi, cand.trace_id, cand.missing))
            widest[service] = max(widest[service], hi - lo)
    for windows in index.values():
        windows.sort()
    options: dict[str, list[str]] = {}
    for orphan in orphans:
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
    return options


def _max_matching(options: Mapping[str, list[str]]) -> dict[str, str]:
    """Orphan -> candidate, as many as possible: greedy (fewest options first, each its
    preferred free one), then augmenting paths."""
    owner: dict[str, str] = {}  # candidate trace -> orphan
    for orphan_id in sorted(options, key=lambda o: (len(options[o]), o)):
        for tid in options[orphan_id]:
            if tid not in owner:
                owner[tid] = orphan_id
                break
    assigned = {o: t for t, o in owner.items()}
    for orphan_id in sorted(set(options) - set(assigned)):
        _augment(orphan_id, options, owner, assigned)
    return assigned


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
