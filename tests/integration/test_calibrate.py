"""`loadgen calibrate`: the look-by-look orchestration with a simulated proxy (fast), then on the
real embedded mesh (real Envoy, real Locust): a correct gateway passes by exact prediction, a
gateway at 10 % told 20 % fails, by exact prediction and by statistics alone."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from loadgen.analysis.planner import envoy_threshold, plan_sample_size
from loadgen.analysis.reconcile import Expectation, reconcile_mesh
from loadgen.calibrate import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_PASS,
    CalibrateOptions,
    CalibrationError,
    CalibrationResult,
    calibrate,
    calibration_mix,
    crafted_modes,
    render_calibration_markdown,
    run_time_cap_s,
)
from loadgen.ledger import LiveCounts
from loadgen.mesh.modes import HeaderMode, parse_mix
from loadgen.mesh.rule import sampling_threshold
from loadgen.run import RunOptions, RunResult
from loadgen.stack.envoy import TracingConfig

from .conftest import leftover_processes


def quiet(_: str) -> None:
    pass


# --- a simulated proxy behind execute_run's interface -------------------------------------------


class FakeMesh:
    """Stands in for execute_run: a proxy applying Envoy's rule at `actual_percent` to random
    x-request-ids, echoed like httpbin. Writes the ledger (the watcher tails it) and reconciles it
    with the real reconciler. `overshoot` requests beyond max_requests, like Locust's users."""

    def __init__(
        self, actual_percent: float, seed: int = 1, overshoot: int = 3, errors_every: int = 0
    ) -> None:
        self.threshold = envoy_threshold(actual_percent)
        self.rng = random.Random(seed)
        self.overshoot = overshoot
        self.errors_every = errors_every
        self.calls: list[RunOptions] = []
        self.interrupt_at_call: int | None = None

    def __call__(self, opts: RunOptions, status: Any) -> RunResult:
        self.calls.append(opts)
        if self.interrupt_at_call == len(self.calls):
            raise KeyboardInterrupt
        run_dir = opts.output_dir / opts.run_id
        run_dir.mkdir(parents=True)
        records = []
        modes = list(parse_mix(opts.mix))
        for i in range(opts.max_requests + self.overshoot):
            record: dict[str, Any] = {"rid": f"{opts.run_id}-{i}", "mode": modes[i % len(modes)].value}
            if self.errors_every and i % self.errors_every == 0:
                record["status"] = 503
            else:
                head = self.rng.getrandbits(32)
                sampled = head % 10000 < self.threshold
                record.update(
                    status=200, up_xrid=f"{head:08x}-0000-{'9' if sampled else '4'}000-8000-000000000000"
                )
            records.append(record)
        with open(run_dir / "ledger.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        summary = reconcile_mesh(records, {}, Expectation(3, (), opts.expect_percent))
        summary["status"] = "complete"
        if opts.on_tick is not None:
            reason = opts.on_tick(LiveCounts(), 1.0)
            if reason:
                summary["status"] = "partial"
                summary["status_reason"] = f"aborted: {reason}"
        return RunResult(summary, run_dir, 0)


def fake_calibrate(tmp_path: Path, fake: FakeMesh, **kw: Any) -> CalibrationResult:
    opts = CalibrateOptions(
        calibration_id="cal", output_dir=tmp_path, gateway="http://gateway.invalid", backend="zipkin:x", **kw
    )
    return calibrate(opts, quiet, run=fake)


def test_correct_proxy_passes_by_exact_prediction_at_the_first_look(tmp_path: Path) -> None:
    fake = FakeMesh(20.0)
    result = fake_calibrate(tmp_path, fake, expected_percent=20.0, precision=0.02, seed=5)
    cal = result.calibration
    assert result.exit_code == EXIT_PASS and cal["verdict"] == "pass" and cal["basis"] == "exact"
    plan = plan_sample_size(0.2, 0.02)
    assert cal["plan"]["n"] == plan.n
    assert cal["sequential"]["looks"][0] == -(-plan.n // 10)
    # One run of the first look's size; every decision checked, none differs.
    assert [c.run_id for c in fake.calls] == ["look01"]
    call = fake.calls[0]
    assert call.max_requests == cal["sequential"]["looks"][0] and call.seed == 5
    assert call.reference_rate == 0 and call.expect_percent == 20.0
    assert call.mix == calibration_mix() == "none=1,b3_multi_no_flag=1,b3_single_no_flag=1"
    assert call.duration_s == run_time_cap_s(call.max_requests, 0.0)
    pred = cal["prediction"]
    assert pred["checked"] == cal["decisions"]["n"] >= cal["exact_prediction_needed"] == 149
    assert pred["mismatches"] == 0 and pred["all_checked"] and pred["max_disagreement"] <= 0.02
    assert cal["stopped_early"] is True
    on_disk = json.loads((result.cal_dir / "calibration.json").read_text())
    assert on_disk == cal and on_disk["exit_code"] == EXIT_PASS
    assert (result.cal_dir / "calibration.md").read_text() == render_calibration_markdown(cal)


def test_wrong_percentage_fails_by_exact_prediction_and_the_run_is_aborted(tmp_path: Path) -> None:
    result = fake_calibrate(tmp_path, FakeMesh(10.0), expected_percent=20.0, precision=0.02)
    cal = result.calibration
    assert result.exit_code == EXIT_FAIL and cal["verdict"] == "fail" and cal["basis"] == "exact"
    assert cal["prediction"]["mismatches"] > 0 and cal["prediction"]["first_mismatch_at"] >= 1
    assert len(cal["looks"]) == 1 and cal["looks"][0]["decision"] == "stop_fail"


def test_statistics_alone_catch_one_percent_told_two_percent_after_a_few_looks(tmp_path: Path) -> None:
    fake = FakeMesh(1.0, seed=3)
    result = fake_calibrate(tmp_path, fake, expected_percent=2.0, use_prediction=False, seed=1)
    cal = result.calibration
    assert result.exit_code == EXIT_FAIL and cal["basis"] == "statistical"
    assert cal["precision"] == pytest.approx(0.002)  # default: a tenth of 2 %
    stop = cal["looks"][-1]
    assert stop["decision"] == "stop_fail" and stop["p_value"] < stop["alpha"]
    assert all(look["decision"] == "continue" for look in cal["looks"][:-1])
    assert cal["stopped_early"] and cal["decisions"]["n"] < cal["plan"]["n"]
    # Seeds differ per run: the same seed would repeat the injected trace ids.
    assert [c.seed for c in fake.calls] == list(range(1, len(fake.calls) + 1))


def test_a_request_cap_below_the_plan_ends_inconclusive(tmp_path: Path) -> None:
    result = fake_calibrate(
        tmp_path,
        FakeMesh(20.0),
        expected_percent=20.0,
        precision=0.02,
        max_requests=300,
        use_prediction=False,
    )
    cal = result.calibration
    assert result.exit_code == EXIT_INCONCLUSIVE and cal["verdict"] == "inconclusive"
    assert cal["sequential"]["looks"][-1] == 300 and cal["decisions"]["n"] >= 300
    assert "planned precision needs" in cal["reason"]


def test_without_sequential_one_run_of_the_planned_size(tmp_path: Path) -> None:
    fake = FakeMesh(20.0, overshoot=0)
    result = fake_calibrate(tmp_path, fake, expected_percent=20.0, precision=0.05, sequential=False)
    assert [c.max_requests for c in fake.calls] == [plan_sample_size(0.2, 0.05).n]
    assert result.calibration["verdict"] == "pass" and result.calibration["basis"] == "exact"


def test_errors_are_topped_up_to_the_look(tmp_path: Path) -> None:
    fake = FakeMesh(20.0, overshoot=0, errors_every=10)
    result = fake_calibrate(tmp_path, fake, expected_percent=20.0, precision=0.05, sequential=False)
    assert [c.run_id for c in fake.calls] == ["look01", "look01-2", "look01-3"]
    assert result.calibration["requests"]["errors"] > 0
    n, planned = result.calibration["decisions"]["n"], plan_sample_size(0.2, 0.05).n
    assert n >= planned - 1
    if n < planned:
        assert "planned decisions after 3 run(s)" in result.calibration["notes"][0]


def test_no_visible_decision_is_an_error(tmp_path: Path) -> None:
    fake = FakeMesh(20.0, errors_every=1)
    with pytest.raises(CalibrationError, match="must echo request headers"):
        fake_calibrate(tmp_path, fake, expected_percent=20.0, precision=0.05)


def test_interrupted_calibration_is_partial(tmp_path: Path) -> None:
    fake = FakeMesh(1.0)
    fake.interrupt_at_call = 2
    result = fake_calibrate(tmp_path, fake, expected_percent=1.0, use_prediction=False)
    cal = result.calibration
    assert result.exit_code == EXIT_INTERRUPTED and cal["status"] == "partial"
    assert cal["verdict"] == "inconclusive" and len(cal["looks"]) == 1


def test_crafted_ids_are_crafted_for_the_expected_rule(tmp_path: Path) -> None:
    """xrid_crafted ids, crafted for the expected percentage and sampled in the rule's share:
    their residues mod 10000 are uniform, like random ids, so the statistics stay valid."""
    assert crafted_modes() == [HeaderMode.XRID_CRAFTED]
    assert calibration_mix(crafted_ids=True) == "xrid_crafted=1"
    fake = FakeMesh(0.29)
    fake_calibrate(tmp_path, fake, expected_percent=0.29, precision=0.01, crafted_ids=True)
    env = fake.calls[0].extra_env
    assert env == {"LOADGEN_XRID_PERCENT": "0.29", "LOADGEN_XRID_SAMPLED_FRACTION": "0.0028"}
    assert float(env["LOADGEN_XRID_SAMPLED_FRACTION"]) == sampling_threshold(0.29) / 10000
    assert fake.calls[0].mix == "xrid_crafted=1"
    plain = FakeMesh(0.29)
    fake_calibrate(tmp_path / "plain", plain, expected_percent=0.29, precision=0.01)
    assert plain.calls[0].extra_env == {}


def test_bad_options_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError):
        fake_calibrate(tmp_path, FakeMesh(1.0), expected_percent=101.0)
    with pytest.raises(CalibrationError):
        fake_calibrate(tmp_path, FakeMesh(1.0), expected_percent=1.0, precision=2.0)


def test_markdown_renders_the_verdict_and_the_looks() -> None:
    doc: dict[str, Any] = {
        "calibration_id": "c1",
        "status": "complete",
        "status_reason": None,
        "target": {"kind": "external", "gateway": "http://gw", "host": "h"},
        "expected_percent": 2.0,
        "rule": {"threshold": 200, "fraction": 0.02},
        "precision": 0.002,
        "confidence": 0.95,
        "plan": {"n": 20726, "wilson": 20681, "wald": 18824},
        "sequential": {"looks": [2073, 4146], "alpha": 0.001, "rho": 1.0},
        "exact_prediction_needed": 1497,
        "requests": {"total": 4150, "errors": 0},
        "decisions": {
            "k": 41,
            "n": 4150,
            "rate": 41 / 4150,
            "wilson": [0.0073, 0.0134],
            "clopper_pearson": [0.0071, 0.0134],
            "half_width": 0.0035,
        },
        "p_value": 1.2e-7,
        "prediction": {"used": False, "checked": 0, "mismatches": 0, "first_mismatch_at": None},
        "looks": [
            {
                "look": 1,
                "planned": 2073,
                "decisions": {"k": 25, "n": 2075},
                "p_value": 0.0021,
                "alpha": 0.0001,
                "statistical": "continue",
                "decision": "continue",
                "runs": ["look01"],
            },
            {
                "look": 2,
                "planned": 4146,
                "decisions": {"k": 41, "n": 4150},
                "p_value": 1.2e-7,
                "alpha": 0.0001,
                "statistical": "stop_fail",
                "decision": "stop_fail",
                "runs": ["look02"],
            },
        ],  # fmt: skip
        "stopped_early": True,
        "verdict": "fail",
        "basis": "statistical",
        "reason": "the exact binomial test rejects 2 % at the look's spent alpha",
        "notes": [],
    }
    assert render_calibration_markdown(doc) == "\n".join(
        [
            "# Sampling calibration `c1`",
            "",
            "**FAIL** (statistical): the exact binomial test rejects 2 % at the look's spent alpha.",
            "",
            "| | |",
            "|---|---|",
            "| target | external http://gw (Host h) |",
            "| expected | 2 % (Envoy's rule: 200/10000) |",
            "| precision | ±0.2 points at 95% |",
            "| planned decisions | 20,726 (Clopper-Pearson); Wilson 20,681; Wald 18,824 |",
            "| requests | 4,150 (errors 0) |",
            "| decisions | 41 sampled of 4,150: 0.988 % |",
            "| Wilson 95% | [0.730 %, 1.340 %] |",
            "| Clopper-Pearson 95% | [0.710 %, 1.340 %] (reaches ±0.35 points) |",
            "| exact binomial test vs 2.00% | p = 1.2e-07 (fixed-sample, not adjusted for looks) |",
            "| exact prediction | not used |",
            "| stopping rule | 2 look(s), alpha 0.001 spent as alpha·t^1, stopped early |",
            "",
            "## Looks",
            "",
            "| look | planned | decisions | sampled | p-value | alpha | statistics | decision | runs |",
            "|---|---|---|---|---|---|---|---|---|",
            "| 1 | 2,073 | 2,075 | 25 | 0.0021 | 0.0001 | continue | continue | look01 |",
            "| 2 | 4,146 | 4,150 | 41 | 1.2e-07 | 0.0001 | stop_fail | stop_fail | look02 |",
            "",
            "Each run folder (`look01/`, ...) holds its own ledger, summary.json and report.md.",
            "",
        ]
    )


# --- the real embedded mesh ---------------------------------------------------------------------


def mesh_calibrate(tmp_path: Path, mesh_percent: float, **kw: Any) -> CalibrationResult:
    kw.setdefault("tracing", TracingConfig(sampling_percent=mesh_percent))
    opts = CalibrateOptions(calibration_id="cal", output_dir=tmp_path, users=4, spawn_rate=4, seed=1, **kw)
    result = calibrate(opts, quiet)
    assert leftover_processes(str(result.cal_dir)) == []
    return result


@pytest.mark.integration
def test_mesh_at_20_expecting_20_passes_by_exact_prediction(tmp_path: Path) -> None:
    """The plan needs 1,671 decisions for ±2 points; exact prediction settles it at the first
    look (>= 149 agreeing decisions bound the effective rate within ±2 points of the rule's)."""
    result = mesh_calibrate(tmp_path, 20.0, expected_percent=20.0, precision=0.02)
    cal = result.calibration
    assert result.exit_code == EXIT_PASS, cal["reason"]
    assert cal["verdict"] == "pass" and cal["basis"] == "exact" and cal["target"]["kind"] == "embedded"
    assert cal["plan"]["n"] == 1671
    assert cal["prediction"]["mismatches"] == 0
    assert cal["prediction"]["checked"] == cal["decisions"]["n"] == cal["requests"]["total"] >= 149
    assert cal["requests"]["total"] < cal["plan"]["n"] and cal["stopped_early"]
    summary = json.loads((result.cal_dir / "look01" / "summary.json").read_text())
    assert summary["sampling"]["verdict_basis"] == "exact" and summary["verdicts"]["no_leaks"] == "pass"
    assert (result.cal_dir / "calibration.md").exists()


@pytest.mark.integration
def test_crafted_ids_through_a_gateway_that_keeps_them_are_predicted_before_sending(tmp_path: Path) -> None:
    """preserve_external_request_id: the gateway samples on our crafted id, so every decision
    was known before the request left (prediction source "crafted"), and still matches."""
    result = mesh_calibrate(
        tmp_path, 20.0, expected_percent=20.0, precision=0.02, crafted_ids=True,
        tracing=TracingConfig(sampling_percent=20.0, gateway_preserve_external_request_id=True),
    )  # fmt: skip
    cal = result.calibration
    assert result.exit_code == EXIT_PASS and cal["basis"] == "exact", cal["reason"]
    pred = cal["prediction"]
    assert pred["sources"]["crafted"] == pred["checked"] == cal["decisions"]["n"] >= 149
    assert pred["mismatches"] == 0 and cal["mix"] == "xrid_crafted=1"


@pytest.mark.integration
def test_mesh_at_10_expecting_20_fails_by_exact_prediction(tmp_path: Path) -> None:
    result = mesh_calibrate(tmp_path, 10.0, expected_percent=20.0, precision=0.02)
    cal = result.calibration
    assert result.exit_code == EXIT_FAIL and cal["verdict"] == "fail" and cal["basis"] == "exact"
    # A tenth of the requests differ (T = 1000 vs 2000): the first mismatch comes within a few dozen.
    first = cal["prediction"]["first_mismatch_at"]
    assert first is not None and 1 <= first <= 200
    assert cal["prediction"]["mismatches"] > 0 and len(cal["looks"]) == 1


@pytest.mark.integration
def test_mesh_at_10_expecting_20_fails_on_statistics_alone(tmp_path: Path) -> None:
    """Without exact prediction the sequential test needs a few looks of 168 decisions (the
    fixed-sample test would need 326 for 95 % power at alpha 0.001)."""
    result = mesh_calibrate(tmp_path, 10.0, expected_percent=20.0, precision=0.02, use_prediction=False)
    cal = result.calibration
    assert result.exit_code == EXIT_FAIL and cal["basis"] == "statistical"
    assert cal["stopped_early"] and cal["requests"]["total"] < cal["plan"]["n"]
    stop = cal["looks"][-1]
    assert stop["p_value"] < stop["alpha"]
    assert cal["decisions"]["n"] <= 6 * cal["sequential"]["looks"][0]


@pytest.mark.integration
def test_mesh_at_20_expecting_20_passes_on_statistics_alone(tmp_path: Path) -> None:
    """One run of the planned size (±3 points at 99.9 %: 2,104 decisions), statistics only. A
    correct proxy is inconclusive or fails here with probability below 0.1 %."""
    result = mesh_calibrate(
        tmp_path, 20.0, expected_percent=20.0, precision=0.03, confidence=0.999,
        use_prediction=False, sequential=False,
    )  # fmt: skip
    cal = result.calibration
    assert result.exit_code == EXIT_PASS, cal["reason"]
    assert cal["basis"] == "statistical" and cal["decisions"]["n"] >= cal["plan"]["n"] == 2104
    low, high = cal["decisions"]["clopper_pearson"]
    assert low <= 0.2 <= high and cal["decisions"]["half_width"] <= 0.031


@pytest.mark.integration
def test_a_mismatch_aborts_the_running_look(tmp_path: Path) -> None:
    """1 % told 2 %, at 100 req/s: the first mismatch comes after ~70 decisions on average, and
    the look (2,073 planned) is stopped at the next tick instead of running to its end."""
    result = mesh_calibrate(tmp_path, 1.0, expected_percent=2.0, rate=100.0)
    cal = result.calibration
    assert result.exit_code == EXIT_FAIL and cal["basis"] == "exact"
    assert cal["requests"]["total"] < cal["sequential"]["looks"][0] == 2073
    summary = json.loads((result.cal_dir / "look01" / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["status_reason"].startswith("aborted: calibration")
