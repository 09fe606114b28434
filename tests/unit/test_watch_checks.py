"""When a check is read and what an answer concludes (loadgen.watch.checks, pure)."""

from __future__ import annotations

import pytest

from loadgen.analysis.observation import TraceObservation
from loadgen.analysis.reconcile import Expectation, Outcome
from loadgen.backends.base import Fetched, FetchStatus
from loadgen.mesh.tracer import TracerFamily
from loadgen.watch.checks import (
    MAX_BACKOFF_S,
    Concluded,
    Retry,
    Timing,
    judge,
    mesh_intake,
    proxy_decides,
    reference_check,
)
from loadgen.watch.model import Source
from loadgen.watch.state import PendingCheck
from tests.unit.watch_fakes import SERVICES, record, spans_of, tid

EXPECT = Expectation(2, SERVICES, 10.0)
TIMING = Timing(deadline_s=4.0, give_up_s=16.0)


def _obs(spans: int, status: FetchStatus = FetchStatus.FOUND) -> TraceObservation:
    if status is not FetchStatus.FOUND:
        return TraceObservation.from_fetched(
            Fetched(status, error="boom" if status is FetchStatus.ERROR else None)
        )
    return TraceObservation.from_fetched(Fetched(status, spans_of(tid(1), spans)))


def _mesh(decided: bool = True, attempts: int = 0) -> PendingCheck:
    return PendingCheck(Source.MESH, "r1", tid(1), "none", decided, 0, 100.0, 104.0, 116.0, attempts)


def test_timing_rejects_a_give_up_before_the_deadline() -> None:
    with pytest.raises(ValueError, match="give-up"):
        Timing(deadline_s=5.0, give_up_s=4.0)


def test_retry_delays_double_from_their_base_up_to_the_cap() -> None:
    # Decided not sampled: a quarter of the deadline (1 s here); sampled and reference: 0.25 s.
    assert [TIMING.retry_delay(_mesh(False), a) for a in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert [TIMING.retry_delay(_mesh(True), a) for a in (1, 2, 3)] == [0.25, 0.5, 1.0]
    reference = reference_check(tid(1), 3, 0.0, 0.0, TIMING)
    assert [TIMING.retry_delay(reference, a) for a in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert TIMING.retry_delay(_mesh(False), 30) == MAX_BACKOFF_S


def test_mesh_intake_reads_sampled_requests_early_and_the_others_at_the_deadline() -> None:
    decides = proxy_decides(EXPECT)
    intake = mesh_intake(record("r1", tid(1), ts=100.0), tracer=TracerFamily.ZIPKIN, decides=decides,
                         timing=TIMING, now=999.0)  # fmt: skip
    assert intake.check == PendingCheck(Source.MESH, "r1", tid(1), "none", True, 0, 100.0, 100.25, 116.0)
    assert (intake.status, intake.decision, intake.counts_decision) == ("200", True, True)
    not_sampled = mesh_intake(record("r2", tid(2), ts=100.0, sampled=False), tracer=TracerFamily.ZIPKIN,
                              decides=decides, timing=TIMING, now=999.0)  # fmt: skip
    assert not_sampled.check == PendingCheck(Source.MESH, "r2", tid(2), "none", False, 0, 100.0, 104.0, 116.0)


def test_mesh_intake_without_a_decision_or_a_trace_id_checks_nothing() -> None:
    decides = proxy_decides(EXPECT)
    silent = mesh_intake(record("r1", tid(1), ts=1.0, status=0), tracer=TracerFamily.ZIPKIN,
                         decides=decides, timing=TIMING, now=2.0)  # fmt: skip
    assert (silent.status, silent.decision, silent.check, silent.counts_decision) == ("0", None, None, False)
    bad_id = record("r2", "not-hex", ts=1.0)
    unreadable = mesh_intake(bad_id, tracer=TracerFamily.ZIPKIN, decides=decides, timing=TIMING, now=2.0)
    assert unreadable.check is None and unreadable.decision is True  # its decision still counts
    assert unreadable.counts_decision


def test_forced_modes_do_not_count_in_the_decision_rate() -> None:
    decides = proxy_decides(EXPECT)
    assert decides("none") and decides("b3_multi_no_flag")
    assert not decides("b3_multi_sampled") and not decides("b3_single_not_sampled")
    assert not decides("no_such_mode")


def test_reference_checks_start_soon_after_the_export() -> None:
    check = reference_check(tid(9).upper(), 3, sent_at=50.0, seen_at=50.4, timing=TIMING)
    assert check == PendingCheck(Source.REFERENCE, tid(9), tid(9), "reference", None, 3, 50.0, 50.65, 66.0)


@pytest.mark.parametrize(
    ("decided", "obs", "outcome"),
    [
        (True, _obs(2), Outcome.FOUND),
        (False, _obs(1), Outcome.LEAKED),
    ],
)
def test_found_and_leaked_conclude_at_once(decided: bool, obs: TraceObservation, outcome: Outcome) -> None:
    verdict = judge(_mesh(decided), obs, 105.0, EXPECT, TIMING)
    assert isinstance(verdict, Concluded) and verdict.outcome is outcome
    assert verdict.ttq_s == (5.0 if outcome is Outcome.FOUND else None)


@pytest.mark.parametrize(
    ("decided", "obs", "outcome", "next_read"),
    [
        (True, _obs(1), Outcome.PARTIAL, 105.5),  # the second retry of a sampled one: 0.5 s later
        (True, _obs(0, FetchStatus.MISSING), Outcome.MISSING, 105.5),
        (False, _obs(0, FetchStatus.MISSING), Outcome.NOT_SAMPLED, 107.0),  # not sampled: 2 s
        (True, _obs(0, FetchStatus.ERROR), Outcome.UNKNOWN, 105.5),
        (True, None, Outcome.UNKNOWN, 105.5),
    ],
)
def test_the_rest_retry_then_conclude_at_give_up(
    decided: bool, obs: TraceObservation | None, outcome: Outcome, next_read: float
) -> None:
    retry = judge(_mesh(decided, attempts=1), obs, 105.0, EXPECT, TIMING)
    assert retry == Retry(due_at=next_read, attempts=2)
    near = judge(_mesh(decided, attempts=5), obs, 115.0, EXPECT, TIMING)
    assert near == Retry(due_at=116.0, attempts=6)  # the last read is at the give-up time
    assert judge(_mesh(decided), obs, 116.0, EXPECT, TIMING) == Concluded(outcome)


def test_reference_outcomes_by_span_count() -> None:
    check = reference_check(tid(1), 3, 50.0, 50.0, TIMING)
    assert judge(check, _obs(3), 50.5, EXPECT, TIMING) == Concluded(Outcome.FOUND, 0.5)
    assert judge(check, _obs(2), 66.0, EXPECT, TIMING) == Concluded(Outcome.PARTIAL)
    assert judge(check, _obs(0, FetchStatus.MISSING), 66.0, EXPECT, TIMING) == Concluded(Outcome.MISSING)
    assert judge(check, _obs(0, FetchStatus.ERROR), 66.0, EXPECT, TIMING) == Concluded(Outcome.UNKNOWN)
