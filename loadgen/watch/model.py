"""What `loadgen watch` knows at one moment: the typed snapshot the runner builds from its state
and the renderers (Prometheus metrics, the status page) read. Pure data, no I/O.

Counts are cumulative since the watch's state folder was created (they survive restarts); the
window figures cover the last `window_s` seconds. A ratio with no data is None, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Source(StrEnum):
    """Where a checked trace came from: a request through the mesh, or the side-emitter."""

    MESH = "mesh"
    REFERENCE = "reference"


#: The `mode` label of reference traces (mesh traces carry their header mode).
REFERENCE_MODE = "reference"

#: Watch's own error components (the `component` label of loadgen_watch_errors_total).
ERROR_COMPONENTS = ("backend", "gateway", "collector", "emitter", "ledger", "internal")

#: Reference accounting states (loadgen_watch_reference_traces_total{state}).
REFERENCE_STATES = ("started", "exported", "failed", "dropped")

#: Upper bounds (seconds) of the time-to-queryable histogram's buckets (+Inf is implied).
TTQ_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class Interval:
    """An observed proportion k/n with its 95 % Wilson interval; all None when n == 0."""

    k: int
    n: int
    ratio: float | None
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class CollectionWindow:
    """One source's checks concluded within a window, by outcome, and its collection ratio:
    found / (found + partial + missing) — unknown, leaked and not_sampled excluded."""

    outcomes: dict[str, int]
    collection: Interval


@dataclass(frozen=True)
class WindowStats:
    """The rolling figures over the last `window_s` seconds (`label`, e.g. "300s")."""

    label: str
    window_s: float
    #: Sampled fraction among mesh requests whose decision is known, sent within the window.
    decision: Interval
    collection: dict[Source, CollectionWindow]


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts per upper bound (TTQ_BUCKETS_S then +Inf), with the sum and count."""

    bucket_counts: tuple[int, ...]
    sum_s: float
    count: int


@dataclass(frozen=True)
class WatchSnapshot:
    run_id: str
    version: str
    started_at: float  # when the state folder was created (epoch seconds)
    now: float
    #: Configured sampling as a ratio 0..1; None when unknown.
    configured_ratio: float | None
    #: (mode, status) -> requests sent; status "0" when there was no response.
    requests: dict[tuple[str, str], int]
    #: (source, mode, outcome) -> checks concluded.
    traces: dict[tuple[Source, str, str], int]
    #: REFERENCE_STATES -> reference traces.
    reference: dict[str, int]
    pending: dict[Source, int]
    windows: tuple[WindowStats, ...]
    ttq: dict[Source, Histogram]
    #: Epoch seconds of the last backend answer that was not an error; None: none yet.
    last_readback_success: float | None
    #: The probe's mesh profile as label values (tracer, spans_per_trace, edge, run_id_tag, source).
    profile: dict[str, str]
    errors: dict[str, int]
    #: Why figures are missing or what watch assumed (shown on the status page).
    notes: tuple[str, ...] = field(default_factory=tuple)
