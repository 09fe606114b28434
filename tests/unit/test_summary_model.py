"""The typed summary (loadgen.summary): the published schema is the model's, every summary the
reconciler builds decodes and encodes back to the same JSON, and a summary of the wrong shape
or an unknown schema version is refused with the field or version named (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from loadgen.summary import SCHEMA_VERSION, Summary, SummaryError, decode, load_summary, schema_json
from loadgen.summary.model import Proportion

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_schema_is_the_models() -> None:
    committed = (ROOT / "summary.schema.json").read_text()
    assert committed == schema_json(), (
        "summary.schema.json is stale: regenerate it with "
        "`python -c 'import loadgen.summary as s; print(s.schema_json(), end=\"\")' > summary.schema.json`"
    )


def test_the_readme_links_the_schema_and_names_the_version() -> None:
    readme = (ROOT / "README.md").read_text()
    outputs = (ROOT / "docs" / "outputs.md").read_text()
    assert "summary.schema.json" in readme and "(../summary.schema.json)" in outputs
    assert f"## summary.json schema (`schema_version: {SCHEMA_VERSION}`)" in outputs


def minimal() -> dict[str, Any]:
    rate = {"k": 1, "n": 2, "rate": 0.5, "ci95": [0.1, 0.9]}
    return {
        "schema_version": 1,
        "run_id": "r1",
        "requests": {"total": 2, "errors": 0},
        "sampling": {"decision": rate},
        "mesh": {
            "collection": rate,
            "partial": 0,
            "unknown": 0,
            "leaked": 0,
            "expected_spans_per_trace": 3,
            "expected_services": ["a"],
            "spans_per_found_trace": {"3": 1},
            "run_tag": {"k": 3, "n": 3},
        },  # fmt: skip
        "propagation": {**rate, "backend": rate},
        "modes": {},
        "latency_ms": {},
        "verdicts": {"sampling": "pass"},
    }


def test_a_minimal_summary_decodes_and_validates() -> None:
    s = decode(minimal())
    assert isinstance(s, Summary) and s.run_id == "r1"
    assert s.mesh is not None and s.mesh.collection == Proportion(k=1, n=2, rate=0.5, ci95=(0.1, 0.9))
    assert s.mesh.leak_checked is None  # absent in an older summary: not invented as 0
    validator = jsonschema.Draft202012Validator(json.loads(schema_json()))
    assert list(validator.iter_errors(minimal())) == []


def test_the_schema_rejects_what_the_decoder_rejects() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(schema_json()))
    wrong = minimal()
    wrong["requests"]["total"] = "many"
    assert not validator.is_valid(wrong)
    with pytest.raises(SummaryError, match=r"`requests.total` must be a whole number >= 0"):
        decode(wrong)
    absent = minimal()
    del absent["mesh"]["run_tag"]
    assert not validator.is_valid(absent)
    with pytest.raises(SummaryError, match=r"`mesh.run_tag` is missing"):
        decode(absent)


def test_fields_only_some_runs_have_stay_absent_when_written() -> None:
    data = minimal()
    out = decode(data).to_dict()
    for key in ("status_reason", "component_failure", "recovered", "verified_at"):
        assert key not in out
    data["status_reason"] = None  # a rebuilt summary's null stays null
    assert decode(data).to_dict()["status_reason"] is None
    assert out["mesh"]["collection"]["ci95"] == [0.1, 0.9]  # JSON lists, not tuples


@pytest.mark.handmade_summary
@pytest.mark.parametrize("version", [0, 2, 99, "1", True])
def test_an_unknown_schema_version_is_refused_naming_it(tmp_path: Path, version: object) -> None:
    data = {**minimal(), "schema_version": version}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    with pytest.raises(
        SummaryError, match=rf"schema_version {json.dumps(version)} is not one this loadgen reads"
    ):
        load_summary(path)


def test_a_summary_without_a_version_is_schema_1() -> None:
    data = minimal()
    del data["schema_version"]
    assert decode(data).schema_version == SCHEMA_VERSION == 1


def test_build_summary_judges_once_on_what_was_measured_and_adds_the_run_facts() -> None:
    from loadgen.analysis.reconcile import Expectation, reconcile_mesh, reconcile_reference
    from loadgen.summary.build import Measured, RunFacts, build_summary

    expect = Expectation(spans_per_trace=1, services=("gateway",), configured_percent=50.0)
    ledger = [{"rid": "r0", "mode": "none", "status": 200, "ts": 1.0, "latency_ms": 1.0}]
    reconciled = reconcile_mesh(ledger, {}, expect)
    measured = Measured(reconciled=reconciled, reference=reconcile_reference([], {}, {}))
    facts = RunFacts(status="partial", status_reason="interrupted")
    s = build_summary(
        run_id="r9", measured=measured, min_collection=0.99, max_error_rate=0.5, notes=["a", "b"],
        readback_notes=["b"], facts=facts,
    )  # fmt: skip
    assert (s.run_id, s.status, s.status_reason, s.notes, s.readback_notes) == (
        "r9", "partial", "interrupted", ["a", "b"], ["b"]
    )  # fmt: skip
    assert s.max_error_rate == 0.5 and s.min_collection == 0.99
    # one request, answered, no decision seen: delivered, the rest inconclusive
    assert s.verdicts == {
        "load_delivered": "pass", "sampling": "inconclusive", "mesh_collection": "inconclusive",
        "no_leaks": "inconclusive",
    }  # fmt: skip
    assert set(s.verdict_details) == set(s.verdicts)
    # judged before the facts: a partial status does not change a cause (as before issue 11)
    assert "stopped before read-back" not in (s.verdict_details["no_leaks"].cause or "")
    out = s.to_dict()
    validator = jsonschema.Draft202012Validator(json.loads(schema_json()))
    assert list(validator.iter_errors(out)) == []
    assert decode(out) == s  # what is written decodes to the same summary


def test_summary_data_held_in_memory_is_read_leniently() -> None:
    from loadgen.summary import as_summary

    data = minimal()
    data["tag_search"] = {"tagged_traces": "<script>", "tagged_mesh": 3}
    data["readback"] = {"polls": [{"t": 1.0, "queried": 2, "complete": 1}, {"t": "x"}, "junk"]}
    s = as_summary(data)
    assert s.tag_search is not None and (s.tag_search.tagged_traces, s.tag_search.tagged_mesh) == (0, 3)
    # a bad field falls back to its default; an item that is not a poll at all is left out
    assert s.readback is not None and [p.t for p in s.readback.polls] == [1.0, None]
    with pytest.raises(SummaryError, match=r"`readback\.quiet_s` is missing"):
        decode(data)  # a file is refused instead, naming its first problem
    data["readback"] = {"quiet_s": 1.0, "poll_interval_s": 1.0, "stable": True, "polls": []}
    with pytest.raises(
        SummaryError, match=r'`tag_search\.tagged_traces` must be a whole number >= 0, got "<script>"'
    ):
        decode(data)
