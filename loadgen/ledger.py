"""The ledger: one JSON line per generated request, appended while the run goes.

Streamed, never held in memory: the writer buffers at most `flush_every` records or
`flush_interval_s` seconds before handing them to the OS, and `close()` flushes and fsyncs. A
process killed mid-write leaves at most one truncated last line, which the reader skips and
counts (`LedgerStats.truncated`), as it does any other line that is not a UTF-8 JSON object.

Record fields (absent values are null):
    seq          per-writer sequence number
    rid          our request id (also sent as `x-loadgen-request-id`)
    mode         header mode (loadgen.mesh.modes.HeaderMode)
    path         request path (/headers, /fanout, /fanout-nopropagate)
    ts           start time, epoch seconds
    latency_ms   time to the full response
    status       HTTP status (0 when no response)
    error        transport error or unexpected status text
    inj_trace / inj_span / inj_flag    the trace context we injected
    up_trace / up_span / up_flag / up_xrid    what the upstream echoed it received
    xrid_sent    the x-request-id we sent (x-request-id modes only)
    predicted    Envoy's random-sampling decision on xrid_sent at the crafted-for percentage
                 (known before sending; it is the decision only if the gateway keeps the id)
    worker       the writer's id (process or Locust worker)
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import msgspec
import numpy as np

LEDGER_FIELDS = (
    "seq",
    "rid",
    "mode",
    "path",
    "ts",
    "latency_ms",
    "status",
    "error",
    "inj_trace",
    "inj_span",
    "inj_flag",
    "up_trace",
    "up_span",
    "up_flag",
    "up_xrid",
    "xrid_sent",
    "predicted",
    "worker",
)


def _end_torn_line(path: Path) -> None:
    """A crash can leave a last line without its newline; appending to it would glue the next
    good record onto the torn one. Terminate it so only the torn line is lost."""
    try:
        with open(path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    except FileNotFoundError:
        pass


_R = TypeVar("_R")


class LedgerWriter:
    """Append-only, line-buffered-by-count ledger file. The flush policy lives here once; a
    subclass changes only how the file is opened, a record written and the lines drained
    (`_open`, `_write`, `_drain`: loadgen.ledger_fast)."""

    def __init__(
        self, path: Path, *, worker: str = "local", flush_every: int = 500, flush_interval_s: float = 0.5
    ) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _end_torn_line(path)
        self._file: IO[Any] | None = self._open(path)
        self.worker = worker
        self.count = 0
        self._pending = 0
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()

    def _open(self, path: Path) -> IO[Any]:
        return open(path, "a", encoding="utf-8", buffering=1 << 16)

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def _drain(self) -> None:
        assert self._file is not None
        self._file.flush()

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"ledger {self.path} is closed")
        record["seq"] = self.count
        record.setdefault("worker", self.worker)
        self._write(record)
        self.count += 1
        self._pending += 1
        now = time.monotonic()
        if self._pending >= self._flush_every or now - self._last_flush >= self._flush_interval_s:
            self.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._drain()
            self._pending = 0
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._file is None:
            return
        self.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class LedgerStats:
    records: int = 0
    # Lines that are not a UTF-8 JSON object, skipped (a crash mid-write leaves at most one, at
    # the end; anything else was written by something other than a LedgerWriter).
    truncated: int = 0


def parse_record(line: bytes) -> dict[str, Any] | None:
    """One ledger line as its record, or None when it is not a UTF-8 JSON object (a torn last
    line, bytes that are not UTF-8, a JSON value that is not an object)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
        return None
    return record if isinstance(record, dict) else None


def _records(path: Path, stats: LedgerStats | None, parse: Callable[[bytes], _R | None]) -> Iterator[_R]:
    """Stream `parse` of each non-blank line; skip (and count) lines it returns None for."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = parse(line)
            if record is None:
                if stats is not None:
                    stats.truncated += 1
                continue
            if stats is not None:
                stats.records += 1
            yield record


def read_ledger(path: Path, stats: LedgerStats | None = None) -> Iterator[dict[str, Any]]:
    """Stream records; skip (and count) lines that are not a UTF-8 JSON object."""
    return _records(path, stats, parse_record)


class LedgerRow(msgspec.Struct, gc=False):
    """The fields of a record the analyses read (`loadgen.analysis.ledgerfold`), decoded
    straight from a line by `read_rows`; the others are skipped without being built. (Not
    tracked by the garbage collector: its values are strings and numbers, never a cycle.)"""

    rid: str | None = None
    mode: str | None = None
    path: str | None = None
    ts: float | None = None
    latency_ms: float | None = None
    status: int | None = None
    error: str | None = None
    inj_trace: str | None = None
    inj_span: str | None = None
    up_trace: str | None = None
    up_flag: str | None = None
    up_xrid: str | None = None
    xrid_sent: str | None = None


_ROW_DECODER = msgspec.json.Decoder(LedgerRow)
#: Bytes read at a time by `LedgerRows.blocks` (about 2,800 records of a LedgerWriter's: small blocks stay in the CPU cache).
BLOCK_BYTES = 1 << 20
_NEWLINE, _OPEN, _CLOSE = b"\n{}"


def _parse_row(line: bytes) -> LedgerRow | dict[str, Any] | None:
    try:
        return _ROW_DECODER.decode(line)
    except msgspec.MsgspecError:  # not JSON msgspec reads, or a field of another type
        return parse_record(line)


def _decode_block(lines: memoryview) -> list[LedgerRow] | None:
    """Whole lines (the last ending in a newline) decoded at once, when each is one JSON object
    of LedgerRow's types; None when any is not (blank, torn, another shape, a field of another
    type): the caller then reads them one by one.

    `decode_lines` also reads two objects on one line, or one across two, so the lines are
    first checked to each start with `{` and end with `}`: a line break is then always `}` then
    `{`, which is a boundary between values (inside an object or array `}` can only be
    followed by `,`, `}` or `]`), and as many values as lines means one value per line."""
    data = np.frombuffer(lines, dtype=np.uint8)
    ends = np.flatnonzero(data == _NEWLINE)
    if not (
        len(ends)
        and data[0] == _OPEN
        and (data[ends - 1] == _CLOSE).all()
        and (data[ends[:-1] + 1] == _OPEN).all()
    ):
        return None
    try:
        rows = _ROW_DECODER.decode_lines(lines)
    except msgspec.MsgspecError:
        return None
    return rows if len(rows) == len(ends) else None


class LedgerRows:
    """A ledger's records for the analyses (`read_rows`): iterated, one row at a time; by
    `blocks()`, lists of consecutive rows (what `loadgen.analysis.ledgerfold` folds). Each
    iteration reads the file anew and counts into `stats`."""

    def __init__(self, path: Path, stats: LedgerStats | None = None, block_bytes: int = BLOCK_BYTES) -> None:
        self.path = path
        self.stats = stats
        self.block_bytes = block_bytes

    def __iter__(self) -> Iterator[LedgerRow | dict[str, Any]]:
        return itertools.chain.from_iterable(self.blocks())

    def blocks(self) -> Iterator[list[LedgerRow | dict[str, Any]]]:
        """The rows in blocks of whole lines, about `block_bytes` each (a last line without its
        newline is a block of its own). The file is read into one buffer, reused: each block is
        decoded before the next read."""
        if not self.path.exists():
            return
        buf = bytearray(max(1, self.block_bytes))
        view, filled = memoryview(buf), 0
        with open(self.path, "rb", buffering=0) as fh:
            while got := fh.readinto(view[filled:]):
                filled += got
                cut = buf.rfind(b"\n", 0, filled) + 1
                if cut:
                    yield self._rows(view[:cut])
                    buf[: filled - cut] = view[cut:filled].tobytes()  # a copy: they may overlap
                    filled -= cut
                elif filled == len(buf):  # a line longer than the buffer: grow it
                    view.release()
                    buf.extend(bytes(len(buf)))
                    view = memoryview(buf)
            if filled:
                yield self._rows(view[:filled])

    def _rows(self, lines: memoryview) -> list[LedgerRow | dict[str, Any]]:
        rows: list[LedgerRow | dict[str, Any]] | None = _decode_block(lines)  # type: ignore[assignment]
        skipped = 0
        if rows is None:
            rows = []
            for line in lines.tobytes().split(b"\n"):  # as `for line in file`: \r ends no line
                if not line.strip():
                    continue
                row = _parse_row(line)
                if row is None:
                    skipped += 1
                else:
                    rows.append(row)
        if self.stats is not None:
            self.stats.records += len(rows)
            self.stats.truncated += skipped
        return rows


def read_rows(path: Path, stats: LedgerStats | None = None) -> LedgerRows:
    """`read_ledger` for the analyses, several times faster: a line whose fields have the types
    a LedgerWriter writes is decoded straight into a LedgerRow (its other fields skipped, many
    lines at once); any other line goes through `parse_record` as in `read_ledger` (so it is the
    same record, or skipped and counted the same way) and is yielded as its dict."""
    return LedgerRows(path, stats)


def count_lines(path: Path) -> int:
    """Fast progress count of a growing ledger (newlines only, no parsing)."""
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


@dataclass
class LiveCounts:
    """Counters folded from a growing ledger while the run goes (the live view)."""

    requests: int = 0
    skipped: int = 0  # complete lines that are not a UTF-8 JSON object
    errors: int = 0
    sampled: int = 0  # the upstream saw a sampled decision
    decided: int = 0  # the upstream's decision is known
    by_mode: dict[str, list[int]] = field(default_factory=dict)  # mode -> [requests, sampled]

    @property
    def sampled_fraction(self) -> float | None:
        return self.sampled / self.decided if self.decided else None


class LedgerTail:
    """Reads only what was appended since the last call; a partial last line waits for its end."""

    def __init__(self, path: Path, decision: Callable[[dict[str, Any]], bool | None]) -> None:
        self.path = path
        self.counts = LiveCounts()
        self._decision = decision
        self._offset = 0
        self._partial = b""

    def poll(self) -> LiveCounts:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return self.counts
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        c = self.counts
        for line in lines:
            if not line.strip():
                continue
            rec = parse_record(line)
            if rec is None:
                c.skipped += 1
                continue
            c.requests += 1
            c.errors += int(rec.get("status") != 200)
            decided = self._decision(rec)
            per_mode = c.by_mode.setdefault(str(rec.get("mode")), [0, 0])
            per_mode[0] += 1
            if decided is not None:
                c.decided += 1
                c.sampled += int(decided)
                per_mode[1] += int(decided)
        return c
