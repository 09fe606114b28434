"""`loadgen watch` from start to stop (plain I/O; the CLI prints and exits):

    state folder (run id) -> /metrics endpoint -> [embedded mesh up] -> mesh profile, deadline
      -> Locust (segments) + side-emitter -> tick until --duration or a stop signal
      -> Locust stopped (its last segment closed), emitter accounted, last ingest -> [mesh down]

The pieces are `run`'s: open_target and plan_run (loadgen.run) learn the mesh and what to expect
of it; the engine (loadgen.watch.engine) does the counting. The endpoint starts first, so
/healthz says "starting" (503) while the mesh is probed.
"""

from __future__ import annotations

import fcntl
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import IO

from loadgen import __version__
from loadgen.run.execute import Plan, plan_run
from loadgen.run.load import reference_grpc_endpoint
from loadgen.run.options import RunOptions, Status, check_path, check_reference, check_run_id
from loadgen.run.target import OpenTarget, open_target
from loadgen.stack.procs import StackError
from loadgen.watch.checks import Timing
from loadgen.watch.engine import Engine, EngineConfig, limit_notes, profile_labels, progress_line
from loadgen.watch.model import WatchSnapshot
from loadgen.watch.options import WatchError, WatchOptions, give_up_for
from loadgen.watch.segments import adopt_orphans
from loadgen.watch.server import WatchServer, WatchServerError
from loadgen.watch.state import StateError, WatchState
from loadgen.watch.traffic import LocustTraffic, ReferenceTraffic, wait_for_previous_locust

__all__ = ["WatchResult", "run_watch"]

LOCK_FILE = "watch.lock"
#: Seconds between two checks of locust.log's size.
LOG_TRIM_EVERY_S = 60.0


@dataclass
class WatchResult:
    """How a watch ended: its last snapshot, why it stopped, and a component that failed (exit 4)."""

    run_id: str
    state_dir: Path
    snapshot: WatchSnapshot | None
    stopped_by: str
    failure: str = ""
    notes: list[str] = field(default_factory=list)


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One watch per state folder: a second one is an error, not a second writer."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(state_dir / LOCK_FILE, "a")  # noqa: SIM115
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WatchError(f"another watch is running on the state folder {state_dir}") from None
        yield
    finally:
        handle.close()


class _Stop:
    """SIGINT, SIGTERM and SIGHUP set the stop flag while the watch ticks (a second one while it
    stops interrupts the stop itself)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self.event.set()

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]


def _timing(opts: WatchOptions, plan: Plan) -> Timing:
    deadline = opts.deadline_s if opts.deadline_s is not None else plan.quiet_s
    give_up = give_up_for(deadline, opts.give_up_s)
    if give_up < deadline:
        raise WatchError(f"--give-up ({give_up:g} s) is shorter than the deadline ({deadline:g} s)")
    return Timing(deadline_s=deadline, give_up_s=give_up)


def _deadline_note(opts: WatchOptions, plan: Plan, timing: Timing) -> str:
    if opts.deadline_s is not None:
        source = "--deadline"
    elif plan.profile.time_to_queryable_s is not None:
        source = f"the probed time to queryable ({plan.profile.time_to_queryable_s:.1f} s) + 1 s"
    else:
        source = "no time to queryable was learned: the fallback (Envoy's flush interval + 1 s)"
    return (
        f"each request is read back {timing.deadline_s:g} s after it was sent ({source}) and concluded "
        f"by {timing.give_up_s:g} s (--give-up); reference traces from {timing.first_poll_s:g} s after their export"
    )


def _engine(
    opts: WatchOptions, run_opts: RunOptions, state: WatchState, opened: OpenTarget, plan: Plan,
    reference: ReferenceTraffic | None,
) -> Engine:  # fmt: skip
    timing = _timing(opts, plan)
    configured = plan.expect.configured_percent
    cfg = EngineConfig(
        windows=opts.windows,
        timing=timing,
        expect=plan.expect,
        tracer=plan.expect.mode_context().tracer,
        configured_ratio=None if configured is None else configured / 100.0,
        profile=profile_labels(plan.profile, plan.run_id_tag),
        retention_s=opts.retention_s,
        notes=(
            *opened.notes,
            *plan.notes,
            *limit_notes(plan.profile, plan.expect, plan.gaps),
            _deadline_note(opts, plan, timing),
        ),
        batch_limit=opts.batch_limit,
        version=__version__,
    )
    return Engine(cfg, state, opened.backend, opts.segments_dir, reference=reference)


def _reference(run_opts: RunOptions, opened: OpenTarget, run_id: str, rate: float) -> ReferenceTraffic | None:
    if not opened.collector or rate <= 0:
        return None
    return ReferenceTraffic(
        opened.collector, run_id, rate_per_s=rate, children=run_opts.reference_children,
        protocol=run_opts.reference_protocol, grpc_endpoint=reference_grpc_endpoint(run_opts, opened),
        service_name=run_opts.reference_service, headers=run_opts.reference_headers,
    )  # fmt: skip


class _Holder:
    """What the endpoint reads: the engine's latest snapshot once there is an engine."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def __call__(self) -> WatchSnapshot | None:
        return self.engine.latest() if self.engine is not None else None


def _tick_loop(
    engine: Engine, opts: WatchOptions, opened: OpenTarget, locust: LocustTraffic, stop: _Stop,
    status: Status,
) -> tuple[str, str]:  # fmt: skip
    """Tick until the duration is over, a stop signal, or a component of the embedded mesh
    dies; (why it stopped, the failure when one)."""
    started = time.monotonic()
    last_progress = last_trim = -float("inf")
    while True:
        snapshot: WatchSnapshot | None
        try:
            snapshot = engine.step()
        except Exception as exc:  # a bug or an I/O error must not end the canary
            engine.note_error("internal")
            status(f"watch tick failed: {type(exc).__name__}: {exc}")
            snapshot = engine.latest()
        elapsed = time.monotonic() - started
        if snapshot is not None and time.monotonic() - last_progress >= opts.progress_s:
            last_progress = time.monotonic()
            status(progress_line(snapshot, elapsed))
        if opened.mesh is not None:
            try:
                opened.mesh.check_alive()
            except StackError as exc:
                return "a component failed", str(exc)
        if time.monotonic() - last_trim >= LOG_TRIM_EVERY_S:
            last_trim = time.monotonic()
            locust.trim_log()
        if not locust.alive() and locust.restart_due():
            engine.note_error("internal")
            status(f"Locust exited (code {locust.exit_code()}); starting it again (see {locust.log_path})")
            adopt_orphans(opts.segments_dir)
            locust.start()
        if opts.duration_s is not None and elapsed >= opts.duration_s:
            return "duration", ""
        if stop.event.wait(opts.tick_s):
            return stop.reason or "stopped", ""


def _stop_all(
    engine: Engine, locust: LocustTraffic, reference: ReferenceTraffic | None, status: Status
) -> list[str]:
    """Locust (its last segment closed), the emitter (every trace accounted), a last tick that
    ingests both; pending checks stay in the state for the next start."""
    notes = []
    status("stopping: Locust closes its last segment, the emitter accounts for every trace")
    note = locust.stop()
    if note:
        notes.append(note)
    if reference is not None:
        reference.stop()
    engine.close()
    try:
        engine.step()
    except Exception as exc:  # what the last tick could not commit stays for the next start
        notes.append(
            f"the last tick failed ({type(exc).__name__}: {exc}); the state is as of the tick before"
        )
    return notes


def _watch(
    opts: WatchOptions, run_opts: RunOptions, state: WatchState, holder: _Holder, status: Status,
    announce: Callable[[str], None],
) -> WatchResult:  # fmt: skip
    run_id = state.run_id
    if not wait_for_previous_locust(opts.state_dir / "locust.pid"):
        raise WatchError(f"the Locust of a previous watch on {opts.state_dir} is still running")
    adopt_orphans(opts.segments_dir)  # what a killed watch's Locust left open
    run_opts = replace(run_opts, run_id=run_id, quiet_s=opts.deadline_s)
    opened = open_target(run_opts, opts.state_dir, status)
    try:
        if opened.mesh is not None:
            announce(
                f"embedded mesh: gateway {opened.gateway} (Host {opened.host}), collector {opened.collector}"
            )
        plan = plan_run(run_opts, opened, run_id, opts.state_dir, status)
        # The load reads each request's decision where the mesh's tracer writes it (probed).
        traced = replace(
            run_opts, tracing=replace(run_opts.tracing, tracer=plan.expect.mode_context().tracer)
        )
        reference = _reference(traced, opened, run_id, opts.reference_rate)
        engine = _engine(opts, traced, state, opened, plan, reference)
        holder.engine = engine
        engine.step()
        locust = LocustTraffic(
            traced, run_id, opened.gateway, opened.host, plan.expect.configured_percent,
            opts.segments_dir, opts.segment_s, opts.state_dir,
        )  # fmt: skip
        with _Stop() as stop:
            locust.start()
            if reference is not None:
                reference.start()
            try:
                stopped_by, failure = _tick_loop(engine, opts, opened, locust, stop, status)
            finally:
                notes = _stop_all(engine, locust, reference, status)
        return WatchResult(run_id, opts.state_dir, engine.latest(), stopped_by, failure, notes)
    finally:
        opened.backend.close()
        if opened.mesh is not None:
            status("stopping the embedded mesh")
            opened.mesh.stop()


def run_watch(
    opts: WatchOptions, run_opts: RunOptions, status: Status, announce: Callable[[str], None] = lambda _: None
) -> WatchResult:
    """Watch until `opts.duration_s` or a stop signal. WatchError/RunError/StackError: it could
    not start (the message says why). `announce` gets the lines worth keeping on screen (where
    the metrics are), `status` the passing ones."""
    if run_opts.run_id:
        check_run_id(run_opts.run_id)
    check_path(run_opts.path)
    check_reference(run_opts.reference_protocol, run_opts.reference_grpc_endpoint)
    with _locked(opts.state_dir):
        try:
            state = WatchState.open(opts.state_dir, run_id=run_opts.run_id)
        except StateError as exc:
            raise WatchError(str(exc)) from exc
        holder = _Holder()
        server = WatchServer(holder, host=opts.metrics_host, port=opts.metrics_port)
        try:
            server.start()
        except WatchServerError as exc:
            state.close()
            raise WatchError(str(exc)) from exc
        try:
            announce(f"watch {state.run_id}: metrics at {server.url}metrics, status page at {server.url}")
            return _watch(opts, run_opts, state, holder, status, announce)
        finally:
            server.stop()
            state.close()
