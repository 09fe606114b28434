"""Distributed generation: workers relay ledger records to the master over Locust's message channel,
and the master writes the one ledger of the run.

Why the message channel: it already connects every worker to the master (also across machines
and pods), it is ordered per worker, and Locust itself uses it for statistics — so the ledger
and Locust's request counts travel the same way and stay comparable. Workers flush their buffer
at test stop, so a worker that is stopped loses nothing it recorded.

The master's intake is not what bounds a run: bench/master_intake.py measures it at several
hundred thousand records per master CPU-second (docs/performance.md). When workers outrun it
anyway, Locust's send finds the channel's queue full and raises (after its own retries, 9 s);
the relay then keeps the batch and sends it again, so the users wait (back-pressure) rather than
records being dropped, until `give_up_s` has passed without a send going through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

LEDGER_MESSAGE = "loadgen_ledger"

logger = logging.getLogger(__name__)


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
        retry_on: tuple[type[BaseException], ...] = (),
        give_up_s: float = 120.0,
        retry_pause_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send = send
        self.worker = worker
        self.count = 0
        self.sent_batches = 0
        self.lost = 0  # records of batches given up on (after give_up_s of failed sends)
        self._buffer: list[dict[str, Any]] = []
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._retry_on = retry_on
        self._give_up_s = give_up_s
        self._retry_pause_s = retry_pause_s
        self._sleep = sleep
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
            self._send_batch(batch)
            self.sent_batches += 1
        self._last_flush = time.monotonic()

    def _send_batch(self, batch: list[dict[str, Any]]) -> None:
        """Send, and again after a pause while the channel refuses (`retry_on`), for at most
        `give_up_s`; then the batch counts as lost and the error goes up."""
        started = time.monotonic()
        while True:
            try:
                self._send(LEDGER_MESSAGE, batch)
                return
            except self._retry_on:
                if time.monotonic() - started >= self._give_up_s:
                    self.lost += len(batch)
                    logger.error("ledger relay: gave up sending %d records to the master", len(batch))
                    raise
                self._sleep(self._retry_pause_s)

    def close(self) -> None:
        self.flush()
