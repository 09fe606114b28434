"""When a watch reads a trace back, and what each answer concludes (pure: no I/O, no clock).

A request the upstream saw sampled, and a reference trace, are read early and often: from
`first_poll_s` after they were sent (a reference trace: after the emitter saw its export succeed),
again after 0.25 s, 0.5 s, 1 s, ... so that the time to queryable is measured finely. A request
decided not sampled is read at `sent_at + deadline` (the queryable deadline): a leak shows no
earlier than a trace does, and there are many of them. Each answer concludes the check or retries
it:

    found                  concluded at once (complete; the time to queryable is observed)
    leaked                 concluded at once (spans of a request decided not sampled)
    partial, missing,      retried with backoff until `sent_at + give_up`; the answer read at or
    not_sampled            after that concludes it
    a backend error        the same, but concluded *unknown*: an error is never "missing"

A request without a known decision (no response, no echo) or without a trace id that can be
read is concluded unknown when it is read from the ledger, without a query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loadgen.analysis.observation import TraceObservation
from loadgen.analysis.reconcile import Expectation, Outcome, classify, ledger_trace_id, upstream_decision
from loadgen.backends.base import FetchStatus
from loadgen.mesh.expect import Decision
from loadgen.mesh.ids import normalize_trace_id
from loadgen.mesh.modes import mode_spec
from loadgen.mesh.tracer import TracerFamily
from loadgen.watch.model import REFERENCE_MODE, Source
from loadgen.watch.state import PendingCheck

__all__ = [
    "Concluded",
    "ExportedTrace",
    "Intake",
    "Retry",
    "Timing",
    "early",
    "judge",
    "mesh_intake",
    "proxy_decides",
    "reference_check",
]

#: Retry delays never exceed this (a long --give-up still reads a trace every half minute).
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Timing:
    """`deadline_s`: from a request decided not sampled to its first read. `give_up_s`: from a
    request's (trace's) start to the last read, whose answer concludes it. `first_poll_s`: from
    a sampled request's start, or a reference trace's export, to its first read. `backoff_s`:
    the first retry delay of those (for not-sampled requests: a quarter of the deadline, if
    longer), doubled each retry up to MAX_BACKOFF_S."""

    deadline_s: float
    give_up_s: float
    first_poll_s: float = 0.25
    backoff_s: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.deadline_s <= self.give_up_s:
            raise ValueError(f"need 0 <= deadline ({self.deadline_s}) <= give-up ({self.give_up_s})")

    def retry_delay(self, check: PendingCheck, attempts: int) -> float:
        """The wait after the `attempts`-th read (1 = the first) left `check` open."""
        base = self.backoff_s if early(check) else max(self.backoff_s, self.deadline_s / 4)
        return float(min(MAX_BACKOFF_S, base * 2 ** max(0, attempts - 1)))


def early(check: PendingCheck) -> bool:
    """Read from `first_poll_s` on (a reference trace, a request decided sampled), else from the
    deadline."""
    return check.source is Source.REFERENCE or check.decided is True


@dataclass(frozen=True)
class Intake:
    """One ledger record as the watch counts it: `status` as the metric label ("0": no
    response), `decision` the upstream's (None: unknown), `counts_decision` whether it joins the
    decision rate (a decision-free mode with a known decision), and `check` its read-back (None:
    concluded unknown at once)."""

    mode: str
    status: str
    decision: bool | None
    counts_decision: bool
    check: PendingCheck | None


def proxy_decides(expect: Expectation) -> Callable[[str], bool]:
    """Whether a header mode leaves the decision to the proxy in the mesh's configuration (the
    modes whose decisions measure the configured sampling, as `run`'s decision rate)."""
    context = expect.mode_context()
    cache: dict[str, bool] = {}

    def decides(mode: str) -> bool:
        if mode not in cache:
            spec = mode_spec(mode)
            cache[mode] = spec is not None and spec.expected(context).decision is Decision.PROXY
        return cache[mode]

    return decides


def _status_label(status: object) -> str:
    return str(status) if isinstance(status, int) and not isinstance(status, bool) and status > 0 else "0"


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def mesh_intake(
    record: Mapping[str, Any], *, tracer: TracerFamily, decides: Callable[[str], bool], timing: Timing,
    now: float,
) -> Intake:  # fmt: skip
    """A ledger record's counts and check. A record without a start time is taken as sent `now`."""
    mode = str(record.get("mode") or "unknown")
    decision = upstream_decision(record, tracer)
    trace_id = ledger_trace_id(record)
    rid = record.get("rid")
    sent_at = _float(record.get("ts"))
    sent_at = now if sent_at is None else sent_at
    check = None
    if decision is not None and trace_id is not None and isinstance(rid, str) and rid:
        first = timing.first_poll_s if decision else timing.deadline_s
        check = PendingCheck(
            Source.MESH, rid, trace_id, mode, decision, 0, sent_at,
            sent_at + min(first, timing.give_up_s), sent_at + timing.give_up_s,
        )  # fmt: skip
    return Intake(
        mode, _status_label(record.get("status")), decision, decision is not None and decides(mode), check
    )


def reference_check(
    trace_id: str, spans: int, sent_at: float, seen_at: float, timing: Timing
) -> PendingCheck:
    """A reference trace whose spans were all exported by `seen_at`: read from `first_poll_s` later."""
    tid = normalize_trace_id(trace_id)
    give_up_at = max(sent_at + timing.give_up_s, seen_at + timing.first_poll_s)
    return PendingCheck(
        Source.REFERENCE, tid, tid, REFERENCE_MODE, None, spans, sent_at,
        min(seen_at + timing.first_poll_s, give_up_at), give_up_at,
    )  # fmt: skip


@dataclass(frozen=True)
class ExportedTrace:
    """A reference trace whose `spans` spans were all exported; `sent_at` is its root span's
    start, `seen_at` when the last of them was accepted (epoch seconds)."""

    trace_id: str
    spans: int
    sent_at: float
    seen_at: float


@dataclass(frozen=True)
class Concluded:
    """The check's outcome (loadgen.analysis.reconcile.Outcome values) and, for found, its time
    to queryable: from the request's (trace's) start to the read that found it complete."""

    outcome: Outcome
    ttq_s: float | None = None


@dataclass(frozen=True)
class Retry:
    due_at: float
    attempts: int


def _reference_outcome(check: PendingCheck, obs: TraceObservation) -> Outcome:
    if obs.present:
        return Outcome.FOUND if obs.span_count >= check.spans and not obs.partial else Outcome.PARTIAL
    return Outcome.MISSING


def judge(
    check: PendingCheck, obs: TraceObservation | None, read_at: float, expect: Expectation, timing: Timing
) -> Concluded | Retry:
    """What one answer (`obs`, None when the backend gave none for the id: an error) read at
    `read_at` does to `check`."""
    if obs is None or obs.status is FetchStatus.ERROR:
        outcome = Outcome.UNKNOWN
    elif check.source is Source.REFERENCE:
        outcome = _reference_outcome(check, obs)
    else:
        outcome = classify(check.decided, obs, expect)
    if outcome is Outcome.FOUND:
        return Concluded(outcome, max(0.0, read_at - check.sent_at))
    if outcome is Outcome.LEAKED or read_at >= check.give_up_at:
        return Concluded(outcome)
    attempts = check.attempts + 1
    due = min(read_at + timing.retry_delay(check, attempts), check.give_up_at)
    return Retry(due, attempts)
