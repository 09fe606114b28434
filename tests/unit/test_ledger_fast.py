"""loadgen.ledger_fast.FastLedgerWriter: the generator's ledger writer. Readers get the values the
json writer (loadgen.ledger.LedgerWriter) wrote, and it flushes, closes and numbers as it does."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from loadgen import ledger
from loadgen.ledger import LedgerStats, LedgerWriter, read_ledger, read_rows
from loadgen.ledger_fast import FastLedgerWriter

WRITERS = [LedgerWriter, FastLedgerWriter]


def records(n: int, seed: int) -> list[dict[str, Any]]:
    """Records as the traced user writes them: every field type, optional fields absent or null,
    error texts outside ASCII."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rec: dict[str, Any] = {
            "rid": f"{rng.getrandbits(128):032x}",
            "mode": rng.choice(["none", "b3_multi_sampled", "xrid_crafted"]),
            "path": "/headers",
            "inj_trace": rng.choice([None, f"{rng.getrandbits(128):032x}"]),
            "inj_span": rng.choice([None, f"{rng.getrandbits(64):016x}"]),
            "inj_flag": rng.choice([None, "1", "0", "d"]),
        }
        if i % 3 == 0:
            rec["xrid_sent"] = f"{rng.getrandbits(32):08x}-0000-4000-8000-000000000000"
            rec["predicted"] = rng.choice([None, True, False])
        rec["latency_ms"] = round(rng.uniform(0.1, 3000.0), 3)
        rec["ts"] = 1_700_000_000 + rng.random() * 1e6
        rec["status"] = rng.choice([200, 200, 503, 0])
        if rec["status"] == 200:
            rec.update(up_trace=rec["inj_trace"], up_span=None, up_flag=rng.choice([None, "1"]), up_xrid="x")
        rec["error"] = rng.choice(
            [None, "HTTP 503", "connexion refusée ✗", 'quote " and \\ and \u2028 and \x00']
        )
        out.append(rec)
    return out


def written(writer_class: type[LedgerWriter], path: Path, recs: list[dict[str, Any]]) -> Path:
    with writer_class(path, worker="host:1") as writer:
        for rec in recs:
            writer.append(dict(rec))
    return path


def rows(path: Path) -> list[Any]:
    stats = LedgerStats()
    out = list(read_rows(path, stats))
    assert stats.truncated == 0
    return out


def test_readers_read_the_values_the_json_writer_wrote(tmp_path: Path) -> None:
    recs = records(500, seed=7)
    old = written(LedgerWriter, tmp_path / "old.jsonl", recs)
    new = written(FastLedgerWriter, tmp_path / "new.jsonl", recs)
    assert list(read_ledger(new)) == list(read_ledger(old))
    assert rows(new) == rows(old)
    # Same keys in the same order, then the writer's seq and worker.
    first = next(read_ledger(new))
    assert list(first) == [*recs[0], "seq", "worker"]
    assert (first["seq"], first["worker"]) == (0, "host:1")
    # One compact JSON object per line; outside ASCII as UTF-8 (the json writer escaped it).
    lines = new.read_bytes().splitlines()
    assert len(lines) == 500 and all(line.startswith(b"{") and line.endswith(b"}") for line in lines)
    assert "connexion refusée ✗".encode() in new.read_bytes()
    assert b": " not in lines[0] and b", " not in lines[0]


def test_a_record_msgspec_cannot_encode_is_written_as_the_json_writer_wrote_it(tmp_path: Path) -> None:
    rec = {"rid": "a", "error": "bad byte \udcff"}  # a lone surrogate (surrogateescape)
    old = written(LedgerWriter, tmp_path / "old.jsonl", [rec, {"rid": "b"}])
    new = written(FastLedgerWriter, tmp_path / "new.jsonl", [rec, {"rid": "b"}])
    assert new.read_bytes() == old.read_bytes()
    assert [r.get("error") for r in read_ledger(new)] == ["bad byte \udcff", None]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # The flush policy is LedgerWriter's, which FastLedgerWriter inherits.
    monkeypatch.setattr(ledger, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def on_disk(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_flush_by_count_and_by_time(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = FastLedgerWriter(path, flush_every=3, flush_interval_s=0.5)
    writer.append({"rid": "a"})
    writer.append({"rid": "b"})
    assert on_disk(path) == []  # in the buffer
    writer.append({"rid": "c"})
    assert [json.loads(x)["rid"] for x in on_disk(path)] == ["a", "b", "c"]
    clock.now += 0.499
    writer.append({"rid": "d"})
    assert len(on_disk(path)) == 3
    clock.now += 0.001
    writer.append({"rid": "e"})
    assert len(on_disk(path)) == 5  # 0.5 s since the last flush
    writer.close()
    assert [r["seq"] for r in read_ledger(path)] == [0, 1, 2, 3, 4]


def test_close_flushes_fsyncs_once_and_refuses_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    writer = FastLedgerWriter(path, flush_every=1000, flush_interval_s=3600.0)
    writer.append({"rid": "a"})
    monkeypatch.setattr(os, "fsync", spy)
    writer.close()
    assert synced == [path.stat().st_size] and len(on_disk(path)) == 1
    writer.close()
    assert len(synced) == 1
    with pytest.raises(ValueError, match="closed"):
        writer.append({"rid": "b"})
    writer.flush()  # harmless


@pytest.mark.parametrize("writer_class", WRITERS)
def test_a_writer_on_a_torn_ledger_starts_a_fresh_line(
    tmp_path: Path, writer_class: type[LedgerWriter]
) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"seq":0,"rid":"old0"}\n{"seq":1,"rid":"ol', encoding="utf-8")
    written(writer_class, path, [{"rid": "new0"}, {"rid": "new1"}])
    stats = LedgerStats()
    assert [r["rid"] for r in read_ledger(path, stats)] == ["old0", "new0", "new1"]
    assert stats.truncated == 1


def test_the_worker_a_record_names_is_kept(tmp_path: Path) -> None:
    path = written(FastLedgerWriter, tmp_path / "l.jsonl", [{"rid": "a", "worker": "w9"}, {"rid": "b"}])
    assert [r["worker"] for r in read_ledger(path)] == ["w9", "host:1"]
