"""loadgen.analysis.gates (thresholds from flags or loadgen.toml) and loadgen.report.junit (their JUnit XML)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from loadgen.analysis.gates import (
    EXIT_GATES_FAILED,
    EXIT_GATES_PASSED,
    GateConfig,
    GateConfigError,
    GateResult,
    evaluate_gates,
    gate_config_from_mapping,
    gate_config_from_toml,
    gates_exit_code,
    gates_headline,
    load_gate_config,
)
from loadgen.analysis.stats import wilson_interval
from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE
from loadgen.report.junit import render_junit
from loadgen.report.plots import visible_text


def prop(k: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [low, high]}


def summary(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "run_id": "r1",
        "requests": {"total": 1000, "errors": 2},
        "sampling": {
            "configured_percent": 20.0,
            "decision": prop(200, 1000),
            "verdict": "pass",
            "verdict_basis": "exact",
        },
        "mesh": {"collection": prop(990, 1000), "unknown": 3, "leaked": 0, "leaked_examples": []},
        "reference": {"collection": prop(100, 100), "unknown": 0},
        "latency_ms": {
            "none": {"n": 500, "p50": 2.0, "p95": 5.0, "p99": 9.5},
            "b3_multi_sampled": {"n": 500, "p50": 2.0, "p95": 6.0, "p99": 12.25},
        },
    }
    s.update(over)
    return s


ALL = GateConfig(
    verdicts=False,  # these tests are about the thresholds (and the sampling gate)
    min_collection=0.99,
    min_reference_collection=1.0,
    max_p99_ms=12.25,
    max_error_rate=0.002,
    max_leaked=0,
)


def by_name(results: list[GateResult]) -> dict[str, GateResult]:
    return {r.name: r for r in results}


# --- configuration ----------------------------------------------------------------------------------


def test_defaults_check_every_verdict_and_the_error_share() -> None:
    verdicts = {"load_delivered": "pass", "sampling": "pass", "mesh_collection": "pass", "no_leaks": "pass"}
    results = evaluate_gates(summary(verdicts=verdicts), GateConfig())
    assert [r.name for r in results] == [
        "sampling", "load_delivered", "mesh_collection", "no_leaks", "max_error_rate",
    ]  # fmt: skip
    assert all(r.passed for r in results)
    assert results[0].observed == "pass" and results[0].threshold == "pass"
    # on by default at the share that fails a run's load_delivered verdict: 0.2 % passes
    assert results[-1].threshold == DEFAULT_MAX_ERROR_RATE == 0.05
    # the old default (sampling and the error share only) is one switch away
    old = evaluate_gates(summary(verdicts=verdicts), GateConfig(verdicts=False))
    assert [r.name for r in old] == ["sampling", "max_error_rate"]


def test_the_default_error_gate_fails_a_failing_run_and_names_the_commonest_error() -> None:
    top = [
        {"status": 404, "error": "HTTP 404", "count": 900},
        {"status": 0, "error": "timed out", "count": 100},
    ]
    failing = summary(requests={"total": 1000, "errors": 1000, "top_errors": top})
    gate = by_name(evaluate_gates(failing, GateConfig()))["max_error_rate"]
    assert not gate.passed and gate.observed == 1.0
    assert gate.message == (
        "error rate 100.00 % (1000 of 1000 requests) > maximum 5.00 %; most common: HTTP 404 (900 requests)"
    )
    # the same boundary as the verdict: 5 % passes, just above fails
    assert by_name(evaluate_gates(summary(requests={"total": 100, "errors": 5}), GateConfig()))[
        "max_error_rate"
    ].passed
    assert not by_name(evaluate_gates(summary(requests={"total": 100, "errors": 6}), GateConfig()))[
        "max_error_rate"
    ].passed
    # --max-error-rate (a fraction, like --min-collection) overrides it; 1 allows any share ...
    lenient = GateConfig().merged({"max-error-rate": 1.0})
    assert by_name(evaluate_gates(failing, lenient))["max_error_rate"].passed
    # ... but a run that made no request fails whatever the maximum
    nothing = summary(requests={"total": 0, "errors": 0})
    assert not by_name(evaluate_gates(nothing, lenient))["max_error_rate"].passed
    with pytest.raises(GateConfigError, match="fraction"):
        GateConfig().merged({"max_error_rate": 5})  # 5 % is 0.05


def test_toml_gates_table_with_every_key() -> None:
    config = gate_config_from_toml(
        """
        [run]
        users = 10            # other tables are not ours to judge

        [gates]
        verdicts = true
        sampling = true
        allow-inconclusive = true
        min_collection = 0.99
        min_reference_collection = 1
        max_p99_ms = 250
        max_error_rate = 0.001
        max_leaked = 0
        """
    )
    assert config == GateConfig(
        verdicts=True,
        sampling=True,
        allow_inconclusive=True,
        min_collection=0.99,
        min_reference_collection=1.0,
        max_p99_ms=250.0,
        max_error_rate=0.001,
        max_leaked=0,
    )
    assert isinstance(config.max_leaked, int) and isinstance(config.max_p99_ms, float)
    assert gate_config_from_toml("[other]\nx = 1\n") == GateConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gates]\nmin_colection = 0.9\n", "unknown gate 'min_colection'"),
        ("[gates]\nmin_collection = 99\n", "fraction in \\[0, 1\\]"),
        ("[gates]\nmax_error_rate = -0.1\n", "must not be negative"),
        ("[gates]\nmax_p99_ms = 'fast'\n", "max_p99_ms must be a number"),
        ("[gates]\nmax_p99_ms = nan\n", "max_p99_ms must be a number"),
        ("[gates]\nmax_leaked = 1.5\n", "whole number"),
        ("[gates]\nsampling = 1\n", "sampling must be true or false"),
        ("[gates]\nmin_collection = true\n", "must be a number"),
        ("gates = 3\n", "must be a table"),
        ("[gates\n", "not valid TOML"),
    ],
)
def test_bad_gate_configuration_is_rejected_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(GateConfigError, match=message):
        gate_config_from_toml(text)


def test_flags_override_the_file_and_none_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "loadgen.toml"
    path.write_text("[gates]\nmin_collection = 0.95\nmax_p99_ms = 100\n")
    config = load_gate_config(path).merged(
        {"min_collection": 0.99, "max_p99_ms": None, "max-leaked": 2, "allow_inconclusive": True}
    )
    assert config == GateConfig(allow_inconclusive=True, min_collection=0.99, max_p99_ms=100.0, max_leaked=2)
    with pytest.raises(GateConfigError, match="flags: unknown gate 'bogus'"):
        config.merged({"bogus": 1})
    with pytest.raises(GateConfigError, match="cannot read"):
        load_gate_config(tmp_path / "absent.toml")
    assert gate_config_from_mapping({"max_leaked": 3}).max_leaked == 3
    assert config.to_dict()["max_leaked"] == 2


# --- evaluation -------------------------------------------------------------------------------------


def test_every_gate_passes_at_its_threshold() -> None:
    results = evaluate_gates(summary(), ALL)
    assert [r.name for r in results] == [
        "sampling",
        "min_collection",
        "min_reference_collection",
        "max_p99_ms",
        "max_error_rate",
        "max_leaked",
    ]
    assert all(r.passed for r in results), [r.message for r in results if not r.passed]
    r = by_name(results)
    assert r["min_collection"].observed == 0.99 and r["min_collection"].threshold == 0.99  # >= is inclusive
    assert "3 unknown" in r["min_collection"].message
    assert r["max_p99_ms"].observed == 12.25 and "b3_multi_sampled" in r["max_p99_ms"].message
    assert r["max_error_rate"].observed == 0.002 and "2 of 1000 requests" in r["max_error_rate"].message
    assert r["max_leaked"].observed == 0
    assert gates_exit_code(results) == EXIT_GATES_PASSED == 0
    assert gates_headline(results) == "gates: 6 of 6 passed"


def test_each_gate_fails_just_past_its_threshold() -> None:
    s = summary(
        requests={"total": 1000, "errors": 3},
        mesh={"collection": prop(989, 1000), "unknown": 0, "leaked": 2, "leaked_examples": ["abc", "def"]},
        reference={"collection": prop(99, 100), "unknown": 1},
        latency_ms={"none": {"p99": 12.26}},
    )
    s["sampling"]["verdict"] = "fail"
    results = evaluate_gates(s, ALL)
    assert not any(r.passed for r in results)
    r = by_name(results)
    assert r[
        "sampling"
    ].observed == "fail" and "decision rate 20.00 % (k=200, n=1000) vs configured 20 %" in (
        r["sampling"].message
    )
    assert r["min_collection"].observed == pytest.approx(0.989)
    assert "< minimum 99.00 %" in r["min_collection"].message
    assert "1 unknown" in r["min_reference_collection"].message
    assert "> maximum 12.25 ms" in r["max_p99_ms"].message
    assert r["max_leaked"].observed == 2 and "e.g. abc, def" in r["max_leaked"].message
    assert gates_exit_code(results) == EXIT_GATES_FAILED == 1
    assert gates_headline(results).startswith("gates: 0 of 6 passed; failed: sampling, min_collection")


def test_inconclusive_sampling_passes_only_when_allowed_and_can_be_switched_off() -> None:
    s = summary()
    s["sampling"]["verdict"] = "inconclusive"
    assert not evaluate_gates(s, GateConfig(verdicts=False))[0].passed
    allowed = evaluate_gates(s, GateConfig(verdicts=False, allow_inconclusive=True))[0]
    assert allowed.passed and allowed.threshold == "pass or inconclusive"
    s["sampling"]["verdict"] = "fail"
    assert not evaluate_gates(s, GateConfig(verdicts=False, allow_inconclusive=True))[0].passed
    only_errors = evaluate_gates(s, GateConfig(verdicts=False, sampling=False))
    assert [r.name for r in only_errors] == ["max_error_rate"]
    assert evaluate_gates(s, GateConfig(verdicts=False, sampling=False, max_error_rate=None)) == []
    assert gates_exit_code([]) == 0


def test_a_gate_that_measured_nothing_fails() -> None:
    s = summary(
        requests={"total": 0, "errors": 0},
        mesh={"collection": prop(0, 0), "unknown": 0},
        reference={"collection": prop(0, 0)},
        latency_ms={"none": {"n": 0, "p99": None}},
    )
    del s["sampling"]["configured_percent"]
    s["sampling"]["decision"] = prop(0, 0)
    results = by_name(evaluate_gates(s, ALL))
    for name in ("min_collection", "min_reference_collection", "max_p99_ms", "max_error_rate", "max_leaked"):
        assert not results[name].passed, name
        assert results[name].observed is None
    assert "nothing was measured (n = 0)" in results["min_collection"].message
    assert "no decisions, configured percentage unknown" in results["sampling"].message
    assert evaluate_gates({}, ALL)[0].observed == "missing"


def test_no_leaks_gate_needs_queried_traces() -> None:
    """leaked == 0 with nothing queried (the backend gone) is no evidence of no leaks."""
    s = summary()
    s["mesh"]["leak_checked"] = 0
    r = by_name(evaluate_gates(s, GateConfig(verdicts=False, sampling=False, max_leaked=0)))["max_leaked"]
    assert not r.passed and r.observed is None
    assert "no decided-not-sampled trace was queried (n = 0)" in r.message
    s["mesh"]["leak_checked"] = 120
    r = by_name(evaluate_gates(s, GateConfig(verdicts=False, sampling=False, max_leaked=0)))["max_leaked"]
    assert r.passed and r.message == "0 traces leaked of 120 queried <= maximum 0"


def test_sampling_gate_reads_the_final_verdict_and_its_cause() -> None:
    s = summary()  # sampling.verdict "pass": what the interval said ...
    cause = "4 decisions; at least 11 are needed"
    s["verdicts"] = {"sampling": "inconclusive"}  # ... but there was too little evidence
    s["verdict_details"] = {
        "sampling": {
            "verdict": "inconclusive",
            "checked": 4,
            "minimum": 11,
            "basis": "statistical",
            "cause": cause,
        }
    }
    r = evaluate_gates(s, GateConfig())[0]
    assert not r.passed and r.observed == "inconclusive"
    assert f"({cause})" in r.message
    assert evaluate_gates(s, GateConfig(allow_inconclusive=True))[0].passed


def test_every_verdict_is_a_gate_named_after_it_with_its_evidence_and_cause() -> None:
    s = summary(verdicts={"load_delivered": "pass", "mesh_collection": "fail", "no_leaks": "inconclusive"})
    s["verdict_details"] = {
        "mesh_collection": {
            "verdict": "fail", "checked": 1000, "minimum": 1, "basis": "wilson95", "cause": "lost spans",
        },
        "no_leaks": {"verdict": "inconclusive", "checked": 0, "minimum": 1, "basis": "exact", "cause": "none queried"},
    }  # fmt: skip
    r = by_name(evaluate_gates(s, GateConfig(max_error_rate=None)))
    assert list(r) == ["sampling", "load_delivered", "mesh_collection", "no_leaks"]
    assert r["load_delivered"].passed and r["load_delivered"].message == (
        "load_delivered verdict pass; required: pass"  # no verdict_details: no evidence to show
    )
    assert not r["mesh_collection"].passed and r["mesh_collection"].observed == "fail"
    assert r["mesh_collection"].message == (
        "mesh_collection verdict fail (wilson95, 1,000 checked, at least 1 needed): lost spans; required: pass"
    )
    assert not r["no_leaks"].passed and r["no_leaks"].threshold == "pass"
    loose = by_name(
        evaluate_gates(s, GateConfig(allow_inconclusive=True, sampling=False, max_error_rate=None))
    )
    assert list(loose) == ["load_delivered", "mesh_collection", "no_leaks"]  # sampling left out
    assert loose["no_leaks"].passed and not loose["mesh_collection"].passed
    assert loose["no_leaks"].message.endswith(": none queried; required: pass or inconclusive")


def test_a_summary_without_verdicts_fails_the_verdicts_gate() -> None:
    r = by_name(evaluate_gates(summary(), GateConfig(sampling=False, max_error_rate=None)))
    assert list(r) == ["verdicts"] and not r["verdicts"].passed and r["verdicts"].observed is None
    assert "never judged" in r["verdicts"].message
    # the sampling gate still reads the reconciler's sampling verdict of such a summary
    r = by_name(evaluate_gates(summary(), GateConfig(max_error_rate=None)))
    assert list(r) == ["sampling", "verdicts"] and r["sampling"].passed


# --- JUnit --------------------------------------------------------------------------------------------


def test_junit_has_one_testcase_per_gate_and_a_failure_per_failed_gate() -> None:
    s = summary(latency_ms={"none": {"p99": 99.0}})
    results = evaluate_gates(s, ALL)
    xml = render_junit(
        results, "loadgen.analysis.gates", properties={"run_id": "r1"}, timestamp="2026-11-27T10:00:00"
    )
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(xml.encode())
    assert root.tag == "testsuites" and root.get("tests") == "6" and root.get("failures") == "1"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "loadgen.analysis.gates" and suite.get("timestamp") == "2026-11-27T10:00:00"
    assert [(p.get("name"), p.get("value")) for p in suite.iter("property")] == [("run_id", "r1")]
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.name for r in results]
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["max_p99_ms"]
    failure = failed[0].find("failure")
    assert failure is not None and failure.get("type") == "GateFailed"
    assert failure.get("message") == by_name(results)["max_p99_ms"].message
    assert (failure.text or "").startswith("observed: 99.0\nthreshold: 12.25\n")
    passed = [c for c in cases if c.find("failure") is None]
    assert all(c.find("system-out") is not None for c in passed)


def test_junit_escapes_hostile_text() -> None:
    hostile = "<b>\"q\" & 'a' ]]> \x1b[0m \x00 \u202e\nline2"
    results = [GateResult(hostile, False, hostile, hostile, hostile), GateResult("ok", True, 1, 1, "fine")]
    xml = render_junit(results, hostile, properties={hostile: hostile})
    assert "\x1b" not in xml and "\x00" not in xml and "\u202e" not in xml
    root = ET.fromstring(xml.encode())
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == visible_text(hostile)
    case = suite.find("testcase")
    assert case is not None and case.get("name") == visible_text(hostile)
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == visible_text(hostile)
    # the failure text keeps line breaks and shows everything else visibly
    assert failure.text is not None and "<b>\"q\" & 'a' ]]> \\x1b[0m \\x00 \\u202e\nline2" in failure.text
    assert root.get("failures") == "1" and root.get("tests") == "2"


def test_junit_of_no_gates_is_an_empty_passing_suite() -> None:
    root = ET.fromstring(render_junit([]).encode())
    assert root.get("tests") == "0" and root.get("failures") == "0"
    assert root.find("testsuite") is not None and not root.find("testsuite").findall("testcase")  # type: ignore[union-attr]
