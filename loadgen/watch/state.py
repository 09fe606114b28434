"""The watch's state folder: one SQLite database (WAL) holding everything that must survive a
restart, so that a watch killed at any moment continues where its last commit left it.

    meta       run_id (one id across restarts), created_at, last_readback_success
    pending    checks waiting for their deadline or retrying (mesh requests, reference traces)
    counters   cumulative counts: (name, labels) -> value
    buckets    per-time-bucket counts of the rolling windows: (start, name) -> n, trimmed to the
               longest window
    segments   the ledger segments already ingested (a segment is ingested in the same
               transaction as its checks and counts: never twice, never half)

Every change goes through `WatchState.write()`, one transaction: the engine (loadgen.watch.runner)
commits an ingested segment with its checks, or a batch of answers with its conclusions, as one
unit. Nothing is held in memory but the connection: the database is the state.

Counter names (labels in order): requests (mode, status), traces (source, mode, outcome),
ttq (source, bucket index), ttq_sum (source), ttq_count (source), errors (component) — added to;
reference (state) and emitter_errors (component) — set to the running total.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from loadgen.watch.model import Source

__all__ = ["STATE_DB", "PendingCheck", "StateError", "WatchState", "Writer"]

STATE_DB = "watch.sqlite"
SCHEMA_VERSION = "1"
_SEP = "\x1f"  # joins a counter's label values into one key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    source TEXT NOT NULL, key TEXT NOT NULL, trace_id TEXT NOT NULL, mode TEXT NOT NULL,
    decided INTEGER, spans INTEGER NOT NULL, sent_at REAL NOT NULL, due_at REAL NOT NULL,
    give_up_at REAL NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pending_due ON pending (due_at);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (name, labels)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (
    start REAL NOT NULL, name TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (start, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    name TEXT PRIMARY KEY, ingested_at REAL NOT NULL, records INTEGER NOT NULL, torn INTEGER NOT NULL
);
"""


class StateError(RuntimeError):
    """The state folder cannot be used (another run's, unreadable, not a watch state)."""


@dataclass(frozen=True)
class PendingCheck:
    """One trace to read back: a mesh request (`key` its request id) or a reference trace (`key`
    its trace id). `decided`: the sampling decision the upstream saw (mesh; None for reference).
    `spans`: spans a complete reference trace has (0 for mesh: the expectation says)."""

    source: Source
    key: str
    trace_id: str
    mode: str
    decided: bool | None
    spans: int
    sent_at: float
    due_at: float
    give_up_at: float
    attempts: int = 0


def _labels(values: tuple[str, ...]) -> str:
    return _SEP.join(values)


def _row_check(row: tuple[object, ...]) -> PendingCheck:
    source, key, trace_id, mode, decided, spans, sent_at, due_at, give_up_at, attempts = row
    return PendingCheck(
        Source(str(source)), str(key), str(trace_id), str(mode),
        None if decided is None else bool(decided), int(str(spans)), float(str(sent_at)),
        float(str(due_at)), float(str(give_up_at)), int(str(attempts)),
    )  # fmt: skip


class Writer:
    """The changes of one transaction (`WatchState.write()`)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def add(self, name: str, labels: tuple[str, ...], delta: float = 1) -> None:
        if delta:
            self._db.execute(
                "INSERT INTO counters VALUES (?, ?, ?) "
                "ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
                (name, _labels(labels), delta),
            )

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?, ?) "
            "ON CONFLICT (name, labels) DO UPDATE SET value = excluded.value",
            (name, _labels(labels), value),
        )

    def bucket(self, start: float, name: str, n: int = 1) -> None:
        if n:
            self._db.execute(
                "INSERT INTO buckets VALUES (?, ?, ?) "
                "ON CONFLICT (start, name) DO UPDATE SET n = n + excluded.n",
                (start, name, n),
            )

    def insert(self, check: PendingCheck) -> bool:
        """Add a pending check; False when one with its (source, key) is already pending."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                check.source.value, check.key, check.trace_id, check.mode,
                None if check.decided is None else int(check.decided), check.spans, check.sent_at,
                check.due_at, check.give_up_at, check.attempts,
            ),
        )  # fmt: skip
        return cur.rowcount == 1

    def conclude(self, check: PendingCheck) -> None:
        self._db.execute("DELETE FROM pending WHERE source = ? AND key = ?", (check.source.value, check.key))

    def reschedule(self, check: PendingCheck, due_at: float, attempts: int) -> None:
        self._db.execute(
            "UPDATE pending SET due_at = ?, attempts = ? WHERE source = ? AND key = ?",
            (due_at, attempts, check.source.value, check.key),
        )

    def ingested(self, name: str, records: int, torn: int, now: float) -> None:
        self._db.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (name, now, records, torn))

    def forget_segments(self, names: Collection[str]) -> None:
        """Drop the records of segments whose files are gone (after they were removed)."""
        self._db.executemany("DELETE FROM segments WHERE name = ?", [(n,) for n in names])

    def trim_buckets(self, before: float) -> None:
        self._db.execute("DELETE FROM buckets WHERE start < ?", (before,))

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


class WatchState:
    """The open state database of one watch (one process at a time)."""

    def __init__(self, directory: Path, db: sqlite3.Connection, run_id: str, created_at: float) -> None:
        self.directory = directory
        self._db = db
        self.run_id = run_id
        self.created_at = created_at

    @classmethod
    def open(cls, directory: Path, *, run_id: str = "", now: float | None = None) -> WatchState:
        """Open (or create) the state in `directory`. A new state takes `run_id` (else a
        generated one); an existing one keeps its own, and a different `run_id` is a StateError."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_DB
        try:
            db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
            db.execute("PRAGMA journal_mode = WAL")
            # A commit survives the process being killed; only a machine crash may lose the last.
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the watch state {path}: {exc}") from exc
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "run_id" in meta:
            if meta.get("schema") != SCHEMA_VERSION:
                db.close()
                raise StateError(f"{path} is a watch state of another version ({meta.get('schema')!r})")
            if run_id and run_id != meta["run_id"]:
                db.close()
                raise StateError(
                    f"the state in {directory} belongs to run {meta['run_id']}: drop --run-id to "
                    "continue it, or give another --state"
                )
            return cls(directory, db, meta["run_id"], float(meta["created_at"]))
        created = time.time() if now is None else now
        rid = run_id or time.strftime("watch-%Y%m%d-%H%M%S-", time.gmtime(created)) + uuid.uuid4().hex[:6]
        state = cls(directory, db, rid, created)
        with state.write() as w:
            w.set_meta("schema", SCHEMA_VERSION)
            w.set_meta("run_id", rid)
            w.set_meta("created_at", repr(created))
        return state

    @contextlib.contextmanager
    def write(self) -> Iterator[Writer]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield Writer(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # --- reads -----------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def is_ingested(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM segments WHERE name = ?", (name,)).fetchone() is not None

    def segments_before(self, ingested_before: float) -> list[str]:
        rows = self._db.execute("SELECT name FROM segments WHERE ingested_at < ?", (ingested_before,))
        return [str(r[0]) for r in rows]

    def due(self, now: float, limit: int, exclude: Collection[tuple[str, str]] = ()) -> list[PendingCheck]:
        """Up to `limit` checks due at `now`, the earliest first, skipping `exclude` ((source, key)
        of checks being read)."""
        rows = self._db.execute(
            "SELECT * FROM pending WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit + len(exclude))
        )
        out = [c for c in map(_row_check, rows) if (c.source.value, c.key) not in exclude]
        return out[:limit]

    def pending(self, source: Source, key: str) -> PendingCheck | None:
        row = self._db.execute(
            "SELECT * FROM pending WHERE source = ? AND key = ?", (source.value, key)
        ).fetchone()
        return None if row is None else _row_check(row)

    def pending_counts(self) -> dict[Source, int]:
        counts = dict.fromkeys(Source, 0)
        for source, n in self._db.execute("SELECT source, COUNT(*) FROM pending GROUP BY source"):
            counts[Source(source)] = int(n)
        return counts

    def counters(self) -> dict[str, dict[tuple[str, ...], float]]:
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for name, labels, value in self._db.execute("SELECT name, labels, value FROM counters"):
            key = tuple(str(labels).split(_SEP)) if labels else ()
            out.setdefault(str(name), {})[key] = float(value)
        return out

    def buckets(self, since: float = float("-inf")) -> list[tuple[float, str, int]]:
        rows = self._db.execute(
            "SELECT start, name, n FROM buckets WHERE start >= ? ORDER BY start", (since,)
        )
        return [(float(s), str(name), int(n)) for s, name, n in rows]
