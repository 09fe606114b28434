"""Reading a run folder safely (run.json, summary.json), keeping every earlier summary, and no
empty folder after a failed preflight (issue 10: findings 4, 7 and 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.run import RunError, RunOptions, execute_run, probe_only
from loadgen.runfolder import (
    RunFolderError,
    keep_previous,
    locust_totals,
    read_previous_summary,
    read_run_json,
    read_summary,
    rebuilt_fields,
)

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused at once


def rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [0.0, 1.0]}


def good_run_json() -> dict[str, Any]:
    return {
        "run_id": "r1",
        "version": "0.1.0",
        "options": {"expected_spans": None},
        "target": {
            "kind": "external",
            "gateway": "http://gw",
            "host": "h",
            "collector": "http://c",
            "backend": "http://b",
            "backend_spec": "zipkin:http://b",
            "reader": "zipkin",
        },  # fmt: skip
        "expectation": {
            "spans_per_trace": 3,
            "services": ["a", "b"],
            "configured_percent": 20.0,
            "run_id_tag": "loadgen.run_id",
            "shape": [["a", "SERVER", 1], ["a", "CLIENT", 1], ["b", "SERVER", 1]],
            "gaps": {},
            "quiet_s": 2.0,
            "min_collection": 0.99,
            "search_service": None,
            "context": {"sampling_percent": 20.0, "w3c": False},
            "hops": [["a", 2], ["b", 1]],
        },
    }


def good_summary() -> dict[str, Any]:
    counts = dict.fromkeys(("requests", "errors", "decided_sampled", "found", "partial", "missing",
                            "leaked", "unknown"), 1)  # fmt: skip
    return {
        "schema_version": 1,
        "run_id": "r1",
        "status": "complete",
        "requests": {"total": 10, "errors": 0},
        "sampling": {"configured_percent": 20.0, "decision": rate(2, 10), "prediction": {"checked": 0}},
        "mesh": {
            "collection": rate(2, 2),
            "partial": 0,
            "unknown": 0,
            "leaked": 0,
            "leak_checked": 8,
            "expected_spans_per_trace": 3,
            "expected_services": ["a"],
            "spans_per_found_trace": {"3": 2},
            "run_tag": {"k": 6, "n": 6},
        },  # fmt: skip
        "propagation": {**rate(4, 4), "backend": rate(1, 1)},
        "reference": {"started": 5, "exported": 5, "failed": 0, "dropped": 0, "collection": rate(5, 5)},
        "modes": {"none": counts},
        "latency_ms": {"none": {"n": 10, "p50": 1.0, "p95": 2.0, "p99": None}},
        "verdicts": {"sampling": "pass"},
        "notes": [],
    }


def write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def edited(doc: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    """A deep copy of doc with one field set (value ... removes it)."""
    doc = json.loads(json.dumps(doc))
    *parents, last = dotted.split(".")
    obj = doc
    for key in parents:
        obj = obj[key]
    if value is ...:
        del obj[last]
    else:
        obj[last] = value
    return doc


BROKEN_FILES: list[tuple[str, object, str]] = [
    ("empty", "", "is empty"),
    ("whitespace", "  \n", "is empty"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text (byte 0x89 at offset 0)"),
    ("latin-1", '{"run_id": "caf\xe9"}'.encode("latin-1"), "not UTF-8 text"),
    ("truncated", '{"run_id": "r1", "requests": {"tot', "ends too early"),
    ("not json", "run_id = r1", "not valid JSON (line 1, column 1"),
    ("a list", "[1, 2]", "holds a JSON list, not the object"),
    ("a string", '"summary"', "holds a JSON string"),
    ("null", "null", "holds a JSON null"),
    ("deep", "[" * 100_000 + "]" * 100_000, "is not a loadgen file"),
    ("huge number", '{"run_id": ' + "1" * 5000 + "}", "is not a loadgen file"),
]


@pytest.mark.handmade_summary  # broken on purpose
@pytest.mark.parametrize("name, content, needle", BROKEN_FILES, ids=[b[0] for b in BROKEN_FILES])
@pytest.mark.parametrize("which", ["run.json", "summary.json"])
def test_a_broken_file_is_one_clear_error_naming_it(
    tmp_path: Path, which: str, name: str, content: object, needle: str
) -> None:
    path = write(tmp_path / which, content)
    with pytest.raises(RunFolderError) as info:
        read_run_json(tmp_path) if which == "run.json" else read_summary(path)
    message = str(info.value)
    assert needle in message and str(path) in message
    assert "\n" not in message
    if which == "summary.json":
        assert "loadgen verify" in message  # and how to get a good one back


WRONG_RUN_JSON = [
    ("run_id", ..., "`run_id` is missing"),
    ("run_id", 7, "`run_id` must be a string, got 7"),
    ("target", [], "`target` must be an object"),
    ("target.kind", "cloud", '`target.kind` must be "embedded" or "external"'),
    ("target.backend_spec", 5, "`target.backend_spec` must be a string"),
    ("expectation", ..., "`expectation` is missing"),
    ("expectation.spans_per_trace", -1, "whole number >= 0"),
    ("expectation.spans_per_trace", "3", "whole number >= 0"),
    ("expectation.services", "a", "a list of strings"),
    ("expectation.configured_percent", 250, "in [0, 100]"),
    ("expectation.shape", [["a", "SERVER"]], "`expectation.shape`"),
    ("expectation.context", {"w3c": "yes"}, "`expectation.context.w3c` must be true or false"),
    ("expectation.context", {"sampling_percent": "20"}, "`expectation.context.sampling_percent`"),
    ("expectation.context", {"bogus": 1}, "`expectation.context.bogus` is not a known field"),
    ("expectation.min_collection", "high", "`expectation.min_collection` must be a finite number"),
    ("expectation.hops", [["a", "2"]], "`expectation.hops` must be a list of [service, spans]"),
    ("expectation.hops", "a", "`expectation.hops`"),
    ("expectation.gaps", ["x"], "`expectation.gaps`"),
    ("expectation.run_id_tag", 1, "`expectation.run_id_tag` must be a string"),
    ("expectation.max_error_rate", 2, "`expectation.max_error_rate`"),
    ("options", [], "`options` must be an object"),
]


@pytest.mark.parametrize("where, value, needle", WRONG_RUN_JSON)
def test_run_json_of_the_wrong_shape_names_the_field(
    tmp_path: Path, where: str, value: object, needle: str
) -> None:
    write(tmp_path / "run.json", edited(good_run_json(), where, value))
    with pytest.raises(RunFolderError, match="run.json") as info:
        read_run_json(tmp_path)
    assert needle in str(info.value)


def test_a_good_run_json_is_typed(tmp_path: Path) -> None:
    write(tmp_path / "run.json", good_run_json())
    meta = read_run_json(tmp_path)
    assert (meta.run_id, meta.kind, meta.backend_spec) == ("r1", "external", "zipkin:http://b")
    assert meta.expect.spans_per_trace == 3 and meta.expect.shape is not None
    assert meta.expect.context is not None and meta.expect.context.sampling_percent == 20.0
    assert meta.hops is not None and [tuple(h) for h in meta.hops] == [("a", 2), ("b", 1)]
    assert meta.min_collection == 0.99 and meta.max_error_rate is None and meta.expected_spans is None


def test_a_folder_without_run_json_is_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="is not a loadgen run folder: it has no run.json"):
        read_run_json(tmp_path)


WRONG_SUMMARY = [
    ("run_id", ..., "`run_id` is missing"),
    ("requests", [], "`requests` must be an object"),
    ("requests.errors", ..., "`requests.errors` is missing"),
    ("requests.total", "many", "`requests.total` must be a whole number >= 0"),
    ("requests.total", True, "`requests.total` must be a whole number"),
    ("sampling.decision", None, "`sampling.decision` must be an object"),
    ("sampling.decision.k", 11, "has k = 11 > n = 10"),
    ("sampling.decision.rate", "0.2", "`sampling.decision.rate` must be a finite number"),
    ("sampling.prediction", {"checked": 3}, "`sampling.prediction.mismatches` is missing"),
    ("mesh.collection.ci95", None, "`mesh.collection.ci95` must be [low, high]"),
    ("mesh.collection.ci95", [0.1], "`mesh.collection.ci95` must be [low, high]"),
    ("mesh.leaked", -1, "`mesh.leaked` must be a whole number >= 0"),
    ("mesh.expected_services", "a", "`mesh.expected_services` must be a list of strings"),
    ("mesh.run_tag", {"k": 1}, "`mesh.run_tag.n` is missing"),
    ("propagation.backend", ..., "`propagation.backend` is missing"),
    ("reference.collection", ..., "`reference.collection` is missing"),
    ("modes.none", [], "`modes.none` must be an object"),
    ("modes.none.found", None, "`modes.none.found` must be a whole number"),
    ("latency_ms.none.p99", "slow", "`latency_ms.none.p99` must be a finite number or null"),
    ("verdicts", ["pass"], "`verdicts` must be an object"),
    ("verdicts.sampling", 1, "`verdicts.sampling` must be a string"),
    ("notes", "x", "`notes` must be a list of strings"),
    ("integrity", [], "`integrity` must be an object"),
]


@pytest.mark.handmade_summary  # broken on purpose
@pytest.mark.parametrize("where, value, needle", WRONG_SUMMARY)
def test_summary_json_of_the_wrong_shape_names_the_field(
    tmp_path: Path, where: str, value: object, needle: str
) -> None:
    path = write(tmp_path / "summary.json", edited(good_summary(), where, value))
    with pytest.raises(RunFolderError, match="summary.json") as info:
        read_summary(path)
    assert needle in str(info.value)


def test_a_good_summary_reads_and_a_missing_one_says_how_to_rebuild(tmp_path: Path) -> None:
    assert read_summary(write(tmp_path / "summary.json", good_summary())).run_id == "r1"
    assert read_previous_summary(tmp_path) is not None
    (tmp_path / "summary.json").unlink()
    assert read_previous_summary(tmp_path) is None  # verify rebuilds it
    write(tmp_path / "run.json", good_run_json())
    with pytest.raises(
        RunFolderError, match=r"has no summary.json \(the run did not finish\): `loadgen verify"
    ):
        read_summary(tmp_path / "summary.json")


@pytest.mark.handmade_summary  # stand-in contents
def test_every_kept_summary_stays_the_first_is_the_runs_own(tmp_path: Path) -> None:
    versions = [b'{"v": "run"}', b'{"v": "verify 1"}', b'{"v": "verify 2"}']
    kept = []
    for content in versions:
        (tmp_path / "summary.json").write_bytes(content)
        kept.append(keep_previous(tmp_path).name)
    assert kept == ["summary.previous.json", "summary.previous.2.json", "summary.previous.3.json"]
    assert [(tmp_path / name).read_bytes() for name in kept] == versions  # byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "summary.json"])  # no temp left


def test_locust_totals_are_null_when_locust_wrote_nothing_usable(tmp_path: Path) -> None:
    assert locust_totals(tmp_path) is None
    write(tmp_path / "locust.json", b"\xff\xfe")
    assert locust_totals(tmp_path) is None
    write(tmp_path / "locust.json", '[{"num_requests": "x"}]')
    assert locust_totals(tmp_path) is None
    write(tmp_path / "locust.json", '[{"num_requests": 5, "num_failures": 1}, {"num_requests": 2}]')
    assert locust_totals(tmp_path) == {"requests": 7, "failures": 1}


def test_a_rebuilt_summary_is_partial_and_says_what_only_the_live_run_knew(tmp_path: Path) -> None:
    write(tmp_path / "run.json", good_run_json())
    write(tmp_path / "reference.jsonl", '{"ev": "open", "run_id": "r1", "t": 1.0}\n'
                                        '{"ev": "start", "trace": "ab", "spans": 2, "t": 1.0}\n')  # fmt: skip
    write(tmp_path / "mesh-profile.json", b"\x00\x01")
    fields = rebuilt_fields(tmp_path, read_run_json(tmp_path))
    assert fields["status"] == "partial" and "rebuilt" in fields["status_reason"]
    assert fields["started_at"] is None and fields["queryable"] is None and fields["locust"] is None
    assert fields["profile"] is None
    assert set(fields["recovered"]["unknown"]) == {"started_at", "queryable", "profile", "locust"}
    assert fields["recovered"]["sources"] == ["run.json", "reference.jsonl", "mesh-profile.json"]
    assert fields["target"] == good_run_json()["target"]
    notes = " ".join(fields["notes"])
    assert "no end record" in notes and "mesh-profile.json could not be read" in notes and "Locust" in notes


def test_a_failed_preflight_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "nested"
    opts = RunOptions(run_id="dead", output_dir=out, gateway=DEAD, collector=DEAD, backend=f"zipkin:{DEAD}")
    with pytest.raises(RunError, match="unreachable"):
        execute_run(opts, lambda _: None)
    with pytest.raises(RunError, match="unreachable"):
        probe_only(opts, lambda _: None)
    assert list(tmp_path.iterdir()) == []  # neither the run folder nor the folders made for it


def test_a_failed_preflight_keeps_a_folder_that_was_there(tmp_path: Path) -> None:
    (tmp_path / "dead").mkdir()
    opts = RunOptions(
        run_id="dead", output_dir=tmp_path, gateway=DEAD, collector=DEAD, backend=f"zipkin:{DEAD}"
    )
    with pytest.raises(RunError):
        execute_run(opts, lambda _: None)
    assert (tmp_path / "dead").is_dir()  # the user's own (empty) folder is not ours to remove


@pytest.mark.handmade_summary  # stand-in contents
def test_kept_summaries_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*_: object) -> None:
        raise PermissionError("hard links not supported")

    monkeypatch.setattr("loadgen.runfolder.os.link", no_links)
    for content in (b"run", b"verify 1"):
        (tmp_path / "summary.json").write_bytes(content)
        keep_previous(tmp_path)
    assert (tmp_path / "summary.previous.json").read_bytes() == b"run"
    assert (tmp_path / "summary.previous.2.json").read_bytes() == b"verify 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "summary.json", "summary.previous.2.json", "summary.previous.json"
    ]  # fmt: skip
