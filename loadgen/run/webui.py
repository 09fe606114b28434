"""`loadgen run --web`, the orchestrating side: Locust's web UI drives the load.

Locust runs with its web UI instead of headless; the run waits for a test to start there (then
starts the side-emitter), and for it to stop (the locustfile has closed the ledger and written
locust.json by then; see loadgen.traffic.web_tab). Locust keeps running after the stop, so its
Tracing tab can show the collection numbers and link the report once loadgen has read the traces
back: `WebUi` is that Locust process, closed on Ctrl-C (`wait_closed`) or by `close`. This module
never imports Locust.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from loadgen.traffic.web_tab import RUNNING, STOPPED, WEB_STATE_ENV, WEB_STATE_FILE, read_state


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (Locust's message channel, the web UI)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def web_url(host: str, port: int) -> str:
    """The web UI's address as printed (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def web_argv(host: str, port: int) -> list[str]:
    """Locust's web-UI flags (instead of --headless, a run time and --json-file: the locustfile
    writes locust.json when the test stops)."""
    return ["--web-host", host, "--web-port", str(port)]


def web_env(run_dir: Path) -> dict[str, str]:
    """LOADGEN_WEB_STATE: puts the locustfile in web mode, naming the state file."""
    return {WEB_STATE_ENV: str(run_dir / WEB_STATE_FILE)}


def web_test_started(run_dir: Path) -> bool:
    state = read_state(run_dir / WEB_STATE_FILE)
    return state is not None and state.state in (RUNNING, STOPPED)


def web_test_stopped(run_dir: Path) -> bool:
    state = read_state(run_dir / WEB_STATE_FILE)
    return state is not None and state.state == STOPPED


@dataclass
class WebUi:
    """Locust with its web UI, still running after the test stopped."""

    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    url: str

    def wait_closed(self, poll_s: float = 0.5) -> None:
        """Until Ctrl-C (or Locust ends by itself), then close."""
        try:
            while self.proc.poll() is None:
                time.sleep(poll_s)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """SIGTERM to Locust (it quits in order), SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.log.close()
