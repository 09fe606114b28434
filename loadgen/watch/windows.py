"""Rolling windows of `loadgen watch` (pure): `--window` parsing, the window figures from bucketed
counts, and quantiles estimated from the time-to-queryable histogram.

The runner keeps counts in time buckets (`Bucket`, e.g. 10 s wide) and drops the ones older
than the longest window, so memory stays flat. A bucket belongs to a window when its start lies
in [now - window_s, now]: the window then covers between window_s minus one bucket width and
window_s seconds, never more (a bucket that started before the window is left out whole).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from loadgen.analysis.stats import wilson_interval
from loadgen.watch.model import TTQ_BUCKETS_S, CollectionWindow, Histogram, Interval, Source, WindowStats

#: Outcomes of a concluded check (the `outcome` label of loadgen_watch_traces_total).
OUTCOMES = ("found", "partial", "missing", "leaked", "not_sampled", "unknown")

#: The outcomes a collection ratio is computed over: found / (found + partial + missing).
COLLECTION_OUTCOMES = ("found", "partial", "missing")

_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_WINDOW_RE = re.compile(r"^(?P<number>.+?)\s*(?P<unit>[smhd])$")


@dataclass(frozen=True)
class Bucket:
    """Counts of one time bucket that starts at `start_s` (epoch seconds).

    `decided`/`sampled`: mesh requests sent in the bucket whose sampling decision is known, and
    how many of them were sampled. `outcomes`: checks concluded in the bucket, by (source,
    outcome)."""

    start_s: float
    decided: int = 0
    sampled: int = 0
    outcomes: Mapping[tuple[Source, str], int] = field(default_factory=dict)


def interval(k: int, n: int) -> Interval:
    """k of n with its 95 % Wilson interval; ratio and bounds None when n == 0 (nothing known)."""
    if n == 0:
        if k != 0:
            raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
        return Interval(k=0, n=0, ratio=None, lower=None, upper=None)
    lower, upper = wilson_interval(k, n)
    return Interval(k=k, n=n, ratio=k / n, lower=lower, upper=upper)


def _in_window(buckets: Iterable[Bucket], now: float, window_s: float) -> list[Bucket]:
    start = now - window_s
    return [b for b in buckets if start <= b.start_s <= now]


def collection_window(outcomes: Mapping[str, int]) -> CollectionWindow:
    """One source's outcome counts (every outcome in OUTCOMES, 0 when absent) and its collection
    ratio found / (found + partial + missing)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    counts.update(outcomes)
    negative = sorted(o for o, c in counts.items() if c < 0)
    if negative:
        raise ValueError(f"negative outcome counts: {', '.join(negative)}")
    n = sum(counts[o] for o in COLLECTION_OUTCOMES)
    return CollectionWindow(outcomes=counts, collection=interval(counts["found"], n))


def window_stats(buckets: Iterable[Bucket], now: float, window_s: float, label: str) -> WindowStats:
    """The figures over the buckets that started within [now - window_s, now]: the decision rate
    (sampled of decided) and, for each source, the outcome counts and the collection ratio."""
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window must be a positive number of seconds, got {window_s!r}")
    inside = _in_window(buckets, now, window_s)
    decided = sum(b.decided for b in inside)
    sampled = sum(b.sampled for b in inside)
    per_source: dict[Source, dict[str, int]] = {s: {} for s in Source}
    for bucket in inside:
        for (source, outcome), count in bucket.outcomes.items():
            counts = per_source[Source(source)]
            counts[outcome] = counts.get(outcome, 0) + count
    return WindowStats(
        label=label,
        window_s=float(window_s),
        decision=interval(sampled, decided),
        collection={s: collection_window(c) for s, c in per_source.items()},
    )


def seconds_label(seconds: float) -> str:
    """The `window` label of a window: whole seconds as "300s", a fraction as "0.5s"."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds!r}s"


def _parse_one(item: str) -> float:
    text = item.strip()
    if not text:
        raise ValueError("empty window (two commas in a row, or a comma at an end?)")
    try:
        number, unit = float(text), ""
    except ValueError:
        match = _WINDOW_RE.match(text)
        if match is None:
            raise ValueError(
                f"window {text!r}: expected a number of seconds or a number with a unit s, m, h or d (e.g. 5m)"
            ) from None
        try:
            number, unit = float(match.group("number")), match.group("unit")
        except ValueError:
            raise ValueError(f"window {text!r}: {match.group('number')!r} is not a number") from None
    # Rounded to the microsecond so 0.1m reads 6s, not 6.000000000000001s.
    seconds = round(number * _UNIT_S[unit], 6)
    if not math.isfinite(seconds):
        raise ValueError(f"window {text!r} is not a finite duration")
    if seconds <= 0:
        raise ValueError(f"window {text!r} must be longer than 0 seconds")
    return seconds


def parse_windows(text: str) -> tuple[tuple[str, float], ...]:
    """`--window` ("5m,1h") -> (("300s", 300.0), ("3600s", 3600.0)), in the order written.
    Units s, m, h, d or none (seconds); ValueError with the reason for anything else (empty,
    zero, negative, not finite, the same duration twice)."""
    if not text.strip():
        raise ValueError("no window given (e.g. --window 5m,1h)")
    out: list[tuple[str, float]] = []
    seen: dict[float, str] = {}
    for item in text.split(","):
        seconds = _parse_one(item)
        if seconds in seen:
            raise ValueError(f"window {item.strip()!r} repeats {seen[seconds]!r} ({seconds_label(seconds)})")
        seen[seconds] = item.strip()
        out.append((seconds_label(seconds), seconds))
    return tuple(out)


def histogram_quantile(hist: Histogram, q: float) -> float | None:
    """The q-quantile of a time-to-queryable histogram, interpolated linearly within its bucket as
    Prometheus's histogram_quantile does (the first bucket starts at 0). None when the histogram
    is empty; math.inf when the quantile lies beyond the last finite bound (only "more than
    TTQ_BUCKETS_S[-1]" is known)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    counts = hist.bucket_counts
    if len(counts) != len(TTQ_BUCKETS_S) + 1:
        raise ValueError(f"expected {len(TTQ_BUCKETS_S) + 1} bucket counts, got {len(counts)}")
    if any(later < earlier for earlier, later in zip(counts, counts[1:], strict=False)):
        raise ValueError(f"bucket counts must be cumulative (non-decreasing), got {counts}")
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    previous_count, previous_bound = 0, 0.0
    for bound, cumulative in zip(TTQ_BUCKETS_S, counts, strict=False):
        if cumulative >= rank and cumulative > previous_count:
            share = (rank - previous_count) / (cumulative - previous_count)
            return previous_bound + (bound - previous_bound) * share
        previous_count, previous_bound = cumulative, bound
    return math.inf
