"""The knee's relative bounds on hand-made step data (issue 13): achieved req/s must follow the
offered increase ("scaling"), p99 must stay within a multiple of the first step's ("p99-growth"),
and an error or collection bound still makes a knee with them on; the flags that set them.

Expected numbers are worked out in the comments from the inputs."""

from __future__ import annotations

import pytest

from loadgen import cli
from loadgen.analysis.stats import Proportion
from loadgen.capacity import (
    KneeBounds,
    StepMetrics,
    StepWindow,
    breaches_by_step,
    find_knee,
    offered_increase,
    render_capacity_markdown,
)
from loadgen.capacity.model import SafetyBounds
from loadgen.capacity.render import capacity_document
from loadgen.cli import crash
from loadgen.cli.capacity import KneeFlags
from loadgen.exitcodes import EXIT_ERROR
from loadgen.traffic.shape import StepPlan

# The rule of issue 13 alone: no SLO, the absolute bounds at their defaults.
RULE = KneeBounds()


def users_step(index: int, users: int, rps: float, p99: float, **kw: object) -> StepMetrics:
    """A closed-loop users step measured over 10 s (requests = rps x 10)."""
    w = StepWindow(index, f"{users} users", "users", users, None, 0.0, 0.0, 10.0, True)
    errors = kw.get("errors", 0)
    collection = kw.get("collection", (100, 100))
    assert isinstance(errors, int) and isinstance(collection, tuple)
    return StepMetrics(
        window=w, requests=round(rps * 10), errors=errors, p99_ms=p99, collection=Proportion(*collection)
    )


def rate_step(index: int, offered: float, rps: float, p99: float = 5.0) -> StepMetrics:
    """A rate step (10 users) measured over 10 s."""
    w = StepWindow(index, f"{offered:g} req/s", "rate", 10, offered, 0.0, 0.0, 10.0, True)
    return StepMetrics(window=w, requests=round(rps * 10), p99_ms=p99, collection=Proportion(100, 100))


def test_the_issue_run_has_its_knee_at_6_users() -> None:
    # 2 -> 6 users: 1,559 -> 1,261 req/s, p99 2.6 -> 13.6 ms. The added 4 users at 779.5 req/s
    # per user offer +3,118 req/s; the rise was -298 (< 1,559). 13.6 > 2 x 2.6 = 5.2.
    steps = [users_step(0, 2, 1559, 2.6), users_step(1, 6, 1261, 13.6)]
    assert offered_increase(steps[0], steps[1]) == pytest.approx(3118.0)
    knee = find_knee(steps, RULE)
    assert knee is not None and knee.index == 1
    assert knee.reasons == ("scaling", "p99-growth") and knee.reason == "scaling"
    assert "-298.0" in knee.detail and "+3118.0" in knee.detail and "2.6 ms" in knee.detail
    # Before issue 13 (the relative bounds off) the same steps had no knee.
    assert find_knee(steps, KneeBounds(min_scaling=None, max_p99_growth=None)) is None


@pytest.mark.parametrize(
    ("achieved", "knee"),
    [
        (149.9, True),  # offered 100 -> 200 (+100); rose +49.9 < 50
        (150.0, False),  # rose exactly half: within the bound
        (90.0, True),  # fell
    ],
)
def test_scaling_on_rate_steps(achieved: float, knee: bool) -> None:
    steps = [rate_step(0, 100, 100.0), rate_step(1, 200, achieved)]
    loose = KneeBounds(min_throughput=None)  # the absolute throughput bound would see 75 % too
    assert [r for r, _ in breaches_by_step(steps, loose)[1]] == (["scaling"] if knee else [])


def test_scaling_on_closed_loop_users_uses_the_per_user_rate_before() -> None:
    # 4 users at 200 req/s = 50 per user; 8 users offer +4 x 50 = +200. Half is 100.
    base = users_step(0, 4, 200.0, 5.0)
    assert breaches_by_step([base, users_step(1, 8, 300.0, 5.0)], RULE)[1] == []  # +100
    broken = breaches_by_step([base, users_step(1, 8, 299.0, 5.0)], RULE)[1]  # +99
    assert [r for r, _ in broken] == ["scaling"]
    # A custom share: 0.8 needs +160.
    assert find_knee([base, users_step(1, 8, 359.0, 5.0)], KneeBounds(min_scaling=0.8)) is not None
    assert find_knee([base, users_step(1, 8, 360.0, 5.0)], KneeBounds(min_scaling=0.8)) is None


def test_scaling_is_not_judged_without_an_offered_increase_or_a_step_before() -> None:
    same = [users_step(0, 4, 200.0, 5.0), users_step(1, 4, 100.0, 5.0)]  # same users: +0 offered
    assert find_knee(same, RULE) is None
    down = [rate_step(0, 200, 200.0), rate_step(1, 100, 50.0)]  # a lower step: offered -100
    assert find_knee(down, KneeBounds(min_throughput=None)) is None
    empty_before = [users_step(0, 2, 0.0, 5.0), users_step(1, 6, 10.0, 5.0)]
    assert breaches_by_step(empty_before, RULE)[1] == []


@pytest.mark.parametrize(("p99", "knee"), [(20.0, False), (20.1, True)])
def test_p99_growth_against_the_first_step(p99: float, knee: bool) -> None:
    # First p99 10 ms, default factor 2: 20.0 is at the bound, 20.1 past it. Throughput scales.
    steps = [users_step(0, 2, 100.0, 10.0), users_step(1, 4, 200.0, 12.0), users_step(2, 8, 400.0, p99)]
    found = find_knee(steps, RULE)
    assert (found is not None) == knee
    if found is not None:
        assert (found.index, found.reasons) == (2, ("p99-growth",))
        assert found.detail == "p99 20.1 ms > 2x the first step's 10.0 ms"
    # A factor of 3 lets 20.1 through; the first step with data is the base.
    assert find_knee(steps, KneeBounds(max_p99_growth=3.0)) is None
    no_data_first = [users_step(0, 1, 0.0, 1.0), *steps]
    assert [bool(b) for b in breaches_by_step(no_data_first, RULE)] == [False, False, False, knee]


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (users_step(1, 4, 200.0, 5.0, errors=21), "errors"),  # 21/2000 = 1.05 % > 1 %
        (users_step(1, 4, 200.0, 5.0, collection=(98, 100)), "collection"),  # 98 % < 99 %
    ],
)
def test_an_error_or_collection_bound_is_a_knee_with_the_rule_on(step: StepMetrics, reason: str) -> None:
    knee = find_knee([users_step(0, 2, 100.0, 5.0), step], RULE)
    assert knee is not None and (knee.index, knee.reasons) == (1, (reason,))


def test_capacity_md_states_the_relative_bounds() -> None:
    plan = StepPlan.parse("users:2,6", step_s=10, ramp_s=0)
    steps = [users_step(0, 2, 1559, 2.6), users_step(1, 6, 1261, 13.6)]
    doc = capacity_document(
        run_id="c", plan=plan, bounds=RULE, safety=SafetyBounds(), metrics=steps,
        knee=find_knee(steps, RULE), status="complete", abort=None,
    )  # fmt: skip
    assert doc["steps"][1]["breaches"] == ["scaling", "p99-growth"] and doc["last_good"] == 0
    md = render_capacity_markdown(doc)
    assert "req/s rise >= 50% of the offered increase" in md and "p99 <= 2x the first step's" in md
    assert "**Knee: step 1 (6 users)**" in md


def test_flags_set_the_bounds_and_0_turns_them_off() -> None:
    assert (KneeFlags().bounds().min_scaling, KneeFlags().bounds().max_p99_growth) == (0.5, 2.0)
    off = KneeFlags(min_scaling=0.0, max_p99_growth=0.0).bounds()
    assert off.min_scaling is None and off.max_p99_growth is None
    assert KneeFlags(min_scaling=0.7, max_p99_growth=3.0).bounds().min_scaling == 0.7


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-p99-growth", "0.5"], "--max-p99-growth must be 0 (off) or at least 1"),
        (["--min-scaling", "1.5"], "--min-scaling"),
    ],
)
def test_bad_knee_flags_are_one_line_and_exit_2(
    args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(crash, "_crash_dir", None)
    monkeypatch.setattr("sys.argv", ["loadgen", "capacity", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == EXIT_ERROR and "Traceback" not in err
    assert needle in err
