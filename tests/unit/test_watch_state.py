"""The watch's SQLite state (loadgen.watch.state): one run id across restarts, transactions that
commit whole or not at all, due checks, trimming."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.watch.model import Source
from loadgen.watch.state import PendingCheck, StateError, WatchState


def _check(key: str, due_at: float, source: Source = Source.MESH) -> PendingCheck:
    return PendingCheck(source, key, "ab" * 16, "none", True, 0, due_at - 2.0, due_at, due_at + 6.0)


def test_one_run_id_across_restarts(tmp_path: Path) -> None:
    first = WatchState.open(tmp_path, now=50.0)
    run_id = first.run_id
    assert first.created_at == 50.0
    first.close()
    again = WatchState.open(tmp_path)
    assert (again.run_id, again.created_at) == (run_id, 50.0)
    again.close()
    assert WatchState.open(tmp_path, run_id=run_id).run_id == run_id  # the same id is fine
    with pytest.raises(StateError, match=f"belongs to run {run_id}"):
        WatchState.open(tmp_path, run_id="another")


def test_a_new_state_takes_the_given_run_id(tmp_path: Path) -> None:
    assert WatchState.open(tmp_path, run_id="canary-1").run_id == "canary-1"


def test_counters_and_checks_survive_a_restart(tmp_path: Path) -> None:
    state = WatchState.open(tmp_path)
    with state.write() as w:
        w.add("requests", ("none", "200"), 3)
        w.add("requests", ("none", "200"))
        w.add("requests", ("none", "0"), 2)
        w.set("reference", ("started",), 7)
        w.set("reference", ("started",), 9)  # a running total: the last value stands
        assert w.insert(_check("r1", 10.0))
        assert not w.insert(_check("r1", 99.0))  # already pending: not replaced
        w.ingested("segment-1", 6, 0, now=5.0)
    state.close()
    state = WatchState.open(tmp_path)
    counters = state.counters()
    assert counters["requests"] == {("none", "200"): 4.0, ("none", "0"): 2.0}
    assert counters["reference"] == {("started",): 9.0}
    assert state.pending(Source.MESH, "r1") == _check("r1", 10.0)
    assert state.is_ingested("segment-1") and not state.is_ingested("segment-2")


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    state = WatchState.open(tmp_path)
    with pytest.raises(RuntimeError), state.write() as w:
        w.add("requests", ("none", "200"))
        w.insert(_check("r1", 10.0))
        w.ingested("segment-1", 1, 0, now=5.0)
        raise RuntimeError("killed half way")
    assert state.counters() == {}
    assert state.pending_counts() == {Source.MESH: 0, Source.REFERENCE: 0}
    assert not state.is_ingested("segment-1")


def test_due_checks_earliest_first_without_those_in_flight(tmp_path: Path) -> None:
    state = WatchState.open(tmp_path)
    with state.write() as w:
        for key, due in (("late", 30.0), ("early", 10.0), ("mid", 20.0)):
            w.insert(_check(key, due))
        w.insert(_check("ref", 15.0, Source.REFERENCE))
    assert [c.key for c in state.due(now=25.0, limit=10)] == ["early", "ref", "mid"]
    assert [c.key for c in state.due(now=25.0, limit=2)] == ["early", "ref"]
    assert [c.key for c in state.due(now=25.0, limit=2, exclude={("mesh", "early")})] == ["ref", "mid"]
    assert state.pending_counts() == {Source.MESH: 3, Source.REFERENCE: 1}
    with state.write() as w:
        w.reschedule(_check("early", 10.0), due_at=40.0, attempts=1)
        w.conclude(_check("mid", 20.0))
    assert [c.key for c in state.due(now=25.0, limit=10)] == ["ref"]
    assert state.pending(Source.MESH, "early") == PendingCheck(
        Source.MESH, "early", "ab" * 16, "none", True, 0, 8.0, 40.0, 16.0, 1
    )


def test_buckets_add_up_and_are_trimmed(tmp_path: Path) -> None:
    state = WatchState.open(tmp_path)
    with state.write() as w:
        w.bucket(0.0, "decided", 2)
        w.bucket(0.0, "decided")
        w.bucket(10.0, "decided")
        w.bucket(20.0, "mesh:found", 4)
    assert state.buckets() == [(0.0, "decided", 3), (10.0, "decided", 1), (20.0, "mesh:found", 4)]
    with state.write() as w:
        w.trim_buckets(before=10.0)
    assert state.buckets() == [(10.0, "decided", 1), (20.0, "mesh:found", 4)]
    assert state.buckets(since=15.0) == [(20.0, "mesh:found", 4)]


def test_forgotten_segments_and_meta(tmp_path: Path) -> None:
    state = WatchState.open(tmp_path)
    with state.write() as w:
        w.ingested("old", 1, 0, now=1.0)
        w.ingested("new", 1, 0, now=9.0)
        w.set_meta("last_readback_success", "123.5")
    assert state.segments_before(5.0) == ["old"]
    with state.write() as w:
        w.forget_segments(["old"])
    assert not state.is_ingested("old") and state.is_ingested("new")
    assert state.meta("last_readback_success") == "123.5" and state.meta("absent") is None


def test_not_a_state_file(tmp_path: Path) -> None:
    (tmp_path / "watch.sqlite").write_text("not sqlite at all, just text " * 10)
    with pytest.raises(StateError, match="cannot open the watch state"):
        WatchState.open(tmp_path)
