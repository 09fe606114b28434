"""The read-back's reduction as it was before issue 15 goal 3 made it faster, kept verbatim as
the reference the faster code is compared with (tests/unit/test_readback_fast.py): grouping a
`/traceMany` answer's spans under the requested ids (`assign`), and a trace's spans reduced to
its `TraceObservation` (`from_fetched`, `TraceShape.from_spans`). It builds the production
classes, so its results compare with `==`; its span counts and links are built anew per trace
(the production code shares equal ones), which equality does not see."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from loadgen.analysis.observation import EXTERNAL_LIMIT, ExternalRef, TraceObservation, TraceShape
from loadgen.backends.base import Fetched, FetchStatus, Span
from loadgen.mesh.ids import normalize_trace_id


def assign(ids: Sequence[str], spans: Iterable[Any]) -> dict[str, Fetched]:
    requested = set(ids)
    by_low_half: dict[str, list[str]] = {}
    for tid in ids:
        if len(tid) == 32:
            by_low_half.setdefault(tid[16:], []).append(tid)
    grouped: dict[str, list[Span]] = {tid: [] for tid in ids}
    for span in spans:
        raw = span.get("traceId") if isinstance(span, dict) else None
        if not isinstance(raw, str):
            continue
        got = normalize_trace_id(raw)
        if got in requested:
            targets = [got]
        elif len(got) == 32 and got[16:] in requested:
            targets = [got[16:]]
        else:
            targets = by_low_half.get(got, [])
        for target in targets:
            grouped[target].append(span)
    return {
        tid: Fetched(FetchStatus.FOUND, spans=tuple(found)) if found else Fetched(FetchStatus.MISSING)
        for tid, found in grouped.items()
    }


def _nested_counts(items: Sequence[tuple[tuple[str, str], int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (service, kind), n in items:
        out.setdefault(sys.intern(service), {})[sys.intern(kind)] = n
    return out


def span_service(span: Mapping[str, Any]) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "")


def _kind(span: Mapping[str, Any]) -> str:
    return str(span.get("kind") or "-")


_Row = tuple[Mapping[str, Any], str, str, str]


def normalize_span_id(value: object) -> str:
    return str(value).strip().lower().zfill(16)


def shape_from_spans(spans: Sequence[Mapping[str, Any]]) -> TraceShape:
    rows: list[_Row] = []
    by_id: dict[str, list[_Row]] = defaultdict(list)
    for s in spans:
        raw_id = s.get("id")
        row = (s, span_service(s), _kind(s), normalize_span_id(raw_id))
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
        pid = normalize_span_id(x["parentId"]) if x.get("parentId") else None
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
    return TraceShape(
        spans=_nested_counts(span_counts),
        links=dict(link_counts),
        roots=roots,
        external=tuple(external),
        shared=shared,
        windows_us={sys.intern(svc): (w[0], w[1]) for svc, w in sorted(windows.items())},
    )


def _effective_parent(
    row: _Row, pid: str | None, is_shared: bool, by_id: Mapping[str, list[_Row]]
) -> _Row | None:
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


def from_fetched(fetched: Fetched, run_id_tag: str = "", run_id: str = "") -> TraceObservation:
    if not fetched.spans:
        return TraceObservation(fetched.status, 0, (), 0, fetched.error, None)
    try:
        tagged = sum(1 for s in fetched.spans if run_id and (s.get("tags") or {}).get(run_id_tag) == run_id)
        shape = shape_from_spans(fetched.spans)
    except (AttributeError, TypeError, ValueError) as exc:
        # The one change since: where this raised out of the read-back, the trace is ERROR.
        return TraceObservation(
            FetchStatus.ERROR, error=f"the backend answered spans not in Zipkin v2 form ({exc})"
        )
    return TraceObservation(
        fetched.status,
        len(fetched.spans),
        tuple(sorted(n for n in shape.spans if n)),
        tagged,
        fetched.error,
        shape,
        fetched.partial,
    )
