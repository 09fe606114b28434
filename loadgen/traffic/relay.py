"""Distributed generation: workers relay ledger records to the master over Locust's own message
channel, and the master writes the one ledger of the run.

Why the message channel: it already connects every worker to the master (also across machines
and pods), it is ordered per worker, and Locust itself uses it for statistics — so the ledger
and Locust's request counts travel the same way and stay comparable. Workers flush their buffer
at test stop, so a worker that is stopped loses nothing it recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

LEDGER_MESSAGE = "loadgen_ledger"


class RelayLedger:
    """Worker side of the ledger: the same `append`/`flush`/`close` as LedgerWriter, but records
    go to the master in batches instead of to a local file."""

    def __init__(
        self,
        send: Callable[[str, Any], None],
        *,
        worker: str,
        flush_every: int = 200,
        flush_interval_s: float = 0.5,
    ) -> None:
        self._send = send
        self.worker = worker
        self.count = 0
        self.sent_batches = 0
        self._buffer: list[dict[str, Any]] = []
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()

    def append(self, record: dict[str, Any]) -> None:
        record["wseq"] = self.count  # the worker's own sequence; the master assigns `seq`
        record.setdefault("worker", self.worker)
        self._buffer.append(record)
        self.count += 1
        if (
            len(self._buffer) >= self._flush_every
            or time.monotonic() - self._last_flush >= self._flush_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self._send(LEDGER_MESSAGE, batch)
            self.sent_batches += 1
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
