"""What the backend holds for one trace, reduced to what the analyses need (pure, no I/O).

`TraceShape` is a trace's tree without the configuration (spans per service and kind, parent
links by service and kind, roots, references outside the trace, shared span context, each
service's time window): `loadgen.analysis.integrity` judges it against the hops a request
crosses. `TraceObservation` is one trace id's answer from the backend (status, span count,
services, run-tagged spans and the shape): `loadgen.analysis.reconcile` classifies requests by
it. Both are kept for every trace of a read-back and stored per trace in fetched.jsonl, so they
are small and share equal parts between traces.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import msgspec

from loadgen.backends.base import Fetched, FetchStatus

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


def _widen(windows: dict[str, list[int]], service: str, start: int, end: int) -> None:
    """`service`'s window [first start, last end] widened to [start, end] (first use: set)."""
    w = windows.get(service)
    if w is None:
        windows[service] = [start, end]
        return
    # What min() and max() keep: the earlier value when equal.
    if start < w[0]:
        w[0] = start
    if end > w[1]:
        w[1] = end


_Counts = tuple[tuple[tuple[str, str], int], ...]
_Links = tuple[tuple[tuple[str, str, str, str], int], ...]


def _canonical_counts(
    counts: _Counts, links: _Links
) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str, str, str], int]]:
    """The shared span counts and links of a trace from its (service, kind) counts and links in
    the order first seen. The same shape nearly always lists them in the same order, so that
    order is looked up first, without sorting."""
    return _canonical(("counts", counts, links), lambda: _sorted_counts(counts, links))


def _sorted_counts(
    counts: _Counts, links: _Links
) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str, str, str], int]]:
    span_counts = tuple(sorted(counts))
    link_counts = tuple(sorted(links))
    return (
        _canonical(("spans", span_counts), lambda: _nested_counts(span_counts)),
        _canonical(("links", link_counts), lambda: dict(link_counts)),
    )


def _nested_counts(items: Sequence[tuple[tuple[str, str], int]]) -> dict[str, dict[str, int]]:
    """((service, kind), n) pairs, sorted, as service -> kind -> n."""
    out: dict[str, dict[str, int]] = {}
    for (service, kind), n in items:
        out.setdefault(sys.intern(service), {})[sys.intern(kind)] = n
    return out


def span_service(span: Mapping[str, Any]) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "")


def _kind(span: Mapping[str, Any]) -> str:
    return str(span.get("kind") or "-")


def normalize_span_id(value: object) -> str:
    """Zipkin span ids are 16 lowercase hex; some writers drop leading zeros."""
    return str(value).strip().lower().zfill(16)


_Row = tuple[Any, str, str, str, str | None, bool, Any, Any]
"""A span as `TraceShape.from_spans` folds it: the span, its service, kind, normalized id,
normalized parentId (None when it has none), whether it is shared, its timestamp and duration."""
_Rows = tuple[list[_Row], dict[str, list[_Row]]]
"""The rows of a trace's spans, and the rows of each span id (spans without an id left out)."""
_NO_ID = normalize_span_id(None)  # the id `normalize_span_id` gives a span without one


def _rows(spans: Sequence[Mapping[str, Any]]) -> _Rows:
    """Every span's row, whatever its values (a span that is no mapping, or whose localEndpoint
    is not one, raises AttributeError)."""
    rows: list[_Row] = []
    by_id: dict[str, list[_Row]] = {}
    for s in spans:
        raw_id = s.get("id")
        parent = s.get("parentId")
        row = (
            s, span_service(s), _kind(s), normalize_span_id(raw_id),
            normalize_span_id(parent) if parent else None, bool(s.get("shared")),
            s.get("timestamp"), s.get("duration"),
        )  # fmt: skip
        rows.append(row)
        if raw_id is not None:
            by_id.setdefault(row[3], []).append(row)
    return rows, by_id


def _plain_rows(spans: Sequence[Any], run_id_tag: str, run_id: str) -> tuple[_Rows, int] | None:
    """`_rows(spans)` and the spans tagged `run_id_tag` = `run_id`, for spans in the form a
    JSON answer has (dicts; ids, parent ids, service names and kinds strings or absent; a
    localEndpoint and tags dicts or absent), in one pass without a call per value; None when a
    span is in any other form (then the general code reads them, with the same result)."""
    rows: list[_Row] = []
    by_id: dict[str, list[_Row]] = {}
    tagged = 0
    for s in spans:
        if type(s) is not dict:
            return None
        get = s.get
        endpoint, kind, raw_id, parent = get("localEndpoint"), get("kind"), get("id"), get("parentId")
        if endpoint and type(endpoint) is not dict:
            return None
        # `span_service`, `_kind`: a false value is "" / "-", a str itself, anything else odd.
        service = endpoint.get("serviceName") if endpoint else None
        if not service:
            service = ""
        if not kind:
            kind = "-"
        if type(service) is not str or type(kind) is not str or (parent and type(parent) is not str):
            return None
        if not (raw_id is None or type(raw_id) is str):
            return None
        tags = get("tags") if run_id else None
        if tags:
            if type(tags) is not dict:
                return None
            if tags.get(run_id_tag) == run_id:
                tagged += 1
        xid = _NO_ID if raw_id is None else raw_id.strip().lower().zfill(16)
        pid = parent.strip().lower().zfill(16) if parent else None
        row = (s, service, kind, xid, pid, bool(get("shared")), get("timestamp"), get("duration"))
        rows.append(row)
        if raw_id is not None:
            same_id = by_id.get(xid)
            if same_id is None:
                by_id[xid] = [row]
            else:
                same_id.append(row)
    return (rows, by_id), tagged


class RunTag(msgspec.Struct, gc=False):
    """A span's tags as a typed answer holds them: only the run-id tag's value (see
    `span_fields_type`); the struct, never decoded itself, names it `value`."""

    value: Any = None


class Endpoint(msgspec.Struct, gc=False):
    """A span's localEndpoint as a typed answer holds it."""

    serviceName: str | None = None


class SpanFields(msgspec.Struct, gc=False):
    """The values of a Zipkin v2 span a `TraceObservation` is made of, for an answer decoded by
    msgspec straight into them (loadgen.backends.zipkin): strings, integers, booleans or absent,
    an object or absent for localEndpoint and tags; whatever else a span holds is skipped. An
    answer with a value of any other type is not decoded this way (its spans are read as dicts,
    `from_fetched`). Decode with `span_fields_type(run_id_tag)`: its `tags` hold that tag."""

    traceId: str | None = None
    id: str | None = None
    parentId: str | None = None
    kind: str | None = None
    localEndpoint: Endpoint | None = None
    shared: bool | None = None
    timestamp: int | None = None
    duration: int | None = None
    tags: RunTag | None = None


@cache
def span_fields_type(run_id_tag: str) -> type[SpanFields]:
    """`SpanFields` whose `tags.value` is the tag `run_id_tag` (one type per tag name)."""
    tag = msgspec.defstruct(
        "RunTag", [("value", Any, msgspec.field(default=None, name=run_id_tag))], bases=(RunTag,), gc=False
    )
    span = msgspec.defstruct("SpanFields", [("tags", tag | None, None)], bases=(SpanFields,), gc=False)
    assert issubclass(span, SpanFields)
    return span


def _typed_rows(spans: Sequence[SpanFields], run_id: str) -> tuple[_Rows, int]:
    """What `_plain_rows` gives for the same spans as dicts (the run-id tag's value in
    `tags.value`), with attribute reads instead of lookups and no type checks: the decoder
    checked every type."""
    rows: list[_Row] = []
    by_id: dict[str, list[_Row]] = {}
    tagged = 0
    for s in spans:
        endpoint, kind, raw_id, parent = s.localEndpoint, s.kind, s.id, s.parentId
        service = endpoint.serviceName if endpoint is not None else None
        if not service:
            service = ""
        if not kind:
            kind = "-"
        if run_id:
            tags = s.tags
            if tags is not None and tags.value == run_id:
                tagged += 1
        xid = _NO_ID if raw_id is None else raw_id.strip().lower().zfill(16)
        pid = parent.strip().lower().zfill(16) if parent else None
        row = (s, service, kind, xid, pid, bool(s.shared), s.timestamp, s.duration)
        rows.append(row)
        if raw_id is not None:
            same_id = by_id.get(xid)
            if same_id is None:
                by_id[xid] = [row]
            else:
                same_id.append(row)
    return (rows, by_id), tagged


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
        # One row per span, its values read once: this runs for every trace of a read-back.
        plain = _plain_rows(spans, "", "")
        return cls._of_rows(*(plain[0] if plain is not None else _rows(spans)))

    @classmethod
    def _of_rows(cls, rows: list[_Row], by_id: Mapping[str, list[_Row]]) -> TraceShape:
        counts: dict[tuple[str, str], int] = {}
        links: dict[tuple[str, str, str, str], int] = {}
        external: list[ExternalRef] = []
        windows: dict[str, list[int]] = {}
        roots = shared = 0
        for row in rows:
            _, service, kind, xid, pid, is_shared, ts, dur = row
            counts[service, kind] = counts.get((service, kind), 0) + 1
            if isinstance(ts, int):
                _widen(windows, service, ts, ts + (dur if isinstance(dur, int) else 0))
            shared += is_shared
            parent = _effective_parent(row, by_id) if pid is not None or is_shared else None
            if parent is not None:
                link = (service, kind, parent[1], parent[2])
                links[link] = links.get(link, 0) + 1
                continue
            if pid is None:
                roots += 1
            if (pid is not None or is_shared) and len(external) < EXTERNAL_LIMIT:
                external.append(ExternalRef(sys.intern(service), kind, pid, xid if is_shared else None))
        span_counts, link_counts = _canonical_counts(tuple(counts.items()), tuple(links.items()))
        return cls(
            spans=span_counts,
            links=link_counts,
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


def _effective_parent(row: _Row, by_id: Mapping[str, list[_Row]]) -> _Row | None:
    """The row of the span `row` hangs under. A shared span (server half) hangs under its client
    half (same id); otherwise the span named by parentId. With shared spans, one id names two
    spans (client half and server half): a child of the same service as the server half was
    started by that proxy after receiving the request, so it hangs under the server half,
    anything else under the client half."""
    x, service, _, xid, pid, is_shared, _, _ = row
    if is_shared:
        for r in by_id.get(xid, ()):
            if r[0] is not x and not r[5]:
                return r
    if pid is None:
        return None
    first = unshared = None
    for r in by_id.get(pid, ()):
        if r[0] is x:
            continue
        if r[1] == service:
            return r
        first = first or r
        unshared = unshared or (None if r[5] else r)
    return unshared or first


@dataclass(frozen=True, slots=True)
class TraceObservation:
    """What the backend holds for one trace id, reduced to what reconciliation needs (small
    enough to keep for every trace of a read-back, and to store per trace in the run folder for
    `loadgen verify`/`report` later). No span is kept: `loadgen.readback` makes it from each
    trace's spans as soon as they are decoded."""

    status: FetchStatus
    span_count: int = 0
    services: tuple[str, ...] = ()
    run_tagged: int = 0  # spans carrying the run-id tag with this run's id
    error: str | None = None
    # The trace's tree reduced for the integrity fold (loadgen.analysis.integrity); None when not found.
    shape: TraceShape | None = None
    # The backend said the spans are not all of the trace (Fetched.partial): never complete.
    partial: bool = False

    @classmethod
    def from_fetched(cls, fetched: Fetched, run_id_tag: str = "", run_id: str = "") -> TraceObservation:
        spans = fetched.spans
        if not spans:
            return cls(fetched.status, 0, (), 0, fetched.error, None)
        plain = _plain_rows(spans, run_id_tag, run_id)  # one pass for the common form
        if plain is not None:
            rows, tagged = plain
        else:
            try:
                tagged = sum(1 for s in spans if run_id and (s.get("tags") or {}).get(run_id_tag) == run_id)
                rows = _rows(spans)
            except (AttributeError, TypeError, ValueError) as exc:
                # A span whose endpoint or tags is not an object: the answer is not Zipkin v2
                # spans, so it says nothing of the trace (unknown, never found or missing).
                return cls(
                    FetchStatus.ERROR, error=f"the backend answered spans not in Zipkin v2 form ({exc})"
                )
        shape = TraceShape._of_rows(*rows)  # its services are the spans' local services
        return cls(
            fetched.status,
            len(spans),
            shape.services(),
            tagged,
            fetched.error,
            shape,
            fetched.partial,
        )

    @classmethod
    def from_span_fields(cls, spans: Sequence[SpanFields], run_id: str = "") -> TraceObservation:
        """`from_fetched(Fetched(FOUND, spans), run_id_tag, run_id)` for the spans of one trace
        decoded as `span_fields_type(run_id_tag)` (at least one)."""
        (rows, by_id), tagged = _typed_rows(spans, run_id)
        shape = TraceShape._of_rows(rows, by_id)
        return cls(FetchStatus.FOUND, len(spans), shape.services(), tagged, None, shape, False)

    @property
    def present(self) -> bool:
        """The backend answered and holds spans of the trace."""
        return self.status is FetchStatus.FOUND and self.span_count > 0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "status": self.status.value,
            "spans": self.span_count,
            "services": list(self.services),
            "run_tagged": self.run_tagged,
            "error": self.error,
            "shape": self.shape.to_dict() if self.shape is not None else None,
        }
        if self.partial:
            out["partial"] = True
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TraceObservation:
        shape = d.get("shape")
        return cls(
            FetchStatus(d["status"]),
            int(d.get("spans", 0)),
            tuple(d.get("services", ())),
            int(d.get("run_tagged", 0)),
            d.get("error"),
            TraceShape.from_dict(shape) if shape else None,
            bool(d.get("partial", False)),
        )


@dataclass(frozen=True)
class ObserveTrace:
    """The reduce of a read-back (`TraceBackend.fetch_reduced`): an answer -> its
    TraceObservation, counting the spans tagged `run_id_tag` = `run_id`. A reader that knows
    this reduce may make the observations straight from an answer's bytes
    (`TraceObservation.from_span_fields`), with the same result."""

    run_id_tag: str = ""
    run_id: str = ""

    def __call__(self, fetched: Fetched) -> TraceObservation:
        return TraceObservation.from_fetched(fetched, self.run_id_tag, self.run_id)
