"""Child processes of the embedded mesh: start, wait for readiness, stop by PID.

Every embedded service runs in its own process so that a fault test can kill one of them, and so
that no gevent monkey-patching (Locust) or asyncio loop leaks between them.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any


def die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the parent dies, so even a
    SIGKILLed loadgen leaves no Envoy or collector behind (no-op where prctl is unavailable)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A part of the embedded mesh failed to start or died; the message says which and where its log is."""


class ComponentDied(StackError):
    """A process of the mesh died during a run: which one, and where its log is."""

    def __init__(self, component: str, returncode: int | None, log_path: Path) -> None:
        super().__init__(f"{component} died (exit {returncode}); see {log_path}")
        self.component = component
        self.reason = f"exited with code {returncode}"
        self.log_path = log_path


class ManagedProcess:
    """One child process whose stderr goes to a log file in the run folder."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = env
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, *, stdout_pipe: bool = False) -> None:
        """Start the process. Call from a long-lived thread (normally the main thread): Linux ties
        PR_SET_PDEATHSIG to the *thread* that forked, so a child started from a short-lived
        helper thread is sent SIGTERM when that thread ends."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        env = dict(os.environ)
        if self._env:
            env.update(self._env)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            env=env,
            # Own process group: a Ctrl-C in the terminal reaches the CLI, which then stops the
            # children in order instead of every child dying at once mid-flush.
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )

    def read_ready_line(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the one JSON line a loadgen service prints on stdout when it is listening."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read()
            if chunk:
                buf += chunk
                if b"\n" in buf:
                    line = buf.split(b"\n", 1)[0]
                    try:
                        ready: dict[str, Any] = json.loads(line)
                        return ready
                    except ValueError as exc:
                        raise StackError(f"{self.name}: unexpected ready line {line!r}") from exc
            if self.proc.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                    f"see {self.log_path}:\n{self.tail_log()}"
                )
            time.sleep(0.02)
        raise StackError(f"{self.name} was not ready within {timeout_s:.0f} s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail_log(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; idempotent. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
            except ProcessLookupError:
                pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
