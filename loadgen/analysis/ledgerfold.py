"""One pass over the ledger: the facts of every request that the analyses need, kept as columns (pure).

A 1M-request ledger is ~360 MiB of JSON. The run reads it once, as `fold_ledger(read_rows(path))`
(`loadgen.ledger.read_rows` is the I/O, at the edge), and every analysis runs on the fold and the
backend's observations afterwards: `reconcile_mesh`, `windows_summary`, `estimate_from_tags`,
`fold_integrity`, the ids the read-back queries. Per request the fold keeps, in ledger order,

    a facts code   the request's `RequestFacts` (mode, path, answered, the upstream's decision,
                   what became of the injected trace id and of the x-request-id, Envoy's rule's
                   prediction): requests with equal facts share one (a numpy int32 column)
    trace id       what the backend is asked for (`trace_id_of`), None when there is none
    start          epoch s, NaN when the record has no usable time (a float64 column)
    injected ids   the injected trace id (normalized) and span id, the x-request-id the app
                   received (kept as packed bytes, `textcols.TextColumn`): what the tag
                   estimate and the integrity fold match by

and folds as it reads what needs no observation: latencies of answered requests per mode,
failures by (status, error), the first and last request times, the rids of the requests whose
decision Envoy's rule mispredicted (examples).

Columnar: the fold takes the ledger in blocks of rows (`loadgen.ledger.LedgerRows.blocks`) and
works out each fact for a whole block at once with numpy (`loadgen.analysis.textcols` for the
ids), so the analyses count requests with np.unique / masks instead of a Python step per
request. A request whose fields are not what a LedgerWriter writes (a record of other types, an
id not already in normal form, an empty, non-ASCII or overlong id) is folded by the
per-request path instead (`_Folder.one`, the rules applied to one record), with the same result;
`fold_per_request` folds every request that way (the reference the columnar path is tested
against). A time or latency that is not a finite number counts as absent.

`RequestFacts` and the functions that derive a fact from a record's fields (`trace_id_of`,
`decision_of`, `prediction_of`) are the one home of those rules; `reconcile.ledger_trace_id` and
`reconcile.upstream_decision` apply them to a record dict.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import attrgetter
from typing import Any, NamedTuple, cast

import msgspec
import numpy as np
import numpy.typing as npt

from loadgen.analysis.observation import TraceObservation
from loadgen.analysis.textcols import (
    Bools,
    Ints,
    Objects,
    Packed,
    TextColumn,
    char_at,
    envoy_sampled,
    normal_trace_ids,
    not_none,
    objects,
    pack,
    packed_normal_trace_ids,
    same_request_ids,
    text_matrix,
    where_none,
)
from loadgen.ledger import LedgerRow, LedgerRows
from loadgen.mesh.echo import UpstreamView, same_request_id
from loadgen.mesh.ids import is_hex_id, normalize_trace_id
from loadgen.mesh.rule import envoy_random_sampled, random_sampler
from loadgen.mesh.tracer import TracerFamily

#: How much of a failure's error text `requests.top_errors` keeps.
ERROR_TEXT_LIMIT = 200
#: Mispredicted requests whose rid is kept per mode (reconcile's examples take the first few).
EXAMPLES_KEPT = 64
#: Rows per block when the fold is given rows one by one (a list, record dicts).
BLOCK_ROWS = 8192

Codes = npt.NDArray[np.int32]
Floats = npt.NDArray[np.float64]
Tri = npt.NDArray[np.int8]  # 0: None, 1: False, 2: True
TRI: tuple[bool | None, bool | None, bool | None] = (None, False, True)
SOURCES = ("", "crafted", "echoed")  # `RequestFacts.prediction_source` by its code


def trace_id_of(up_trace: object, inj_trace: object) -> str | None:
    """The trace id a request ended up in: what the upstream saw, else what we injected. None
    for ids that are not 16/32 hex digits (a mode sends unparsable ids on purpose; no backend
    can be asked for them)."""
    tid = up_trace or inj_trace
    if not tid:
        return None
    norm = normalize_trace_id(str(tid))
    return norm if is_hex_id(norm) else None


def decision_of(
    status: object, up_flag: Any, up_xrid: Any, tracer: TracerFamily = TracerFamily.ZIPKIN
) -> bool | None:
    """The decision the upstream saw (the tracer's echoed flag: B3 for zipkin, traceparent for
    opentelemetry; zipkin falls back to Envoy's mark in the echoed x-request-id); None for a
    request without an answer."""
    if status != 200:
        return None
    return UpstreamView(None, None, up_flag, up_xrid, tracer).sampled


def prediction_of(up_xrid: object, request_id_kept: bool | None, percent: float) -> tuple[bool | None, str]:
    """Envoy's random-sampling answer for a request and where it came from: "crafted" when the
    upstream saw the x-request-id we sent (`request_id_kept`), so the decision was known before
    sending; "echoed" when the gateway made its own id (predicted from the echo). Either way it
    is the rule on the echoed id: a kept id is the sent one but for character 14, which the rule
    does not read."""
    if not up_xrid:
        return None, ""
    return envoy_random_sampled(str(up_xrid), percent), "crafted" if request_id_kept else "echoed"


def error_key(status: object, error: object) -> tuple[int, str] | None:
    """(HTTP status, error text) of a failed request, None for an answered one. Failed means a
    status other than 200 (as `requests.errors` counts); status 0 is "no response"."""
    if status == 200:
        return None
    code = status if isinstance(status, int) and not isinstance(status, bool) else 0
    return code, str(error or "")[:ERROR_TEXT_LIMIT]


def mask_request_id(xrid: str) -> str:
    """x-request-id without character 14, where Envoy writes its trace decision (so the id an
    app received and the one its sidecar saw on the way out compare equal)."""
    x = xrid.strip().lower()
    return x[:14] + x[15:] if len(x) > 14 else x


def path_of(path: object) -> str:
    """A ledger `path` without its query string (what a layout is chosen by)."""
    return str(path or "").split("?", 1)[0]


class RequestFacts(NamedTuple):
    """What the analyses know of a request, apart from its ids, time and latency."""

    mode: str
    path: str
    answered: bool  # status 200
    decided: bool | None  # `decision_of`
    injected: bool  # a trace id was injected
    injected_hex: bool  # ... and it is 16/32 hex digits once normalized
    upstream_trace: bool  # the upstream echoed a trace id
    trace_kept: bool  # the upstream saw the injected trace id
    under_injected: bool  # the request's trace id is the injected one
    request_id_kept: bool | None  # the upstream saw our x-request-id; None: not both known
    predicted: bool | None  # `prediction_of` at the fold's percent (None: no prediction)
    prediction_source: str  # "crafted", "echoed" or ""

    @property
    def request_id_replaced(self) -> bool:
        return self.request_id_kept is False


def _tri(value: bool | None) -> int:
    return 0 if value is None else 2 if value else 1


@dataclass(frozen=True)
class ObservationIndex:
    """Each request's observation (`LedgerFold.observation_index`): the distinct observation
    objects (None: nothing held, or no trace id) and, per request, its index among them."""

    observations: Mapping[str, TraceObservation]
    size: int  # len(observations) when indexed
    distinct: list[TraceObservation | None]
    index: npt.NDArray[np.intp]


@dataclass
class LedgerFold:
    """Every request of a ledger, in ledger order, as compact columns (see the module doc)."""

    percent: float | None  # the sampling percentage predictions were made at (None: none made)
    tracer: TracerFamily = TracerFamily.ZIPKIN  # whose flag `up_flag` is (`decision_of`)
    facts: list[RequestFacts] = field(default_factory=list)  # distinct facts; `codes` index them
    codes: Codes = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    trace_ids: list[str | None] = field(default_factory=list)
    traced: Bools = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))  # trace id not None
    starts: Floats = field(default_factory=lambda: np.zeros(0))  # NaN: no usable time
    injected_ids: list[str | None] = field(default_factory=list)  # normalized injected trace id
    injected_spans: list[Any] = field(default_factory=list)  # with an injected trace id only
    #: The echoed x-request-id of answered requests with a trace id (else None), as bytes:
    #: read by the fragment search only (`tolist()`).
    app_request_ids: TextColumn = field(default_factory=TextColumn)
    latencies_ms: dict[str, Floats] = field(default_factory=dict)  # per mode, answered only
    errors: Counter[tuple[int, str]] = field(default_factory=Counter)  # `error_key` -> requests
    mispredicted_rids: dict[int, str] = field(default_factory=dict)  # request index -> rid
    first_ts: float | None = None  # the first request's start (a record with a non-zero time)
    last_ts: float = 0.0  # the latest end of such a request (0: none)
    traced_last_end: float = 0.0  # the latest end of a request with a trace id (0: none)
    #: What the analyses derived from the fold and keep for the next analysis of the same
    #: read-back (`reconcile.observe`: each request's outcome).
    derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.codes)

    def requests(self) -> Iterator[tuple[RequestFacts, str | None]]:
        """(facts, trace id) per request, in ledger order."""
        facts = self.facts
        return ((facts[code], tid) for code, tid in zip(self.codes.tolist(), self.trace_ids, strict=True))

    def observation_index(self, observations: Mapping[str, TraceObservation]) -> ObservationIndex:
        """What the backend holds for each request's trace, as an index into the distinct
        observation objects: once per read-back (kept for the same observations object of the
        same size, those of a finished read-back)."""
        last = self.derived.get("observation_index")
        if (
            isinstance(last, ObservationIndex)
            and last.observations is observations
            and last.size == len(observations)
        ):
            return last
        get = cast(Callable[[str | None], TraceObservation | None], observations.get)
        found = list(map(get, self.trace_ids))
        ids = np.fromiter(map(id, found), dtype=np.uint64, count=len(found))
        _, first, index = np.unique(ids, return_index=True, return_inverse=True)
        out = ObservationIndex(observations, len(observations), [found[i] for i in first.tolist()], index)
        self.derived["observation_index"] = out
        return out


class _One(NamedTuple):
    """One request folded by the per-request path."""

    facts: RequestFacts
    tid: str | None
    inj_id: str | None
    span: Any
    app_xrid: Any


@dataclass
class _Columns:
    """A block's fields, one list each, in row order; `odd`: rows the per-request path folds."""

    rows: Sequence[LedgerRow]
    mode: list[Any]
    path: list[Any]
    ts: list[float | None]
    latency: list[float | None]
    status: list[int | None]  # None for a record dict's (see `answered`)
    inj: list[str | None]
    span: list[Any]
    up: list[str | None]
    flag: list[Any]
    xrid: list[str | None]
    sent: list[str | None]
    odd: Bools

    @classmethod
    def of(cls, rows: Sequence[LedgerRow], records: Sequence[int], all_odd: bool) -> _Columns:
        """`records`: the rows made from record dicts (`_row_of`), always odd."""
        odd = np.full(len(rows), all_odd, dtype=np.bool_)
        odd[list(records)] = True
        flag, status = [r.up_flag for r in rows], [r.status for r in rows]
        for i in records:
            flag[i] = status[i] = None  # any type: only the per-request path reads them
        return cls(
            rows, [r.mode for r in rows], [r.path for r in rows], [r.ts for r in rows],
            [r.latency_ms for r in rows], status,
            [r.inj_trace for r in rows], [r.inj_span for r in rows], [r.up_trace for r in rows], flag,
            [r.up_xrid for r in rows], [r.xrid_sent for r in rows], odd,
        )  # fmt: skip


def unique_inverse(keys: Ints) -> tuple[Ints, Ints]:
    """`np.unique(keys, return_inverse=True)` of non-negative keys, by a table instead of a sort
    when they are small."""
    top = int(keys.max()) + 1 if len(keys) else 0
    if top > max(1 << 16, 4 * len(keys)):
        distinct, index = np.unique(keys, return_inverse=True)
        return distinct, index.reshape(-1)
    seen = np.zeros(top, dtype=np.bool_)
    seen[keys] = True
    distinct = np.flatnonzero(seen)
    lookup = np.zeros(top, dtype=np.int64)
    lookup[distinct] = np.arange(len(distinct))
    return distinct, lookup[keys]


class _Interner:
    """Small integer codes for the values of a column, kept across blocks: equal `name(value)`s
    share a code, `names` lists them by code."""

    def __init__(self, name: Callable[[Any], Any]) -> None:
        self.name = name
        self.code_of: dict[Any, int] = {}
        self.names: list[Any] = []
        self._named: dict[Any, int] = {}

    def codes(self, values: list[Any]) -> Ints:
        if values and values.count(values[0]) == len(values):  # one value (all None, say)
            return np.full(len(values), self._code(values[0]), dtype=np.int64)
        codes = np.fromiter(map(self.code_of.get, values, repeat(-1)), dtype=np.int64, count=len(values))
        for i in np.flatnonzero(codes < 0).tolist():  # values not seen before
            codes[i] = self._code(values[i])
        return codes

    def _code(self, value: Any) -> int:
        code = self.code_of.get(value)
        if code is None:
            code = self.code_of[value] = self._named.setdefault(self.name(value), len(self._named))
            if code == len(self.names):
                self.names.append(self.name(value))
        return code


class _Ids(NamedTuple):
    tid: list[str | None]
    inj_id: list[str | None]
    has_up: Bools
    has_inj: Bools
    kept: Bools  # the upstream saw the injected trace id
    under: Bools  # the request's trace id is the injected one


def _mark_odd_ids(c: _Columns, ids: list[str | None], present: Bools) -> None:
    """Mark odd the rows whose id is not None nor already in normal form."""
    _mark_odd_ids_of(c.odd, ids, present)


def _mark_odd_ids_of(odd: Bools, ids: list[str | None], present: Bools) -> None:
    packed = pack(ids, present)
    if packed is None:
        rows, lengths, exact = text_matrix(ids, 32)
        odd |= present & ~(exact & normal_trace_ids(rows, lengths))
    else:
        odd[present] |= ~packed_normal_trace_ids(packed)


def _ids(c: _Columns) -> _Ids:
    """The trace ids of a block's rows whose ids are None or already normal (marks the others
    odd): such an id is its own `normalize_trace_id` and hex, so the rules reduce to comparisons."""
    up, inj = objects(c.up), objects(c.inj)
    has_up, has_inj = not_none(up), not_none(inj)
    same = has_up & has_inj & np.equal(up, inj).astype(np.bool_)
    _mark_odd_ids(c, c.up, has_up)
    other = has_inj & ~same  # an injected id equal to the upstream's is checked with it
    if other.any():
        odd = c.odd[other]
        _mark_odd_ids_of(odd, inj[other].tolist(), np.ones(len(odd), dtype=np.bool_))
        c.odd[other] = odd
    under = has_inj & (~has_up | same)
    tid = np.where(has_up, up, inj)
    return _Ids(tid.tolist(), np.where(under, tid, inj).tolist(), has_up, has_inj, same, under)


class _Decisions(NamedTuple):
    decided: Tri
    kept_id: Tri  # the upstream saw our x-request-id
    predicted: Tri
    source: npt.NDArray[np.int8]  # SOURCES index
    has_xrid: Bools
    xrids: Objects
    packed: Packed | None  # the x-request-ids `has_xrid`, when they pack


class _Folder:
    """Folds blocks of rows into a LedgerFold (see the module doc)."""

    def __init__(self, fold: LedgerFold, *, all_odd: bool = False) -> None:
        self.fold = fold
        self.all_odd = all_odd
        self.sampled = None if fold.percent is None else random_sampler(fold.percent)
        self.code_of: dict[RequestFacts, int] = {}
        self.mispredicted: Counter[str] = Counter()
        self.codes: list[Codes] = []
        self.traced: list[Bools] = []
        self.starts: list[Floats] = []
        self.latencies: dict[str, list[Floats]] = {}
        self.count = 0  # rows folded before the block being folded
        self.modes = _Interner(lambda m: "None" if m is None else str(m))
        self.paths = _Interner(path_of)
        self.flags = _Interner(lambda f: f)

    def code(self, facts: RequestFacts) -> int:
        code = self.code_of.get(facts)
        if code is None:
            code = self.code_of[facts] = len(self.fold.facts)
            self.fold.facts.append(facts)
        return code

    def one(self, r: LedgerRow) -> _One:
        """The per-request path: one row, its values of any type but `mode`, `path`, `ts`,
        `latency_ms` and the ids (`_row_of`)."""
        status, inj, up, echoed, sent = r.status, r.inj_trace, r.up_trace, r.up_xrid, r.xrid_sent
        tid = trace_id_of(up, inj)
        inj_id = None if not inj else tid if inj == tid else normalize_trace_id(str(inj))
        answered = status == 200
        decided = decision_of(status, r.up_flag, echoed, self.fold.tracer)
        kept_id = same_request_id(str(sent), str(echoed)) if sent and echoed else None
        if self.sampled is not None and decided is not None and echoed:
            predicted: bool | None = self.sampled(str(echoed))
            source = "crafted" if kept_id else "echoed"  # the rule does not read char 14: same answer
        else:
            predicted, source = None, ""
        injected = inj_id is not None
        facts = RequestFacts(
            "None" if r.mode is None else str(r.mode), path_of(r.path), answered, decided, injected,
            injected and is_hex_id(str(inj_id)), bool(up),
            bool(up) and injected and (tid if tid is not None else normalize_trace_id(str(up))) == inj_id,
            injected and inj_id == tid, kept_id, predicted, source,
        )  # fmt: skip
        app = echoed if echoed and tid is not None and answered else None
        return _One(facts, tid, inj_id, r.inj_span if inj else None, app)

    def add(self, rows: Sequence[LedgerRow | Mapping[str, Any]]) -> None:
        """Fold a block of rows (LedgerRow structs or record dicts), in ledger order."""
        if set(map(type, rows)) <= {LedgerRow}:
            typed: Sequence[LedgerRow] = rows  # type: ignore[assignment]
            records: list[int] = []
        else:
            typed, records = _typed_rows(rows)
        c = _Columns.of(typed, records, self.all_odd)
        answered = np.array(c.status, dtype=np.float64) == 200  # odd rows: set below
        ids = _ids(c)
        dec = self._decisions(c, answered)
        modes, mode_names = self.modes.codes(c.mode), self.modes.names
        paths, path_names = self.paths.codes(c.path), self.paths.names
        codes = self._codes(c, ids, dec, answered, (modes, mode_names, paths, path_names))
        traced = ids.has_up | ids.has_inj
        spans = where_none(ids.has_inj, objects(c.span))
        apps: dict[int, Any] = {}
        for i in np.flatnonzero(c.odd).tolist():
            one = self.one(typed[i])
            codes[i] = self.code(one.facts)
            ids.tid[i], ids.inj_id[i], spans[i], apps[i] = one.tid, one.inj_id, one.span, one.app_xrid
            traced[i], answered[i] = one.tid is not None, one.facts.answered
            dec.decided[i], dec.predicted[i] = _tri(one.facts.decided), _tri(one.facts.predicted)
        self._times(c, answered, traced, modes, mode_names)
        self._failures(c, answered)
        self._mispredicted(c, dec, modes, mode_names)
        fold = self.fold
        fold.trace_ids += ids.tid
        fold.injected_ids += ids.inj_id
        fold.injected_spans += spans
        keep = dec.has_xrid & traced & answered
        fold.app_request_ids.append(keep, dec.has_xrid, dec.packed, dec.xrids, apps)
        self.codes.append(codes)
        self.traced.append(traced)
        self.count += len(codes)

    def _decisions(self, c: _Columns, answered: Bools) -> _Decisions:
        """The upstream's decision, whether it saw our x-request-id, Envoy's rule's prediction
        of a block's rows (marks odd the rows whose x-request-ids the matrix does not hold)."""
        n = len(c.rows)
        xrids = objects(c.xrid)
        has_x = not_none(xrids)
        packed = pack(c.xrid, has_x)
        char14, known, sampled = _xrid_facts(c, has_x, packed, self.fold.percent)
        decided = self._decided(c.flag, char14, answered)
        kept = np.zeros(n, dtype=np.int8)
        if any(c.sent):
            x_rows, x_len, _ = text_matrix(c.xrid, 36)
            s_rows, s_len, s_exact = text_matrix(c.sent, 36)
            has_s = not_none(objects(c.sent))
            c.odd |= has_s & ~(s_exact & (s_len > 0))  # an empty one too
            same = same_request_ids(s_rows, s_len, x_rows, x_len)
            kept = np.where(has_s & has_x, same.astype(np.int8) + 1, 0).astype(np.int8)
        predicted = np.zeros(n, dtype=np.int8)
        source = np.zeros(n, dtype=np.int8)
        if self.fold.percent is not None:
            ask = (decided > 0) & has_x
            predicted = np.where(ask & known, sampled.astype(np.int8) + 1, 0).astype(np.int8)
            source = np.where(ask, np.where(kept == 2, 1, 2), 0).astype(np.int8)
        return _Decisions(decided, kept, predicted, source, has_x, xrids, packed)

    def _decided(self, flags: list[Any], char14: npt.NDArray[np.int64], answered: Bools) -> Tri:
        """`decision_of` per row: it reads the flag and character 14 of the echoed x-request-id
        only, so it is worked out once per distinct pair."""
        codes, distinct = self.flags.codes(flags), self.flags.names
        pairs, index = unique_inverse(codes * 258 + char14)
        table = np.array(
            [
                _tri(
                    decision_of(
                        200,
                        distinct[p // 258],
                        None if p % 258 == 0 else "-" * 14 + chr(p % 258 - 1),
                        self.fold.tracer,
                    )
                )
                for p in pairs.tolist()
            ],
            dtype=np.int8,
        )
        return np.where(answered, table[index], 0).astype(np.int8)

    def _codes(
        self,
        c: _Columns,
        ids: _Ids,
        dec: _Decisions,
        answered: Bools,
        names: tuple[Any, list[Any], Any, list[Any]],
    ) -> Codes:
        """Each row's facts code (odd rows: -1, for the per-request path to fill in)."""
        modes, mode_names, paths, path_names = names
        bits = (
            answered.astype(np.int64) | ids.has_inj << 1 | ids.has_inj << 2 | ids.has_up << 3
            | ids.kept << 4 | ids.under << 5 | dec.decided.astype(np.int64) << 6
            | dec.kept_id.astype(np.int64) << 8 | dec.predicted.astype(np.int64) << 10
            | dec.source.astype(np.int64) << 12
        )  # fmt: skip
        bit_values, bit_index = unique_inverse(bits)
        place = (modes * len(path_names) + paths) * len(bit_values) + bit_index
        distinct, index = unique_inverse(np.where(c.odd, 0, place + 1))  # 0: an odd row's
        table = np.full(len(distinct), -1, dtype=np.int32)
        for j, key in enumerate(distinct.tolist()):
            if key == 0:
                continue
            where, b = divmod(key - 1, len(bit_values))
            b = int(bit_values[b])
            table[j] = self.code(
                RequestFacts(
                    mode_names[where // len(path_names)], path_names[where % len(path_names)], bool(b & 1),
                    TRI[b >> 6 & 3], bool(b & 2), bool(b & 4), bool(b & 8), bool(b & 16), bool(b & 32),
                    TRI[b >> 8 & 3], TRI[b >> 10 & 3], SOURCES[b >> 12 & 3],
                )
            )  # fmt: skip
        return table[index]

    def _times(
        self, c: _Columns, answered: Bools, traced: Bools, modes: npt.NDArray[np.int64], mode_names: list[Any]
    ) -> None:
        fold = self.fold
        ts = np.array(c.ts, dtype=np.float64)
        latency = np.array(c.latency, dtype=np.float64)
        self.starts.append(np.where(ts > 0, ts, np.nan))
        start = np.nan_to_num(ts, nan=0.0)
        end = start + np.nan_to_num(latency, nan=0.0) / 1000.0
        timed = start != 0
        if timed.any():
            first = float(start[timed].min())
            fold.first_ts = first if fold.first_ts is None else min(fold.first_ts, first)
            fold.last_ts = max(fold.last_ts, float(end[timed].max()))
        if traced.any():
            fold.traced_last_end = max(fold.traced_last_end, float(end[traced].max()))
        measured = answered & ~np.isnan(latency)
        for m in np.flatnonzero(np.bincount(modes[measured], minlength=len(mode_names))).tolist():
            self.latencies.setdefault(mode_names[m], []).append(latency[measured & (modes == m)])

    def _failures(self, c: _Columns, answered: Bools) -> None:
        failed = np.flatnonzero(~answered).tolist()
        if failed:
            rows = c.rows
            self.fold.errors.update(_error_of(rows[i].status, rows[i].error) for i in failed)

    def _mispredicted(
        self, c: _Columns, dec: _Decisions, modes: npt.NDArray[np.int64], mode_names: list[Any]
    ) -> None:
        """Keep the rids of the first `EXAMPLES_KEPT` mispredicted requests of each mode."""
        wrong = (dec.predicted > 0) & (dec.decided > 0) & (dec.predicted != dec.decided)
        full = [self.mispredicted[mode] >= EXAMPLES_KEPT for mode in mode_names]
        if not wrong.any() or all(full):
            return
        for i in np.flatnonzero(wrong & ~np.array(full)[modes]).tolist():
            mode = mode_names[modes[i]]
            if self.mispredicted[mode] < EXAMPLES_KEPT:
                self.mispredicted[mode] += 1
                self.fold.mispredicted_rids[self.count + i] = str(c.rows[i].rid)

    def finish(self) -> LedgerFold:
        fold = self.fold
        if self.codes:
            fold.codes = np.concatenate(self.codes)
            fold.traced = np.concatenate(self.traced)
            fold.starts = np.concatenate(self.starts)
        fold.latencies_ms = {mode: np.concatenate(parts) for mode, parts in self.latencies.items()}
        return fold


def _xrid_facts(
    c: _Columns, present: Bools, packed: Packed | None, percent: float | None
) -> tuple[npt.NDArray[np.int64], Bools, Bools]:
    """Per row, what the rules read of the echoed x-request-id: its character 14 (`char_at`),
    and Envoy's rule on it at `percent` (`envoy_sampled`: known, sampled). `packed`: the ids
    `present`, packed, if they pack. Marks odd the rows whose id is empty or the matrix does
    not hold."""
    rows = None if packed is None else packed.rows()
    if packed is None or rows is None:
        rows, lengths, exact = text_matrix(c.xrid, 36)
        c.odd |= present & ~(exact & (lengths > 0))
    else:
        lengths = packed.lengths
    char14 = char_at(rows, lengths, 14)
    if percent is not None and rows.shape[1] >= 8:
        known, sampled = envoy_sampled(rows, lengths, percent)
    else:
        known = sampled = np.zeros(len(rows), dtype=np.bool_)
    if len(rows) == len(c.rows):
        return char14, known, sampled
    n = len(c.rows)  # the packed ids of the rows `present`: one per row
    out = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_)
    out[0][present], out[1][present], out[2][present] = char14, known, sampled
    return out


def _error_of(status: object, error: object) -> tuple[int, str]:
    failure = error_key(status, error)
    assert failure is not None  # a failed request's
    return failure


def _finite(value: Any) -> float | None:
    """A time or latency as the fold reads it: a finite number, else absent."""
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    return None


def _text(value: Any) -> str | None:
    """An id as the fold reads it: a false value (None, "", 0) is none, any other its str()."""
    return None if not value else value if type(value) is str else str(value)


_row_texts = attrgetter(
    "rid", "mode", "path", "error", "inj_trace", "inj_span", "up_trace", "up_flag", "up_xrid", "xrid_sent"
)  # fmt: skip
"""A LedgerRow's str fields."""
_TEXT_TYPES = frozenset({str, type(None)})
_INT64 = 1 << 63


def _as_line_row(record: Mapping[str, Any]) -> LedgerRow | None:
    """The LedgerRow `read_rows` decodes from the line a record dict was read from, when its
    values are what such a line holds (strings exactly str, a finite time and latency, a status
    an int of 64 bits, no bool for a number); None for any other record. Such a row folds as
    its record (the columnar path, several times faster than the per-request one)."""
    try:
        row = msgspec.convert(record, LedgerRow)
    except msgspec.ValidationError:
        return None
    ts, latency, status = row.ts, row.latency_ms, row.status
    if (ts is not None and not math.isfinite(ts)) or (latency is not None and not math.isfinite(latency)):
        return None
    if status is not None and not -_INT64 <= status < _INT64:
        return None
    if not set(map(type, _row_texts(row))) <= _TEXT_TYPES:
        return None
    return row


def _typed_rows(rows: Sequence[LedgerRow | Mapping[str, Any]]) -> tuple[list[LedgerRow], list[int]]:
    """A block's rows as LedgerRows, and the positions of those made from record dicts that are
    not as a line holds them (`_row_of`: the per-request path folds them)."""
    typed: list[LedgerRow] = []
    records: list[int] = []
    for i, r in enumerate(rows):
        if type(r) is LedgerRow:
            typed.append(r)
            continue
        record = cast(Mapping[str, Any], r)
        row = _as_line_row(record)
        if row is None:
            row = _row_of(record)
            records.append(i)
        typed.append(row)
    return typed, records


def _row_of(record: Mapping[str, Any]) -> LedgerRow:
    """A record dict as a LedgerRow for the per-request path: `mode` and `path` made strings as
    the fold reads them, times and latencies finite numbers or None, ids strings or None (what
    every rule reads of them), the other values as they are."""
    get = record.get
    return LedgerRow(
        rid=get("rid"), mode=str(get("mode")), path=path_of(get("path")), ts=_finite(get("ts")),
        latency_ms=_finite(get("latency_ms")), status=get("status"), error=get("error"),
        inj_trace=_text(get("inj_trace")), inj_span=get("inj_span"), up_trace=_text(get("up_trace")),
        up_flag=get("up_flag"), up_xrid=_text(get("up_xrid")), xrid_sent=_text(get("xrid_sent")),
    )  # fmt: skip


def _blocks(
    rows: LedgerRows | Iterable[LedgerRow | Mapping[str, Any]],
) -> Iterator[Sequence[LedgerRow | Mapping[str, Any]]]:
    if isinstance(rows, LedgerRows):
        yield from rows.blocks()
        return
    it = iter(rows)
    while block := list(islice(it, BLOCK_ROWS)):
        yield block


def fold_ledger(
    rows: Iterable[LedgerRow | Mapping[str, Any]],
    *,
    percent: float | None = None,
    tracer: TracerFamily = TracerFamily.ZIPKIN,
) -> LedgerFold:
    """Fold a ledger's records (`loadgen.ledger.read_rows(path)`, or record dicts). `percent`:
    the configured sampling percentage Envoy's rule predicts decisions at (None: no prediction);
    `tracer`: the mesh's tracer family, whose flag the records' `up_flag` is."""
    folder = _Folder(LedgerFold(percent, TracerFamily(tracer)))
    for block in _blocks(rows):
        folder.add(block)
    return folder.finish()


def fold_per_request(
    rows: Iterable[LedgerRow | Mapping[str, Any]],
    *,
    percent: float | None = None,
    tracer: TracerFamily = TracerFamily.ZIPKIN,
) -> LedgerFold:
    """`fold_ledger` with every request through the per-request path (the reference the
    columnar path is tested against; slower)."""
    folder = _Folder(LedgerFold(percent, TracerFamily(tracer)), all_odd=True)
    for block in _blocks(rows):
        folder.add(block)
    return folder.finish()


def as_fold(
    ledger: LedgerFold | Iterable[LedgerRow | Mapping[str, Any]],
    *,
    percent: float | None = None,
    tracer: TracerFamily = TracerFamily.ZIPKIN,
) -> LedgerFold:
    """The fold itself, or the fold of records (what the analyses accept, so that a test or a
    caller with a few record dicts needs no fold of its own)."""
    return ledger if isinstance(ledger, LedgerFold) else fold_ledger(ledger, percent=percent, tracer=tracer)
