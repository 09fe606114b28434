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
    assert "summary.schema.json" in readme
    assert f"### summary.json schema (`schema_version: {SCHEMA_VERSION}`)" in readme


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
