"""One error path (issue 10, findings 4, 5, 8 and 9): every trigger the attack found ends in one
`error:` line and exit 2, never a traceback or exit 1; an unexpected exception is exit 5 with the
traceback saved to a file; every command checks its options the same way.

These call `loadgen.cli.main()`, the console script itself, in-process (fast; the subprocess
form is covered by tests/integration/test_cli.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen import cli
from loadgen.cli import crash
from loadgen.exitcodes import EXIT_CODE_TABLE, EXIT_ERROR, EXIT_INTERNAL
from tests.unit.test_render import build_summary

TELEMETRY_ABC = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: "abc"
"""


@pytest.fixture(autouse=True)
def _no_crash_folder_between_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crash, "_crash_dir", None)  # main() runs once per process; here, many times


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["loadgen", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    code = exc.value.code
    return (code if isinstance(code, int) else 0), capsys.readouterr().err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """The bad inputs, as files: a plain file, binary, empty, wrong-shaped run folders."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    telemetry = tmp_path / "telemetry.yaml"
    telemetry.write_text(TELEMETRY_ABC)
    good = tmp_path / "good-run"
    good.mkdir()
    (good / "summary.json").write_text(json.dumps(build_summary()))
    wrong = tmp_path / "wrong-run"
    wrong.mkdir()
    (wrong / "summary.json").write_text("[1, 2, 3]")
    (wrong / "run.json").write_text('{"run_id": 7}')
    binary_run = tmp_path / "binary-run"
    binary_run.mkdir()
    (binary_run / "run.json").write_bytes(b"\x87\xff" * 64)
    (binary_run / "summary.json").write_bytes(b"\x87\xff" * 64)
    return {
        "file": str(a_file), "binary": str(binary), "empty": str(empty), "telemetry": str(telemetry),
        "good": str(good), "wrong": str(wrong), "binary_run": str(binary_run), "tmp": str(tmp_path),
    }  # fmt: skip


GATE = ["--gateway", "http://127.0.0.1:9", "--backend", "zipkin:http://127.0.0.1:9"]

TRIGGERS: list[tuple[str, list[str], str]] = [
    # finding 4
    ("output is a file", ["run", "--output", "{file}"], "is not a folder"),
    ("output under a file", ["run", "--output", "{file}/sub"], "is not a folder"),
    ("junit in a missing folder", ["gate", "{good}", "--junit", "{tmp}/no/such/dir/x.xml"], "not found"),
    ("junit is a folder", ["gate", "{good}", "--junit", "{tmp}"], "cannot use"),
    (
        "unclosed IPv6 gateway",
        ["run", "--gateway", "http://[::1", "--backend", "zipkin:http://127.0.0.1:9"],
        "not a valid URL",
    ),  # fmt: skip
    ("infinite duration", ["run", "--duration", "inf"], "finite"),
    # issue 12: options of the other tracer are one clear error
    ("--otlp-protocol with zipkin", ["run", "--otlp-protocol", "http"], "--tracer opentelemetry only"),
    (
        "W3C propagation option with opentelemetry",
        ["stack", "up", "--tracer", "opentelemetry", "--trace-context", "USE_B3_WITH_W3C_PROPAGATION"],
        "zipkin tracer's option",
    ),  # fmt: skip
    ("Telemetry with abc", ["run", "--expect-from", "{telemetry}"], "expected a number"),
    ("binary --expect-from", ["run", "--expect-from", "{binary}"], "not UTF-8"),
    ("wrong-shaped summary (report)", ["report", "{wrong}"], "summary.json"),
    ("wrong-shaped run.json (verify)", ["verify", "{wrong}"], "run.json"),
    ("binary run folder (verify)", ["verify", "{binary_run}"], "run.json"),
    ("binary gate config", ["gate", "{good}", "--config", "{binary}"], "{binary}"),
    # finding 5: Rich markup in the message is shown, not interpreted
    ("markup in --mix", ["run", "--mix", "[/b]=1"], "[/b]"),
    (
        "markup in its own message",
        ["run", "--backend", "gopher://x", "--gateway", "http://127.0.0.1:9"],
        "[/PATH]",
    ),  # fmt: skip
    # finding 6: a path the gateway's address swallows (0 requests before)
    ("path without a slash", ["run", "--path", "headers", "--output", "{tmp}"], "must start with '/'"),
    # finding 9
    ("negative quiet", ["run", "--quiet", "-1"], "--quiet"),
    ("nan quiet", ["run", "--quiet", "nan"], "--quiet"),
    ("negative max-wait", ["run", "--max-wait", "-5"], "--max-wait"),
    ("nan max-wait", ["run", "--max-wait", "nan"], "--max-wait"),
    ("negative flush interval", ["run", "--flush-interval-ms", "-5"], "--flush-interval-ms"),
    ("port out of range", ["run", "--master-bind-port", "70000"], "--master-bind-port"),
    ("duplicate mix key", ["run", "--mix", "none=1,none=2"], "none"),
    ("infinite mix weight", ["run", "--mix", "none=inf"], "--mix"),
    ("empty --expect-from", ["run", "--expect-from", "{empty}"], "no Kubernetes resources"),
    ("nan plan precision", ["plan", "--precision", "nan"], "--precision"),
]


@pytest.mark.handmade_summary  # wrong-shaped run folders on purpose
@pytest.mark.parametrize(("name", "args", "needle"), TRIGGERS, ids=[t[0] for t in TRIGGERS])
def test_each_trigger_is_one_line_and_exit_2(
    name: str,
    args: list[str],
    needle: str,
    files: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = run_main(monkeypatch, capsys, [a.format(**files) for a in args])
    assert code == EXIT_ERROR, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle.format(**files) in lines[0]


def test_bad_backend_env_is_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("LOADGEN_BACKEND_INSECURE", "maybe")
    code, err = run_main(monkeypatch, capsys, ["run", *GATE, "--output", str(tmp_path)])
    assert code == EXIT_ERROR and "LOADGEN_BACKEND_INSECURE" in err and "Traceback" not in err


def test_unexpected_exception_is_exit_5_with_the_traceback_in_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken(**_: object) -> None:
        raise ZeroDivisionError("a bug at http://user:hunter2@host/x")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, err = run_main(monkeypatch, capsys, ["anything"])
    assert code == EXIT_INTERNAL
    assert "Traceback" not in err and "hunter2" not in err
    saved = list((tmp_path / "cache" / "loadgen").glob("loadgen-crash-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in err
    text = saved[0].read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text and "hunter2" not in text


def test_unexpected_exception_during_a_run_saves_into_the_run_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "r1"
    run_dir.mkdir()

    def broken(**_: object) -> None:
        crash.crash_folder(run_dir)
        raise KeyError("oops")

    monkeypatch.setattr(cli, "app", broken)
    code, err = run_main(monkeypatch, capsys, ["run"])
    assert code == EXIT_INTERNAL
    assert len(list(run_dir.glob("loadgen-crash-*.txt"))) == 1


def test_every_command_checks_its_options() -> None:
    commands = [*cli.app.registered_commands, *cli.stack_app.registered_commands]
    # ConfiguredCommand: a CheckedCommand whose options also read LOADGEN_<FLAG> and loadgen.toml
    assert commands and all(c.cls is cli.ConfiguredCommand for c in commands)
    assert issubclass(cli.ConfiguredCommand, cli.CheckedCommand)


def test_help_shows_the_exit_code_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["loadgen", "--help"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0
    shown = capsys.readouterr().out
    for code, meaning in EXIT_CODE_TABLE:
        assert f"{code}: {meaning}" in shown
