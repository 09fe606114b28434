"""A run that sends nothing must say so, and a path that can never be answered is a bad option
(issue 10, finding 6): `loadgen.run.check_path` and `no_requests_note`."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.run import RunError, RunOptions, check_path, execute_run, no_requests_note


@pytest.mark.parametrize("path", ["headers", "", "fanout", "?x=1", "http://elsewhere/headers"])
def test_a_path_without_a_leading_slash_is_refused(path: str) -> None:
    with pytest.raises(RunError, match="must start with '/'"):
        check_path(path)


def test_a_path_with_a_leading_slash_is_fine() -> None:
    for path in ("/headers", "/fanout", "/fanout-nopropagate", "/status/503?x=1"):
        check_path(path)


def test_a_run_with_a_bad_path_stops_before_any_folder_or_process(tmp_path: Path) -> None:
    # `http://gw:8080` + `headers` = `http://gw:8080headers`: before, every request raised inside
    # Locust, none reached the ledger, and the run ended with 0 requests
    with pytest.raises(RunError, match="--path 'headers' must start with '/'"):
        execute_run(RunOptions(run_id="bad-path", output_dir=tmp_path, path="headers"), lambda _m: None)
    assert not (tmp_path / "bad-path").exists()


def test_the_note_quotes_locusts_last_error(tmp_path: Path) -> None:
    log = tmp_path / "locust.log"
    log.write_text(
        "[2026-12-05 12:00:13,262] vm/ERROR/locust.user.task: Total of weights must be finite\n"
        "Traceback (most recent call last):\n  ...\nValueError: Total of weights must be finite\n"
        "[2026-12-05 12:00:13,300] vm/ERROR/locust.user.task: Port could not be cast to integer value as "
        "'8080headers'\nTraceback (most recent call last):\n  ...\n"
    )
    note = no_requests_note(log, 10.0)
    assert note == (
        "no request was made in 10 s of load: the ledger holds no record (Locust's last error: "
        "\"Port could not be cast to integer value as '8080headers'\"; see locust.log in the run folder)"
    )


def test_the_note_reads_only_the_end_of_a_huge_log_and_redacts(tmp_path: Path) -> None:
    log = tmp_path / "locust.log"
    with open(log, "w") as fh:
        fh.write("[t] vm/ERROR/locust.user.task: an old error\n" * 50_000)  # ~2 MB
        fh.write("[t] vm/ERROR/locust.user.task: cannot reach http://user:s3cret@gw:8080/headers\n")
    note = no_requests_note(log, 3)
    assert "s3cret" not in note and "an old error" not in note and "gw:8080" in note


def test_the_note_without_a_log_or_an_error(tmp_path: Path) -> None:
    assert "Locust logged no error" in no_requests_note(tmp_path / "missing.log", 2.5)
    empty = tmp_path / "locust.log"
    empty.write_text("")
    assert no_requests_note(empty, 2.5).startswith("no request was made in 2.5 s of load")
