"""Span store behind the embedded Zipkin-v2-compatible collector: SQLite in WAL mode.

Spans are kept in Zipkin v2 JSON shape (shared/specs/zipkin2-api.yaml), normalized the way
Zipkin's own decoder does it: lowercase ids, a 128-bit trace id with a zero high half collapsed to
64 bits (`loadgen.mesh.propagation.normalize_trace_id`), lowercase span and service names,
zero/empty/false fields omitted, unknown fields dropped.

The store is *raw*, like Zipkin's: a span reported twice (same traceId, id, kind, shared…) is
kept twice and both copies come back from every query. Readers that count spans must dedupe if
they care; the collector never hides what was actually delivered.

Durability: every accepted batch is one SQLite transaction in `spans.db` (WAL mode); `add`
returns only after COMMIT, so the server's 202 follows the commit. Any failure (disk full, I/O
error) rolls the transaction back and raises StoreError: the batch is answered 5xx and is never
readable, before or after a restart (an uncommitted WAL tail is ignored on recovery). Levels:
- default, `synchronous=NORMAL`: a commit is written to the WAL file before `add` returns, so a
  killed collector loses nothing it acknowledged; a machine crash may lose the last commits.
- `fsync=True` (`--fsync`), `synchronous=FULL`: the WAL is fsynced at every commit, so an
  acknowledged batch also survives a machine crash, at a cost per batch.
Without a data directory the database lives in a temporary directory removed on close (or when
the store is garbage-collected): a file, not RAM, so memory stays bounded either way.

Memory is bounded regardless of run length: spans live on disk; SQLite's page cache is capped;
queries stream traces through indexes (trace id; a trace's time; its local services) instead of
holding every span. A data directory with an old `spans.jsonl` (the store before spans.db) is
imported once at open, then renamed `spans.jsonl.imported`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from loadgen.mesh.propagation import is_hex_id, normalize_trace_id

__all__ = [
    "LEGACY_SPANS_FILE_NAME",
    "SPANS_DB_NAME",
    "SpanStore",
    "SpanValidationError",
    "StoreError",
    "parse_annotation_query",
    "validate_spans",
]

log = logging.getLogger(__name__)

Span = dict[str, Any]
Trace = list[Span]

SPANS_DB_NAME = "spans.db"  # SQLite, WAL mode (beside it while open: spans.db-wal, spans.db-shm)
LEGACY_SPANS_FILE_NAME = "spans.jsonl"  # the JSON-lines store before spans.db: imported once
SPAN_KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})
_ENDPOINT_STR_FIELDS = ("serviceName", "ipv4", "ipv6")
_INT64_MAX = 2**63 - 1
_STR_ONLY = frozenset({str})


class SpanValidationError(ValueError):
    """A reported span list that Zipkin would reject; the message names the index and field."""


class StoreError(Exception):
    """The store could not keep a batch (disk full, I/O error): nothing of the batch was stored."""


# --- validation and normalization (pure) -------------------------------------------------------


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python; JSON true is not a timestamp.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_uint(value: object, index: int, field: str) -> int:
    # Zipkin's fields are int64 (Java long), and so are SQLite's integers.
    if not _is_int(value) or not 0 <= value <= _INT64_MAX:  # type: ignore[operator]
        raise SpanValidationError(f"span[{index}]{field}: expected an integer in [0, 2^63), got {value!r}")
    return value  # type: ignore[return-value]


def _check_str(value: object, index: int, field: str) -> str:
    if not isinstance(value, str):
        raise SpanValidationError(f"span[{index}]{field}: expected a string, got {type(value).__name__}")
    return value


# Error messages are formatted only on failure: building them for every field of every span was
# a third of validation's cost (bench/collector_ingest.py).


def _normalize_endpoint(raw: object, index: int, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpanValidationError(f"span[{index}]{where}: expected an object, got {type(raw).__name__}")
    endpoint: dict[str, Any] = {}
    for field in _ENDPOINT_STR_FIELDS:
        value = raw.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            _check_str(value, index, f"{where}.{field}")
        if value:
            # Zipkin lowercases service names: they are lookup labels.
            endpoint[field] = value.lower() if field == "serviceName" else value
    port = raw.get("port")
    if port is not None:
        port = _check_uint(port, index, f"{where}.port")
        if port > 65535:
            raise SpanValidationError(f"span[{index}]{where}.port: {port} is not a port number")
        if port:
            endpoint["port"] = port
    return endpoint or None


def _normalize_span(raw: object, index: int) -> Span:
    if not isinstance(raw, dict):
        raise SpanValidationError(f"span[{index}]: expected an object, got {type(raw).__name__}")

    trace_id = raw.get("traceId")
    if isinstance(trace_id, str) and 16 < len(trace_id) < 32:
        # The spec's pattern allows 17..31 characters; Zipkin left-pads those to 128 bits (as GET does).
        trace_id = trace_id.rjust(32, "0")
    if not isinstance(trace_id, str) or not is_hex_id(trace_id.lower(), (16, 32)):
        raise SpanValidationError(
            f"span[{index}].traceId: expected 16 to 32 hex characters, got {trace_id!r}"
        )
    span_id = raw.get("id")
    if not isinstance(span_id, str) or not is_hex_id(span_id.lower(), (16,)):
        raise SpanValidationError(f"span[{index}].id: expected 16 hex characters, got {span_id!r}")
    span: Span = {"traceId": normalize_trace_id(trace_id), "id": span_id.lower()}

    parent_id = raw.get("parentId")
    if parent_id is not None:
        if not isinstance(parent_id, str) or not is_hex_id(parent_id.lower(), (16,)):
            raise SpanValidationError(
                f"span[{index}].parentId: expected 16 hex characters, got {parent_id!r}"
            )
        if parent_id.strip("0"):  # Zipkin treats an all-zero parent as "no parent".
            span["parentId"] = parent_id.lower()

    kind = raw.get("kind")
    if kind is not None:
        if kind not in SPAN_KINDS:
            raise SpanValidationError(
                f"span[{index}].kind: expected one of {sorted(SPAN_KINDS)}, got {kind!r}"
            )
        span["kind"] = kind

    name = raw.get("name")
    if name is not None and _check_str(name, index, ".name"):
        span["name"] = name.lower()

    # Zero means "unknown" in Zipkin (proto3 cannot tell absent from 0 either).
    value = raw.get("timestamp")
    if value is not None and _check_uint(value, index, ".timestamp"):
        span["timestamp"] = value
    value = raw.get("duration")
    if value is not None and _check_uint(value, index, ".duration"):
        span["duration"] = value

    endpoint = raw.get("localEndpoint")
    if endpoint is not None and (endpoint := _normalize_endpoint(endpoint, index, ".localEndpoint")):
        span["localEndpoint"] = endpoint
    endpoint = raw.get("remoteEndpoint")
    if endpoint is not None and (endpoint := _normalize_endpoint(endpoint, index, ".remoteEndpoint")):
        span["remoteEndpoint"] = endpoint

    annotations = raw.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, list):
            raise SpanValidationError(
                f"span[{index}].annotations: expected a list, got {type(annotations).__name__}"
            )
        checked = []
        for i, annotation in enumerate(annotations):
            if not isinstance(annotation, dict):
                raise SpanValidationError(
                    f"span[{index}].annotations[{i}]: expected an object, got {type(annotation).__name__}"
                )
            ts = annotation.get("timestamp")
            text = annotation.get("value")
            if not (_is_int(ts) and 0 <= ts <= _INT64_MAX):  # type: ignore[operator]
                _check_uint(ts, index, f".annotations[{i}].timestamp")
            if not isinstance(text, str):
                _check_str(text, index, f".annotations[{i}].value")
            checked.append({"timestamp": ts, "value": text})
        if checked:
            span["annotations"] = checked

    tags = raw.get("tags")
    if tags is not None:
        if not isinstance(tags, dict):
            raise SpanValidationError(f"span[{index}].tags: expected an object, got {type(tags).__name__}")
        # type() over the keys and values at C speed (Envoy sends ~16 tags per span); the loop
        # finds the culprit for the message, or accepts str subclasses from Python callers.
        if not (set(map(type, tags)) <= _STR_ONLY and set(map(type, tags.values())) <= _STR_ONLY):
            for key, value in tags.items():
                _check_str(key, index, ".tags key")
                _check_str(value, index, f".tags[{key!r}]")
        if tags:
            span["tags"] = dict(tags)

    flag = raw.get("debug")
    if flag is not None and not isinstance(flag, bool):
        raise SpanValidationError(f"span[{index}].debug: expected a boolean, got {flag!r}")
    if flag:
        span["debug"] = True
    flag = raw.get("shared")
    if flag is not None and not isinstance(flag, bool):
        raise SpanValidationError(f"span[{index}].shared: expected a boolean, got {flag!r}")
    if flag:
        span["shared"] = True
    return span


def validate_spans(obj: object) -> list[Span]:
    """Check a decoded `POST /api/v2/spans` body and return its spans normalized.

    Raises SpanValidationError on the first problem; a batch is accepted or rejected whole, as
    Zipkin does. Idempotent: validating normalized spans returns equal spans.
    """
    if not isinstance(obj, list):
        raise SpanValidationError(f"body: expected a JSON list of spans, got {type(obj).__name__}")
    return [_normalize_span(raw, i) for i, raw in enumerate(obj)]


def parse_annotation_query(query: str) -> list[tuple[str, str | None]]:
    """`http.uri=/foo and retried` -> [("http.uri", "/foo"), ("retried", None)].

    A term with `=` is a tag key/value (split at the first `=`); a bare word is None-valued and
    matches an annotation value or a tag key.
    """
    terms: list[tuple[str, str | None]] = []
    for term in query.split(" and "):
        term = term.strip()
        if not term:
            continue
        key, sep, value = term.partition("=")
        terms.append((key, value) if sep else (term, None))
    return terms


def _span_matches_terms(span: Span, terms: list[tuple[str, str | None]]) -> bool:
    tags: dict[str, str] = span.get("tags", {})
    for key, value in terms:
        if value is not None:
            if tags.get(key) != value:
                return False
        elif key not in tags and not any(a["value"] == key for a in span.get("annotations", ())):
            return False
    return True


def _local_service(span: Span) -> str | None:
    endpoint = span.get("localEndpoint")
    return endpoint.get("serviceName") if endpoint else None


# --- the store ---------------------------------------------------------------------------------

_SCHEMA_VERSION = 1
_SCHEMA = """
-- One row per trace per accepted batch: that batch's spans of the trace, in arrival order. The
-- only table an accepted batch writes (append-only: a COMMIT writes few pages); the indexes below
-- are derived from it in bulk (`_catch_up`), in their own transactions.
CREATE TABLE IF NOT EXISTS spans (
    seq INTEGER PRIMARY KEY,        -- arrival order: a trace's spans come back in it
    batch INTEGER NOT NULL,         -- the accepted batch
    trace_id TEXT NOT NULL,
    n INTEGER NOT NULL,             -- spans in `json`
    root_ts INTEGER,                -- the first root span's timestamp among them
    min_ts INTEGER,                 -- their earliest timestamp
    services TEXT NOT NULL,         -- their local services, as in traces.services
    json TEXT NOT NULL              -- the normalized spans, compact JSON (ASCII), comma-separated
);
CREATE TABLE IF NOT EXISTS trace_spans (
    trace_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (trace_id, seq)
) WITHOUT ROWID;
-- A trace's time is its first root span's timestamp, else its earliest (Zipkin's QueryRequest);
-- `services` holds its local service names, each JSON-encoded and followed by \\x1f.
CREATE TABLE IF NOT EXISTS traces (
    trace_id TEXT PRIMARY KEY,
    root_ts INTEGER,
    min_ts INTEGER,
    services TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS traces_by_time ON traces (coalesce(root_ts, min_ts), trace_id);
CREATE TABLE IF NOT EXISTS services (name TEXT PRIMARY KEY) WITHOUT ROWID;  -- JSON-encoded
CREATE TABLE IF NOT EXISTS span_names (
    service TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (service, name)
) WITHOUT ROWID;                                                              -- JSON-encoded
CREATE TABLE IF NOT EXISTS imports (sha256 TEXT PRIMARY KEY) WITHOUT ROWID;  -- legacy files
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""
_INSERT_SPANS = "INSERT INTO spans (seq, batch, trace_id, n, root_ts, min_ts, services, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INDEX_SPANS = (
    "INSERT INTO trace_spans (trace_id, seq) SELECT trace_id, seq FROM spans WHERE seq > ? AND seq <= ?"
)
_INDEX_TRACES = """
INSERT INTO traces (trace_id, root_ts, min_ts, services)
SELECT trace_id, root_ts, min_ts, services FROM spans WHERE seq > ? AND seq <= ? ORDER BY seq
ON CONFLICT (trace_id) DO UPDATE SET
    root_ts = coalesce(root_ts, excluded.root_ts),
    min_ts = CASE WHEN min_ts IS NULL OR excluded.min_ts < min_ts THEN excluded.min_ts ELSE min_ts END,
    services = CASE WHEN instr(services, excluded.services) THEN services
                    ELSE services || substr(excluded.services, 2) END
"""
_TRACE_SPANS = (
    "SELECT s.json FROM trace_spans t JOIN spans s ON s.seq = t.seq WHERE t.trace_id = ? ORDER BY t.seq"
)
_TAIL_SPANS = "SELECT json FROM spans WHERE seq > ? AND trace_id = ? ORDER BY seq"
_TAIL_NEW_TRACES = (
    "SELECT count(DISTINCT trace_id) FROM spans WHERE seq > ?"
    " AND trace_id NOT IN (SELECT trace_id FROM traces)"
)
_INDEX_EVERY = 2048  # rows of `spans` not yet indexed before an ingest call catches up
_TRACE_TIME = "coalesce(root_ts, min_ts)"
# A tag term prefilter in SQL (C speed, no span reaches Python unless it may match); the exact
# Zipkin semantics are then checked in Python on the candidate trace's spans.
_TAG_EXISTS = (
    " AND EXISTS (SELECT 1 FROM trace_spans i JOIN spans s ON s.seq = i.seq,"
    " json_each('[' || s.json || ']') e, json_each(e.value, '$.tags') t"
    " WHERE i.trace_id = traces.trace_id AND t.key = ? AND t.value = ?)"
)
_SEP = "\x1f"  # never inside a JSON-encoded string (it would be escaped as \u001f)
_NAME_CACHE_MAX = 100_000  # distinct (service, span name) pairs remembered to skip re-inserts
_dumps = json.JSONEncoder(separators=(",", ":")).encode  # ensure_ascii: lone surrogates escape


def _sql_text_ok(text: str) -> bool:
    """SQLite stores UTF-8: a str with a lone surrogate (valid in JSON escapes) cannot be bound."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SpanStore:
    """Spans in an SQLite database (WAL mode) under `data_dir`, or in a temporary one.

    All methods are safe to call from several threads (one lock around the one connection); the
    collector itself is single-threaded. Queries return fresh dicts (or JSON text with the
    `*_json` forms, which the server sends as they are).
    """

    def __init__(self, data_dir: Path | None = None, *, fsync: bool = False) -> None:
        self._lock = threading.RLock()
        self._spans_dropped = 0
        self._tmpdir: Path | None = None
        self._checkpointer: _Checkpointer | None = None
        if data_dir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="loadgen-collector-"))
            db_dir = self._tmpdir
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            db_dir = data_dir
        # On close(), or when the store is collected / the interpreter exits: stop the checkpoint
        # thread, remove the temporary directory.
        self._release = weakref.finalize(self, _release_parts, None, self._tmpdir)
        self.path = db_dir / SPANS_DB_NAME
        # isolation_level=None: transactions are explicit (BEGIN/COMMIT below), nothing implicit.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        try:
            self._setup(fsync)
            if data_dir is not None:
                self._import_legacy(data_dir / LEGACY_SPANS_FILE_NAME)
            self._checkpointer = _Checkpointer(self.path)
            self._release.detach()
            self._release = weakref.finalize(self, _release_parts, self._checkpointer, self._tmpdir)
        except BaseException:
            self.close()
            raise

    def _setup(self, fsync: bool) -> None:
        db = self._conn()
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{self.path}: cannot use WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        db.execute("PRAGMA cache_size=-8192")  # KiB: 8 MiB of page cache, whatever the store's size
        # Checkpoints (copying the WAL into spans.db, with an fsync) run in `_Checkpointer`'s thread,
        # not inside a COMMIT on the collector's event loop.
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("PRAGMA journal_size_limit=67108864")  # the WAL shrinks back to 64 MiB after a checkpoint
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"{self.path}: unknown schema version {version}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        spans, batches = db.execute(
            "SELECT coalesce(sum(n), 0), coalesce(max(batch), 0) FROM spans"
        ).fetchone()
        self._spans_accepted = int(spans)
        self._batches = int(batches)
        row = db.execute("SELECT value FROM meta WHERE key = 'indexed_upto'").fetchone()
        self._indexed_upto = int(row[0]) if row else 0
        (self._max_seq,) = db.execute("SELECT coalesce(max(seq), 0) FROM spans").fetchone()
        self._index_failing = False
        self._known_services: set[str] = {
            json.loads(name) for (name,) in db.execute("SELECT name FROM services")
        }
        self._known_names: set[tuple[str, str]] = set()
        for service, name in db.execute("SELECT service, name FROM span_names LIMIT ?", (_NAME_CACHE_MAX,)):
            self._known_names.add((json.loads(service), json.loads(name)))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"span store {self.path} is closed")
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()  # first: the main connection must be the last one
            if self._db is not None:
                self._db.close()  # the last connection checkpoints and removes the WAL
                self._db = None
            self._release()  # idempotent: the temporary directory goes

    def __enter__(self) -> SpanStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- ingest --

    def _write(self, batches: Iterable[list[Span]]) -> tuple[int, int]:
        """Store the batches in one transaction (one `batch` number each); returns (batches,
        spans). Rolls back and raises StoreError on any database error. Caller holds the lock."""
        db = self._conn()
        batch_no = self._batches
        self._next_seq = self._max_seq  # numbered here, not by SQLite: no query for the last one
        n_spans = 0
        new_services: set[str] = set()
        new_names: set[tuple[str, str]] = set()
        try:
            db.execute("BEGIN IMMEDIATE")
            for batch in batches:
                batch_no += 1
                n_spans += len(batch)
                self._write_batch(db, batch, batch_no, new_services, new_names)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"span store {self.path}: {exc}") from exc
        # Only now, after COMMIT: what the caches and counters say is what is stored.
        self._max_seq = self._next_seq
        self._batches = batch_no
        self._spans_accepted += n_spans
        self._known_services |= new_services
        if len(self._known_names) < _NAME_CACHE_MAX:
            self._known_names |= new_names
        return batch_no, n_spans

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error as again:  # the connection is unusable; the WAL tail is not committed
                log.error("%s: rollback failed: %s", self.path, again)

    def _catch_up(self) -> None:
        """Index the `spans` rows the indexes do not cover yet, in one transaction (a random
        index page is then written once per catch-up, not once per COMMIT). Caller holds the
        lock. Raises StoreError (nothing indexed; the rows stay stored and are indexed later)."""
        upto = self._max_seq
        if upto <= self._indexed_upto:
            return
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(_INDEX_SPANS, (self._indexed_upto, upto))
            db.execute(_INDEX_TRACES, (self._indexed_upto, upto))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('indexed_upto', ?)", (upto,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"span store {self.path}: cannot index stored spans: {exc}") from exc
        self._indexed_upto = upto

    def _try_catch_up(self) -> bool:
        """`_catch_up`, logging a failure (once per streak) instead of raising; False if the
        indexes still miss rows (e.g. disk full: reading must then look at those rows too)."""
        try:
            self._catch_up()
        except StoreError as exc:
            if not self._index_failing:
                log.warning("%s (retried later)", exc)
            self._index_failing = True
            return False
        self._index_failing = False
        return True

    def _catch_up_after_ingest(self) -> None:
        """After an accepted COMMIT: index when enough rows wait. A failure here must not turn
        the 202 into an error (the batch is stored): it is logged, and retried later."""
        if self._max_seq - self._indexed_upto >= _INDEX_EVERY:
            self._try_catch_up()

    def _write_batch(
        self,
        db: sqlite3.Connection,
        batch: list[Span],
        batch_no: int,
        new_services: set[str],
        new_names: set[tuple[str, str]],
    ) -> None:
        known_services = self._known_services
        known_names = self._known_names
        # trace id -> [first root timestamp, earliest timestamp, {local service: None}, [spans]]
        # in this batch: one row per trace (a third of the rows of one per span, for Envoy's 3).
        traces: dict[str, list[Any]] = {}
        for span in batch:
            trace_id = span["traceId"]
            entry = traces.get(trace_id)
            if entry is None:
                entry = traces[trace_id] = [None, None, {}, [span]]
            else:
                entry[3].append(span)
            ts = span.get("timestamp")
            if ts is not None:
                if entry[0] is None and "parentId" not in span:
                    entry[0] = ts
                if entry[1] is None or ts < entry[1]:
                    entry[1] = ts
            local = span.get("localEndpoint")
            if local is not None and (service := local.get("serviceName")) is not None:
                entry[2][service] = None
                if service not in known_services:
                    new_services.add(service)
                name = span.get("name")
                if name is not None and (service, name) not in known_names:
                    new_names.add((service, name))
            remote = span.get("remoteEndpoint")
            if (
                remote is not None
                and (service := remote.get("serviceName")) is not None
                and service not in known_services
            ):
                new_services.add(service)
        first = self._next_seq + 1
        self._next_seq += len(traces)
        db.executemany(
            _INSERT_SPANS,
            [
                (
                    seq,
                    batch_no,
                    trace_id,
                    len(spans),
                    root_ts,
                    min_ts,
                    _SEP + "".join([_dumps(s) + _SEP for s in services]) if services else _SEP,
                    _dumps(spans)[1:-1],
                )
                for seq, (trace_id, (root_ts, min_ts, services, spans)) in enumerate(traces.items(), first)
            ],
        )
        if new_services:
            db.executemany(
                "INSERT OR IGNORE INTO services (name) VALUES (?)", [(_dumps(s),) for s in new_services]
            )
        if new_names:
            db.executemany(
                "INSERT OR IGNORE INTO span_names (service, name) VALUES (?, ?)",
                [(_dumps(s), _dumps(n)) for s, n in new_names],
            )

    def add(self, spans: list[Span], *, validated: bool = False) -> int:
        """Validate, normalize and store one batch in one transaction; return its size.

        Raises SpanValidationError and stores nothing if any span is invalid; raises StoreError
        and stores nothing if the database cannot take it (disk full, I/O error). Returns only
        after COMMIT. `validated=True` skips the check for spans that already went through
        `validate_spans` (the server's POST path: validating twice was a fifth of the
        collector's CPU in bench/collector_ingest.py).
        """
        batch = spans if validated else validate_spans(spans)
        if not batch:
            return 0
        with self._lock:
            self._write([batch])
            self._catch_up_after_ingest()
        return len(batch)

    def count_dropped(self, n: int) -> None:
        """Record spans accepted on the wire but discarded on purpose (fault injection)."""
        with self._lock:
            self._spans_dropped += n

    # -- the old JSON-lines store --

    def _import_legacy(self, path: Path) -> None:
        """Import `spans.jsonl` (one JSON batch per line) once, in one transaction, then rename it.

        Unreadable lines (a torn tail, corruption) are skipped with a warning, as the old store
        did on reload. The file's SHA-256 is recorded in the same transaction, so a kill between
        COMMIT and the rename cannot import it twice."""
        try:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except FileNotFoundError:
            return
        sha = digest.hexdigest()
        db = self._conn()
        with self._lock:
            done = db.execute("SELECT 1 FROM imports WHERE sha256 = ?", (sha,)).fetchone() is not None
            if not done:

                def batches() -> Iterator[list[Span]]:
                    with path.open("rb") as f:
                        for lineno, line in enumerate(f, start=1):
                            if not line.strip():
                                continue
                            try:
                                batch = validate_spans(json.loads(line))
                            except (
                                ValueError,
                                RecursionError,
                            ) as exc:  # JSONDecodeError, SpanValidationError
                                log.warning("%s:%d: skipping unreadable batch: %s", path, lineno, exc)
                                continue
                            if batch:
                                yield batch

                before = self._spans_accepted
                self._write(_then(batches(), db, "INSERT INTO imports (sha256) VALUES (?)", (sha,)))
                log.warning("%s: imported %d spans into %s", path, self._spans_accepted - before, self.path)
                self._catch_up()
        target = path.with_name(path.name + ".imported")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.imported.{n}")
        path.rename(target)

    # -- queries --

    def _texts(self, trace_id: str, indexed: bool = True) -> list[str]:
        db = self._conn()
        texts = [text for (text,) in db.execute(_TRACE_SPANS, (trace_id,))]
        if not indexed:  # rows the indexes do not cover yet: a scan of the (bounded) tail
            tail = db.execute(_TAIL_SPANS, (self._indexed_upto, trace_id))
            texts += [text for (text,) in tail]
        return texts

    # Queries index what is not indexed yet first. If that fails (disk full), trace lookups and
    # stats still answer, from the indexes plus the rows they miss; search raises StoreError.

    def get_trace_json(self, trace_id: str) -> str | None:
        """The trace as a JSON list (spans in arrival order), None if no span has that id."""
        with self._lock:
            texts = self._texts(normalize_trace_id(trace_id), self._try_catch_up())
        return "[" + ",".join(texts) + "]" if texts else None

    def get_trace(self, trace_id: str) -> Trace | None:
        text = self.get_trace_json(trace_id)
        return json.loads(text) if text is not None else None

    def get_many_json(self, trace_ids: Iterable[str]) -> str:
        """JSON list of the traces found among `trace_ids`, in request order; absent ids left out."""
        seen: set[str] = set()
        found: list[str] = []
        with self._lock:
            indexed = self._try_catch_up()
            for raw_id in trace_ids:
                trace_id = normalize_trace_id(raw_id)
                if trace_id in seen:
                    continue
                seen.add(trace_id)
                texts = self._texts(trace_id, indexed)
                if texts:
                    found.append("[" + ",".join(texts) + "]")
        return "[" + ",".join(found) + "]"

    def get_many(self, trace_ids: Iterable[str]) -> list[Trace]:
        """Traces found among `trace_ids`, in request order; absent ids are simply left out."""
        return json.loads(self.get_many_json(trace_ids))  # type: ignore[no-any-return]

    def services(self) -> list[str]:
        with self._lock:
            return sorted(self._known_services)

    def span_names(self, service: str) -> list[str]:
        """Span names recorded by `service` as the local endpoint (Zipkin's `GET /spans`)."""
        key = _dumps(service.lower())
        with self._lock:
            rows = self._conn().execute("SELECT name FROM span_names WHERE service = ?", (key,)).fetchall()
        return sorted(json.loads(name) for (name,) in rows)

    def search_json(
        self,
        service_name: str | None = None,
        span_name: str | None = None,
        annotation_query: str | None = None,
        min_duration: int | None = None,
        max_duration: int | None = None,
        end_ts_ms: int | None = None,
        lookback_ms: int | None = None,
        limit: int = 10,
    ) -> str:
        """Zipkin `GET /api/v2/traces` semantics, as a JSON list of traces.

        - A trace's time is its root span's timestamp, else its earliest (Zipkin's QueryRequest);
          it must lie in [endTs - lookback, endTs]. endTs/lookback are epoch *milliseconds*, span
          timestamps *microseconds*. endTs defaults to now, lookback to endTs (all history).
        - serviceName restricts the other criteria to spans whose localEndpoint is that service.
        - spanName: some such span has that name. min/maxDuration (µs): some such span's duration
          is within range. annotationQuery: one such span matches every term (the spec's wording;
          Zipkin's in-memory store lets different spans match different terms).
        - Result: at most `limit` traces, the ones nearest endTs first (ties: higher trace id).

        Candidates come from the time index (and the trace's services), newest first, with tag
        terms prefiltered in SQL; each is then checked exactly. Memory: one candidate trace at a
        time plus the answer (at most `limit` traces).
        """
        if limit <= 0:
            raise ValueError("limit must be positive")
        if max_duration is not None and min_duration is None:
            raise ValueError("maxDuration is only valid with minDuration")
        end_us = (int(time.time() * 1000) if end_ts_ms is None else end_ts_ms) * 1000
        start_us = 0 if lookback_ms is None else end_us - lookback_ms * 1000
        # Span timestamps are int64 (validated): a wider window means the same as the int64 one.
        end_us, start_us = min(end_us, _INT64_MAX), max(start_us, -_INT64_MAX)
        service = service_name.lower() if service_name else None
        name = span_name.lower() if span_name else None
        terms = parse_annotation_query(annotation_query) if annotation_query else []

        sql = f"SELECT trace_id FROM traces WHERE {_TRACE_TIME} BETWEEN ? AND ?"
        params: list[object] = [start_us, end_us]
        if service is not None:
            sql += " AND instr(services, ?)"
            params.append(_SEP + _dumps(service) + _SEP)
        for key, value in terms:
            if value is not None and _sql_text_ok(key) and _sql_text_ok(value):
                sql += _TAG_EXISTS
                params += [key, value]
        sql += f" ORDER BY {_TRACE_TIME} DESC, trace_id DESC"
        # The service prefilter is exact (JSON-encoded names between separators); anything else
        # needs the spans themselves.
        exact = name is None and min_duration is None and not terms

        def span_ok(span: Span) -> bool:
            return service is None or _local_service(span) == service

        def trace_ok(trace: Trace) -> bool:
            spans = [s for s in trace if span_ok(s)]
            if not spans:
                return False
            if name is not None and not any(s.get("name") == name for s in spans):
                return False
            if min_duration is not None:
                high = max_duration if max_duration is not None else float("inf")
                if not any(min_duration <= s.get("duration", 0) <= high for s in spans):
                    return False
            return not terms or any(_span_matches_terms(s, terms) for s in spans)

        found: list[str] = []
        with self._lock:
            self._catch_up()
            db = self._conn()
            candidates = db.execute(sql, params)
            while len(found) < limit:
                rows = candidates.fetchmany(256)
                if not rows:
                    break
                for (trace_id,) in rows:
                    trace = "[" + ",".join(self._texts(trace_id)) + "]"
                    if exact or trace_ok(json.loads(trace)):
                        found.append(trace)
                        if len(found) >= limit:
                            break
            candidates.close()
        return "[" + ",".join(found) + "]"

    def search(
        self,
        service_name: str | None = None,
        span_name: str | None = None,
        annotation_query: str | None = None,
        min_duration: int | None = None,
        max_duration: int | None = None,
        end_ts_ms: int | None = None,
        lookback_ms: int | None = None,
        limit: int = 10,
    ) -> list[Trace]:
        """`search_json`, decoded."""
        text = self.search_json(
            service_name,
            span_name,
            annotation_query,
            min_duration,
            max_duration,
            end_ts_ms,
            lookback_ms,
            limit,
        )
        return json.loads(text)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        """Counts since the store began: spans stored before a restart count as accepted."""
        with self._lock:
            indexed = self._try_catch_up()
            db = self._conn()
            (traces,) = db.execute("SELECT count(*) FROM traces").fetchone()
            if not indexed:
                (new,) = db.execute(_TAIL_NEW_TRACES, (self._indexed_upto,)).fetchone()
                traces += new
            return {
                "spans_accepted": self._spans_accepted,
                "batches": self._batches,
                "spans_dropped": self._spans_dropped,
                "traces": int(traces),
            }


class _Checkpointer:
    """A thread with its own connection that copies the WAL into the database (a PASSIVE
    checkpoint: never blocks the writer) every `interval_s`, so the WAL stays small and the
    collector's event loop never waits for a checkpoint's writes and fsync. A failed checkpoint
    (disk full) loses nothing: the committed frames stay in the WAL, readable, and the next
    checkpoint tries again."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self._path = path
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="span-store-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("%s: no checkpoint thread: %s", self._path, exc)
            return
        failing = False
        try:
            db.execute("PRAGMA cache_size=-256")
            while not self._stop.wait(self._interval_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                except sqlite3.Error as exc:
                    if not failing:  # once per failure streak, not twice a second
                        log.warning("%s: checkpoint failed (spans stay in the WAL): %s", self._path, exc)
                    failing = True
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _release_parts(checkpointer: _Checkpointer | None, tmpdir: Path | None) -> None:
    if checkpointer is not None:
        checkpointer.stop()
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _then(
    batches: Iterator[list[Span]], db: sqlite3.Connection, sql: str, params: tuple[object, ...]
) -> Iterator[list[Span]]:
    """Yield the batches, then run one more statement inside the same transaction."""
    yield from batches
    db.execute(sql, params)
