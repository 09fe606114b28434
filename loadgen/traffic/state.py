"""The per-process state of the traced users: the ledger writer, the run id and the live counts.

Shared by the users (loadgen.traffic.user) and the web UI's Tracing tab (loadgen.traffic.webui).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from locust.env import Environment
from locust.exception import RPCSendError
from locust.runners import WorkerRunner

from loadgen.ledger import LedgerWriter
from loadgen.ledger_fast import FastLedgerWriter
from loadgen.ledger_segments import SEGMENT_ENV, SegmentedLedgerWriter
from loadgen.traffic.relay import RelayLedger


class _RunState:
    """Per-process state shared by all users: the ledger writer and the parsed options."""

    def __init__(self) -> None:
        self.ledger: LedgerWriter | RelayLedger | SegmentedLedgerWriter | None = None
        self.run_id = ""
        self.counts: dict[str, int] = {}
        self.limit_reached = False
        self.sampled: dict[str, int] = {}
        self.finished = False  # web mode: the test stopped, the ledger is closed for good

    def configure(self, environment: Environment) -> None:
        if self.ledger is not None or self.finished:
            return
        opts = environment.parsed_options
        self.run_id = (getattr(opts, "loadgen_run_id", "") if opts else "") or os.environ.get(
            "LOADGEN_RUN_ID", ""
        )
        if not self.run_id:
            self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        ledger = (
            getattr(opts, "loadgen_ledger", "") if opts else ""
        ) or f"reports/{self.run_id}/ledger.jsonl"
        worker = f"{os.uname().nodename}:{os.getpid()}"
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            # Distributed: the master writes the one ledger; records travel with Locust's messages.
            self.ledger = RelayLedger(runner.send_message, worker=worker, retry_on=(RPCSendError,))
        elif os.environ.get(SEGMENT_ENV):
            # `loadgen watch`: LOADGEN_LEDGER is a folder of time segments (loadgen.ledger_segments).
            self.ledger = SegmentedLedgerWriter(Path(ledger), float(os.environ[SEGMENT_ENV]), worker=worker)
        else:
            self.ledger = FastLedgerWriter(Path(ledger), worker=worker)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    def finish(self) -> None:
        """Web mode: the run's one test has stopped; its ledger is complete and stays closed."""
        self.close()
        self.finished = True

    def requests(self) -> int:
        return sum(self.counts.values())


STATE = _RunState()


def live_rows() -> list[dict[str, Any]]:
    """Per header mode: requests so far, how many the upstream saw sampled, and the fraction."""
    rows = []
    for mode, n in sorted(STATE.counts.items()):
        k = STATE.sampled.get(mode, 0)
        rows.append(
            {"mode": mode, "requests": n, "sampled": k, "sampled_fraction": round(k / n, 4) if n else None}
        )
    return rows
