"""The span store's SQLite schema, its statements, and how values are encoded in it.

Spans are kept as compact JSON (ASCII) text, one row per trace per accepted batch; service and
span names are JSON-encoded strings, a trace's services joined by `SEP`. `spans` is the only table
an accepted batch writes; `trace_spans` and `traces` are derived from it in bulk (`INDEX_SPANS`,
`INDEX_TRACES`), in their own transactions.
"""

from __future__ import annotations

import json

__all__ = [
    "INDEX_SPANS",
    "INDEX_TRACES",
    "INSERT_SPANS",
    "MANY_TRACE_SPANS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SEP",
    "TAG_EXISTS",
    "TAIL_NEW_TRACES",
    "TAIL_SPANS",
    "TRACE_SPANS",
    "TRACE_TIME",
    "dumps",
    "sql_text_ok",
]

SCHEMA_VERSION = 1
SCHEMA = """
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
INSERT_SPANS = "INSERT INTO spans (seq, batch, trace_id, n, root_ts, min_ts, services, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
INDEX_SPANS = (
    "INSERT INTO trace_spans (trace_id, seq) SELECT trace_id, seq FROM spans WHERE seq > ? AND seq <= ?"
)
INDEX_TRACES = """
INSERT INTO traces (trace_id, root_ts, min_ts, services)
SELECT trace_id, root_ts, min_ts, services FROM spans WHERE seq > ? AND seq <= ? ORDER BY seq
ON CONFLICT (trace_id) DO UPDATE SET
    root_ts = coalesce(root_ts, excluded.root_ts),
    min_ts = CASE WHEN min_ts IS NULL OR excluded.min_ts < min_ts THEN excluded.min_ts ELSE min_ts END,
    services = CASE WHEN instr(services, excluded.services) THEN services
                    ELSE services || substr(excluded.services, 2) END
"""
TRACE_SPANS = (
    "SELECT s.json FROM trace_spans t JOIN spans s ON s.seq = t.seq WHERE t.trace_id = ? ORDER BY t.seq"
)
# TRACE_SPANS for several traces at once ({} holds one ? per id): each trace's rows still come in
# arrival order.
MANY_TRACE_SPANS = (
    "SELECT t.trace_id, s.json FROM trace_spans t JOIN spans s ON s.seq = t.seq"
    " WHERE t.trace_id IN ({}) ORDER BY t.seq"
)
TAIL_SPANS = "SELECT json FROM spans WHERE seq > ? AND trace_id = ? ORDER BY seq"
TAIL_NEW_TRACES = (
    "SELECT count(DISTINCT trace_id) FROM spans WHERE seq > ?"
    " AND trace_id NOT IN (SELECT trace_id FROM traces)"
)
TRACE_TIME = "coalesce(root_ts, min_ts)"
# A tag term prefilter in SQL (C speed, no span reaches Python unless it may match); the exact
# Zipkin semantics are then checked in Python on the candidate trace's spans.
TAG_EXISTS = (
    " AND EXISTS (SELECT 1 FROM trace_spans i JOIN spans s ON s.seq = i.seq,"
    " json_each('[' || s.json || ']') e, json_each(e.value, '$.tags') t"
    " WHERE i.trace_id = traces.trace_id AND t.key = ? AND t.value = ?)"
)
SEP = "\x1f"  # never inside a JSON-encoded string (it would be escaped as \u001f)
dumps = json.JSONEncoder(separators=(",", ":")).encode  # ensure_ascii: lone surrogates escape


def sql_text_ok(text: str) -> bool:
    """SQLite stores UTF-8: a str with a lone surrogate (valid in JSON escapes) cannot be bound."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
