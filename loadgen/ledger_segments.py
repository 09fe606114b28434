"""The ledger in time segments: what `loadgen watch`'s Locust writes instead of one growing file.

A run's ledger (loadgen.ledger.LedgerWriter) is one file per run. A watch runs for days, so its
Locust process writes the same records (same fields, one JSON line each) into a folder, one file
per `segment_s` seconds:

    segment-<start ms>-<pid>.jsonl.part    the segment being written
    segment-<start ms>-<pid>.jsonl         a closed segment: complete, never written again

A segment is opened by its first record and closed (flushed, fsynced, renamed) `segment_s`
seconds later by a timer, even when no record arrives meanwhile, and by `close()`. The rename is
the commit: a reader takes `.jsonl` files as whole, and a `.part` as whole only once its writer
is known to be dead (its last line may then be torn, which the reader skips and counts as
loadgen.ledger's readers do). Idle time writes no file.

Selected in the Locust process by LOADGEN_LEDGER_SEGMENT_S (seconds; LOADGEN_LEDGER is then the
folder), see loadgen.traffic.state. A leaf module: the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CLOSED_SUFFIX",
    "OPEN_SUFFIX",
    "SEGMENT_ENV",
    "SegmentedLedgerWriter",
    "closed_name",
    "is_segment_name",
    "segment_start_s",
]

#: The environment variable that turns segments on (its value: seconds per segment).
SEGMENT_ENV = "LOADGEN_LEDGER_SEGMENT_S"
OPEN_SUFFIX = ".jsonl.part"
CLOSED_SUFFIX = ".jsonl"
_NAME = re.compile(r"^segment-(\d{1,20})-(\d{1,10})\.jsonl(\.part)?$")


def is_segment_name(name: str) -> bool:
    """Whether `name` is a segment file's (closed or open)."""
    return _NAME.match(name) is not None


def segment_start_s(name: str) -> float | None:
    """When the segment `name` was opened (epoch seconds), None for another name."""
    found = _NAME.match(name)
    return int(found.group(1)) / 1000.0 if found else None


def closed_name(name: str) -> str:
    """The closed segment's name for an open one's (`.jsonl.part` -> `.jsonl`)."""
    return name[: -len(".part")] if name.endswith(OPEN_SUFFIX) else name


class SegmentedLedgerWriter:
    """`LedgerWriter`'s `append`/`flush`/`close`, into time segments in `directory`.

    `seq` runs on across segments (per writer). A background timer closes a segment that is due
    without waiting for the next record; in Locust's process (gevent-patched) it is a greenlet,
    and the lock a gevent lock. `clock` and `timer=False` are for tests (then call `rotate()`)."""

    def __init__(
        self,
        directory: Path,
        segment_s: float,
        *,
        worker: str = "local",
        flush_interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        timer: bool = True,
    ) -> None:
        if not segment_s > 0:
            raise ValueError(f"segment_s must be > 0, got {segment_s}")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.segment_s = float(segment_s)
        self.worker = worker
        self.count = 0
        self.closed_segments = 0
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._last_flush = time.monotonic()
        self._closed = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if timer:
            self._timer = threading.Thread(target=self._tick, name="loadgen-ledger-segments", daemon=True)
            self._timer.start()

    @property
    def current(self) -> Path | None:
        """The open segment's path (None between segments)."""
        return self._path

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            if self._closed:
                raise ValueError(f"segmented ledger in {self.directory} is closed")
            now = self._clock()
            if self._file is not None and now - self._opened_at >= self.segment_s:
                self._close_segment()
            if self._file is None:
                self._open_segment(now)
            assert self._file is not None
            record["seq"] = self.count
            record.setdefault("worker", self.worker)
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.count += 1
            if time.monotonic() - self._last_flush >= self._flush_interval_s:
                self._file.flush()
                self._last_flush = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                self._last_flush = time.monotonic()

    def rotate(self) -> bool:
        """Close the open segment if it is due; whether one was closed."""
        with self._lock:
            if self._file is None or self._clock() - self._opened_at < self.segment_s:
                return False
            self._close_segment()
            return True

    def close(self) -> None:
        """Close the open segment (whatever its age) and stop the timer. Idempotent."""
        self._stop.set()
        with self._lock:
            if self._file is not None:
                self._close_segment()
            self._closed = True
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=2.0)

    def _tick(self) -> None:
        period = min(1.0, self.segment_s / 4)
        while not self._stop.wait(period):
            with contextlib.suppress(OSError):  # a full disk: the next append raises where it is seen
                self.rotate()

    def _open_segment(self, now: float) -> None:
        name = f"segment-{int(now * 1000):015d}-{os.getpid()}{OPEN_SUFFIX}"
        path = self.directory / name
        self._file = open(path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115
        self._path = path
        self._opened_at = now

    def _close_segment(self) -> None:
        file, path = self._file, self._path
        self._file = self._path = None
        if file is None or path is None:
            return
        try:
            file.flush()
            os.fsync(file.fileno())
        finally:
            file.close()
        # Gone only if a reader adopted it, believing this writer dead: the records stay there.
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(closed_name(path.name)))
        self.closed_segments += 1

    def __enter__(self) -> SegmentedLedgerWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
