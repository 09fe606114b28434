"""`loadgen report`, `verify` and `gate` on broken run folders, through the console entry point
(`loadgen.cli.main`, in process for speed; two cases in a subprocess as a user runs them): one
line on stderr and exit 2, never a traceback, and the file is left as it was (issue 10,
findings 4 and 7). No mesh is needed: every case fails on reading the folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadgen import cli

pytestmark = pytest.mark.handmade_summary  # every case is a broken run folder, on purpose

LOADGEN = [sys.executable, "-m", "loadgen.cli"]

RUN_JSON: dict[str, Any] = {
    "run_id": "r1",
    "target": {"kind": "external", "backend_spec": "zipkin:http://127.0.0.1:9"},
    "expectation": {"spans_per_trace": 3, "services": ["a"], "configured_percent": 100.0},
}

# (case, command, run.json content, summary.json content or None for absent, words stderr names)
CASES: list[tuple[str, str, object, object, tuple[str, ...]]] = [
    ("summary a list", "report", RUN_JSON, [1, 2], ("summary.json", "JSON list")),
    ("summary binary", "report", RUN_JSON, b"\x89PNG\r\n\x1a\n\x00\xff", ("summary.json", "not UTF-8")),
    ("summary empty", "report", RUN_JSON, b"", ("summary.json", "is empty")),
    ("summary cut off", "report", RUN_JSON, b'{"run_id": "r1", "requ', ("summary.json", "ends too early")),
    (
        "summary wrong type",
        "report",
        RUN_JSON,
        {"run_id": "r1", "requests": {"total": "many", "errors": 0}},
        ("summary.json", "`requests.total`"),
    ),  # fmt: skip
    ("summary missing key", "gate", RUN_JSON, {"run_id": "r1"}, ("summary.json", "`requests` is missing")),
    ("summary absent", "report", RUN_JSON, None, ("has no summary.json", "loadgen verify")),
    ("summary wrong for verify", "verify", RUN_JSON, {"run_id": ["r1"]}, ("summary.json", "`run_id`")),
    ("run a list", "verify", [RUN_JSON], None, ("run.json", "JSON list")),
    ("run binary", "verify", b"\xff\xd8\xff\xe0 JFIF", None, ("run.json", "not UTF-8")),
    ("run empty", "verify", b"", None, ("run.json", "is empty")),
    (
        "run wrong type",
        "verify",
        {**RUN_JSON, "expectation": {"hops": "a"}},
        None,
        ("run.json", "`expectation.hops`"),
    ),  # fmt: skip
    ("run missing key", "verify", {"run_id": "r1"}, None, ("run.json", "`target` is missing")),
]


def _folder(run_dir: Path, run_json: object, summary: object) -> Path:
    run_dir.mkdir()
    for name, content in (("run.json", run_json), ("summary.json", summary)):
        if content is not None:
            data = content if isinstance(content, bytes) else json.dumps(content).encode()
            (run_dir / name).write_bytes(data)
    return run_dir


def _check(
    stderr: str, code: int | str | None, words: tuple[str, ...], run_dir: Path, had_summary: bool
) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert all(word in stderr for word in words), stderr
    # the broken file stays as it was: not overwritten, not moved aside
    assert (run_dir / "summary.json").exists() == had_summary
    assert list(run_dir.glob("summary.previous*")) == [] and list(run_dir.glob("loadgen-crash-*")) == []


@pytest.mark.parametrize("case, command, run_json, summary, words", CASES, ids=[c[0] for c in CASES])
def test_a_broken_run_folder_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    command: str,
    run_json: object,
    summary: object,
    words: tuple[str, ...],
) -> None:
    run_dir = _folder(tmp_path / "run", run_json, summary)
    monkeypatch.setattr(sys, "argv", ["loadgen", command, str(run_dir)])
    monkeypatch.setenv("COLUMNS", "80")  # a long message must not wrap into several lines
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with pytest.raises(SystemExit) as info:
            cli.main()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    _check(capsys.readouterr().err, info.value.code, words, run_dir, summary is not None)


def test_as_a_user_runs_it(tmp_path: Path) -> None:
    picked = [CASES[0], CASES[9]]  # report on a list summary.json, verify on a binary run.json
    dirs = [_folder(tmp_path / f"run{i}", c[2], c[3]) for i, c in enumerate(picked)]
    procs = [
        subprocess.Popen([*LOADGEN, c[1], str(d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c, d in zip(picked, dirs, strict=True)
    ]
    for c, d, proc in zip(picked, dirs, procs, strict=True):
        _, stderr = proc.communicate(timeout=120)
        _check(stderr, proc.returncode, c[4], d, c[3] is not None)
