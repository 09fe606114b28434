"""Hand-built WatchSnapshots for the renderers' tests (metrics, page, server, Chromium)."""

from __future__ import annotations

from dataclasses import replace

from loadgen.watch.model import (
    TTQ_BUCKETS_S,
    CollectionWindow,
    Histogram,
    Interval,
    Source,
    WatchSnapshot,
    WindowStats,
)

MESH, REF = Source.MESH, Source.REFERENCE
NOW = 1_760_000_000.0

NONE_INTERVAL = Interval(k=0, n=0, ratio=None, lower=None, upper=None)


def outcomes(**counts: int) -> dict[str, int]:
    base = dict.fromkeys(("found", "partial", "missing", "leaked", "not_sampled", "unknown"), 0)
    base.update(counts)
    return base


def ttq_histogram() -> Histogram:
    """20 traces: 4 in (0.25, 0.5], 12 in (0.5, 1], 3 in (1, 2], 1 above 600 s (cumulative)."""
    per = {0.5: 4, 1.0: 12, 2.0: 3}
    cumulative, running = [], 0
    for bound in TTQ_BUCKETS_S:
        running += per.get(bound, 0)
        cumulative.append(running)
    cumulative.append(running + 1)
    return Histogram(bucket_counts=tuple(cumulative), sum_s=640.5, count=running + 1)


def sample_snapshot() -> WatchSnapshot:
    """A watch that has run for two hours: the 5 minute window has mesh figures but no reference
    check concluded (its collection ratio is None); the hour has both."""
    short = WindowStats(
        label="300s",
        window_s=300.0,
        decision=Interval(k=9, n=90, ratio=0.1, lower=0.0535, upper=0.1797),
        collection={
            MESH: CollectionWindow(
                outcomes=outcomes(found=8, missing=1, unknown=2),
                collection=Interval(k=8, n=9, ratio=8 / 9, lower=0.565, upper=0.9801),
            ),
            REF: CollectionWindow(outcomes=outcomes(unknown=3), collection=NONE_INTERVAL),
        },
    )
    hour = WindowStats(
        label="3600s",
        window_s=3600.0,
        decision=Interval(k=110, n=1000, ratio=0.11, lower=0.0921, upper=0.1309),
        collection={
            MESH: CollectionWindow(
                outcomes=outcomes(found=100, partial=2, missing=3, not_sampled=890),
                collection=Interval(k=100, n=105, ratio=100 / 105, lower=0.8934, upper=0.9797),
            ),
            REF: CollectionWindow(
                outcomes=outcomes(found=3500, missing=1),
                collection=Interval(k=3500, n=3501, ratio=3500 / 3501, lower=0.9984, upper=0.99995),
            ),
        },
    )
    return WatchSnapshot(
        run_id="watch-20251009-a1b2",
        version="9.9.9",
        started_at=NOW - 7200.0,
        now=NOW,
        configured_ratio=0.1,
        requests={("no-headers", "200"): 900, ("sampled", "200"): 300, ("no-headers", "0"): 3},
        traces={
            (MESH, "no-headers", "found"): 80,
            (MESH, "no-headers", "missing"): 2,
            (MESH, "no-headers", "not_sampled"): 800,
            (REF, "reference", "found"): 500,
            (REF, "reference", "unknown"): 4,
        },
        reference={"started": 510, "exported": 505, "failed": 5},
        pending={MESH: 7, REF: 3},
        windows=(short, hour),
        ttq={MESH: ttq_histogram()},
        last_readback_success=NOW - 4.0,
        profile={
            "tracer": "zipkin",
            "spans_per_trace": "3",
            "edge": "gateway",
            "run_id_tag": "yes",
            "source": "probe",
        },
        errors={"backend": 2},
        notes=("reference traces: none concluded in the last 300s",),
    )


def fresh_snapshot() -> WatchSnapshot:
    """Just started: nothing sent, nothing concluded, nothing read back, no profile yet."""
    empty = {
        MESH: CollectionWindow(outcomes(), NONE_INTERVAL),
        REF: CollectionWindow(outcomes(), NONE_INTERVAL),
    }
    return replace(
        sample_snapshot(),
        started_at=NOW - 1.0,
        configured_ratio=None,
        requests={},
        traces={},
        reference={},
        pending={},
        windows=(
            WindowStats("300s", 300.0, NONE_INTERVAL, dict(empty)),
            WindowStats("3600s", 3600.0, NONE_INTERVAL, dict(empty)),
        ),
        ttq={},
        last_readback_success=None,
        profile={},
        errors={},
        notes=(),
    )
