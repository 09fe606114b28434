"""The ledger writer the generator uses: `loadgen.ledger.LedgerWriter`'s file, records and
flushing, with each record encoded by msgspec into one buffer that goes to the file in one write
per flush (bench/generator.py: `json.dumps` of each record was a fifth of the traced user's own
work per request).

The lines are the same records: the same keys in the same order, compact, one JSON object per
line, so `read_ledger` and `read_rows` read the values the json writer wrote. Two spellings
differ, not the values: text outside ASCII is written as UTF-8 rather than as `\\u` escapes, and
a float that is not finite (which no ledger field holds: `ts` and `latency_ms` are clock
readings) would be `null` rather than the `NaN` that is not JSON. A record msgspec cannot encode
(a string with a lone surrogate, as an error text decoded with `surrogateescape` may hold) is
written by `json.dumps`, as before.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import IO, Any

import msgspec

from loadgen.ledger import LedgerWriter, _end_torn_line

__all__ = ["FastLedgerWriter", "encode_record"]

_ENCODER = msgspec.json.Encoder()


def encode_record(record: dict[str, Any], buffer: bytearray) -> None:
    """Append one record's ledger line (with its newline) to `buffer`."""
    start = len(buffer)
    try:
        _ENCODER.encode_into(record, buffer, -1)
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        del buffer[start:]
        buffer += json.dumps(record, separators=(",", ":")).encode()
    buffer += b"\n"


class FastLedgerWriter(LedgerWriter):
    """`LedgerWriter` (same constructor, `append`/`flush`/`close`, `count`, `seq` and `worker`
    stamping, flush every `flush_every` records or `flush_interval_s` seconds, fsync on close)."""

    def __init__(
        self, path: Path, *, worker: str = "local", flush_every: int = 500, flush_interval_s: float = 0.5
    ) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _end_torn_line(path)
        self._out: IO[bytes] | None = open(path, "ab")  # noqa: SIM115
        self._buffer = bytearray()
        self.worker = worker
        self.count = 0
        self._pending = 0
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()

    def append(self, record: dict[str, Any]) -> None:
        if self._out is None:
            raise ValueError(f"ledger {self.path} is closed")
        record["seq"] = self.count
        if "worker" not in record:
            record["worker"] = self.worker
        encode_record(record, self._buffer)
        self.count += 1
        self._pending += 1
        if (
            self._pending >= self._flush_every
            or time.monotonic() - self._last_flush >= self._flush_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        if self._out is not None:
            if self._buffer:
                self._out.write(self._buffer)  # whole lines only: a crash tears at most the last
                self._buffer.clear()
            self._out.flush()
            self._pending = 0
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._out is None:
            return
        self.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        self._out = None

    def __enter__(self) -> FastLedgerWriter:
        return self
