"""Pure helpers every reader shares: the fetch loop (dedupe, validate, split, progress), grouping
returned spans under the requested ids, and Zipkin-style value formatting."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from decimal import Decimal
from typing import Any, TypeVar

from loadgen.backends._http import run_concurrently
from loadgen.backends.base import Fetched, FetchStatus, ProgressCallback, Span
from loadgen.mesh.propagation import is_hex_id, normalize_trace_id

__all__ = ["all_error", "assign", "fetch_all", "format_double", "unchanged"]

T = TypeVar("T")


def unchanged(fetched: Fetched) -> Fetched:
    """The `reduce` of a plain `fetch_many`: every answer kept as it is, spans and all."""
    return fetched


def fetch_all(
    trace_ids: Sequence[str],
    fetch_unit: Callable[[list[str]], dict[str, Fetched]],
    *,
    reduce: Callable[[Fetched], T],
    unit_size: int,
    concurrency: int,
    progress_step: int,
    on_progress: ProgressCallback | None,
    thread_name: str,
) -> dict[str, T]:
    """The shape of every `fetch_many` and `fetch_reduced`: ids normalized and deduplicated,
    invalid ones ERROR, the rest fetched in units of `unit_size` ids (`concurrency` units in
    flight), and `on_progress(done, total)` on the caller's thread after a unit once at least
    `progress_step` more ids are done since the last call, and after the last unit.

    Each answer is passed through `reduce` on the thread that decoded it, as soon as its unit is
    decoded: with a reducing `reduce` the decoded spans of at most `concurrency` units are alive
    at any time, whatever the number of ids."""
    unique = list(dict.fromkeys(normalize_trace_id(t) for t in trace_ids))
    results: dict[str, T] = {}
    valid: list[str] = []
    for tid in unique:
        if is_hex_id(tid):
            valid.append(tid)
        else:
            results[tid] = reduce(Fetched(FetchStatus.ERROR, error=f"not a 16 or 32 hex trace id: {tid!r}"))
    total = len(unique)
    done = reported = len(results)
    units = [valid[i : i + unit_size] for i in range(0, len(valid), unit_size)]

    def fetch_reduced(ids: list[str]) -> dict[str, T]:
        return {tid: reduce(fetched) for tid, fetched in fetch_unit(ids).items()}

    with closing(run_concurrently(units, fetch_reduced, concurrency, thread_name)) as finished:
        for unit_result in finished:
            results.update(unit_result)
            done += len(unit_result)
            if on_progress is not None and (done - reported >= progress_step or done == total):
                reported = done
                on_progress(done, total)
    return results


def assign(ids: Sequence[str], spans: Iterable[Any]) -> dict[str, Fetched]:
    """Group returned spans under the requested (normalized) ids.

    Zipkin may answer a 128-bit id with spans carrying its 64-bit low half (or the reverse,
    `strictTraceId=false`), so an exact match wins, then a low-half match. A 16-hex span id
    matching the low half of several requested 128-bit ids goes to each of them. Spans of
    traces that were not requested are ignored.
    """
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


def all_error(ids: Sequence[str], reason: str) -> dict[str, Fetched]:
    return {tid: Fetched(FetchStatus.ERROR, error=reason) for tid in ids}


def format_double(value: float) -> str:
    """A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` prints it, which is how the
    OpenTelemetry Collector's Zipkin translator and Jaeger turn a double attribute into a
    string tag: shortest round-trip digits, never an exponent, no trailing ".0"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
