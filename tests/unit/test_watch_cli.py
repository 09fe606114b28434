"""`loadgen watch`'s option errors: each is one `error:` line and exit 2, before any mesh starts
(loadgen.cli.watch, in-process through the console script)."""

from __future__ import annotations

import fcntl
import re
import socket
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from loadgen import cli
from loadgen.cli import app, crash
from loadgen.watch.state import WatchState


@pytest.fixture(autouse=True)
def _no_crash_folder_between_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crash, "_crash_dir", None)


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> tuple[int, str]:
    """The console script in-process: its exit code and stderr."""
    monkeypatch.setattr("sys.argv", ["loadgen", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    code = exc.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--window", "5x"], "--window: window '5x'"),
        (["--window", "10s,10"], "repeats"),
        (["--window", ""], "no window given"),
        (["--deadline", "5", "--give-up", "1"], "--give-up (1 s) must be at least --deadline (5 s)"),
        (["--rate", "0"], "--rate must be above 0"),
        (["--segment", "5", "--retention", "2"], "--retention (2 s) must be at least --segment (5 s)"),
        (["--deadline", "soon"], "is not a duration"),
        (["--metrics-port", "70000"], "--metrics-port"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    says: str,
) -> None:
    code, err = run_main(monkeypatch, capsys, ["watch", "--state", str(tmp_path / "state"), *args])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert says in " ".join(err.split())
    assert "Traceback" not in err


def test_a_state_of_another_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    WatchState.open(tmp_path, run_id="canary-a").close()
    code, err = run_main(monkeypatch, capsys, ["watch", "--state", str(tmp_path), "--run-id", "canary-b"])
    assert code == 2 and "belongs to run canary-a" in err


def test_a_state_in_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with open(tmp_path / "watch.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, err = run_main(monkeypatch, capsys, ["watch", "--state", str(tmp_path)])
    assert code == 2 and "another watch is running on the state folder" in err


def test_a_metrics_port_in_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_main(
            monkeypatch, capsys, ["watch", "--state", str(tmp_path), "--metrics-port", str(port)]
        )
    assert code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in err


def test_loadgen_toml_watch_table_and_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "loadgen.toml"
    config.write_text('[watch]\nwindow = "7q"\n')
    code, err = run_main(
        monkeypatch, capsys, ["watch", "--state", str(tmp_path / "s"), "--config", str(config)]
    )
    assert code == 2 and "window '7q'" in err  # the [watch] table reached --window
    monkeypatch.setenv("LOADGEN_WINDOW", "8q")
    code, err = run_main(
        monkeypatch, capsys, ["watch", "--state", str(tmp_path / "s"), "--config", str(config)]
    )
    assert code == 2 and "window '8q'" in err  # the environment wins over the file


def test_help_at_80_columns_keeps_every_flag_whole() -> None:
    result = CliRunner().invoke(app, ["watch", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.output
    shown = {w for line in lines for w in re.split(r"[\s│]+", line) if w.startswith("--")}
    command = typer.main.get_command(app).commands["watch"]  # type: ignore[attr-defined]
    flags = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
    assert "--metrics-port" in flags and "--gateway" in flags  # watch's own and run's target flags
    assert [f for f in flags if f not in shown] == []
