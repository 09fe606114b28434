"""One pass over the ledger: the facts of every request that the analyses need, kept compact (pure).

A 1M-request ledger is ~360 MiB of JSON. The run reads it once, as `fold_ledger(read_rows(path))`
(`loadgen.ledger.read_rows` is the I/O, at the edge), and every analysis runs on the fold and the
backend's observations afterwards: `reconcile_mesh`, `windows_summary`, `estimate_from_tags`,
`fold_integrity`, the ids the read-back queries. Per request the fold keeps

    a facts code   the request's `RequestFacts` (mode, path, answered, the upstream's decision,
                   what became of the injected trace id and of the x-request-id, Envoy's rule's
                   prediction): requests with equal facts share one, so this costs 4 bytes
    trace id       what the backend is asked for (`trace_id_of`), None when there is none
    start          epoch s, NaN when the record has no usable time
    injected ids   the injected trace id (normalized) and span id, the x-request-id the app
                   received (masked): what the tag estimate and the integrity fold match by

and folds as it reads what needs no observation: latencies of answered requests per mode,
failures by (status, error), the first and last request times, the rids of the requests whose
decision Envoy's rule mispredicted (examples).

`RequestFacts` and the functions that derive a fact from a record's fields (`trace_id_of`,
`decision_of`, `prediction_of`) are the one home of those rules; `reconcile.ledger_trace_id` and
`reconcile.upstream_decision` apply them to a record dict.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from loadgen.analysis.observation import TraceObservation
from loadgen.ledger import LedgerRow
from loadgen.mesh.echo import UpstreamView, same_request_id
from loadgen.mesh.ids import is_hex_id, normalize_trace_id
from loadgen.mesh.rule import envoy_random_sampled, random_sampler
from loadgen.mesh.tracer import TracerFamily

#: How much of a failure's error text `requests.top_errors` keeps.
ERROR_TEXT_LIMIT = 200
#: Mispredicted requests whose rid is kept per mode (reconcile's examples take the first few).
EXAMPLES_KEPT = 64


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


@dataclass
class LedgerFold:
    """Every request of a ledger, in ledger order, as compact columns (see the module doc)."""

    percent: float | None  # the sampling percentage predictions were made at (None: none made)
    tracer: TracerFamily = TracerFamily.ZIPKIN  # whose flag `up_flag` is (`decision_of`)
    facts: list[RequestFacts] = field(default_factory=list)  # distinct facts; `codes` index them
    codes: array[int] = field(default_factory=lambda: array("I"))
    trace_ids: list[str | None] = field(default_factory=list)
    starts: array[float] = field(default_factory=lambda: array("d"))  # NaN: no usable time
    injected_ids: list[str | None] = field(default_factory=list)  # normalized injected trace id
    injected_spans: list[str | None] = field(default_factory=list)  # with an injected trace id only
    app_request_ids: list[str | None] = field(
        default_factory=list
    )  # echoed x-request-id, answered + traced only
    latencies_ms: dict[str, array[float]] = field(default_factory=dict)  # per mode, answered only
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

    def trace_observations(
        self, observations: Mapping[str, TraceObservation]
    ) -> Iterator[TraceObservation | None]:
        """What the backend holds for each request's trace, in ledger order (None: nothing, or
        the request has no trace id)."""
        get = cast(Callable[[str | None], TraceObservation | None], observations.get)
        return map(get, self.trace_ids)

    def requests(self) -> Iterator[tuple[RequestFacts, str | None]]:
        """(facts, trace id) per request, in ledger order."""
        facts = self.facts
        return ((facts[code], tid) for code, tid in zip(self.codes, self.trace_ids, strict=True))


#: A trace id already in the form `normalize_trace_id` gives: lowercase hex, 16 digits, or 32
#: without a zero high half (the general path is then a no-op; this one is a single match).
_NORMAL_ID = re.compile(r"(?!0{16}[0-9a-f]{16}$)[0-9a-f]{16}(?:[0-9a-f]{16})?").fullmatch
_UNSET = object()


def _normalized(value: Any) -> str:
    """`normalize_trace_id(str(value))`, without its work for an id already normal."""
    return value if type(value) is str and _NORMAL_ID(value) else normalize_trace_id(str(value))


def _trace_id(value: Any) -> str | None:
    """`trace_id_of` for the (truthy) id it picks."""
    if type(value) is str and _NORMAL_ID(value):
        return value
    norm = normalize_trace_id(str(value))
    return norm if is_hex_id(norm) else None


class _Folder:
    """Folds records into a LedgerFold. It runs once per request, so it does per request only
    what cannot be shared: the decision, the facts' code are looked up in small tables of the
    values seen before."""

    def __init__(self, fold: LedgerFold) -> None:
        self.fold = fold
        self.sampled = None if fold.percent is None else random_sampler(fold.percent)
        self.code_of: dict[tuple[Any, ...], int] = {}
        self.decision_of: dict[tuple[str | None, str], bool | None] = {}
        self.paths: dict[str | None, str] = {}  # ledger path -> `path_of` it
        self.mispredicted: Counter[str] = Counter()
        self.append_code = fold.codes.append
        self.append_tid = fold.trace_ids.append
        self.append_inj = fold.injected_ids.append
        self.append_span = fold.injected_spans.append
        self.append_xrid = fold.app_request_ids.append
        self.append_start = fold.starts.append

    def add(self, r: LedgerRow) -> None:
        """One record, whose `mode` and `path` are strings (or None) already (`_row_of`)."""
        status, inj, up, echoed = r.status, r.inj_trace, r.up_trace, r.up_xrid
        tid = _trace_id(up or inj) if up or inj else None
        inj_id = None if not inj else tid if inj == tid else _normalized(inj)
        answered = status == 200
        decided = self._decision(r.up_flag, echoed) if answered else None
        sent = r.xrid_sent
        kept_id = same_request_id(str(sent), str(echoed)) if sent and echoed else None
        if self.sampled is not None and decided is not None and echoed:
            predicted: bool | None = self.sampled(str(echoed))
            source = "crafted" if kept_id else "echoed"  # the rule does not read char 14: same answer
        else:
            predicted, source = None, ""
        mode = "None" if r.mode is None else r.mode  # str(mode), as every analysis reads it
        path = self.paths.get(r.path)
        if path is None:
            path = self.paths[r.path] = path_of(r.path)
        key = (
            mode, path, answered, decided, inj_id is not None,
            inj_id is not None and (inj_id is tid or is_hex_id(inj_id)),
            bool(up), bool(up) and inj_id is not None and (tid if tid is not None else _normalized(up)) == inj_id,
            inj_id is not None and inj_id == tid, kept_id, predicted, source,
        )  # fmt: skip
        code = self.code_of.get(key)
        self.append_code(self._new_code(key) if code is None else code)
        self.append_tid(tid)
        self.append_inj(inj_id)
        self.append_span(r.inj_span if inj else None)
        self.append_xrid(echoed if echoed and tid is not None and answered else None)
        self._times(r, tid is not None, mode if answered else None)
        if not answered:
            self.fold.errors[_error_of(status, r.error)] += 1
        elif predicted is not None and predicted != decided:
            self._mispredicted(mode, str(r.rid))

    def _new_code(self, key: tuple[Any, ...]) -> int:
        facts = RequestFacts(*key)
        code = self.code_of[facts] = len(self.fold.facts)
        self.fold.facts.append(facts)
        return code

    def _mispredicted(self, mode: str, rid: str) -> None:
        if self.mispredicted[mode] < EXAMPLES_KEPT:
            self.mispredicted[mode] += 1
            self.fold.mispredicted_rids[len(self.fold.codes) - 1] = rid

    def _decision(self, flag: Any, xrid: Any) -> bool | None:
        """`decision_of` an answered request, looked up by what it reads (the flag, character 14
        of the x-request-id)."""
        if not ((flag is None or type(flag) is str) and (xrid is None or type(xrid) is str)):
            return decision_of(200, flag, xrid, self.fold.tracer)
        key = (flag, xrid[14] if xrid is not None and len(xrid) >= 15 else "")
        decided = self.decision_of.get(key, _UNSET)
        if decided is _UNSET:
            decided = self.decision_of[key] = decision_of(200, flag, xrid, self.fold.tracer)
        return decided  # type: ignore[return-value]

    def _times(self, r: LedgerRow, traced: bool, answered_mode: str | None) -> None:
        fold = self.fold
        ts, latency = r.ts, r.latency_ms
        self.append_start(float(ts) if isinstance(ts, int | float) and ts > 0 else math.nan)
        if answered_mode is not None and latency is not None:
            lat = fold.latencies_ms.get(answered_mode)
            if lat is None:
                lat = fold.latencies_ms[answered_mode] = array("d")
            lat.append(float(latency))
        start = float(ts or 0.0)
        end = start + float(latency or 0.0) / 1000.0
        if traced and end > fold.traced_last_end:
            fold.traced_last_end = end
        if start:
            if fold.first_ts is None or start < fold.first_ts:
                fold.first_ts = start
            if end > fold.last_ts:
                fold.last_ts = end


def _error_of(status: object, error: object) -> tuple[int, str]:
    failure = error_key(status, error)
    assert failure is not None  # a failed request's
    return failure


def _row_of(record: Mapping[str, Any]) -> LedgerRow:
    """A record dict as a LedgerRow, its values as they are (no type is checked or converted)
    but `mode` and `path`, made strings as the fold reads them."""
    get = record.get
    return LedgerRow(
        rid=get("rid"), mode=str(get("mode")), path=path_of(get("path")), ts=get("ts"), latency_ms=get("latency_ms"),
        status=get("status"), error=get("error"), inj_trace=get("inj_trace"), inj_span=get("inj_span"),
        up_trace=get("up_trace"), up_flag=get("up_flag"), up_xrid=get("up_xrid"), xrid_sent=get("xrid_sent"),
    )  # fmt: skip


def fold_ledger(
    rows: Iterable[LedgerRow | Mapping[str, Any]],
    *,
    percent: float | None = None,
    tracer: TracerFamily = TracerFamily.ZIPKIN,
) -> LedgerFold:
    """Fold a ledger's records (`loadgen.ledger.read_rows(path)`, or record dicts). `percent`:
    the configured sampling percentage Envoy's rule predicts decisions at (None: no prediction);
    `tracer`: the mesh's tracer family, whose flag the records' `up_flag` is."""
    fold = LedgerFold(percent, TracerFamily(tracer))
    add = _Folder(fold).add
    for row in rows:
        add(row if type(row) is LedgerRow else _row_of(row))  # type: ignore[arg-type]
    return fold


def as_fold(
    ledger: LedgerFold | Iterable[LedgerRow | Mapping[str, Any]],
    *,
    percent: float | None = None,
    tracer: TracerFamily = TracerFamily.ZIPKIN,
) -> LedgerFold:
    """The fold itself, or the fold of records (what the analyses accept, so that a test or a
    caller with a few record dicts needs no fold of its own)."""
    return ledger if isinstance(ledger, LedgerFold) else fold_ledger(ledger, percent=percent, tracer=tracer)
