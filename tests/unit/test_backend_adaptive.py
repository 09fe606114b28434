"""The read-back's adaptive concurrency, pure parts: the AIMD controller (scripted answers, no
clock), the busy clock (a fake clock), how statuses map to outcomes, `run_limited` following a
moving limit, and the options and `loadgen run` flags that configure them."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import typer

from loadgen.backends import BackendOptions
from loadgen.backends._adaptive import AimdController, AimdSettings, BusyClock, Outcome
from loadgen.backends._http import outcome_of, run_limited
from loadgen.backends.base import DEFAULT_MAX_CONCURRENCY_BATCHED, DEFAULT_MAX_CONCURRENCY_PER_ID
from loadgen.cli.run import TargetFlags

FAST = 0.010  # seconds: the backend's unloaded latency in these scripts


def answer(ctl: AimdController, outcome: Outcome = Outcome.OK, latency_s: float = FAST) -> int:
    """One attempt started now and answered at once; the limit after it."""
    ctl.record(ctl.begin(), outcome, latency_s)
    return ctl.limit


def controller(start: int = 2, maximum: int = 8, **settings: object) -> AimdController:
    return AimdController(AimdSettings(start=start, maximum=maximum, **settings))  # type: ignore[arg-type]


class TestSettings:
    @pytest.mark.parametrize(
        ("start", "maximum", "minimum"), [(0, 4, 1), (5, 4, 1), (2, 4, 3), (1, 1, 0)], ids=str
    )
    def test_bounds_out_of_order_are_refused(self, start: int, maximum: int, minimum: int) -> None:
        with pytest.raises(ValueError, match="minimum <= start <= maximum"):
            AimdSettings(start=start, maximum=maximum, minimum=minimum)

    @pytest.mark.parametrize(
        "bad",
        [
            {"increase_below": 0.5},
            {"increase_below": 3.0, "decrease_above": 2.0},
            {"decrease_factor": 1.0},
            {"decrease_factor": 0.0},
            {"ewma_alpha": 0.0},
            {"min_window": 0},
            {"warmup": 0},
        ],
        ids=str,
    )
    def test_other_settings_are_checked(self, bad: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="need"):
            AimdSettings(start=1, maximum=2, **bad)  # type: ignore[arg-type]


class TestIncrease:
    def test_plus_one_per_window_of_fast_answers_after_the_warm_up(self) -> None:
        # warmup 5: the 5th answer sets the baseline and is the first to count. Windows of
        # max(limit, min_window=4) answers: 4 at limit 2, 4 at 3, 4 at 4, 5 at 5.
        ctl = controller(start=2, maximum=6)
        limits = [answer(ctl) for _ in range(21)]
        assert limits == [2] * 7 + [3] * 4 + [4] * 4 + [5] * 5 + [6]
        state = ctl.state()
        assert (state.increases, state.decreases, state.lowest, state.highest) == (4, 0, 2, 6)
        assert state.baseline_s == pytest.approx(FAST)

    def test_never_above_the_maximum(self) -> None:
        ctl = controller(start=2, maximum=3)
        assert max(answer(ctl) for _ in range(200)) == 3
        assert ctl.state().increases == 1

    def test_answers_sent_before_an_increase_do_not_count_towards_the_next(self) -> None:
        ctl = controller(start=2, maximum=8)
        old = [ctl.begin() for _ in range(10)]  # in flight at limit 2
        for _ in range(8):
            answer(ctl)
        assert ctl.limit == 3  # the 5th..8th answers made it 3
        for ticket in old:  # sent at limit 2: they say nothing about limit 3
            ctl.record(ticket, Outcome.OK, FAST)
        assert ctl.limit == 3
        assert [answer(ctl) for _ in range(4)] == [3, 3, 3, 4]

    def test_holds_while_latency_is_between_the_two_thresholds(self) -> None:
        ctl = controller(start=4, maximum=16, ewma_alpha=1.0)  # EWMA = the last answer
        for _ in range(5):
            answer(ctl)
        assert {answer(ctl, latency_s=2.5 * FAST) for _ in range(100)} == {4}
        state = ctl.state()
        assert (state.increases, state.decreases) == (0, 0)

    def test_no_latency_decision_before_the_baseline(self) -> None:
        ctl = controller(start=4, maximum=16)
        limits = [answer(ctl, latency_s=FAST * (1 + n)) for n in range(4)]  # getting slower
        assert limits == [4] * 4 and ctl.state().baseline_s is None

    def test_not_adaptive_stays_at_the_start_and_still_counts(self) -> None:
        ctl = controller(start=3, maximum=9, adaptive=False)
        limits = {answer(ctl) for _ in range(50)}
        limits |= {answer(ctl, outcome) for outcome in Outcome for _ in range(3)}
        assert limits == {3} and ctl.maximum == 3
        state = ctl.state()
        assert (state.requests, state.throttled, state.server_errors, state.transport_errors) == (62, 3, 3, 3)
        assert (state.lowest, state.highest, state.increases, state.decreases) == (3, 3, 0, 0)


class TestDecrease:
    def test_throttled_halves_once_per_round_down_to_one(self) -> None:
        outcome = Outcome.THROTTLED
        ctl = controller(start=8, maximum=8)
        in_flight = [ctl.begin() for _ in range(8)]
        ctl.record(in_flight[0], outcome, FAST)
        assert ctl.limit == 4
        for ticket in in_flight[1:]:  # sent under the old limit: the same overload, already answered
            ctl.record(ticket, outcome, FAST)
        assert ctl.limit == 4
        assert [answer(ctl, outcome) for _ in range(4)] == [2, 1, 1, 1]
        state = ctl.state()
        assert (state.lowest, state.highest, state.decreases, state.requests) == (1, 8, 3, 12)

    @pytest.mark.parametrize("outcome", [Outcome.SERVER_ERROR, Outcome.TRANSPORT_ERROR])
    def test_a_failing_backend_takes_the_limit_down_to_the_start_only(self, outcome: Outcome) -> None:
        """A backend answering 5xx or not at all (gone mid-run) is not asked one at a time: the
        limit halves once per round as for 429, but no lower than where it started."""
        ctl = controller(start=4, maximum=16)
        for _ in range(200):  # fast answers: the limit rises above the start
            answer(ctl)
        risen = ctl.limit
        assert risen > 4
        in_flight = [ctl.begin() for _ in range(risen)]
        ctl.record(in_flight[0], outcome, FAST)
        assert ctl.limit == max(4, risen // 2)
        assert [answer(ctl, outcome) for _ in range(6)][-1] == 4
        assert ctl.state().lowest == 4
        # the same from the start: it stays there
        still = controller(start=8, maximum=8)
        assert [answer(still, outcome) for _ in range(5)] == [8] * 5

    def test_each_kind_is_counted_apart(self) -> None:
        ctl = controller(start=8, maximum=8)
        for outcome, times in (
            (Outcome.THROTTLED, 3),
            (Outcome.SERVER_ERROR, 2),
            (Outcome.TRANSPORT_ERROR, 1),
        ):
            for _ in range(times):
                answer(ctl, outcome)
        for _ in range(4):
            answer(ctl)
        state = ctl.state()
        assert (state.requests, state.throttled, state.server_errors, state.transport_errors) == (10, 3, 2, 1)

    def test_a_throttled_answer_says_nothing_of_latency(self) -> None:
        ctl = controller(start=4, maximum=8)
        for _ in range(6):
            answer(ctl)
        before = ctl.state()
        answer(ctl, Outcome.THROTTLED, latency_s=0.0001)  # 429s are fast
        after = ctl.state()
        assert (after.latency_ewma_s, after.baseline_s) == (before.latency_ewma_s, before.baseline_s)

    def test_after_a_decrease_it_climbs_again(self) -> None:
        ctl = controller(start=4, maximum=8)
        for _ in range(5):
            answer(ctl)
        assert answer(ctl, Outcome.THROTTLED) == 2
        assert [answer(ctl) for _ in range(4)] == [2, 2, 2, 3]

    def test_lingers_near_the_limit_last_throttled(self) -> None:
        ctl = controller(start=4, maximum=16)  # plateau_rounds 8
        for _ in range(5):
            answer(ctl)
        assert answer(ctl, Outcome.THROTTLED) == 2  # throttled at 4
        assert [answer(ctl) for _ in range(4)] == [2] * 3 + [3]  # 3 is below 4: a normal window
        assert [answer(ctl) for _ in range(32)] == [3] * 31 + [4]  # the step to 4: 8 windows of 4
        assert [answer(ctl) for _ in range(32)] == [4] * 31 + [5]  # and past it
        assert [answer(ctl) for _ in range(5)] == [5] * 4 + [6]  # above it: room again, normal

    def test_latency_blowing_up_halves_but_not_below_the_start(self) -> None:
        ctl = controller(start=4, maximum=16, ewma_alpha=1.0)
        while ctl.limit < 10:
            answer(ctl)
        assert ctl.limit == 10
        slow = 4 * FAST  # above decrease_above (3) x the baseline
        # It waits for a round of fresh answers (as many as the limit) before it believes them.
        assert [answer(ctl, latency_s=slow) for _ in range(10)] == [10] * 9 + [5]
        assert [answer(ctl, latency_s=slow) for _ in range(5)] == [5] * 4 + [4]  # not 2: the start
        # At the start, a latency that stays high is the backend's own: it becomes the baseline.
        assert [answer(ctl, latency_s=slow) for _ in range(4)] == [4] * 4
        state = ctl.state()
        assert state.baseline_s == pytest.approx(slow) and state.lowest == 4
        assert [answer(ctl, latency_s=slow) for _ in range(4)] == [4, 4, 4, 5]  # slow is normal now

    def test_throttling_still_goes_below_the_start(self) -> None:
        ctl = controller(start=4, maximum=16)
        assert [answer(ctl, Outcome.THROTTLED) for _ in range(3)] == [2, 1, 1]


class TestThreads:
    def test_counts_add_up_from_many_threads(self) -> None:
        ctl = controller(start=4, maximum=32)
        outcomes = [Outcome.OK] * 7 + [Outcome.THROTTLED]
        barrier = threading.Barrier(8)

        def hammer(n: int) -> None:
            barrier.wait()
            for i in range(500):
                answer(ctl, outcomes[(i + n) % len(outcomes)])

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        state = ctl.state()
        assert state.requests == 4000 and state.throttled == 500
        assert 1 <= state.lowest <= state.limit <= state.highest <= 32


class TestBusyClock:
    def test_overlapping_and_nested_calls_count_once(self) -> None:
        now = [100.0]
        clock = BusyClock(lambda: now[0])
        assert clock.seconds() == 0.0
        with clock.busy():
            now[0] += 1.0
            with clock.busy():  # nested (a search that fetches)
                now[0] += 2.0
            assert clock.seconds() == 3.0  # the call in progress counts
            now[0] += 1.0
        now[0] += 10.0  # idle
        outer = clock.busy()
        outer.__enter__()
        now[0] += 0.5
        inner = clock.busy()  # another thread's call, overlapping
        inner.__enter__()
        now[0] += 0.5
        outer.__exit__(None, None, None)
        now[0] += 0.25
        inner.__exit__(None, None, None)
        assert clock.seconds() == 4.0 + 1.25


class TestOutcomeOf:
    @pytest.mark.parametrize(
        ("status", "outcome"),
        [
            (200, Outcome.OK),
            (404, Outcome.OK),
            (400, Outcome.OK),
            (401, Outcome.OK),
            (429, Outcome.THROTTLED),
            (503, Outcome.THROTTLED),
            (500, Outcome.SERVER_ERROR),
            (502, Outcome.SERVER_ERROR),
            (504, Outcome.SERVER_ERROR),
        ],
    )
    def test_statuses(self, status: int, outcome: Outcome) -> None:
        assert outcome_of(status) is outcome


class ScriptedLimit:
    """A limiter whose limit the test moves."""

    def __init__(self, limit: int, maximum: int) -> None:
        self.limit = limit
        self.maximum = maximum


class TestRunLimited:
    def _run(self, limiter: ScriptedLimit, n: int, fn: Callable[[int], int]) -> list[int]:
        return list(run_limited(list(range(n)), fn, limiter, "test"))  # type: ignore[arg-type]

    def test_follows_a_limit_that_rises(self) -> None:
        limiter = ScriptedLimit(1, 4)
        lock = threading.Lock()
        in_flight = [0]
        seen: list[int] = []
        four = threading.Barrier(4, timeout=10)

        def fn(i: int) -> int:
            with lock:
                in_flight[0] += 1
                seen.append(in_flight[0])
            if i == 0:
                limiter.limit = 4  # read again once this call ends
            elif i <= 4:
                four.wait()  # items 1-4 can only pass together: 4 in flight
            with lock:
                in_flight[0] -= 1
            return i

        assert sorted(self._run(limiter, 12, fn)) == list(range(12))
        assert seen[0] == 1 and max(seen) == 4

    def test_follows_a_limit_that_falls(self) -> None:
        limiter = ScriptedLimit(3, 3)
        lock = threading.Lock()
        in_flight = [0]
        seen: list[int] = []
        three = threading.Barrier(3, timeout=10)

        def fn(i: int) -> int:
            with lock:
                in_flight[0] += 1
                seen.append(in_flight[0])
            if i < 3:
                three.wait()
                limiter.limit = 1
            with lock:
                in_flight[0] -= 1
            return i

        assert sorted(self._run(limiter, 10, fn)) == list(range(10))
        assert max(seen[:3]) == 3 and max(seen[3:]) == 1

    def test_one_item_or_a_maximum_of_one_runs_on_the_callers_thread(self) -> None:
        caller = threading.get_ident()
        threads: set[int] = set()

        def fn(i: int) -> int:
            threads.add(threading.get_ident())
            return i

        assert self._run(ScriptedLimit(1, 1), 5, fn) == [0, 1, 2, 3, 4]
        assert self._run(ScriptedLimit(4, 8), 1, fn) == [0]
        assert threads == {caller}


class TestOptions:
    def test_defaults(self) -> None:
        options = BackendOptions()
        assert (options.concurrency, options.max_concurrency, options.adaptive) == (4, None, True)
        assert options.concurrency_bound(batched=False) == DEFAULT_MAX_CONCURRENCY_PER_ID == 32
        assert options.concurrency_bound(batched=True) == DEFAULT_MAX_CONCURRENCY_BATCHED == 8

    def test_the_bound_is_never_below_the_start(self) -> None:
        assert BackendOptions(concurrency=50).concurrency_bound(batched=False) == 50
        assert BackendOptions(concurrency=2, max_concurrency=3).concurrency_bound(batched=True) == 3

    def test_not_adaptive_is_bounded_by_the_start(self) -> None:
        options = BackendOptions(concurrency=6, max_concurrency=20, adaptive=False)
        assert options.concurrency_bound(batched=False) == 6

    def test_a_maximum_below_the_start_is_refused(self) -> None:
        with pytest.raises(ValueError, match="max_concurrency >= concurrency"):
            BackendOptions(concurrency=8, max_concurrency=4)

    def test_flags_merge_and_show_in_repr(self) -> None:
        options = BackendOptions().merged({"max_concurrency": 12, "adaptive": False})
        assert (options.max_concurrency, options.adaptive) == (12, False)
        assert "max_concurrency=12, adaptive=False" in repr(options)


class TestCliFlags:
    def test_flags_become_options(self) -> None:
        assert TargetFlags().backend_flags() == {
            "headers": None,
            "verify": None,
            "concurrency": None,
            "max_concurrency": None,
            "adaptive": None,
        }
        flags = TargetFlags(backend_concurrency=6, backend_max_concurrency=24).backend_flags()
        options = BackendOptions().merged(flags)
        assert (options.concurrency, options.max_concurrency, options.adaptive) == (6, 24, True)
        fixed = BackendOptions().merged(TargetFlags(backend_fixed_concurrency=True).backend_flags())
        assert (fixed.concurrency, fixed.adaptive, fixed.concurrency_bound(batched=False)) == (4, False, 4)

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            ({"backend_max_concurrency": 8, "backend_fixed_concurrency": True}, "not both"),
            ({"backend_max_concurrency": 3}, "(3) is below --backend-concurrency (4)"),
            (
                {"backend_max_concurrency": 5, "backend_concurrency": 6},
                "(5) is below --backend-concurrency (6)",
            ),
        ],
        ids=str,
    )
    def test_contradictions_are_one_error_line(
        self, flags: dict[str, object], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(typer.Exit) as exited:
            TargetFlags(**flags).backend_flags()  # type: ignore[arg-type]
        assert exited.value.exit_code == 2
        assert message in " ".join(capsys.readouterr().err.split())
