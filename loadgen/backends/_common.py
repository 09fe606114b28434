"""Pure helpers every reader shares: decoding a JSON answer, grouping returned spans under the
requested ids, an answer of ERROR for every id, and Zipkin-style value formatting (`format_double`,
from loadgen.mesh.otlp_values)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec

from loadgen.backends.base import Fetched, FetchStatus
from loadgen.mesh.ids import normalize_trace_id
from loadgen.mesh.otlp_values import format_double  # its home; re-exported for the readers

__all__ = [
    "all_error", "assign", "format_double", "group_by_trace", "is_name_list", "is_v3_services", "loads_json",
]  # fmt: skip

T = TypeVar("T")

_decode = msgspec.json.Decoder().decode


def loads_json(content: bytes) -> Any:
    """`json.loads(content)` (what httpx's `Response.json()` is), decoded by msgspec where it
    can: about twice as fast on a read-back's answers, and the same values wherever msgspec
    accepts the text. Whatever it does not accept (NaN or Infinity, numbers out of a float's
    range, lone surrogates, a BOM, UTF-16/32, malformed JSON) goes to `json.loads`, which
    decodes it or raises as before (JSONDecodeError, UnicodeDecodeError, RecursionError)."""
    try:
        return _decode(content)
    except msgspec.DecodeError:
        return json.loads(content)


def assign(ids: Sequence[str], spans: Iterable[Any]) -> dict[str, Fetched]:
    """Group returned spans under the requested (normalized) ids.

    Zipkin may answer a 128-bit id with spans carrying its 64-bit low half (or the reverse,
    `strictTraceId=false`), so an exact match wins, then a low-half match. A 16-hex span id
    matching the low half of several requested 128-bit ids goes to each of them. Spans of
    traces that were not requested, or whose traceId is not a string, are ignored.
    """
    grouped = group_by_trace(
        ids, ((span.get("traceId") if isinstance(span, dict) else None, span) for span in spans)
    )
    return {
        tid: Fetched(FetchStatus.FOUND, spans=tuple(found)) if found else Fetched(FetchStatus.MISSING)
        for tid, found in grouped.items()
    }


def group_by_trace(ids: Sequence[str], spans: Iterable[tuple[object, T]]) -> dict[str, list[T]]:
    """`assign`'s grouping, for (raw traceId, span) pairs: the spans of each requested id, in
    the order given ([] for an id without any)."""
    requested = set(ids)
    # Requested ids already in normal form (all, from the readers): a span naming one of them
    # exactly goes to it, without normalizing its id.
    normal = {tid for tid in requested if normalize_trace_id(tid) == tid}
    by_low_half: dict[str, list[str]] = {}
    for tid in ids:
        if len(tid) == 32:
            by_low_half.setdefault(tid[16:], []).append(tid)
    grouped: dict[str, list[T]] = {tid: [] for tid in ids}
    for raw, span in spans:
        if type(raw) is str and raw in normal:
            grouped[raw].append(span)
            continue
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
    return grouped


def all_error(ids: Sequence[str], reason: str) -> dict[str, Fetched]:
    return {tid: Fetched(FetchStatus.ERROR, error=reason) for tid in ids}


def is_name_list(body: Any) -> bool:
    """A JSON list of names: how Zipkin's `/api/v2/services` answers."""
    return isinstance(body, list) and all(isinstance(s, str) for s in body)


def is_v3_services(body: Any) -> bool:
    """`{"services": [...]}`: how Jaeger's `/api/v3/services` answers."""
    return isinstance(body, dict) and isinstance(body.get("services"), list)
