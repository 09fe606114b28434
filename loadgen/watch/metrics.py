"""`loadgen watch`'s Prometheus metrics: a custom collector that turns the latest WatchSnapshot into
the metric families of the contract (docs/watch.md, "Metrics"), read at every scrape.

Nothing here keeps state: the collector asks its `latest` callable for the snapshot the runner
published last and yields families from it, over a registry of its own (not prometheus_client's
global one, so nothing else in the process leaks into /metrics and tests can build many). A
ratio with no data (None) is left out, never exported as 0; counters of fixed label sets (error
components, reference states) are exported at 0 until something is counted, so `rate()` works
from the first scrape.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import CollectorRegistry

from loadgen import __version__
from loadgen.watch.model import (
    ERROR_COMPONENTS,
    REFERENCE_STATES,
    TTQ_BUCKETS_S,
    Histogram,
    Interval,
    WatchSnapshot,
)

#: The Content-Type of /metrics: the Prometheus text format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: The label names of loadgen_watch_mesh_profile_info, in order (WatchSnapshot.profile's keys).
PROFILE_LABELS = ("tracer", "spans_per_trace", "edge", "run_id_tag", "source")

SnapshotSource = Callable[[], WatchSnapshot | None]


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def build_info(version: str) -> GaugeMetricFamily:
    family = _gauge("loadgen_build_info", "loadgen's version and Python's (always 1).", ("version", "python"))
    family.add_metric([version, platform.python_version()], 1.0)
    return family


def _counters(snapshot: WatchSnapshot) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "loadgen_watch_requests",
        'Requests sent, by header mode and HTTP status ("0": no response).',
        labels=["mode", "status"],
    )
    for (mode, status), count in sorted(snapshot.requests.items()):
        requests.add_metric([mode, status], count)
    yield requests
    traces = CounterMetricFamily(
        "loadgen_watch_traces",
        "Checks concluded, by source (mesh/reference), header mode and outcome.",
        labels=["source", "mode", "outcome"],
    )
    for (source, mode, outcome), count in sorted(snapshot.traces.items()):
        traces.add_metric([str(source), mode, outcome], count)
    yield traces
    reference = CounterMetricFamily(
        "loadgen_watch_reference_traces",
        "Side-emitter accounting: reference traces started, exported, failed and dropped.",
        labels=["state"],
    )
    for state in _with_fixed(REFERENCE_STATES, snapshot.reference):
        reference.add_metric([state], snapshot.reference.get(state, 0))
    yield reference
    errors = CounterMetricFamily(
        "loadgen_watch_errors", "Watch's own errors, by component.", labels=["component"]
    )
    for component in _with_fixed(ERROR_COMPONENTS, snapshot.errors):
        errors.add_metric([component], snapshot.errors.get(component, 0))
    yield errors


def _with_fixed(fixed: Iterable[str], counted: Iterable[str]) -> list[str]:
    """The fixed label values in their order, then any other the snapshot counted."""
    out = list(fixed)
    out += sorted(set(counted) - set(out))
    return out


def _interval_families(
    name: str, doc: str, labels: tuple[str, ...], series: Iterable[tuple[list[str], Interval]]
) -> Iterator[Metric]:
    """`name`, `name_lower` and `name_upper` from intervals; a series whose ratio is None is left out."""
    value = _gauge(name, doc, labels)
    lower = _gauge(f"{name}_lower", f"Lower bound of the 95 % Wilson interval of {name}.", labels)
    upper = _gauge(f"{name}_upper", f"Upper bound of the 95 % Wilson interval of {name}.", labels)
    for label_values, iv in series:
        if iv.ratio is None or iv.lower is None or iv.upper is None:
            continue
        value.add_metric(label_values, iv.ratio)
        lower.add_metric(label_values, iv.lower)
        upper.add_metric(label_values, iv.upper)
    yield from (value, lower, upper)


def _window_gauges(snapshot: WatchSnapshot) -> Iterator[Metric]:
    yield from _interval_families(
        "loadgen_watch_decision_rate",
        "Observed sampled fraction of mesh requests whose decision is known, over the window.",
        ("window",),
        (([w.label], w.decision) for w in snapshot.windows),
    )
    configured = _gauge(
        "loadgen_watch_configured_sampling_ratio", "Configured sampling as a ratio 0..1 (absent: unknown)."
    )
    if snapshot.configured_ratio is not None:
        configured.add_metric([], snapshot.configured_ratio)
    yield configured
    yield from _interval_families(
        "loadgen_watch_collection_ratio",
        "found / (found + partial + missing) over the checks concluded in the window (unknown excluded).",
        ("source", "window"),
        (
            ([str(source), w.label], c.collection)
            for w in snapshot.windows
            for source, c in w.collection.items()
        ),
    )


def _histogram_buckets(hist: Histogram) -> list[tuple[str, float]]:
    if len(hist.bucket_counts) != len(TTQ_BUCKETS_S) + 1:
        raise ValueError(
            f"time-to-queryable histogram: {len(hist.bucket_counts)} bucket counts, "
            f"expected {len(TTQ_BUCKETS_S) + 1} (TTQ_BUCKETS_S and +Inf)"
        )
    if hist.count != hist.bucket_counts[-1]:
        raise ValueError(
            f"time-to-queryable histogram: count {hist.count} != +Inf bucket {hist.bucket_counts[-1]}"
        )
    # repr of a float is how prometheus_client writes `le` too: "0.25", "1.0", "600.0".
    bounds = [repr(float(b)) for b in TTQ_BUCKETS_S] + ["+Inf"]
    return [(bound, float(count)) for bound, count in zip(bounds, hist.bucket_counts, strict=True)]


def _state_families(snapshot: WatchSnapshot) -> Iterator[Metric]:
    pending = _gauge(
        "loadgen_watch_pending_checks", "Checks waiting for their deadline or retrying.", ("source",)
    )
    for source, count in sorted(snapshot.pending.items()):
        pending.add_metric([str(source)], count)
    yield pending
    ttq = HistogramMetricFamily(
        "loadgen_watch_time_to_queryable_seconds",
        "From request/trace start to the first read that found it complete.",
        labels=["source"],
    )
    for source, hist in sorted(snapshot.ttq.items()):
        ttq.add_metric([str(source)], _histogram_buckets(hist), hist.sum_s)
    yield ttq
    readback = _gauge(
        "loadgen_watch_last_readback_success_timestamp_seconds",
        "Unix time of the last backend answer that was not an error (absent: none yet).",
    )
    if snapshot.last_readback_success is not None and math.isfinite(snapshot.last_readback_success):
        readback.add_metric([], snapshot.last_readback_success)
    yield readback
    profile = _gauge(
        "loadgen_watch_mesh_profile_info", "The probe's mesh profile (always 1).", PROFILE_LABELS
    )
    if snapshot.profile:
        profile.add_metric([snapshot.profile.get(k, "") for k in PROFILE_LABELS], 1.0)
    yield profile
    up = _gauge("loadgen_watch_up", "Watch is running (1); run_id is its persistent run id.", ("run_id",))
    up.add_metric([snapshot.run_id], 1.0)
    yield up


def snapshot_families(snapshot: WatchSnapshot | None) -> Iterator[Metric]:
    """Every metric family of the contract from one snapshot; before the first snapshot only
    loadgen_build_info (nothing else is known yet)."""
    yield build_info(snapshot.version if snapshot is not None else __version__)
    if snapshot is None:
        return
    yield from _counters(snapshot)
    yield from _window_gauges(snapshot)
    yield from _state_families(snapshot)


class WatchCollector:
    """A prometheus_client custom collector over `latest()`, the snapshot the runner published last."""

    def __init__(self, latest: SnapshotSource) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        yield from snapshot_families(self._latest())


def make_registry(latest: SnapshotSource) -> CollectorRegistry:
    """A fresh registry holding only the watch collector (the global REGISTRY is left alone)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WatchCollector(latest))
    return registry


def render_metrics(snapshot: WatchSnapshot | None) -> bytes:
    """The /metrics body (text format 0.0.4) of one snapshot."""
    return generate_latest(make_registry(lambda: snapshot))
