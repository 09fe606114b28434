"""The statistical (tag-search) decision estimate, on hand-built ledgers."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.analysis.stats import wilson_interval
from loadgen.analysis.tagsearch import estimate_from_tags


def rec(mode: str, inj: str | None = None, status: int = 200) -> dict[str, Any]:
    return {"mode": mode, "inj_trace": inj, "status": status}


def test_attributes_injected_ids_and_counts_the_rest_for_header_less_requests() -> None:
    ledger = [
        rec("none"), rec("none"), rec("none"), rec("none"),
        rec("b3_multi_no_flag", "a" * 32), rec("b3_multi_no_flag", "b" * 32),
        rec("b3_multi_sampled", "c" * 32), rec("b3_multi_not_sampled", "d" * 32),
        rec("none", status=503),  # no response: not a decision-free request that was decided
    ]  # fmt: skip
    tagged = {"a" * 32, "c" * 32, "e" * 32, "f" * 32, "9" * 32}  # e, f: Envoy-started traces; 9: reference
    out = estimate_from_tags(ledger, tagged, {"9" * 32}, None)
    assert out["tagged_mesh"] == 4 and out["tagged_reference"] == 1
    assert out["unattributed_mesh"] == 2
    # decision-free requests: 4 none + 2 no-flag; found: a (known) + e, f (unattributed)
    assert (out["decision"]["k"], out["decision"]["n"]) == (3, 6)
    assert out["forced_sampled_found"] == {"k": 1, "n": 1}
    assert out["forced_not_sampled_found"] == {"k": 0, "n": 1}
    assert out["decision_corrected"] is None


def test_correction_by_reference_collection_widens_the_interval() -> None:
    ledger = [rec("none")] * 100
    tagged = {f"{i:032x}" for i in range(1, 16)}  # 15 found of 100
    ref: dict[str, Any] = {"k": 50, "n": 100, "rate": 0.5, "ci95": list(wilson_interval(50, 100))}
    out = estimate_from_tags(ledger, tagged, set(), ref)
    corrected = out["decision_corrected"]
    assert corrected["rate"] == pytest.approx(0.30)
    raw_low, raw_high = wilson_interval(15, 100)
    assert corrected["ci95"][0] == pytest.approx(raw_low / ref["ci95"][1])
    assert corrected["ci95"][1] == pytest.approx(raw_high / ref["ci95"][0])
    assert corrected["ci95"][0] < corrected["rate"] < corrected["ci95"][1]


def test_forced_traces_under_ids_envoy_creates_are_not_counted_as_decision_free() -> None:
    # x-client-trace-id forces tracing, but under a trace id Envoy makes: its trace is tagged and
    # unattributable; it must not inflate the decision-free estimate.
    ledger = [rec("none"), rec("none"), rec("client_trace_id")]
    tagged = {"e" * 32, "f" * 32}  # one header-less request sampled + the forced one
    out = estimate_from_tags(ledger, tagged, set(), None)
    assert out["forced_with_new_trace_id"] == 1
    assert out["unattributed_mesh"] == 1
    assert (out["decision"]["k"], out["decision"]["n"]) == (1, 2)


def test_no_tagged_mesh_trace_is_no_estimate_not_zero() -> None:
    """No echo and no run-id tag on mesh spans: only reference traces carry the tag. "0 of 502
    sampled [0, 0.0076]" would be a measurement that never happened: the estimate is null."""
    ledger = [rec("none")] * 502 + [rec("b3_multi_sampled", "c" * 32)]
    ref_ids = {f"{i:032x}" for i in range(1, 11)}
    ref = {"k": 10, "n": 10, "rate": 1.0, "ci95": list(wilson_interval(10, 10))}
    out = estimate_from_tags(ledger, set(ref_ids), ref_ids, ref)
    assert out["tagged_mesh"] == 0 and out["tagged_reference"] == 10
    assert out["decision"] is None and out["decision_corrected"] is None
    assert out["note"].startswith("no mesh trace was found by the run tag (10 reference traces were)")
    assert "502 decision-free requests" in out["note"]


def test_no_decision_free_request_is_no_estimate() -> None:
    out = estimate_from_tags([rec("b3_multi_sampled", "c" * 32)], {"c" * 32}, set(), None)
    assert out["decision"] is None and out["note"] is not None
    assert out["forced_sampled_found"] == {"k": 1, "n": 1}


def test_an_attributed_estimate_has_no_note() -> None:
    out = estimate_from_tags([rec("none"), rec("none")], {"e" * 32}, set(), None)
    assert out["note"] is None and (out["decision"]["k"], out["decision"]["n"]) == (1, 2)
