"""Span store behind the embedded Zipkin-v2-compatible collector: SQLite in WAL mode.

Spans are kept in Zipkin v2 JSON shape (shared/specs/zipkin2-api.yaml), normalized the way
Zipkin's own decoder does it (loadgen.stack.collector.normalize); searches follow Zipkin's query
semantics (loadgen.stack.collector.query) over the tables of loadgen.stack.collector.schema.

The store is *raw*, like Zipkin's: a span reported twice (same traceId, id, kind, shared…) is
kept twice and both copies come back from every query. Readers that count spans must dedupe if
they care; the collector never hides what was actually delivered.

Durability: every accepted batch is stored in one SQLite transaction in `spans.db` (WAL mode)
and `add` / `add_async` return only after its COMMIT, so the server's 202 follows the commit.
`add_async` (the server's path) is group commit: the batches of POSTs that arrive together share
one transaction, committed once, and each is answered only after that COMMIT. Any failure (disk
full, I/O error) rolls the whole transaction back and every batch in it raises StoreError: each is
answered 5xx and none is ever readable, before or after a restart (an uncommitted WAL tail is
ignored on recovery). What a COMMIT survives (SQLite's WAL documentation):
- default, `synchronous=NORMAL`: COMMIT returns once the transaction's frames are written to the
  WAL file (write(), not fsync). They are then in the kernel: a collector that is killed (SIGKILL,
  a crash, OOM) loses nothing it acknowledged, and recovery on the next open replays the WAL. A
  power loss or kernel crash may lose the commits since the last fsync (the checkpoint thread
  fsyncs the WAL about once a second), never corrupting the database: the lost batches were
  answered 202. "A 202 means durable" holds against the collector process dying, which is what
  the crash tests check (tests/integration/test_collector_limits.py); not against the machine.
- `fsync=True` (`--fsync`), `synchronous=FULL`: the WAL is fsynced at every COMMIT before it
  returns, so an acknowledged batch also survives power loss (as far as the disk honours the
  flush). With group commit that is one fsync per group of POSTs, not one per POST.
Without a data directory the database lives in a temporary directory removed on close (or when
the store is garbage-collected): a file, not RAM, so memory stays bounded either way.

Memory is bounded regardless of run length: spans live on disk; SQLite's page cache is capped;
queries stream traces through indexes (trace id; a trace's time; its local services) instead of
holding every span. A data directory with an old `spans.jsonl` (the store before spans.db) is
imported once at open, then renamed `spans.jsonl.imported`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from loadgen.mesh.ids import normalize_trace_id
from loadgen.stack.collector.normalize import (
    Span,
    SpanValidationError,
    Trace,
    ZipkinSpan,
    to_structs,
    validate_spans,
)
from loadgen.stack.collector.query import TraceSearch, parse_annotation_query
from loadgen.stack.collector.schema import (
    INDEX_SPANS,
    INDEX_TRACES,
    INSERT_SPANS,
    MANY_TRACE_SPANS,
    SCHEMA,
    SCHEMA_VERSION,
    SEP,
    TAIL_NEW_TRACES,
    TAIL_SPANS,
    TRACE_SPANS,
    dumps,
)

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

SPANS_DB_NAME = "spans.db"  # SQLite, WAL mode (beside it while open: spans.db-wal, spans.db-shm)
LEGACY_SPANS_FILE_NAME = "spans.jsonl"  # the JSON-lines store before spans.db: imported once


class StoreError(Exception):
    """The store could not keep a batch (disk full, I/O error): nothing of the batch was stored."""


# Rows of `spans` not yet indexed before an ingest call catches up. Each catch-up writes index
# pages all over the (random trace id) indexes, so more rows per catch-up write fewer pages per
# row: 8192 took ~20 % less store CPU per 5-span batch than 2048 over 200k Envoy spans
# (medians of 5 alternating runs, issue 15), for a longer pause of the event loop (~0.1 s) once per 8192 rows.
_INDEX_EVERY = 8192
_MANY_IDS = 500  # ids per `get_many_json` query (SQLite allows 32766 parameters)
_NAME_CACHE_MAX = 100_000  # distinct (service, span name) pairs remembered to skip re-inserts


class SpanStore:
    """Spans in an SQLite database (WAL mode) under `data_dir`, or in a temporary one.

    All methods are safe to call from several threads (one lock around the one connection); the
    collector itself is single-threaded. Queries return fresh dicts (or JSON text with the
    `*_json` forms, which the server sends as they are).
    """

    def __init__(self, data_dir: Path | None = None, *, fsync: bool = False) -> None:
        self._lock = threading.RLock()
        self._spans_dropped = 0
        self._queue: list[tuple[list[ZipkinSpan], asyncio.Future[None]]] = []  # add_async's group
        self._commits = 0  # transactions that stored batches since this open (stats' "commits")
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
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"{self.path}: unknown schema version {version}")
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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

    def _write(self, batches: Iterable[list[ZipkinSpan]]) -> tuple[int, int]:
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
        except BaseException:  # not the database's failure: still nothing of it may stay
            self._rollback(db)
            raise
        # Only now, after COMMIT: what the caches and counters say is what is stored.
        self._commits += 1
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
            db.execute(INDEX_SPANS, (self._indexed_upto, upto))
            db.execute(INDEX_TRACES, (self._indexed_upto, upto))
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
        batch: list[ZipkinSpan],
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
            trace_id = span.traceId
            entry = traces.get(trace_id)
            if entry is None:
                entry = traces[trace_id] = [None, None, {}, [span]]
            else:
                entry[3].append(span)
            ts = span.timestamp
            if ts is not None:
                if entry[0] is None and span.parentId is None:
                    entry[0] = ts
                if entry[1] is None or ts < entry[1]:
                    entry[1] = ts
            local = span.localEndpoint
            if local is not None and (service := local.serviceName) is not None:
                entry[2][service] = None
                if service not in known_services:
                    new_services.add(service)
                name = span.name
                if name is not None and (service, name) not in known_names:
                    new_names.add((service, name))
            remote = span.remoteEndpoint
            if (
                remote is not None
                and (service := remote.serviceName) is not None
                and service not in known_services
            ):
                new_services.add(service)
        first = self._next_seq + 1
        self._next_seq += len(traces)
        db.executemany(
            INSERT_SPANS,
            [
                (
                    seq,
                    batch_no,
                    trace_id,
                    len(spans),
                    root_ts,
                    min_ts,
                    SEP + "".join([json_str(s) + SEP for s in services]) if services else SEP,
                    spans_text(spans),
                )
                for seq, (trace_id, (root_ts, min_ts, services, spans)) in enumerate(traces.items(), first)
            ],
        )
        if new_services:
            db.executemany(
                "INSERT OR IGNORE INTO services (name) VALUES (?)", [(dumps(s),) for s in new_services]
            )
        if new_names:
            db.executemany(
                "INSERT OR IGNORE INTO span_names (service, name) VALUES (?, ?)",
                [(dumps(s), dumps(n)) for s, n in new_names],
            )

    def add(self, spans: Sequence[Span | ZipkinSpan], *, validated: bool = False) -> int:
        """Validate, normalize and store one batch in one transaction; return its size.

        Raises SpanValidationError and stores nothing if any span is invalid; raises StoreError
        and stores nothing if the database cannot take it (disk full, I/O error). Returns only
        after COMMIT. `validated=True` skips the check for spans that already went through
        `validate_spans` or were decoded as `ZipkinSpan` (the server's POST path: validating
        twice was a fifth of the collector's CPU in bench/collector_ingest.py).
        """
        batch = _typed(spans, validated)
        if not batch:
            return 0
        with self._lock:
            self._write([batch])
            self._catch_up_after_ingest()
        return len(batch)

    async def add_async(self, spans: Sequence[Span | ZipkinSpan], *, validated: bool = False) -> int:
        """`add` with group commit: returns (the batch's size) only after the COMMIT of a
        transaction that holds this batch and whatever other batches were queued with it.

        The batch joins a queue; one callback on the event loop, scheduled by the first batch of
        a group, stores every queued batch in one transaction (each its own batch number), then
        wakes them all. Concurrent POSTs thus share one COMMIT (a few WAL page writes; with
        `fsync=True` one fsync) instead of one each. If the transaction fails, every batch of the
        group raises StoreError and none of them is stored: the rollback undoes all of them, so a
        refused batch never reappears. A caller cancelled while queued is left out of the group.
        Call it from one event loop (the collector's)."""
        batch = _typed(spans, validated)
        if not batch:
            return 0
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((batch, done))
        if len(self._queue) == 1:
            # After the callbacks already ready to run: the other POSTs read in the same loop
            # iteration join this group.
            loop.call_soon(self._commit_queue)
        await done
        return len(batch)

    def _commit_queue(self) -> None:
        queue, self._queue = self._queue, []
        group = [(batch, done) for batch, done in queue if not done.done()]
        if not group:
            return
        try:
            with self._lock:
                self._write([batch for batch, _ in group])
                self._catch_up_after_ingest()
        except Exception as exc:  # StoreError, or a bug: no waiter may hang on it
            for _, done in group:
                done.set_exception(StoreError(str(exc)) if isinstance(exc, StoreError) else exc)
            return
        for _, done in group:
            done.set_result(None)

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

                def batches() -> Iterator[list[ZipkinSpan]]:
                    with path.open("rb") as f:
                        for lineno, line in enumerate(f, start=1):
                            if not line.strip():
                                continue
                            try:
                                batch = to_structs(validate_spans(json.loads(line)))
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
        texts = [text for (text,) in db.execute(TRACE_SPANS, (trace_id,))]
        if not indexed:  # rows the indexes do not cover yet: a scan of the (bounded) tail
            tail = db.execute(TAIL_SPANS, (self._indexed_upto, trace_id))
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
        """JSON list of the traces found among `trace_ids`, in request order; absent ids left out.
        Indexed, the spans of up to `_MANY_IDS` ids come in one query, not one per id."""
        ids = list(dict.fromkeys(normalize_trace_id(raw_id) for raw_id in trace_ids))
        with self._lock:
            if self._try_catch_up():
                texts = self._texts_many(ids)
            else:
                texts = {trace_id: self._texts(trace_id, False) for trace_id in ids}
        return "[" + ",".join("[" + ",".join(texts[t]) + "]" for t in ids if texts.get(t)) + "]"

    def _texts_many(self, trace_ids: list[str]) -> dict[str, list[str]]:
        """`_texts` of every id (indexed), in queries of up to `_MANY_IDS` ids."""
        db = self._conn()
        out: dict[str, list[str]] = {}
        for start in range(0, len(trace_ids), _MANY_IDS):
            chunk = trace_ids[start : start + _MANY_IDS]
            for trace_id, text in db.execute(MANY_TRACE_SPANS.format(",".join("?" * len(chunk))), chunk):
                out.setdefault(trace_id, []).append(text)
        return out

    def get_many(self, trace_ids: Iterable[str]) -> list[Trace]:
        """Traces found among `trace_ids`, in request order; absent ids are simply left out."""
        return json.loads(self.get_many_json(trace_ids))  # type: ignore[no-any-return]

    def services(self) -> list[str]:
        with self._lock:
            return sorted(self._known_services)

    def span_names(self, service: str) -> list[str]:
        """Span names recorded by `service` as the local endpoint (Zipkin's `GET /spans`)."""
        key = dumps(service.lower())
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
        """Zipkin `GET /api/v2/traces` semantics (loadgen.stack.collector.query), as a JSON list
        of traces. Memory: one candidate trace at a time plus the answer (at most `limit` traces).
        """
        search = TraceSearch.of(
            service_name=service_name,
            span_name=span_name,
            annotation_query=annotation_query,
            min_duration=min_duration,
            max_duration=max_duration,
            end_ts_ms=end_ts_ms,
            lookback_ms=lookback_ms,
            limit=limit,
            now_ms=int(time.time() * 1000),
        )
        sql, params = search.candidates()
        found: list[str] = []
        with self._lock:
            self._catch_up()
            candidates = self._conn().execute(sql, params)
            while len(found) < limit:
                rows = candidates.fetchmany(256)
                if not rows:
                    break
                for (trace_id,) in rows:
                    trace = "[" + ",".join(self._texts(trace_id)) + "]"
                    if search.exact or search.matches(json.loads(trace)):
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
        """Counts since the store began: spans stored before a restart count as accepted. Except
        `commits`: the transactions that stored batches since this open (each of an imported
        file's, `add`'s or a group of `add_async`'s), so batches / commits over an interval is the
        mean group size of group commit."""
        with self._lock:
            indexed = self._try_catch_up()
            db = self._conn()
            (traces,) = db.execute("SELECT count(*) FROM traces").fetchone()
            if not indexed:
                (new,) = db.execute(TAIL_NEW_TRACES, (self._indexed_upto,)).fetchone()
                traces += new
            return {
                "spans_accepted": self._spans_accepted,
                "batches": self._batches,
                "spans_dropped": self._spans_dropped,
                "traces": int(traces),
                "commits": self._commits,
            }


_ENCODE = msgspec.json.Encoder().encode


@functools.lru_cache(maxsize=4096)
def json_str(text: str) -> str:
    """A service name as the `services` column holds it (JSON, ASCII), cached: there are few."""
    return dumps(text)


def spans_text(spans: list[ZipkinSpan]) -> str:
    """A trace's spans of one batch as the `json` column holds them: compact JSON objects joined
    by commas, encoded once from the typed spans (msgspec: UTF-8, not re-validated)."""
    try:
        return _ENCODE(spans)[1:-1].decode()
    except UnicodeEncodeError:  # a lone surrogate (valid in a JSON escape): escaped as ASCII
        return dumps(msgspec.to_builtins(spans))[1:-1]


def _typed(spans: Sequence[Span | ZipkinSpan], validated: bool) -> list[ZipkinSpan]:
    """A batch as the store writes it. Unless `validated`, every span is checked the reference
    way first (SpanValidationError names the first bad one)."""
    if not validated:
        spans = validate_spans([s if isinstance(s, dict) else msgspec.to_builtins(s) for s in spans])
    typed: list[ZipkinSpan] = []
    dicts: list[Span] = []
    for span in spans:
        if isinstance(span, ZipkinSpan):
            typed.append(span)
        else:
            dicts.append(span)
    if not dicts:
        return typed
    if not typed:
        return to_structs(dicts)  # one conversion for the batch (OTLP, proto3, tests)
    return [s if isinstance(s, ZipkinSpan) else to_structs([s])[0] for s in spans]  # mixed: in order


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
    batches: Iterator[list[ZipkinSpan]], db: sqlite3.Connection, sql: str, params: tuple[object, ...]
) -> Iterator[list[ZipkinSpan]]:
    """Yield the batches, then run one more statement inside the same transaction."""
    yield from batches
    db.execute(sql, params)
