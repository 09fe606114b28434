"""Span store behind the embedded Zipkin-v2-compatible collector.

Spans are kept as plain dicts in Zipkin v2 JSON shape (shared/specs/zipkin2-api.yaml), normalized
the way Zipkin's own decoder does it: lowercase ids, a 128-bit trace id with a zero high half
collapsed to 64 bits (`loadgen.propagation.normalize_trace_id`), lowercase span and service names,
zero/empty/false fields omitted, unknown fields dropped.

The store is *raw*, like Zipkin's: a span reported twice (same traceId, id, kind, shared…) is
kept twice and both copies come back from every query. Readers that count spans must dedupe if
they care; the collector never hides what was actually delivered.

Durability: with a data directory every accepted batch is one JSON line in `spans.jsonl`, written
and flushed to the OS before `add` returns (so before the server answers 202). A killed process
therefore loses nothing it acknowledged; a torn final line (killed mid-write) is dropped on reload.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from loadgen.propagation import is_hex_id, normalize_trace_id

__all__ = ["SPANS_FILE_NAME", "SpanStore", "SpanValidationError", "parse_annotation_query", "validate_spans"]

log = logging.getLogger(__name__)

Span = dict[str, Any]
Trace = list[Span]

SPANS_FILE_NAME = "spans.jsonl"
SPAN_KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})
_ENDPOINT_STR_FIELDS = ("serviceName", "ipv4", "ipv6")


class SpanValidationError(ValueError):
    """A reported span list that Zipkin would reject; the message names the index and field."""


# --- validation and normalization (pure) -------------------------------------------------------


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python; JSON true is not a timestamp.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_uint(value: object, where: str) -> int:
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise SpanValidationError(f"{where}: expected a non-negative integer, got {value!r}")
    return value  # type: ignore[return-value]


def _check_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SpanValidationError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _normalize_endpoint(raw: object, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpanValidationError(f"{where}: expected an object, got {type(raw).__name__}")
    endpoint: dict[str, Any] = {}
    for field in _ENDPOINT_STR_FIELDS:
        value = raw.get(field)
        if value is None:
            continue
        text = _check_str(value, f"{where}.{field}")
        if text:
            # Zipkin lowercases service names: they are lookup labels.
            endpoint[field] = text.lower() if field == "serviceName" else text
    port = raw.get("port")
    if port is not None:
        port = _check_uint(port, f"{where}.port")
        if port > 65535:
            raise SpanValidationError(f"{where}.port: {port} is not a port number")
        if port:
            endpoint["port"] = port
    return endpoint or None


def _normalize_span(raw: object, index: int) -> Span:
    where = f"span[{index}]"
    if not isinstance(raw, dict):
        raise SpanValidationError(f"{where}: expected an object, got {type(raw).__name__}")

    trace_id = raw.get("traceId")
    if isinstance(trace_id, str) and 16 < len(trace_id) < 32:
        # The spec's pattern allows 17..31 characters; Zipkin left-pads those to 128 bits (as GET does).
        trace_id = trace_id.rjust(32, "0")
    if not isinstance(trace_id, str) or not is_hex_id(trace_id.lower(), (16, 32)):
        raise SpanValidationError(f"{where}.traceId: expected 16 to 32 hex characters, got {trace_id!r}")
    span_id = raw.get("id")
    if not isinstance(span_id, str) or not is_hex_id(span_id.lower(), (16,)):
        raise SpanValidationError(f"{where}.id: expected 16 hex characters, got {span_id!r}")
    span: Span = {"traceId": normalize_trace_id(trace_id), "id": span_id.lower()}

    parent_id = raw.get("parentId")
    if parent_id is not None:
        if not isinstance(parent_id, str) or not is_hex_id(parent_id.lower(), (16,)):
            raise SpanValidationError(f"{where}.parentId: expected 16 hex characters, got {parent_id!r}")
        if parent_id.strip("0"):  # Zipkin treats an all-zero parent as "no parent".
            span["parentId"] = parent_id.lower()

    kind = raw.get("kind")
    if kind is not None:
        if kind not in SPAN_KINDS:
            raise SpanValidationError(f"{where}.kind: expected one of {sorted(SPAN_KINDS)}, got {kind!r}")
        span["kind"] = kind

    name = raw.get("name")
    if name is not None and _check_str(name, f"{where}.name"):
        span["name"] = name.lower()

    for field in ("timestamp", "duration"):
        value = raw.get(field)
        # Zero means "unknown" in Zipkin (proto3 cannot tell absent from 0 either).
        if value is not None and _check_uint(value, f"{where}.{field}"):
            span[field] = value

    for field in ("localEndpoint", "remoteEndpoint"):
        endpoint = _normalize_endpoint(raw.get(field), f"{where}.{field}")
        if endpoint is not None:
            span[field] = endpoint

    annotations = raw.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, list):
            raise SpanValidationError(
                f"{where}.annotations: expected a list, got {type(annotations).__name__}"
            )
        checked = []
        for i, annotation in enumerate(annotations):
            at = f"{where}.annotations[{i}]"
            if not isinstance(annotation, dict):
                raise SpanValidationError(f"{at}: expected an object, got {type(annotation).__name__}")
            checked.append(
                {
                    "timestamp": _check_uint(annotation.get("timestamp"), f"{at}.timestamp"),
                    "value": _check_str(annotation.get("value"), f"{at}.value"),
                }
            )
        if checked:
            span["annotations"] = checked

    tags = raw.get("tags")
    if tags is not None:
        if not isinstance(tags, dict):
            raise SpanValidationError(f"{where}.tags: expected an object, got {type(tags).__name__}")
        for key, value in tags.items():
            _check_str(key, f"{where}.tags key")
            _check_str(value, f"{where}.tags[{key!r}]")
        if tags:
            span["tags"] = dict(tags)

    for field in ("debug", "shared"):
        flag = raw.get(field)
        if flag is not None and not isinstance(flag, bool):
            raise SpanValidationError(f"{where}.{field}: expected a boolean, got {flag!r}")
        if flag:
            span[field] = True
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


def _trace_timestamp(trace: Trace) -> int | None:
    """The root span's timestamp, else the earliest one: what Zipkin's QueryRequest uses."""
    earliest: int | None = None
    for span in trace:
        ts = span.get("timestamp")
        if ts is None:
            continue
        if "parentId" not in span:
            return int(ts)
        if earliest is None or ts < earliest:
            earliest = ts
    return earliest


# --- the store ---------------------------------------------------------------------------------


class SpanStore:
    """In-memory indexes over spans, optionally backed by an append-only JSON-lines file.

    All methods are safe to call from several threads; the collector itself is single-threaded.
    Query results share span dicts with the store: treat them as read-only.
    """

    def __init__(self, data_dir: Path | None = None, *, fsync: bool = False) -> None:
        self._lock = threading.RLock()
        self._traces: dict[str, Trace] = {}
        self._service_traces: dict[str, set[str]] = {}  # local service -> trace ids
        self._services: set[str] = set()  # local and remote service names
        self._span_names: dict[str, set[str]] = {}  # local service -> span names
        self._spans_accepted = 0
        self._batches = 0
        self._spans_dropped = 0
        self._fsync = fsync
        self._file: IO[str] | None = None
        self.path: Path | None = None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            self.path = data_dir / SPANS_FILE_NAME
            self._reload(self.path)
            self._file = self.path.open("a", encoding="utf-8")

    # -- persistence --

    def _reload(self, path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        complete_len = data.rfind(b"\n") + 1
        if complete_len < len(data):
            # Killed mid-write: the batch was never acknowledged. Cut it off so the next append
            # starts on a fresh line instead of gluing onto the fragment.
            log.warning("%s: dropping a truncated final line (%d bytes)", path, len(data) - complete_len)
            with path.open("r+b") as f:
                f.truncate(complete_len)
        for lineno, line in enumerate(data[:complete_len].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                batch = validate_spans(json.loads(line))
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, SpanValidationError
                log.warning("%s:%d: skipping unreadable batch: %s", path, lineno, exc)
                continue
            self._index(batch)

    def _append(self, batch: list[Span]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(batch, separators=(",", ":")) + "\n")
        # flush() hands the line to the OS: it survives the process being killed. fsync() also
        # survives a machine crash, at a large cost per batch, hence opt-in.
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> SpanStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- ingest --

    def _index(self, batch: list[Span]) -> None:
        for span in batch:
            trace_id = span["traceId"]
            self._traces.setdefault(trace_id, []).append(span)
            local = _local_service(span)
            if local is not None:
                self._services.add(local)
                self._service_traces.setdefault(local, set()).add(trace_id)
                if "name" in span:
                    self._span_names.setdefault(local, set()).add(span["name"])
            remote = span.get("remoteEndpoint", {}).get("serviceName")
            if remote is not None:
                self._services.add(remote)
        self._spans_accepted += len(batch)
        self._batches += 1

    def add(self, spans: list[Span], *, validated: bool = False) -> int:
        """Validate, normalize, persist (if file-backed) and index one batch; return its size.

        Raises SpanValidationError and stores nothing if any span is invalid. `validated=True`
        skips the check for spans that already went through `validate_spans` (the server's POST
        path: validating twice was a fifth of the collector's CPU in bench/collector_ingest.py).
        """
        batch = spans if validated else validate_spans(spans)
        if not batch:
            return 0
        with self._lock:
            self._append(batch)  # durable first: a crash after this loses nothing acknowledged
            self._index(batch)
        return len(batch)

    def count_dropped(self, n: int) -> None:
        """Record spans accepted on the wire but discarded on purpose (fault injection)."""
        with self._lock:
            self._spans_dropped += n

    # -- queries --

    def get_trace(self, trace_id: str) -> Trace | None:
        with self._lock:
            trace = self._traces.get(normalize_trace_id(trace_id))
            return list(trace) if trace is not None else None

    def get_many(self, trace_ids: Iterable[str]) -> list[Trace]:
        """Traces found among `trace_ids`, in request order; absent ids are simply left out."""
        seen: set[str] = set()
        found: list[Trace] = []
        with self._lock:
            for raw_id in trace_ids:
                trace_id = normalize_trace_id(raw_id)
                if trace_id in seen:
                    continue
                seen.add(trace_id)
                trace = self._traces.get(trace_id)
                if trace is not None:
                    found.append(list(trace))
        return found

    def services(self) -> list[str]:
        with self._lock:
            return sorted(self._services)

    def span_names(self, service: str) -> list[str]:
        """Span names recorded by `service` as the local endpoint (Zipkin's `GET /spans`)."""
        with self._lock:
            return sorted(self._span_names.get(service.lower(), ()))

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
        """Zipkin `GET /api/v2/traces` semantics.

        - A trace's time is its root span's timestamp, else its earliest (Zipkin's QueryRequest);
          it must lie in [endTs - lookback, endTs]. endTs/lookback are epoch *milliseconds*, span
          timestamps *microseconds*. endTs defaults to now, lookback to endTs (all history).
        - serviceName restricts the other criteria to spans whose localEndpoint is that service.
        - spanName: some such span has that name. min/maxDuration (µs): some such span's duration
          is within range. annotationQuery: one such span matches every term (the spec's wording;
          Zipkin's in-memory store lets different spans match different terms).
        - Result: at most `limit` traces, the ones nearest endTs first.
        """
        if limit <= 0:
            raise ValueError("limit must be positive")
        if max_duration is not None and min_duration is None:
            raise ValueError("maxDuration is only valid with minDuration")
        end_us = (int(time.time() * 1000) if end_ts_ms is None else end_ts_ms) * 1000
        start_us = 0 if lookback_ms is None else end_us - lookback_ms * 1000
        service = service_name.lower() if service_name else None
        name = span_name.lower() if span_name else None
        terms = parse_annotation_query(annotation_query) if annotation_query else []

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

        with self._lock:
            if service is None:
                candidates: Iterable[str] = self._traces
            else:
                candidates = self._service_traces.get(service, ())
            timed: list[tuple[int, str]] = []
            for trace_id in candidates:
                ts = _trace_timestamp(self._traces[trace_id])
                if ts is not None and start_us <= ts <= end_us:
                    timed.append((ts, trace_id))
            timed.sort(reverse=True)
            results: list[Trace] = []
            for _, trace_id in timed:
                trace = self._traces[trace_id]
                if trace_ok(trace):
                    results.append(list(trace))
                    if len(results) >= limit:
                        break
            return results

    def stats(self) -> dict[str, int]:
        """Counts since the data file began: spans reloaded after a restart count as accepted."""
        with self._lock:
            return {
                "spans_accepted": self._spans_accepted,
                "batches": self._batches,
                "spans_dropped": self._spans_dropped,
                "traces": len(self._traces),
            }
