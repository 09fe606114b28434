"""The segmented ledger (loadgen.ledger_segments) and watch's reading side of it
(loadgen.watch.segments): rotation by time, the rename as commit, torn lines, a dead writer's
`.part`, retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from loadgen.ledger_segments import SegmentedLedgerWriter, closed_name, is_segment_name, segment_start_s
from loadgen.watch.segments import adopt_orphans, closed_segments, expire_segments, read_segment


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_records_go_to_one_open_segment_until_its_time_is_up(tmp_path: Path) -> None:
    clock = Clock()
    writer = SegmentedLedgerWriter(tmp_path, 10.0, clock=clock, timer=False)
    writer.append({"rid": "a"})
    clock.t += 4
    writer.append({"rid": "b"})
    [only] = _names(tmp_path)
    assert only.endswith(".jsonl.part") and is_segment_name(only)
    assert segment_start_s(only) == 1_000.0
    assert closed_segments(tmp_path) == []  # nothing is readable while it is open
    clock.t += 6  # 10 s after the first record: the next one opens a new segment
    writer.append({"rid": "c"})
    closed = closed_segments(tmp_path)
    assert [p.name for p in closed] == [closed_name(only)]
    first = read_segment(closed[0])
    assert [r["rid"] for r in first.records] == ["a", "b"] and first.torn == 0
    assert [r["seq"] for r in first.records] == [0, 1]
    writer.close()
    second = read_segment(closed_segments(tmp_path)[1])
    assert [(r["rid"], r["seq"]) for r in second.records] == [("c", 2)]  # seq runs on
    assert not any(n.endswith(".part") for n in _names(tmp_path))


def test_a_due_segment_is_closed_without_a_new_record(tmp_path: Path) -> None:
    clock = Clock()
    writer = SegmentedLedgerWriter(tmp_path, 5.0, clock=clock, timer=False)
    writer.append({"rid": "a"})
    assert writer.rotate() is False  # not due yet
    clock.t += 5
    assert writer.rotate() is True
    assert [p.name for p in closed_segments(tmp_path)] and writer.current is None
    clock.t += 100  # idle: no empty segment appears
    assert writer.rotate() is False
    assert len(_names(tmp_path)) == 1
    writer.close()


def test_the_timer_closes_segments_on_its_own(tmp_path: Path) -> None:
    writer = SegmentedLedgerWriter(tmp_path, 0.2)
    try:
        writer.append({"rid": "a"})
        for _ in range(100):
            if closed_segments(tmp_path):
                break
            time.sleep(0.05)
        assert [r["rid"] for r in read_segment(closed_segments(tmp_path)[0]).records] == ["a"]
    finally:
        writer.close()


def test_append_after_close_raises(tmp_path: Path) -> None:
    writer = SegmentedLedgerWriter(tmp_path, 5.0, timer=False)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.append({"rid": "a"})


def test_a_dead_writers_part_is_adopted_and_its_torn_line_skipped(tmp_path: Path) -> None:
    part = tmp_path / "segment-000000001000000-42.jsonl.part"
    part.write_bytes(b'{"rid":"a"}\n{"rid":"b"}\n{"rid":"c","sta')  # killed mid-line
    (tmp_path / "unrelated.jsonl.part").write_text("x")
    assert adopt_orphans(tmp_path) == ["segment-000000001000000-42.jsonl"]
    [segment] = closed_segments(tmp_path)
    read = read_segment(segment)
    assert [r["rid"] for r in read.records] == ["a", "b"]
    assert read.torn == 1
    assert (tmp_path / "unrelated.jsonl.part").exists()  # not a segment: left alone


def test_expire_removes_only_old_ingested_segments(tmp_path: Path) -> None:
    names = [f"segment-00000000000{i}000-1.jsonl" for i in range(3)]
    for i, name in enumerate(names):
        (tmp_path / name).write_text("{}\n")
        os.utime(tmp_path / name, (100.0 * i, 100.0 * i))  # written at 0, 100, 200
    ingested = {names[0], names[2]}
    removed = expire_segments(tmp_path, now=260.0, retention_s=100.0, ingested=ingested.__contains__)
    # 0 is old and ingested: gone; 100 is old but unread: kept; 200 is recent: kept.
    assert removed == [names[0]]
    assert [p.name for p in closed_segments(tmp_path)] == names[1:]


def test_no_folder_means_no_segments(tmp_path: Path) -> None:
    assert closed_segments(tmp_path / "absent") == []
    assert adopt_orphans(tmp_path / "absent") == []
