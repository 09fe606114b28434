"""loadgen.ledger: append-only JSON-lines writer (flush by count/time, fsync on close) and reader."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from loadgen import ledger as ledger_mod
from loadgen.ledger import LEDGER_FIELDS, LedgerStats, LedgerWriter, count_lines, read_ledger


def on_disk(path: Path) -> list[str]:
    """What another process would see right now (independent of the writer's buffer)."""
    with open(path, encoding="utf-8") as fh:
        return fh.read().splitlines()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(ledger_mod, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_append_numbers_records_and_stamps_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "run" / "nested" / "ledger.jsonl"  # parents are created
    with LedgerWriter(path, worker="w1") as writer:
        writer.append({"rid": "a", "mode": "none", "status": 200})
        writer.append({"rid": "b", "mode": "none", "status": 503, "worker": "other"})
        writer.append({"rid": "c", "inj_trace": None})
        assert writer.count == 3
    lines = on_disk(path)
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert [r["rid"] for r in records] == ["a", "b", "c"]
    assert [r["worker"] for r in records] == ["w1", "other", "w1"]
    assert records[2]["inj_trace"] is None
    assert all(" " not in line for line in lines)  # compact separators, one record per line
    assert set(records[0]) <= set(LEDGER_FIELDS)


def test_writer_appends_to_an_existing_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with LedgerWriter(path) as first:
        first.append({"rid": "a"})
    with LedgerWriter(path) as second:
        second.append({"rid": "b"})
    assert [r["rid"] for r in read_ledger(path)] == ["a", "b"]


def test_flush_by_count(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = LedgerWriter(path, flush_every=3, flush_interval_s=3600.0)
    writer.append({"rid": "a"})
    writer.append({"rid": "b"})
    assert on_disk(path) == []  # still in the writer's buffer
    writer.append({"rid": "c"})
    assert [json.loads(x)["rid"] for x in on_disk(path)] == ["a", "b", "c"]
    writer.append({"rid": "d"})
    assert len(on_disk(path)) == 3  # the count restarts after a flush
    writer.close()
    assert len(on_disk(path)) == 4


def test_flush_by_time(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = LedgerWriter(path, flush_every=1000, flush_interval_s=0.5)
    clock.now += 0.2
    writer.append({"rid": "a"})
    assert on_disk(path) == []
    clock.now += 0.299
    writer.append({"rid": "b"})
    assert on_disk(path) == []  # 0.499 s since the writer started
    clock.now += 0.001
    writer.append({"rid": "c"})
    assert len(on_disk(path)) == 3  # 0.5 s reached: everything pending goes out
    clock.now += 0.4
    writer.append({"rid": "d"})
    assert len(on_disk(path)) == 3  # the interval restarts at the last flush
    clock.now += 0.1
    writer.append({"rid": "e"})
    assert len(on_disk(path)) == 5
    writer.close()


def test_explicit_flush(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = LedgerWriter(path, flush_every=1000, flush_interval_s=3600.0)
    writer.append({"rid": "a"})
    assert on_disk(path) == []
    writer.flush()
    assert len(on_disk(path)) == 1
    writer.close()


def test_close_flushes_and_fsyncs_the_ledger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.jsonl"
    real_fsync = os.fsync
    synced: list[tuple[int, int]] = []

    def spy(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, os.fstat(fd).st_size))
        real_fsync(fd)

    writer = LedgerWriter(path, flush_every=1000, flush_interval_s=3600.0)
    writer.append({"rid": "a"})
    writer.append({"rid": "b"})
    monkeypatch.setattr(os, "fsync", spy)
    writer.close()
    # fsync ran on the ledger file itself, after its buffer was written out
    assert synced == [(path.stat().st_ino, path.stat().st_size)]
    assert len(on_disk(path)) == 2
    writer.close()  # idempotent: no second fsync, no error
    assert len(synced) == 1


def test_append_after_close_raises(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with LedgerWriter(path) as writer:
        writer.append({"rid": "a"})
    with pytest.raises(ValueError, match="closed"):
        writer.append({"rid": "b"})
    writer.flush()  # flushing a closed writer is harmless
    assert len(on_disk(path)) == 1


# --- reading -------------------------------------------------------------------------------------


def write_lines(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_read_ledger_skips_and_counts_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with LedgerWriter(path) as writer:
        for i in range(3):
            writer.append({"rid": f"r{i}", "latency_ms": 1.5})
    full = path.read_text()
    # A crash mid-write: the next record is cut off in the middle.
    path.write_text(full + '{"seq":3,"rid":"r3","lat')
    stats = LedgerStats()
    records = list(read_ledger(path, stats))
    assert [r["rid"] for r in records] == ["r0", "r1", "r2"]
    assert (stats.records, stats.truncated) == (3, 1)
    assert count_lines(path) == 3  # the torn line has no newline yet


def test_read_ledger_skips_blank_lines_and_counts_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    write_lines(path, '{"rid":"a"}\n\n   \n{"rid":\n{"rid":"b"}\nnot json\n')
    stats = LedgerStats()
    assert [r["rid"] for r in read_ledger(path, stats)] == ["a", "b"]
    assert (stats.records, stats.truncated) == (2, 2)
    assert [r["rid"] for r in read_ledger(path)] == ["a", "b"]  # stats are optional


def test_read_ledger_skips_and_counts_lines_that_are_not_utf8_or_not_an_object(tmp_path: Path) -> None:
    # Once a traceback (UnicodeDecodeError), and non-object JSON was yielded as a record.
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(
        b'{"rid":"a"}\n'
        b'\xff\xfe{"rid":"latin1 \xe9"}\n'  # not UTF-8 at all
        b'{"rid":"\xc3"}\n'  # valid JSON around a cut UTF-8 sequence
        b"[1, 2]\n42\nnull\n"  # JSON, but not a record
        b'{"rid":"b\xc3\xa9"}\n'
    )
    stats = LedgerStats()
    assert [r["rid"] for r in read_ledger(path, stats)] == ["a", "b\u00e9"]
    assert (stats.records, stats.truncated) == (2, 5)


def test_read_ledger_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    stats = LedgerStats()
    assert list(read_ledger(tmp_path / "nope.jsonl", stats)) == []
    assert (stats.records, stats.truncated) == (0, 0)


def test_read_ledger_streams(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    write_lines(path, '{"rid":"a"}\n{"rid":"b"}\n')
    stats = LedgerStats()
    it = read_ledger(path, stats)
    assert next(it)["rid"] == "a"
    assert stats.records == 1  # counted as it goes, not read all at once


def test_a_writer_reopening_a_torn_ledger_does_not_lose_its_first_record(tmp_path: Path) -> None:
    """A process killed mid-write leaves a last line without a newline. The writer opens in append
    mode, so a writer started on that file must begin on a fresh line: otherwise its first
    (complete) record is glued to the torn one and discarded by the reader as "truncated"."""
    path = tmp_path / "ledger.jsonl"
    write_lines(path, '{"seq":0,"rid":"old0"}\n{"seq":1,"rid":"ol')
    with LedgerWriter(path) as writer:
        writer.append({"rid": "new0"})
        writer.append({"rid": "new1"})
    stats = LedgerStats()
    rids = [r["rid"] for r in read_ledger(path, stats)]
    assert rids == ["old0", "new0", "new1"]
    assert stats.truncated == 1


# --- count_lines ---------------------------------------------------------------------------------


def test_count_lines(tmp_path: Path) -> None:
    assert count_lines(tmp_path / "missing.jsonl") == 0
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert count_lines(empty) == 0
    path = tmp_path / "ledger.jsonl"
    with LedgerWriter(path, flush_every=10_000) as writer:
        for i in range(5):
            writer.append({"rid": f"r{i}"})
        writer.flush()
        assert count_lines(path) == 5  # progress of a ledger still being written


def test_count_lines_across_read_chunks(tmp_path: Path) -> None:
    """count_lines reads 1 MiB at a time: lines straddling chunk boundaries count once."""
    path = tmp_path / "big.jsonl"
    line: dict[str, Any] = {"rid": "x" * 97}
    n = 30_000  # ~3.3 MB
    path.write_text((json.dumps(line) + "\n") * n)
    assert path.stat().st_size > 3 * (1 << 20)
    assert count_lines(path) == n


def test_every_jsonl_reader_skips_a_non_utf8_line(tmp_path: Path) -> None:
    """reference.jsonl, fetched.jsonl and capacity's logs are read like the ledger: a line of
    bytes that are not UTF-8 is skipped, the good lines around it are kept (issue 10, finding 4)."""
    from loadgen.capacity import _read_jsonl
    from loadgen.emitter import read_reference_log
    from loadgen.runfiles import load_fetched

    good = {"trace": "00000000000000aa", "status": "found", "event": "x"}
    path = tmp_path / "any.jsonl"
    path.write_bytes(
        json.dumps(good).encode() + b"\n" + b'{"trace": "\xff\xfe"}\n' + json.dumps(good).encode() + b"\n"
    )
    assert list(read_reference_log(path)) == [good, good]
    assert _read_jsonl(path) == [good, good]
    assert list(load_fetched(path)) == ["00000000000000aa"]
