"""The engine of `loadgen watch`: each tick ingests the closed ledger segments and the reference
traces exported, reads back the checks that are due, trims the window buckets, and publishes a
new WatchSnapshot for the HTTP endpoint (loadgen.watch.server).

Everything it counts lives in the state database (loadgen.watch.state), changed one transaction
at a time: a segment with all its requests' counts and checks, a batch of answers with all the
conclusions they bring. Memory does not grow with the run: a tick holds one segment's records and
one batch of answers at most.

Reads go to the backend on a thread of their own (`fetch_in_thread`), one batch at a time, so a
slow or hanging backend never holds the tick: the loop keeps ingesting, publishing and answering
the stop signal while the batch is out. Checks in a batch stay pending in the database until its
answers are applied; a watch stopped meanwhile finds them there at its next start.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loadgen import __version__
from loadgen.analysis.observation import TraceObservation
from loadgen.analysis.reconcile import Expectation, Outcome
from loadgen.backends.base import FetchStatus, TraceBackend
from loadgen.mesh.profile import MeshProfile
from loadgen.mesh.tracer import TracerFamily
from loadgen.watch.checks import (
    Concluded,
    ExportedTrace,
    Retry,
    Timing,
    judge,
    mesh_intake,
    proxy_decides,
    reference_check,
)
from loadgen.watch.model import (
    ERROR_COMPONENTS,
    REFERENCE_STATES,
    TTQ_BUCKETS_S,
    Histogram,
    Source,
    WatchSnapshot,
    WindowStats,
)
from loadgen.watch.segments import closed_segments, expire_segments, read_segment
from loadgen.watch.state import PendingCheck, WatchState, Writer
from loadgen.watch.windows import Bucket, window_stats

__all__ = [
    "Engine",
    "EngineConfig",
    "ReferenceFeed",
    "bucket_width",
    "limit_notes",
    "profile_labels",
    "progress_line",
]

#: Closed segments ingested per tick at most (a watch restarted after a long stop catches up
#: over several ticks instead of one long one).
SEGMENTS_PER_TICK = 20
#: Seconds between two passes removing segments past the retention.
EXPIRE_EVERY_S = 10.0
#: Buckets per shortest window; fewer when the longest window would need more than MAX_BUCKETS.
BUCKETS_PER_WINDOW = 30
MAX_BUCKETS = 3000


class ReferenceFeed(Protocol):
    """The side-emitter as the engine sees it (loadgen.watch.traffic.ReferenceTraffic)."""

    def drain(self) -> list[ExportedTrace]: ...

    def counters(self) -> Mapping[str, int]: ...


def bucket_width(windows: Sequence[tuple[str, float]]) -> float:
    """Seconds per time bucket: a thirtieth of the shortest window, wider only if the longest
    would need more than MAX_BUCKETS (so the state stays small whatever --window says)."""
    shortest = min(w for _, w in windows)
    longest = max(w for _, w in windows)
    return max(shortest / BUCKETS_PER_WINDOW, longest / MAX_BUCKETS)


def profile_labels(profile: MeshProfile, run_id_tag: str) -> dict[str, str]:
    """The mesh profile as loadgen_watch_mesh_profile_info's label values: "unknown" for what
    was not learned (nor declared)."""
    tracer = profile.tracer_given or profile.tracer
    return {
        "tracer": tracer.value if tracer is not None else "unknown",
        "spans_per_trace": str(profile.shape.total) if profile.shape is not None else "unknown",
        "edge": profile.request_id.value if profile.request_id is not None else "unknown",
        "run_id_tag": _run_id_tag_label(profile, run_id_tag),
        "source": profile.source,
    }


def _run_id_tag_label(profile: MeshProfile, run_id_tag: str) -> str:
    """The tag holding the run id (`run_id_tag`: the plan's, probed or declared); "none" when
    spans carry none (the probe read traces back without it, or --no-probe's flags declare
    none); "unknown" when the probe read no trace back, so it could not tell."""
    if run_id_tag:
        return run_id_tag
    if profile.source != "flags" and not profile.traces_found:
        return "unknown"
    return "none"


def limit_notes(profile: MeshProfile, expect: Expectation, gaps: Mapping[str, str]) -> list[str]:
    """What the profile could not give the watch, and what the watch's figures mean without it:
    no header echo (no request's decision is known), no trace shape (found means any span).
    `gaps` are the plan's (loadgen.mesh.profile.expectation_gaps: its reasons name the fact)."""
    notes = []
    if profile.echo is False:
        notes.append(
            "the upstream does not echo request headers (probed): no mesh request's decision is known, "
            "so each is concluded unknown and there is no decision rate or mesh collection ratio; route "
            "the Host to an httpbin-like /headers (or --path to one)"
        )
    if expect.shape is None and expect.spans_per_trace <= 0:
        why = gaps.get("propagation_integrity", "the trace shape is unknown")
        notes.append(
            f"{why}: a mesh trace counts as found once any span of it is read, so the mesh collection "
            "ratio shows missing traces, not partial ones (give --expected-spans N)"
        )
    return notes


@dataclass(frozen=True)
class EngineConfig:
    windows: tuple[tuple[str, float], ...]
    timing: Timing
    expect: Expectation
    tracer: TracerFamily = TracerFamily.ZIPKIN
    configured_ratio: float | None = None
    profile: dict[str, str] = field(default_factory=dict)
    retention_s: float = 3600.0
    notes: tuple[str, ...] = ()
    batch_limit: int = 500
    version: str = __version__


Answers = Mapping[str, TraceObservation]


class Engine:
    """One watch's ticks over its state (`step()`), and the snapshot they publish (`latest()`)."""

    def __init__(
        self, cfg: EngineConfig, state: WatchState, backend: TraceBackend, segments_dir: Path, *,
        reference: ReferenceFeed | None = None, clock: Callable[[], float] = time.time,
        fetch_in_thread: bool = True,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.state = state
        self.backend = backend
        self.segments_dir = segments_dir
        self.reference = reference
        self.clock = clock
        self.bucket_s = bucket_width(cfg.windows)
        self._longest = max(w for _, w in cfg.windows)
        self._decides = proxy_decides(cfg.expect)
        counters = state.counters()
        # The emitter counts from 0 in each process: the state's totals are the base.
        self._ref_base = {k[0]: v for k, v in counters.get("reference", {}).items()}
        self._ref_base.update({k[0]: v for k, v in counters.get("emitter_errors", {}).items()})
        self._in_thread = fetch_in_thread
        self._inflight: tuple[list[PendingCheck], float, Future[dict[str, TraceObservation]]] | None = None
        self._last_expire = -math.inf
        self._reading = True
        self._known: set[str] = set()  # names of segments present and ingested
        self._snapshot: WatchSnapshot | None = None
        self.records_ingested = 0

    # --- the tick ------------------------------------------------------------------------------

    def latest(self) -> WatchSnapshot | None:
        """The snapshot published last (read by the HTTP endpoint's threads)."""
        return self._snapshot

    def step(self) -> WatchSnapshot:
        """One tick; the snapshot it publishes."""
        self.ingest_segments()
        self.ingest_reference()
        self.read_due()
        now = self.clock()
        if now - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = now
            self.expire(now)
        snapshot = self.build_snapshot(now)
        self._snapshot = snapshot
        return snapshot

    def close(self, wait_s: float = 5.0) -> None:
        """Apply a batch still being read if it answers within `wait_s`, then stop the reader
        (an unanswered batch stays pending in the state)."""
        if self._inflight is not None:
            checks, read_at, future = self._inflight
            try:
                answers = future.result(timeout=wait_s)
            except Exception:  # a timeout or the reader's failure: the checks stay pending
                answers = None
            if answers is not None:
                self._inflight = None
                self._apply(checks, answers, read_at)
        self._reading = False  # later ticks ingest and publish, and leave the checks pending

    def note_error(self, component: str, n: int = 1) -> None:
        with self.state.write() as w:
            w.add("errors", (component,), n)

    # --- ingest --------------------------------------------------------------------------------

    def ingest_segments(self) -> int:
        """Ingest the closed segments not ingested yet, each in one transaction with its
        requests' counts and checks; the records ingested."""
        done = 0
        listing = closed_segments(self.segments_dir)
        self._known &= {p.name for p in listing}  # only the files there: bounded by the retention
        fresh = []
        for path in listing:
            if path.name in self._known:
                continue
            if self.state.is_ingested(path.name):
                self._known.add(path.name)
            else:
                fresh.append(path)
        for path in fresh[:SEGMENTS_PER_TICK]:
            try:
                segment = read_segment(path)
            except OSError:
                self.note_error("ledger")
                continue
            now = self.clock()
            with self.state.write() as w:
                for record in segment.records:
                    self._intake(w, record, now)
                w.add("errors", ("ledger",), segment.torn)
                w.ingested(segment.name, len(segment.records), segment.torn, now)
            self._known.add(segment.name)
            done += len(segment.records)
        self.records_ingested += done
        return done

    def _intake(self, w: Writer, record: Mapping[str, object], now: float) -> None:
        t = self.cfg.timing
        intake = mesh_intake(record, tracer=self.cfg.tracer, decides=self._decides, timing=t, now=now)
        w.add("requests", (intake.mode, intake.status))
        if intake.status == "0":
            w.add("errors", ("gateway",))
        if intake.counts_decision:
            sent = intake.check.sent_at if intake.check is not None else now
            start = self._bucket(sent)
            w.bucket(start, "decided")
            w.bucket(start, "sampled", int(bool(intake.decision)))
        if intake.check is None or not w.insert(intake.check):
            # No decision or no readable trace id: nothing to read back, unknown at once. (A
            # request id already pending cannot come twice from Locust; counted the same way.)
            self._count(w, Source.MESH, intake.mode, Outcome.UNKNOWN, now)

    def ingest_reference(self) -> int:
        """The reference traces exported since the last tick become checks; the emitter's
        accounting is written with them (one transaction). The traces added."""
        if self.reference is None:
            return 0
        traces = self.reference.drain()
        counters = self.reference.counters()
        with self.state.write() as w:
            for trace in traces:
                check = reference_check(
                    trace.trace_id, trace.spans, trace.sent_at, trace.seen_at, self.cfg.timing
                )
                w.insert(check)
            for name in REFERENCE_STATES:
                w.set("reference", (name,), self._ref_base.get(name, 0) + counters.get(name, 0))
            for component in ("collector", "emitter"):
                w.set(
                    "emitter_errors",
                    (component,),
                    self._ref_base.get(component, 0) + counters.get(component, 0),
                )
        return len(traces)

    # --- read-back -----------------------------------------------------------------------------

    def read_due(self) -> None:
        """Apply the batch being read if its answers came, then send the next due batch."""
        if not self._reading:
            return
        if self._inflight is not None:
            checks, read_at, sent = self._inflight
            if not sent.done():
                return
            self._inflight = None
            try:
                answers: Answers = sent.result()
            except Exception:  # the reader itself failed: every check of the batch got an error
                answers = {}
            self._apply(checks, answers, read_at)
        now = self.clock()
        due = self.state.due(now, self.cfg.batch_limit)
        if not due:
            return
        ids = list(dict.fromkeys(c.trace_id for c in due))
        if not self._in_thread:
            self._apply(due, self._fetch(ids), now)
            return
        future: Future[dict[str, TraceObservation]] = Future()

        def read() -> None:
            try:
                future.set_result(self._fetch(ids))
            except BaseException as exc:
                future.set_exception(exc)

        # A daemon thread, not an executor's: a backend that hangs must not hold the exit.
        threading.Thread(target=read, name="loadgen-watch-read", daemon=True).start()
        self._inflight = (due, now, future)

    def _fetch(self, ids: list[str]) -> dict[str, TraceObservation]:
        return self.backend.fetch_reduced(ids, TraceObservation.from_fetched)

    def _apply(self, checks: Iterable[PendingCheck], answers: Answers, read_at: float) -> None:
        """One batch's answers: each check concluded or rescheduled, in one transaction."""
        now = self.clock()
        errors, answered = 0, False
        with self.state.write() as w:
            for check in checks:
                obs = answers.get(check.trace_id)
                if obs is None or obs.status is FetchStatus.ERROR:
                    errors += 1
                else:
                    answered = True
                verdict = judge(check, obs, read_at, self.cfg.expect, self.cfg.timing)
                if isinstance(verdict, Retry):
                    w.reschedule(check, verdict.due_at, verdict.attempts)
                else:
                    self._conclude(w, check, verdict, now)
            w.add("errors", ("backend",), errors)
            if answered:
                w.set_meta("last_readback_success", repr(now))

    def _conclude(self, w: Writer, check: PendingCheck, verdict: Concluded, now: float) -> None:
        w.conclude(check)
        self._count(w, check.source, check.mode, verdict.outcome, now)
        if verdict.ttq_s is not None:
            index = next(
                (i for i, bound in enumerate(TTQ_BUCKETS_S) if verdict.ttq_s <= bound), len(TTQ_BUCKETS_S)
            )
            source = check.source.value
            w.add("ttq", (source, str(index)))
            w.add("ttq_sum", (source,), verdict.ttq_s)
            w.add("ttq_count", (source,))

    def _count(self, w: Writer, source: Source, mode: str, outcome: Outcome, now: float) -> None:
        w.add("traces", (source.value, mode, outcome.value))
        w.bucket(self._bucket(now), f"{source.value}:{outcome.value}")

    def _bucket(self, t: float) -> float:
        return round(math.floor(t / self.bucket_s) * self.bucket_s, 6)

    # --- housekeeping and the snapshot ---------------------------------------------------------

    def expire(self, now: float) -> None:
        """Trim the buckets to the longest window; remove the segments past the retention (and
        forget them once their files are gone)."""
        removed = expire_segments(self.segments_dir, now, self.cfg.retention_s, self.state.is_ingested)
        gone = [
            name for name in self.state.segments_before(now - self.cfg.retention_s)
            if not (self.segments_dir / name).exists()
        ]  # fmt: skip
        with self.state.write() as w:
            w.trim_buckets(now - self._longest - self.bucket_s)
            w.forget_segments(sorted({*removed, *gone}))

    def build_snapshot(self, now: float) -> WatchSnapshot:
        counters = self.state.counters()
        last = self.state.meta("last_readback_success")
        return WatchSnapshot(
            run_id=self.state.run_id,
            version=self.cfg.version,
            started_at=self.state.created_at,
            now=now,
            configured_ratio=self.cfg.configured_ratio,
            requests={(m, s): int(v) for (m, s), v in counters.get("requests", {}).items()},
            traces={(Source(src), m, o): int(v) for (src, m, o), v in counters.get("traces", {}).items()},
            reference={s: int(counters.get("reference", {}).get((s,), 0)) for s in REFERENCE_STATES},
            pending=self.state.pending_counts(),
            windows=self._windows(now),
            ttq={s: _histogram(counters, s) for s in Source},
            last_readback_success=float(last) if last is not None else None,
            profile=dict(self.cfg.profile),
            errors={
                c: int(
                    counters.get("errors", {}).get((c,), 0) + counters.get("emitter_errors", {}).get((c,), 0)
                )
                for c in ERROR_COMPONENTS
            },
            notes=self.cfg.notes,
        )

    def _windows(self, now: float) -> tuple[WindowStats, ...]:
        per_start: dict[float, dict[str, int]] = defaultdict(dict)
        for start, name, n in self.state.buckets(since=now - self._longest - self.bucket_s):
            per_start[start][name] = n
        buckets = []
        for start, names in per_start.items():
            outcomes = {}
            for name, n in names.items():
                source, sep, outcome = name.partition(":")
                if sep:
                    outcomes[(Source(source), outcome)] = n
            buckets.append(Bucket(start, names.get("decided", 0), names.get("sampled", 0), outcomes))
        return tuple(window_stats(buckets, now, seconds, label) for label, seconds in self.cfg.windows)


def _histogram(counters: Mapping[str, Mapping[tuple[str, ...], float]], source: Source) -> Histogram:
    per_bucket = counters.get("ttq", {})
    running, cumulative = 0, []
    for index in range(len(TTQ_BUCKETS_S) + 1):
        running += int(per_bucket.get((source.value, str(index)), 0))
        cumulative.append(running)
    return Histogram(
        bucket_counts=tuple(cumulative),
        sum_s=float(counters.get("ttq_sum", {}).get((source.value,), 0.0)),
        count=int(counters.get("ttq_count", {}).get((source.value,), 0)),
    )


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def progress_line(snapshot: WatchSnapshot, elapsed_s: float) -> str:
    """The terminal's live line: requests, checks pending, outcomes, and the shortest window."""
    requests = sum(snapshot.requests.values())
    silent = sum(n for (_m, status), n in snapshot.requests.items() if status == "0")
    outcomes: dict[str, int] = defaultdict(int)
    for (_src, _mode, outcome), n in snapshot.traces.items():
        outcomes[outcome] += n
    shown = " ".join(
        f"{o} {outcomes[o]}" for o in ("found", "partial", "missing", "leaked", "unknown") if outcomes[o]
    )
    line = (
        f"{elapsed_s:5.0f} s  requests {requests} (no response {silent})  "
        f"pending {sum(snapshot.pending.values())}  {shown or 'nothing concluded yet'}"
    )
    if snapshot.windows:
        w = snapshot.windows[0]
        line += f"  [{w.label}] decision {_ratio(w.decision.ratio)}"
        line += f" mesh collection {_ratio(w.collection[Source.MESH].collection.ratio)}"
    return line
