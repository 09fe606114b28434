"""The read-back of a run: every trace id of the ledger and the reference log queried until
the counts are quiet, then reconciled into the summary's measured sections (`loadgen run` and
`loadgen verify` share it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadgen.analysis.integrity import downstream_service, fold_integrity
from loadgen.analysis.ledgerfold import LedgerFold, fold_ledger
from loadgen.analysis.reconcile import (
    NOT_QUERIED,
    Expectation,
    TraceObservation,
    reconcile_mesh,
    reconcile_reference,
)
from loadgen.analysis.subsample import SamplePlan, choose_rule, plan_sample
from loadgen.analysis.tagsearch import estimate_from_tags
from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE
from loadgen.analysis.windows import windows_summary
from loadgen.backends._engine import HttpReader
from loadgen.backends.base import BackendError, TraceBackend
from loadgen.emitter import ReferenceProtocol, ReferenceSummary, read_reference_log, summarize_reference_log
from loadgen.ledger import LedgerStats, read_rows
from loadgen.mesh.hops import Hop
from loadgen.mesh.ids import normalize_trace_id
from loadgen.readback import ReadBackResult, read_back, search_hop_traces, search_run, time_to_queryable
from loadgen.run.options import Status
from loadgen.runfiles import write_fetched
from loadgen.summary.build import Measured, build_summary


@dataclass
class ReadBackOutcome:
    """What `read_back_run` measured: the summary's sections, the read-back's notes, and whether
    a Ctrl-C cut it short."""

    measured: Measured
    notes: list[str]
    interrupted: bool
    requests_total: int
    # every queried trace's observation, for report.html (fetched.jsonl only with keep_spans),
    # and `reconcile.NOT_QUERIED` for those a sampled read-back skipped
    observations: Mapping[str, TraceObservation] = field(default_factory=dict)


def _read_run_logs(
    run_dir: Path, expect: Expectation, notes: list[str]
) -> tuple[LedgerFold, ReferenceSummary | None]:
    """The one read of the ledger (every analysis of the read-back runs on its fold) and the
    reference log's summary (None without one)."""
    ledger_stats = LedgerStats()
    fold = fold_ledger(
        read_rows(run_dir / "ledger.jsonl", ledger_stats),
        percent=expect.configured_percent,
        tracer=expect.mode_context().tracer,
    )
    if ledger_stats.truncated:
        notes.append(
            f"{ledger_stats.truncated} ledger line(s) were truncated (a crash mid-write) or not a UTF-8 JSON record, and skipped"
        )
    reference_path = run_dir / "reference.jsonl"
    ref_summary = (
        summarize_reference_log(read_reference_log(reference_path)) if reference_path.exists() else None
    )
    return fold, ref_summary


def read_back_run(
    run_dir: Path,
    run_id: str,
    backend: TraceBackend,
    expect: Expectation,
    *,
    quiet_s: float,
    poll_interval_s: float,
    max_wait_s: float,
    run_id_tag: str,
    load_end: float,
    status: Status,
    search_service: str | None = None,
    hops: Sequence[Hop] | None = None,
    keep_spans: bool = True,
    readback_sample: int | None = None,
    readback_fraction: float | None = None,
) -> ReadBackOutcome:
    """Query every ledger and reference trace id (or a sample of the ledger's: see
    `loadgen.analysis.subsample`), reconcile, and (`keep_spans`) write fetched.jsonl.

    Shared by `loadgen run` and `loadgen verify`, which build the summary from it
    (`loadgen.summary.build`). A Ctrl-C during polling keeps what was learned and leaves the rest
    unknown."""
    notes: list[str] = []
    fold, ref_summary = _read_run_logs(run_dir, expect, notes)
    last_end = fold.traced_last_end  # when the last request ended: time zero of the time-to-queryable curve
    expected, expected_services = _ids_to_query(fold, ref_summary, expect)
    sample = _sample_plan(backend, expected, ref_summary, run_id, readback_sample, readback_fraction)
    if sample is not None:
        notes.append(sample.note())
        asked = len(expected) - len(sample.skipped)
        status(f"sampled read-back ({sample.rule.describe()}): {asked:,} of {len(expected):,} trace ids")
        expected = {t: v for t, v in expected.items() if t not in sample.skipped}
    readback = _poll_backend(
        backend, expected, expected_services, notes,
        quiet_s=quiet_s, poll_interval_s=poll_interval_s, max_wait_s=max_wait_s,
        run_id_tag=run_id_tag, run_id=run_id, status=status,
    )  # fmt: skip
    if keep_spans:
        write_fetched(run_dir / "fetched.jsonl", readback.observations, readback.complete_at)
    observations: Mapping[str, TraceObservation] = readback.observations
    if sample is not None:  # the ids outside the sample: not queried, never unknown
        observations = {**dict.fromkeys(sample.skipped, NOT_QUERIED), **readback.observations}
    reconciled = reconcile_mesh(fold, observations, expect)
    reference = _reference_section(ref_summary, readback.observations)
    refs = ((t, o.state, o.spans, o.t) for t, o in ref_summary.traces.items()) if ref_summary else ()
    windows = windows_summary(fold, observations, expect, refs)
    first_ts = reconciled["requests"]["first_ts"]
    window = (int((first_ts - 2.0) * 1e6), int((max(last_end, load_end) + 2.0) * 1e6)) if first_ts else None
    tag_search = None
    if window and run_id_tag and not readback.interrupted:
        tag_search = _tag_search(
            backend, fold, expect, ref_summary, reference, notes, status,
            run_id_tag=run_id_tag, run_id=run_id, service=search_service, window=window,
        )  # fmt: skip
    hop_traces = _search_fragments(backend, hops, window, notes, status) if not readback.interrupted else None
    integrity = fold_integrity(
        fold,
        observations,
        hops,
        hop_traces=hop_traces,
        run_id_tag=run_id_tag,
        run_id=run_id,
    )
    measured = Measured(
        reconciled=reconciled,
        reference=reference,
        windows=windows,
        readback={
            "quiet_s": quiet_s,
            "poll_interval_s": poll_interval_s,
            "stable": readback.stable,
            "polls": [asdict(p) for p in readback.polls],
            "sample": sample.to_json() if sample is not None else None,
            "queries": _queries(backend),
        },
        queryable=time_to_queryable(readback.polls, last_end or load_end, poll_interval_s),
        tag_search=tag_search,
        integrity=integrity,
    )
    return ReadBackOutcome(
        measured, notes, readback.interrupted, int(reconciled["requests"]["total"]), observations
    )


def _queries(backend: TraceBackend) -> dict[str, Any] | None:
    """summary.json's `readback.queries`: how the reader's queries went over its session (the
    probe's, the polls', the searches'); None when the reader does not count them."""
    stats = backend.query_stats()
    if stats is None:
        return None
    return {
        **asdict(stats),
        "busy_s": round(stats.busy_s, 3),
        "qps": None if stats.qps is None else round(stats.qps, 1),
    }


def _sample_plan(
    backend: TraceBackend,
    expected: Mapping[str, int],
    ref_summary: ReferenceSummary | None,
    run_id: str,
    count: int | None,
    fraction: float | None,
) -> SamplePlan | None:
    """The sampled read-back's plan (None: every id is queried): the rule asked for, else the
    automatic one for a backend that fetches one id per request (`HttpReader.batch` None)."""
    multi_get = not isinstance(backend, HttpReader) or backend.batch is not None
    rule = choose_rule(count, fraction, ids=len(expected), multi_get=multi_get)
    if rule is None:
        return None
    reference_ids = {normalize_trace_id(t) for t in ref_summary.traces} if ref_summary else set()
    return plan_sample(expected, reference_ids, rule, seed=run_id)


def _ids_to_query(
    fold: LedgerFold, ref_summary: Any, expect: Expectation
) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
    """Every trace id the read-back asks for, with the spans it should hold (0: none, a leak
    check), and the services of each sampled one: the ledger's requests and the exported or
    failed reference traces."""
    expected: dict[str, int] = {}
    expected_services: dict[str, tuple[str, ...]] = {}
    for facts, tid in fold.requests():
        if tid:
            # Query every id: sampled ones must be complete, the others are checked for leaks.
            expected[tid] = expect.spans_per_trace if facts.decided else 0
            if facts.decided:
                expected_services[tid] = expect.services
    if ref_summary is not None:
        for tid, outcome in ref_summary.traces.items():
            if outcome.state in ("exported", "failed"):
                key = normalize_trace_id(tid)
                expected[key] = outcome.spans if outcome.state == "exported" else 0
    return expected, expected_services


def _tag_search(
    backend: TraceBackend,
    fold: LedgerFold,
    expect: Expectation,
    ref_summary: Any,
    reference: dict[str, Any],
    notes: list[str],
    status: Status,
    *,
    run_id_tag: str,
    run_id: str,
    service: str | None,
    window: tuple[int, int],
) -> dict[str, Any] | None:
    """The run-tag search and its estimate of the decision rate; None (and a note) when the
    search failed."""
    status(f"searching the backend for spans tagged {run_id_tag}={run_id}")
    try:
        tagged = search_run(
            backend, tag=run_id_tag, run_id=run_id, service=service, start_us=window[0], end_us=window[1]
        )
    except (BackendError, ValueError) as exc:
        notes.append(f"run-tag search failed: {exc}")
        return None
    ref_ids = {normalize_trace_id(t) for t in ref_summary.traces} if ref_summary else set()
    return estimate_from_tags(fold, tagged, ref_ids, reference["collection"], expect.context)


def _poll_backend(
    backend: TraceBackend,
    expected: dict[str, int],
    expected_services: dict[str, tuple[str, ...]],
    notes: list[str],
    *,
    quiet_s: float,
    poll_interval_s: float,
    max_wait_s: float,
    run_id_tag: str,
    run_id: str,
    status: Status,
) -> ReadBackResult:
    """Poll the backend for every expected trace until the counts are quiet (readback.read_back);
    a note says why it stopped unstable."""
    readback = ReadBackResult()
    try:
        read_back(
            backend, expected,
            quiet_s=quiet_s, poll_interval_s=poll_interval_s, max_wait_s=max_wait_s,
            run_id_tag=run_id_tag, run_id=run_id, on_status=status, result=readback,
            expected_services=expected_services,
        )  # fmt: skip
    except KeyboardInterrupt:
        readback.interrupted = True
        notes.append("read-back was interrupted: traces not queried are reported unknown")
    if not readback.stable and not readback.interrupted:
        first_error = next((o.error for o in readback.observations.values() if o.error), None)
        if readback.polls and all(p.queried and p.errors >= p.queried for p in readback.polls):
            notes.append(
                f"every poll of the backend failed ({first_error or 'no error message'}); traces are unknown"
            )
        elif readback.polls and readback.polls[-1].errors:
            notes.append(
                f"the backend still failed {readback.polls[-1].errors} queries on the last poll after "
                f"{max_wait_s:g} s ({first_error or 'no error message'}); those traces are unknown"
            )
        else:
            notes.append(f"trace counts were still changing after {max_wait_s:g} s of polling (--max-wait)")
    return readback


def _reference_section(ref_summary: Any, observations: dict[str, TraceObservation]) -> dict[str, Any]:
    """The reference traces reconciled, with the emitter's own counters."""
    if ref_summary is None:
        return reconcile_reference([], observations, {})
    counters = {
        "spans_started": ref_summary.spans_started,
        "spans_exported": ref_summary.spans_exported,
        "spans_failed": ref_summary.spans_failed,
        "spans_dropped": ref_summary.spans_dropped,
        "export_calls": ref_summary.export_calls,
        "export_failures": ref_summary.export_failures,
    }
    # A reference log from before issue 12 has no protocol in its open record: it was Zipkin.
    protocol = ref_summary.protocol or "zipkin"
    protocol = protocol if protocol in {p.value for p in ReferenceProtocol} else None
    return {**reconcile_reference(ref_summary.iter_traces(), observations, counters), "protocol": protocol}


def _search_fragments(
    backend: TraceBackend,
    hops: Sequence[Hop] | None,
    window: tuple[int, int] | None,
    notes: list[str],
    status: Status,
) -> Any:
    """The downstream hop's traces in the run's time window (fragmented traces), or None."""
    service = downstream_service(hops) if hops else None
    if not service or window is None:
        return None
    status(f"searching the backend for {service} spans (fragmented traces)")
    try:
        return search_hop_traces(backend, service=service, start_us=window[0], end_us=window[1])
    except (BackendError, ValueError) as exc:
        notes.append(f"fragment search failed: {exc}")
        return None


def read_back_and_reconcile(
    run_dir: Path,
    run_id: str,
    backend: TraceBackend,
    expect: Expectation,
    *,
    min_collection: float,
    gaps: Mapping[str, str] | None = None,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    **read_back_options: Any,
) -> tuple[dict[str, Any], bool]:
    """`read_back_run` and the summary of what it measured, as JSON data (no run facts: status,
    target, ... are the caller's); returns (summary, interrupted)."""
    outcome = read_back_run(run_dir, run_id, backend, expect, **read_back_options)
    summary = build_summary(
        run_id=run_id, measured=outcome.measured, min_collection=min_collection,
        max_error_rate=max_error_rate, gaps=gaps, notes=outcome.notes,
    )  # fmt: skip
    return summary.to_dict(), outcome.interrupted
