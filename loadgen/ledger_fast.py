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
from pathlib import Path
from typing import IO, Any

import msgspec

from loadgen.ledger import LedgerWriter

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
    stamping, flush policy, fsync on close): only the file's opening, each record's encoding and
    the drain differ."""

    def _open(self, path: Path) -> IO[Any]:
        self._buffer = bytearray()
        return open(path, "ab")

    def _write(self, record: dict[str, Any]) -> None:
        encode_record(record, self._buffer)

    def _drain(self) -> None:
        assert self._file is not None
        if self._buffer:
            self._file.write(self._buffer)  # whole lines only: a crash tears at most the last
            self._buffer.clear()
        self._file.flush()

    def __enter__(self) -> FastLedgerWriter:
        return self
