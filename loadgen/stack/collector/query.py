"""Zipkin `GET /api/v2/traces` semantics over the span store (pure): which traces a search asks
for, the SQL that lists their candidates, and the exact check of a candidate's spans.

- A trace's time is its root span's timestamp, else its earliest (Zipkin's QueryRequest); it must
  lie in [endTs - lookback, endTs]. endTs/lookback are epoch *milliseconds*, span timestamps
  *microseconds*. endTs defaults to now, lookback to endTs (all history).
- serviceName restricts the other criteria to spans whose localEndpoint is that service.
- spanName: some such span has that name. min/maxDuration (µs): some such span's duration is
  within range. annotationQuery: one such span matches every term (the spec's wording; Zipkin's
  in-memory store lets different spans match different terms).
- Result: at most `limit` traces, the ones nearest endTs first (ties: higher trace id).

Candidates come from the time index (and the trace's services), newest first, with tag terms
prefiltered in SQL (C speed: no span reaches Python unless it may match); each is then checked
exactly in Python (`TraceSearch.matches`) unless the SQL already is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.stack.collector.normalize import INT64_MAX, Span, Trace
from loadgen.stack.collector.schema import SEP, TAG_EXISTS, TRACE_TIME, dumps, sql_text_ok

__all__ = ["Terms", "TraceSearch", "parse_annotation_query"]

Terms = list[tuple[str, str | None]]


def parse_annotation_query(query: str) -> Terms:
    """`http.uri=/foo and retried` -> [("http.uri", "/foo"), ("retried", None)].

    A term with `=` is a tag key/value (split at the first `=`); a bare word is None-valued and
    matches an annotation value or a tag key.
    """
    terms: Terms = []
    for term in query.split(" and "):
        term = term.strip()
        if not term:
            continue
        key, sep, value = term.partition("=")
        terms.append((key, value) if sep else (term, None))
    return terms


@dataclass(frozen=True)
class TraceSearch:
    """One search, its arguments checked and normalized (see the module docstring)."""

    start_us: int
    end_us: int
    service: str | None
    name: str | None
    min_duration: int | None
    max_duration: int | None
    terms: Terms

    @classmethod
    def of(
        cls,
        *,
        service_name: str | None,
        span_name: str | None,
        annotation_query: str | None,
        min_duration: int | None,
        max_duration: int | None,
        end_ts_ms: int | None,
        lookback_ms: int | None,
        limit: int,
        now_ms: int,
    ) -> TraceSearch:
        """The search for `GET /api/v2/traces`' parameters; ValueError for a bad combination."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        if max_duration is not None and min_duration is None:
            raise ValueError("maxDuration is only valid with minDuration")
        end_us = (now_ms if end_ts_ms is None else end_ts_ms) * 1000
        start_us = 0 if lookback_ms is None else end_us - lookback_ms * 1000
        # Span timestamps are int64 (validated): a wider window means the same as the int64 one.
        return cls(
            start_us=max(start_us, -INT64_MAX),
            end_us=min(end_us, INT64_MAX),
            service=service_name.lower() if service_name else None,
            name=span_name.lower() if span_name else None,
            min_duration=min_duration,
            max_duration=max_duration,
            terms=parse_annotation_query(annotation_query) if annotation_query else [],
        )

    @property
    def exact(self) -> bool:
        """Whether the candidates' SQL is the whole answer: the service prefilter is exact
        (JSON-encoded names between separators); anything else needs the spans themselves."""
        return self.name is None and self.min_duration is None and not self.terms

    def candidates(self) -> tuple[str, list[object]]:
        """The SQL (and its parameters) listing candidate trace ids, newest first."""
        sql = f"SELECT trace_id FROM traces WHERE {TRACE_TIME} BETWEEN ? AND ?"
        params: list[object] = [self.start_us, self.end_us]
        if self.service is not None:
            sql += " AND instr(services, ?)"
            params.append(SEP + dumps(self.service) + SEP)
        for key, value in self.terms:
            if value is not None and sql_text_ok(key) and sql_text_ok(value):
                sql += TAG_EXISTS
                params += [key, value]
        sql += f" ORDER BY {TRACE_TIME} DESC, trace_id DESC"
        return sql, params

    def matches(self, trace: Trace) -> bool:
        """The exact check of a candidate trace's spans."""
        spans = [s for s in trace if self.service is None or _local_service(s) == self.service]
        if not spans:
            return False
        if self.name is not None and not any(s.get("name") == self.name for s in spans):
            return False
        if self.min_duration is not None:
            low = self.min_duration
            high = self.max_duration if self.max_duration is not None else float("inf")
            if not any(low <= s.get("duration", 0) <= high for s in spans):
                return False
        return not self.terms or any(_span_matches_terms(s, self.terms) for s in spans)


def _span_matches_terms(span: Span, terms: Terms) -> bool:
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
