"""Synthetic workers for bench/master_intake.py: Locust workers whose user sends no request and
appends ledger records at a set rate (LOADGEN_INTAKE_RATE, records/s per user), so the master's
ledger intake (Locust's message channel, then the master's ledger writer) is the only work
measured. Loaded by `locust -f` as the master's and the workers' locustfile; importing
loadgen.traffic.user registers the master's ledger handler. Each worker writes how many records it
appended to LOADGEN_INTAKE_COUNTS/<pid> when it quits.
"""

import os
import time
from pathlib import Path
from typing import Any

import gevent
from _intake_record import RECORD  # bench/ is on the path: Locust adds the locustfile's folder
from locust import User, events, task

import loadgen.traffic.user  # noqa: F401  (the master's ledger handler, the workers' relay)
from loadgen.traffic.state import STATE

BATCH = 100  # records per burst, then a pause to keep the rate
RATE = float(os.environ.get("LOADGEN_INTAKE_RATE", "1000"))

appended = 0


class LedgerFlood(User):
    def wait_time(self) -> float:
        return 0.0

    def on_start(self) -> None:
        STATE.configure(self.environment)
        self._prefix = f"{os.getpid():08x}"
        self._started = time.monotonic()
        self._n = 0

    @task
    def flood(self) -> None:
        global appended
        ledger = STATE.ledger
        assert ledger is not None
        for _ in range(BATCH):
            self._n += 1
            ledger.append({**RECORD, "rid": f"{self._prefix}{self._n:024x}"})
        appended += BATCH
        ahead = self._n / RATE - (time.monotonic() - self._started)
        gevent.sleep(max(0.0, ahead))


@events.quit.add_listener
def _write_count(**_: Any) -> None:
    folder = os.environ.get("LOADGEN_INTAKE_COUNTS")
    if folder and appended:
        Path(folder, str(os.getpid())).write_text(str(appended))
