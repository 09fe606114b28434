"""The typed model of summary.json (issue 11): what one run measured, judged and noted.

Every section is a `msgspec.Struct`; `Summary` is the file. Fields carry the defaults a reader
assumes when an older summary (schema 1) lacks them, so any summary that was ever written
decodes; what a summary.json must hold to be usable at all is declared per struct in
`REQUIRED` (checked where a file is read, `loadgen.summary.io`, and required by the published
JSON Schema, summary.schema.json). Fields that are only present in some runs (`status_reason`,
`component_failure`, `recovered`, `verified_at`, the fragment search's numbers) are `UNSET`
when absent, and stay absent when the summary is written.

Schema versions (`Summary.schema_version`, listed in docs/outputs.md): 1 is every summary so far;
issue 11 typed it without changing a key or value, so it stays 1. A summary of a version this
code does not know is refused with an error naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

#: The version this code writes; `SUPPORTED_VERSIONS` are the ones it reads.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)

Count = Annotated[int, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
Interval = tuple[Fraction, Fraction]


class _Base(Struct, kw_only=True):
    def to_dict(self) -> dict[str, Any]:
        """This struct as plain JSON data, lists for tuples (absent `UNSET` fields left out)."""
        out: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(self))
        return out


class KN(_Base):
    """k of n, without an interval (run-tagged spans, forced modes found)."""

    k: Count
    n: Count


class Proportion(_Base):
    """k of n with its rate (null when n = 0) and 95 % Wilson interval (`stats.Proportion`). The
    rate and the interval are fractions (0 to 1), as every rate in summary.json; the reports a
    person reads (terminal, report.md, report.html) show them as percents."""

    k: Count
    n: Count
    rate: Fraction | None = None
    ci95: Interval = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.k > self.n:
            raise ValueError(f"has k = {self.k} > n = {self.n}")


def _no_proportion() -> Proportion:
    return Proportion(k=0, n=0)


class TopError(_Base):
    """One of the commonest failures: HTTP status (0: no response), error text, requests."""

    status: int
    error: str | None = None
    count: Count = 0


class Requests(_Base):
    total: Count
    errors: Count
    first_ts: float | None = None
    last_ts: float | None = None
    top_errors: list[TopError] = []


class PredictionCount(_Base):
    checked: Count = 0
    mismatches: Count = 0


class Prediction(_Base):
    """Decisions checked against Envoy's x-request-id rule."""

    checked: Count = 0
    mismatches: Count | None = None  # required when checked > 0
    examples: list[str] = []
    mode: str | None = None  # crafted | echoed | none
    by_source: dict[str, int] = {}
    sent_id_replaced: Count = 0
    by_mode: dict[str, PredictionCount] = {}


class Sampling(_Base):
    """The sampling decision rate: `configured_percent` is a percent (0 to 100, as --sampling and
    --expect take it); `decision` is a proportion whose rate is a fraction (0 to 1)."""

    configured_percent: float | None = None
    decision: Proportion = field(default_factory=_no_proportion)
    verdict: str | None = None  # the reconciler's: pass | fail | inconclusive
    verdict_basis: str | None = None  # exact | statistical
    p_value: float | None = None
    prediction: Prediction | None = None


class Mesh(_Base):
    expected_spans_per_trace: Count = 0
    expected_services: list[str] = []
    expected_shape: list[tuple[str, str, int]] | None = None  # [service, kind, count]
    collection: Proportion = field(default_factory=_no_proportion)
    partial: Count = 0
    unknown: Count = 0
    not_queried: Count = 0  # decided sampled, outside a sampled read-back's sample
    leaked: Count | None = None  # None: not in this (partial, in-memory) summary; a file has it
    leak_checked: Count | None = None  # None: a summary from before it was counted
    leaked_examples: list[str] = []
    missing_examples: list[str] = []
    spans_per_found_trace: dict[str, int] = {}
    run_tag: KN = field(default_factory=lambda: KN(k=0, n=0))


class Propagation(Proportion):
    """Injected trace ids the upstream saw kept (k of n), and (`backend`) stored under them."""

    backend: Proportion = field(default_factory=_no_proportion)


class ModeStats(_Base):
    """One header mode's requests, decisions, outcomes and expectation checks."""

    requests: Count = 0
    errors: Count = 0
    decided_sampled: Count = 0
    decided_not_sampled: Count = 0
    found: Count = 0
    partial: Count = 0
    missing: Count = 0
    leaked: Count = 0
    not_sampled: Count = 0
    unknown: Count = 0
    not_queried: Count = 0
    expected_decision: str | None = None
    expected_trace_id_kept: bool | None = None
    expectation_definite: bool = False
    expectation_checked: Count | None = None  # None (and violations): a summary from before them
    expectation_violations: Count = 0
    violations: dict[str, int] | None = None  # {decision, trace_id, request_id, leak: requests}


class Latency(_Base):
    n: Count = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Reference(_Base):
    """The side-emitter's reference traces: started, exported, and found in the backend."""

    started: Count = 0
    exported: Count = 0
    failed: Count = 0
    dropped: Count = 0
    collection: Proportion = field(default_factory=_no_proportion)
    partial: Count = 0
    unknown: Count = 0
    found_despite_failed_export: Count = 0
    missing_examples: list[str] = []
    emitter_counters: dict[str, int] = {}
    # How the emitter sent them: zipkin | otlp-http | otlp-grpc (issue 12; null without a reference
    # log, or in a summary from before issue 12, when it was always zipkin).
    protocol: Literal["zipkin", "otlp-http", "otlp-grpc"] | None = None


class VerdictDetailDoc(_Base):
    """`verdicts.VerdictDetail` as JSON."""

    verdict: str
    checked: int
    minimum: int
    basis: str
    cause: str | None = None


class WindowBin(_Base):
    start: float
    end: float
    requests: Count = 0
    errors: Count = 0
    decided_sampled: Count = 0
    found: Count = 0
    partial: Count = 0
    missing: Count = 0
    unknown: Count = 0
    leaked: Count = 0
    reference_started: Count = 0
    reference_exported: Count = 0
    reference_failed: Count = 0
    reference_dropped: Count = 0
    reference_found: Count = 0
    reference_partial: Count = 0
    reference_missing: Count = 0
    reference_unknown: Count = 0
    lost: Count = 0


class LossInterval(_Base):
    start: float
    end: float
    lost: Count


class Windows(_Base):
    bin_s: float
    bins: list[WindowBin] = []
    loss_intervals: list[LossInterval] = []


class Poll(_Base):
    """One read-back poll: when it ended (epoch s), ids queried, complete so far, query errors."""

    t: float | None = None
    queried: Count = 0
    complete: Count = 0
    errors: Count = 0


class SampleStratum(_Base):
    queried: Count = 0
    of: Count = 0


class ReadbackSample(_Base):
    """A sampled read-back (`loadgen.analysis.subsample`): the rule and what each stratum had."""

    rule: str  # count | fraction
    count: Count | None = None
    fraction: float | None = None
    automatic: bool = False
    sampled: SampleStratum = field(default_factory=SampleStratum)
    others: SampleStratum = field(default_factory=SampleStratum)


class ReadbackQueries(_Base):
    """`loadgen.backends.base.QueryStats` of the reader: how its queries went (whole session)."""

    requests: Count = 0
    throttled: Count = 0
    server_errors: Count = 0
    transport_errors: Count = 0
    busy_s: float = 0.0
    qps: float | None = None
    concurrency: Count = 0
    lowest_concurrency: Count = 0
    highest_concurrency: Count = 0
    max_concurrency: Count = 0
    adaptive: bool = False


class Readback(_Base):
    quiet_s: float = 0.0
    poll_interval_s: float = 0.0
    stable: bool = False
    polls: list[Poll] = []
    sample: ReadbackSample | None = None  # None: every trace id was queried
    queries: ReadbackQueries | None = None  # None: the reader does not count its queries


class CurvePoint(_Base):
    t_s: float
    complete: Count
    fraction: float | None = None


class Queryable(_Base):
    """Time to queryable: when the found traces became readable, after the load ended."""

    traces: Count
    resolution_s: float
    t50_s: float | None = None
    t99_s: float | None = None
    t100_s: float | None = None
    curve: list[CurvePoint] = []


class CorrectedRate(_Base):
    rate: float
    ci95: tuple[float, float]


class TagSearch(_Base):
    """The run-tag search's estimate of the decision rate (`analysis.tagsearch`)."""

    tagged_traces: Count = 0
    tagged_reference: Count = 0
    tagged_mesh: Count = 0
    unattributed_mesh: Count = 0
    forced_with_new_trace_id: Count = 0
    decision: Proportion | None = None
    decision_corrected: CorrectedRate | None = None
    note: str | None | UnsetType = UNSET
    forced_sampled_found: KN = field(default_factory=lambda: KN(k=0, n=0))
    forced_not_sampled_found: KN = field(default_factory=lambda: KN(k=0, n=0))


class HopLayout(_Base):
    service: str
    spans: Count


class SharedSpans(_Base):
    traces: Count = 0
    spans: Count = 0


class Defect(_Base):
    """One kind of propagation defect; `fragmented` adds the fragment search's numbers and
    `incomplete_hops` how many fragmentation explains."""

    count: Count | None = None  # None: not searched
    examples: list[str] = []
    explanation: str = ""
    explained_by_fragmentation: Count | UnsetType = UNSET
    searched: bool | UnsetType = UNSET
    orphans: Count | UnsetType = UNSET
    attributed: Count | UnsetType = UNSET
    unattributed: Count | UnsetType = UNSET
    attributed_by: dict[str, int] | UnsetType = UNSET
    orphans_with_run_tag: Count | UnsetType = UNSET
    pairs: list[list[str]] | UnsetType = UNSET
    unattributed_examples: list[str] | UnsetType = UNSET


class Integrity(_Base):
    """Propagation integrity through the hops (`analysis.integrity.fold_integrity`)."""

    layout: list[HopLayout] = []
    layout_by_path: dict[str, list[HopLayout]] = {}
    traces: Count = 0
    injected_kept_end_to_end: Proportion = field(default_factory=_no_proportion)
    parent_links_ok: Proportion = field(default_factory=_no_proportion)
    completeness: dict[str, Proportion] = {}
    roots: dict[str, int] = {}
    shared_span_context: SharedSpans = field(default_factory=SharedSpans)
    defects: dict[str, Defect] = {}


class ComponentFailureDoc(_Base):
    """`failure.ComponentFailure` as JSON: the part of the run that failed (exit 4)."""

    component: str
    reason: str
    log_path: str | None = None
    log_tail: list[str] = []


class Target(_Base):
    """The mesh measured: embedded or external, and where it was reached (credentials redacted)."""

    kind: str | None = None
    gateway: str | None = None
    host: str | None = None
    collector: str | None = None
    backend: str | None = None
    backend_spec: str | None = None
    reader: str | None = None


class LocustTotals(_Base):
    requests: Count
    failures: Count


class Recovered(_Base):
    """A summary `loadgen verify` rebuilt: when, from which files, and what is unknown (null)."""

    at: float
    sources: list[str] = []
    unknown: list[str] = []


class Summary(_Base):
    """summary.json."""

    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    expectation_gaps: dict[str, str] = {}  # {verdict: the fact the mesh probe could not learn}
    requests: Requests | None = None
    sampling: Sampling | None = None
    mesh: Mesh | None = None
    propagation: Propagation | None = None
    modes: dict[str, ModeStats] = {}
    latency_ms: dict[str, Latency] = {}
    reference: Reference | None = None
    verdict_details: dict[str, VerdictDetailDoc] = {}
    max_error_rate: float | None = None
    verdicts: dict[str, str] = {}  # {name: pass | fail | inconclusive}
    min_collection: float | None = None
    windows: Windows | None = None
    readback: Readback | None = None
    queryable: Queryable | None = None
    tag_search: TagSearch | None = None
    integrity: Integrity | None = None
    notes: list[str] = []
    status: str = "complete"  # complete | partial
    status_reason: str | None | UnsetType = UNSET
    component_failure: ComponentFailureDoc | UnsetType = UNSET
    target: Target | None = None
    profile: dict[str, Any] | None = None  # mesh-profile.json (`MeshProfile.to_dict`, its own schema)
    started_at: float | None = None
    locust: LocustTotals | None = None
    recovered: Recovered | UnsetType = UNSET
    verified_at: float | UnsetType = UNSET
    readback_notes: list[str] = []

    @property
    def partial(self) -> bool:
        return self.status == "partial"


#: What a usable summary.json holds, per struct: checked where a file is read and required by
#: the published schema. Fields with a default elsewhere may be absent (an older summary).
REQUIRED: dict[type[Struct], tuple[str, ...]] = {
    Summary: ("run_id", "requests", "sampling", "mesh", "propagation", "modes", "latency_ms", "verdicts"),
    Sampling: ("decision",),
    Mesh: (
        "collection",
        "partial",
        "unknown",
        "leaked",
        "expected_spans_per_trace",
        "expected_services",
        "spans_per_found_trace",
        "run_tag",
    ),  # fmt: skip
    Propagation: ("backend",),
    ModeStats: ("requests", "errors", "decided_sampled", "found", "partial", "missing", "leaked", "unknown"),
    Readback: ("quiet_s", "poll_interval_s", "stable", "polls"),
}


def required_fields(cls: type[Struct], raw: dict[str, Any]) -> tuple[str, ...]:
    """The fields `raw` (a JSON object for `cls`) must hold: `REQUIRED`, plus those that depend
    on another field (a rate and interval once n > 0, the mismatches once something was checked,
    a reference section's counts once reference traces were started)."""
    need = REQUIRED.get(cls, ())
    if issubclass(cls, Proportion) and raw.get("n"):
        need = (*need, "rate", "ci95")
    elif cls is Prediction and raw.get("checked"):
        need = (*need, "mismatches")
    elif cls is Reference and raw.get("started"):
        need = (*need, "started", "exported", "failed", "dropped", "collection")
    return need


__all__ = [
    "KN",
    "REQUIRED",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "ComponentFailureDoc",
    "CorrectedRate",
    "CurvePoint",
    "Defect",
    "HopLayout",
    "Integrity",
    "Latency",
    "LocustTotals",
    "LossInterval",
    "Mesh",
    "ModeStats",
    "Poll",
    "Prediction",
    "PredictionCount",
    "Propagation",
    "Proportion",
    "Queryable",
    "Readback",
    "Recovered",
    "Reference",
    "Requests",
    "Sampling",
    "SharedSpans",
    "Summary",
    "TagSearch",
    "Target",
    "TopError",
    "VerdictDetailDoc",
    "WindowBin",
    "Windows",
    "required_fields",
]
