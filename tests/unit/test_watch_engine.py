"""The watch's engine (loadgen.watch.engine) over a real state database, a fake backend and a fake
clock: segments ingested once, checks read at their deadline, retried, concluded; errors never
missing; restarts without double counting; windows and trimming."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from loadgen.analysis.reconcile import Expectation
from loadgen.watch.checks import ExportedTrace, Timing
from loadgen.watch.engine import Engine, EngineConfig, bucket_width, progress_line
from loadgen.watch.model import Source, WatchSnapshot
from loadgen.watch.state import WatchState
from tests.unit.watch_fakes import SERVICES, Clock, FakeBackend, record, tid, write_segment

EXPECT = Expectation(2, SERVICES, 50.0)
TIMING = Timing(deadline_s=2.0, give_up_s=8.0)
WINDOWS = (("10s", 10.0), ("60s", 60.0))


class Feed:
    """The side-emitter as the engine sees it."""

    def __init__(self) -> None:
        self.exported: list[ExportedTrace] = []
        self.totals: dict[str, int] = {}

    def drain(self) -> list[ExportedTrace]:
        out, self.exported = self.exported, []
        return out

    def counters(self) -> Mapping[str, int]:
        return self.totals


def _engine(
    tmp_path: Path, clock: Clock, backend: FakeBackend, feed: Feed | None = None, **cfg: object
) -> Engine:
    config = EngineConfig(WINDOWS, TIMING, EXPECT, configured_ratio=0.5, retention_s=30.0, **cfg)  # type: ignore[arg-type]
    state = WatchState.open(tmp_path / "state", now=clock())
    return Engine(
        config, state, backend, tmp_path / "segments", reference=feed, clock=clock, fetch_in_thread=False
    )


def _traces(snap: WatchSnapshot, source: Source = Source.MESH) -> dict[str, int]:
    out: dict[str, int] = {}
    for (src, _mode, outcome), n in snap.traces.items():
        if src is source:
            out[outcome] = out.get(outcome, 0) + n
    return out


def _concluded(snap: WatchSnapshot, source: Source = Source.MESH) -> int:
    return sum(_traces(snap, source).values())


def test_a_segment_is_counted_once_with_its_checks(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    t0 = clock.t - 1
    write_segment(
        tmp_path / "segments",
        "segment-000000000000001-1.jsonl",
        [
            record("r1", tid(1), ts=t0, sampled=True),
            record("r2", tid(2), ts=t0, sampled=False),
            record("r3", tid(3), ts=t0, sampled=True, mode="b3_multi_sampled"),  # forced: no decision rate
            record("r4", tid(4), ts=t0, status=0),  # no response: no decision, unknown at once
            record("r5", tid(5), ts=t0, sampled=None),  # answered, but no flag echoed
        ],
        tail=b'{"rid":"r6","mo',  # a torn last line
    )
    snap = engine.step()
    assert snap.requests == {("none", "200"): 3, ("b3_multi_sampled", "200"): 1, ("none", "0"): 1}
    assert snap.pending == {Source.MESH: 3, Source.REFERENCE: 0}
    assert _traces(snap) == {"unknown": 2}
    assert snap.errors["gateway"] == 1 and snap.errors["ledger"] == 1
    # The decision rate counts the decision-free mode's two known decisions only.
    assert (snap.windows[0].decision.k, snap.windows[0].decision.n) == (1, 2)
    # Read at once: the sampled ones (sent 1 s ago); r2, decided not sampled, waits for its deadline.
    assert backend.reads == [[tid(1), tid(3)]]
    again = engine.step()  # the segment is known: nothing counted twice
    assert again.requests == snap.requests and again.pending == snap.pending


def test_found_early_with_its_time_to_queryable(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    sent = clock.t
    write_segment(tmp_path / "segments", "segment-000000000000001-1.jsonl", [record("r1", tid(1), ts=sent)])
    backend.hold(tid(1), 2)
    engine.step()
    clock.t = sent + 0.2
    engine.step()
    assert backend.reads == []  # its first read is 0.25 s after it was sent
    clock.t = sent + 0.3
    snap = engine.step()
    assert backend.reads == [[tid(1)]]
    assert _traces(snap) == {"found": 1} and snap.pending[Source.MESH] == 0
    hist = snap.ttq[Source.MESH]
    assert hist.count == 1 and hist.sum_s == pytest.approx(0.3)
    assert hist.bucket_counts[:3] == (0, 1, 1)  # 0.3 s: above the 0.25 s bound, within 0.5 s
    assert snap.last_readback_success == clock.t
    assert snap.windows[0].collection[Source.MESH].collection.ratio == 1.0


def test_missing_is_retried_until_give_up(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    sent = clock.t
    write_segment(tmp_path / "segments", "segment-000000000000001-1.jsonl", [record("r1", tid(1), ts=sent)])
    engine.step()
    for t in range(1, 8):
        clock.t = sent + t
        snap = engine.step()
    assert _traces(snap) == {} and snap.pending[Source.MESH] == 1  # still retrying at 7 s
    # Seven ticks: reads at 1, 2, 3, 4 and 6 s (due at 0.25, then 0.25, 0.5, 1, 2 s after a read).
    assert len(backend.reads) == 5
    clock.t = sent + 8.0
    snap = engine.step()
    assert _traces(snap) == {"missing": 1} and snap.pending[Source.MESH] == 0


def test_a_late_trace_found_on_a_retry(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    sent = clock.t
    write_segment(tmp_path / "segments", "segment-000000000000001-1.jsonl", [record("r1", tid(1), ts=sent)])
    backend.hold(tid(1), 1)  # one span of two: partial at the deadline
    engine.step()
    clock.t = sent + 2.0
    engine.step()
    backend.hold(tid(1), 2)
    for t in (3.0, 4.0, 5.0):
        clock.t = sent + t
        snap = engine.step()
    assert _traces(snap) == {"found": 1}
    assert snap.ttq[Source.MESH].sum_s > 2.0


def test_a_backend_error_is_never_missing(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    sent = clock.t
    write_segment(
        tmp_path / "segments",
        "segment-000000000000001-1.jsonl",
        [record("r1", tid(1), ts=sent), record("r2", tid(2), ts=sent, sampled=False)],
    )
    engine.step()
    clock.t = sent + 2.0
    engine.step()  # both read once: absent (r1 missing so far, r2 not sampled so far)
    backend.down = True
    for t in range(3, 12):
        clock.t = sent + t
        snap = engine.step()
    assert _traces(snap) == {"unknown": 2}  # the last answers were errors: unknown, not missing
    assert snap.errors["backend"] >= 2
    assert snap.last_readback_success == sent + 2.0


def test_decided_not_sampled_is_leaked_or_not_sampled(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    sent = clock.t
    write_segment(
        tmp_path / "segments",
        "segment-000000000000001-1.jsonl",
        [record("r1", tid(1), ts=sent, sampled=False), record("r2", tid(2), ts=sent, sampled=False)],
    )
    backend.hold(tid(1), 1)
    engine.step()
    clock.t = sent + 2.0
    snap = engine.step()
    assert _traces(snap) == {"leaked": 1}  # spans despite the decision: concluded at once
    clock.t = sent + 8.0
    snap = engine.step()
    assert _traces(snap) == {"leaked": 1, "not_sampled": 1}
    # Neither counts in the collection ratio (found / found + partial + missing).
    assert snap.windows[0].collection[Source.MESH].collection.n == 0


def test_restart_continues_without_double_counting(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    sent = clock.t
    segments = tmp_path / "segments"
    write_segment(
        segments, "segment-000000000000001-1.jsonl", [record(f"a{i}", tid(i), ts=sent) for i in range(5)]
    )
    for i in range(3):
        backend.hold(tid(i), 2)
    engine.step()
    clock.t = sent + 2.0
    before = engine.step()
    assert _traces(before) == {"found": 3} and before.pending[Source.MESH] == 2
    engine.state.close()  # killed: a new process opens the same state and folder
    backend.hold(tid(3), 2)
    backend.hold(tid(4), 2)
    write_segment(
        segments,
        "segment-000000000000002-1.jsonl",
        [record(f"b{i}", tid(10 + i), ts=clock.t) for i in range(4)],
    )
    restarted = _engine(tmp_path, clock, backend)
    assert restarted.state.run_id == engine.state.run_id
    clock.t = sent + 3.5
    after = restarted.step()
    requests = sum(after.requests.values())
    assert requests == 9  # 5 before + 4 new: the first segment was not read again
    assert _traces(after) == {"found": 5}  # the two pending checks were kept and concluded
    assert _concluded(after) + after.pending[Source.MESH] == requests
    assert after.windows[0].collection[Source.MESH].collection.k == 5  # the window survived too


def test_reference_traces_are_read_soon_after_export_and_accounted(tmp_path: Path) -> None:
    clock, backend, feed = Clock(), FakeBackend(), Feed()
    engine = _engine(tmp_path, clock, backend, feed)
    sent = clock.t
    feed.exported = [ExportedTrace(tid(7), 3, sent, sent + 0.6), ExportedTrace(tid(8), 3, sent, sent + 0.6)]
    feed.totals = {"started": 3, "exported": 2, "failed": 1, "dropped": 0, "collector": 1, "emitter": 0}
    backend.hold(tid(7), 3)
    backend.hold(tid(8), 2)  # a span short: partial
    clock.t = sent + 0.6
    engine.step()
    clock.t = sent + 0.9  # first read 0.25 s after the export
    snap = engine.step()
    assert _traces(snap, Source.REFERENCE) == {"found": 1}
    assert snap.ttq[Source.REFERENCE].sum_s == pytest.approx(0.9)
    assert snap.reference == {"started": 3, "exported": 2, "failed": 1, "dropped": 0}
    assert snap.errors["collector"] == 1
    clock.t = sent + 8.0
    snap = engine.step()
    assert _traces(snap, Source.REFERENCE) == {"found": 1, "partial": 1}
    engine.state.close()
    # A new process: its emitter counts from 0 again; the state's totals are its base.
    feed2 = Feed()
    feed2.totals = {"started": 1, "exported": 1}
    restarted = _engine(tmp_path, clock, backend, feed2)
    snap = restarted.step()
    assert snap.reference == {"started": 4, "exported": 3, "failed": 1, "dropped": 0}
    assert snap.errors["collector"] == 1


def test_windows_forget_old_buckets(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    sent = clock.t
    write_segment(tmp_path / "segments", "segment-000000000000001-1.jsonl", [record("r1", tid(1), ts=sent)])
    backend.hold(tid(1), 2)
    engine.step()
    clock.t = sent + 2.0
    snap = engine.step()
    assert [w.collection[Source.MESH].collection.n for w in snap.windows] == [1, 1]
    clock.t = sent + 20.0  # past the 10 s window, within the 60 s one
    snap = engine.step()
    assert [w.collection[Source.MESH].collection.n for w in snap.windows] == [0, 1]
    assert snap.windows[0].decision.ratio is None  # no data: None, never 0
    clock.t = sent + 200.0
    snap = engine.step()
    assert engine.state.buckets() == []  # trimmed to the longest window
    assert _traces(snap) == {"found": 1}  # the cumulative counts stay


def test_segments_are_removed_after_the_retention(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    path = write_segment(
        tmp_path / "segments", "segment-000000000000001-1.jsonl", [record("r1", tid(1), ts=clock.t)]
    )
    import os

    os.utime(path, (clock.t, clock.t))
    engine.step()
    clock.t += 20.0
    engine.step()
    assert path.exists()  # within the 30 s retention
    clock.t += 20.0
    engine.step()
    assert not path.exists()
    assert not engine.state.is_ingested(path.name)  # forgotten once its file is gone
    assert sum(engine.step().requests.values()) == 1


def test_a_hanging_backend_does_not_hold_the_tick(tmp_path: Path) -> None:
    clock, backend = Clock(), FakeBackend()
    config = EngineConfig(WINDOWS, TIMING, EXPECT)
    engine = Engine(config, WatchState.open(tmp_path / "state"), backend, tmp_path / "segments", clock=clock)
    sent = clock.t
    write_segment(tmp_path / "segments", "segment-000000000000001-1.jsonl", [record("r1", tid(1), ts=sent)])
    backend.hold(tid(1), 2)
    backend.gate = threading.Event()  # every read waits for the test
    engine.step()
    clock.t = sent + 2.0
    engine.step()  # the read goes out and hangs
    write_segment(
        tmp_path / "segments", "segment-000000000000002-1.jsonl", [record("r2", tid(2), ts=clock.t)]
    )
    snap = engine.step()  # the tick still ingests and publishes
    assert sum(snap.requests.values()) == 2 and _traces(snap) == {}
    backend.gate.set()
    for _ in range(200):
        snap = engine.step()
        if _traces(snap):
            break
        threading.Event().wait(0.01)
    assert _traces(snap) == {"found": 1}
    engine.close()


def test_bucket_width_and_progress_line(tmp_path: Path) -> None:
    assert bucket_width((("300s", 300.0), ("3600s", 3600.0))) == 10.0
    assert bucket_width((("10s", 10.0), ("1d", 86400.0))) == pytest.approx(86400.0 / 3000)
    clock, backend = Clock(), FakeBackend()
    engine = _engine(tmp_path, clock, backend)
    write_segment(
        tmp_path / "segments", "segment-000000000000001-1.jsonl", [record("r1", tid(1), ts=clock.t, status=0)]
    )
    line = progress_line(engine.step(), 12.0)
    assert "requests 1 (no response 1)" in line and "unknown 1" in line and "[10s]" in line
