"""What a watch sends: real Locust in its own process, writing the ledger in time segments, and
reference traces from the side-emitter in this process.

Locust runs without `-t` (until stopped) at `--rate` over the header mix, with the same
locustfile and LOADGEN_* settings as `loadgen run` (loadgen.run.load.locust_env) plus
LOADGEN_LEDGER_SEGMENT_S: LOADGEN_LEDGER is then the segments folder. If it dies, the watch
starts another (at most one start per RESTART_AFTER_S); its pid is kept in the state folder so
that a restarted watch waits for the Locust of its previous life to finish its last segment.

Reference traces: the emitter (loadgen.emitter.ReferenceEmitter) sends them and accounts for
every one (started = exported + failed + dropped + pending). Its exporter is wrapped by
`ExportTap`, which hands the watch each trace whose spans were all exported successfully, with
its start time: only those are checked (a trace whose export failed or was dropped is not the
backend's loss; it is counted in the accounting). The emitter's own JSON-lines log goes nowhere:
it would grow for as long as the watch runs, and the accounting lives in the watch's state.
"""

from __future__ import annotations

import collections
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from loadgen.emitter import ReferenceEmitter, reference_target
from loadgen.emitter.accounting import trace_hex
from loadgen.emitter.protocols import build_exporter
from loadgen.ledger_segments import SEGMENT_ENV
from loadgen.run.load import default_scenario_path, locust_env
from loadgen.run.options import RunOptions
from loadgen.stack.procs import die_with_parent
from loadgen.watch.checks import ExportedTrace

__all__ = ["ExportTap", "ExportedTrace", "LocustTraffic", "ReferenceTraffic", "locust_users"]

#: Seconds between two starts of Locust when it keeps dying.
RESTART_AFTER_S = 5.0
#: locust.log is moved aside to locust.log.1 when it is larger than this (checked when a Locust
#: starts and every minute while it runs).
LOG_LIMIT_BYTES = 10 * 1024 * 1024
#: Traces whose spans came in several export calls, waiting for the rest (oldest dropped above).
_PARTIAL_LIMIT = 10_000


def locust_users(rate: float) -> int:
    """Users sharing `rate`: enough that one slow answer (a gateway timing out) does not stall
    the load, few enough to stay light (4, plus one per 10 req/s above 40)."""
    return max(4, math.ceil(rate / 10))


class LocustTraffic:
    """The Locust process of a watch: started, checked, restarted, stopped in order."""

    def __init__(
        self, opts: RunOptions, run_id: str, gateway: str, host: str, configured: float | None,
        segments_dir: Path, segment_s: float, state_dir: Path,
    ) -> None:  # fmt: skip
        self.segments_dir = segments_dir
        self.log_path = state_dir / "locust.log"
        self.pid_path = state_dir / "locust.pid"
        env = locust_env(opts, run_id, gateway, host, segments_dir, configured)
        env[SEGMENT_ENV] = f"{segment_s:g}"
        self._env = {**os.environ, **env}
        users = str(opts.users)
        self._argv = [
            sys.executable, "-m", "locust", "-f", opts.scenario or default_scenario_path(),
            "--headless", "--only-summary", "-u", users, "-r", users,
            "--stop-timeout", "5", "--exit-code-on-error", "0", "--loglevel", "WARNING",
        ]  # fmt: skip
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_at = -math.inf
        self.starts = 0

    def start(self) -> None:
        """Start Locust (from the thread that stays alive: Linux's parent-death signal follows
        the thread that forked)."""
        self._close_log()
        _rotate_log(self.log_path)
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,  # Ctrl-C reaches the watch; it stops Locust in order
            preexec_fn=die_with_parent,
        )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        self._started_at = time.monotonic()
        self.starts += 1

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def restart_due(self) -> bool:
        """Whether a dead Locust should be started again now."""
        return not self.alive() and time.monotonic() - self._started_at >= RESTART_AFTER_S

    def stop(self, timeout_s: float = 30.0) -> str:
        """SIGTERM, then wait (Locust closes its last segment); killed after `timeout_s`. A note
        when it had to be killed, else ""."""
        proc, note = self._proc, ""
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                note = f"Locust did not stop within {timeout_s:g} s and was killed; its last segment is kept"
        self._close_log()
        self.pid_path.unlink(missing_ok=True)
        return note

    def trim_log(self) -> bool:
        """Keep locust.log under LOG_LIMIT_BYTES while Locust runs: copied to locust.log.1, then
        emptied (Locust appends to it: its next lines start the file again). Whether it was."""
        try:
            if self.log_path.stat().st_size <= LOG_LIMIT_BYTES:
                return False
            shutil.copyfile(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
            os.truncate(self.log_path, 0)
        except OSError:
            return False
        return True

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _rotate_log(path: Path) -> None:
    try:
        if path.stat().st_size > LOG_LIMIT_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


def wait_for_previous_locust(pid_path: Path, timeout_s: float = 15.0) -> bool:
    """A watch killed without stopping its Locust leaves it to end on its own (the parent-death
    signal is SIGTERM: it closes its segment). Wait for that process, named in `pid_path`, to be
    gone before its segments are adopted; False when it is still there after `timeout_s`."""
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return True
    deadline = time.monotonic() + timeout_s
    while _is_locust(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    pid_path.unlink(missing_ok=True)
    return True


def _is_locust(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z) has finished: its files are closed.
    return b"locust" in cmdline and stat.rpartition(")")[2].split()[:1] != ["Z"]


class ExportTap(SpanExporter):
    """The real exporter, telling `drain()` which traces it exported completely."""

    def __init__(self, inner: SpanExporter, spans_per_trace: int) -> None:
        self._inner = inner
        self._spans = spans_per_trace
        self._lock = threading.Lock()
        # trace id -> [spans exported, root start]; complete ones move to _done.
        self._partial: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._done: collections.deque[ExportedTrace] = collections.deque()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._note(spans, time.time())
        return result

    def _note(self, spans: Sequence[ReadableSpan], now: float) -> None:
        with self._lock:
            for span in spans:
                ctx = span.context
                if ctx is None:
                    continue
                tid = trace_hex(ctx.trace_id)
                entry = self._partial.setdefault(tid, [0.0, now])
                entry[0] += 1
                if span.parent is None and span.start_time is not None:
                    entry[1] = span.start_time / 1e9
                if entry[0] >= self._spans:
                    del self._partial[tid]
                    self._done.append(ExportedTrace(tid, self._spans, entry[1], now))
            while len(self._partial) > _PARTIAL_LIMIT:
                self._partial.popitem(last=False)

    def drain(self) -> list[ExportedTrace]:
        with self._lock:
            out = list(self._done)
            self._done.clear()
        return out

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class ReferenceTraffic:
    """The side-emitter of a watch: `drain()` the traces to check, `counters()` its accounting
    (this process's: started/exported/failed/dropped, and the export failures and emit errors)."""

    def __init__(
        self, collector: str, run_id: str, *, rate_per_s: float, children: int, protocol: str,
        grpc_endpoint: str | None, service_name: str, headers: tuple[tuple[str, str], ...],
        export_timeout_s: float = 5.0,
    ) -> None:  # fmt: skip
        target = reference_target(protocol, collector, grpc_endpoint, headers)
        self.last_error = ""
        inner = build_exporter(target, export_timeout_s, self._note_failure)
        self.tap = ExportTap(inner, 1 + children)
        self.emitter = ReferenceEmitter(
            collector, run_id, os.devnull, rate_per_s=rate_per_s, children=children,
            service_name=service_name, export_timeout_s=export_timeout_s, protocol=protocol,
            grpc_endpoint=grpc_endpoint, headers=headers, exporter=self.tap,
        )  # fmt: skip

    def _note_failure(self, text: str) -> None:
        self.last_error = text

    def start(self) -> None:
        self.emitter.start()

    def stop(self) -> None:
        self.emitter.stop()

    def drain(self) -> list[ExportedTrace]:
        return self.tap.drain()

    def counters(self) -> Mapping[str, int]:
        c = self.emitter.counters()
        return {
            "started": c.traces_started,
            "exported": c.traces_exported,
            "failed": c.traces_failed,
            "dropped": c.traces_dropped,
            "collector": c.export_failures,
            "emitter": c.emit_errors,
        }
