"""Grafana Tempo's query API answers built from the collector's stored spans (pure: no I/O).

A **stand-in**: no real Tempo runs here, so the collector can serve its spans in the shapes
Tempo's query API documents (shared/specs/tempo/README.md, tempo.proto and Tempo's own test
fixture trace-by-id-v1-example.json), and a run on the embedded mesh can be read back through
the `tempo:` reader. What it replays, as Tempo prints it (gogo jsonpb):

- trace by id, v1 `GET /api/traces/{id}`: `{"batches": [ResourceSpans]}` (the `resourceSpans`
  key renamed), v2 `GET /api/v2/traces/{id}`: `{"trace": {"resourceSpans": [...]}, "metrics":
  {...}}` plus `"status": "PARTIAL"` and a `message` when the trace was cut (`status` is left out
  when COMPLETE, the enum's zero). Ids are **base64** (bytes in jsonpb), 64-bit integers are
  decimal strings, `kind` is the enum's name, attributes are `{key, value: {stringValue}}`,
  fields at their default are left out. An unknown id is a 404 with **no body**.
- search `GET /api/search`: `{"traces": [{"traceID", "rootServiceName", "rootTraceName",
  "startTimeUnixNano", "durationMs", "spanSet", "spanSets"}], "metrics": {...}}`, trace ids as
  hex with the leading zeros trimmed (Tempo's `TraceIDToHexString`).

How stored Zipkin v2 spans become OTLP (the stand-in's own choice, not Tempo's Zipkin receiver):
one ResourceSpans per local service (`service.name`), one empty scope, tags as string attributes
verbatim (`error` and `otel.status_code` stay tags; the status is left empty), annotations as
events named by their value. Zipkin's `shared` flag and the remote endpoint have no OTLP field
and are not carried.

Search semantics (also the stand-in's): a TraceQL query is a conjunction of equality tests on
span attributes (`span.k = "v"`, unscoped `.k = "v"`) and `resource.service.name`; the older
`tags=` form is logfmt `k=v` pairs, `service.name` naming the service. Anything else is a 400. A
trace is in [start, end] (epoch seconds) when its Zipkin time (its root's timestamp, else its
earliest) is; the newest traces come first, at most `limit` (default 20).
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.mesh.ids import is_hex_id, normalize_trace_id
from loadgen.mesh.otlp_values import ZIPKIN_KINDS

__all__ = [
    "BUILD_INFO",
    "DEFAULT_LIMIT",
    "DEFAULT_SPSS",
    "SearchRequest",
    "TempoQueryError",
    "b64_id",
    "parse_search",
    "parse_trace_id",
    "resource_spans",
    "search_response",
    "trace_by_id_v1",
    "trace_by_id_v2",
    "trimmed_hex",
]

Span = dict[str, Any]

DEFAULT_LIMIT = 20
"""Tempo's default search limit (query_frontend.search.default_result_limit)."""
DEFAULT_SPSS = 3
"""Tempo's default spans per span set in a search answer."""
BUILD_INFO: dict[str, str] = {
    "version": "2.8.0-loadgen-stand-in",
    "revision": "stand-in",
    "branch": "loadgen",
    "buildDate": "",
    "buildUser": "loadgen",
    "goVersion": "none (loadgen's Tempo-shaped stand-in)",
}
"""`GET /api/status/buildinfo`: Tempo's keys; the values say what this is."""

_KIND_NAMES = {kind: "SPAN_KIND_" + kind for kind in ZIPKIN_KINDS.values()}  # Zipkin kind -> enum name
_NO_ROOT = "<root span not yet received>"  # what Tempo names a trace without a root span
# TraceQL: `{ a = "x" && b = "y" }`, attributes scoped span., resource. or unscoped (.name).
_TRACEQL_TERM = re.compile(r'\s*(span|resource|)\.([A-Za-z0-9_.\-/:]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')


class TempoQueryError(ValueError):
    """A request Tempo answers 400; the message is the answer's text."""


# -- trace by id --------------------------------------------------------------------------------


def b64_id(hex_id: str, n_bytes: int) -> str:
    """A hex id as jsonpb prints a `bytes` id: standard base64 of its `n_bytes` big-endian bytes."""
    return base64.b64encode(bytes.fromhex(hex_id.zfill(2 * n_bytes))).decode("ascii")


def _string_attributes(tags: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": {"stringValue": str(value)}} for key, value in tags.items()]


def otlp_span(span: Span) -> dict[str, Any]:
    """One stored Zipkin v2 span as a Tempo JSON span (see the module docstring)."""
    start_ns = int(span.get("timestamp", 0)) * 1000
    out: dict[str, Any] = {
        "traceId": b64_id(str(span["traceId"]), 16),
        "spanId": b64_id(str(span["id"]), 8),
    }
    if span.get("parentId"):
        out["parentSpanId"] = b64_id(str(span["parentId"]), 8)
    if span.get("name"):
        out["name"] = span["name"]
    kind = _KIND_NAMES.get(str(span.get("kind", "")))
    if kind is not None:
        out["kind"] = kind
    if start_ns:
        out["startTimeUnixNano"] = str(start_ns)
        out["endTimeUnixNano"] = str(start_ns + int(span.get("duration", 0)) * 1000)
    if span.get("tags"):
        out["attributes"] = _string_attributes(span["tags"])
    events = [
        {"timeUnixNano": str(int(a["timestamp"]) * 1000), "name": str(a["value"])}
        for a in span.get("annotations") or ()
    ]
    if events:
        out["events"] = events
    out["status"] = {}
    return out


def _service(span: Span) -> str:
    return str((span.get("localEndpoint") or {}).get("serviceName") or "")


def resource_spans(spans: Sequence[Span]) -> list[dict[str, Any]]:
    """Stored spans as OTLP ResourceSpans: one per local service, in order of first appearance."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_service.setdefault(_service(span), []).append(otlp_span(span))
    return [
        {
            "resource": ({"attributes": _string_attributes({"service.name": service})} if service else {}),
            "scopeSpans": [{"scope": {}, "spans": otlp}],
        }
        for service, otlp in by_service.items()
    ]


def trace_by_id_v1(spans: Sequence[Span]) -> dict[str, Any]:
    """`GET /api/traces/{id}`'s 200 body: `MarshalToJSONV1` renames `resourceSpans` to `batches`."""
    return {"batches": resource_spans(spans)}


def trace_by_id_v2(spans: Sequence[Span], max_spans: int = 0) -> dict[str, Any]:
    """`GET /api/v2/traces/{id}`'s 200 body. With `max_spans` > 0 a longer trace is cut to its
    first `max_spans` spans and marked PARTIAL, as Tempo marks a trace over its size limit."""
    kept = list(spans)
    body: dict[str, Any] = {}
    if 0 < max_spans < len(kept):
        kept = kept[:max_spans]
        body["status"] = "PARTIAL"
        body["message"] = f"Trace exceeds maximum size and was truncated to {max_spans} spans"
    inspected = sum(len(str(s)) for s in kept)
    return {
        "trace": {"resourceSpans": resource_spans(kept)},
        "metrics": {"inspectedBytes": str(inspected)},
        **body,
    }


def parse_trace_id(raw: str) -> str:
    """A trace id from a request path, hex with or without leading zeros (1..32 characters), in
    the store's form; TempoQueryError as Tempo's `HexStringToTraceID` rejects it."""
    text = raw.strip().lower()
    if not 1 <= len(text) <= 32 or not is_hex_id(text.zfill(32), (32,)):
        raise TempoQueryError(f"invalid trace id {raw!r}: expected 1 to 32 hex characters")
    return normalize_trace_id(text.zfill(32))


# -- search ---------------------------------------------------------------------------------------


def trimmed_hex(trace_id: str) -> str:
    """Tempo's `TraceIDToHexString`: the 128-bit id in hex with the leading zeros trimmed
    ("0" for an all-zero id)."""
    return trace_id.lower().lstrip("0") or "0"


@dataclass(frozen=True)
class SearchRequest:
    """One `GET /api/search`, its parameters checked."""

    service: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    start_s: int | None = None
    end_s: int | None = None
    limit: int = DEFAULT_LIMIT
    spss: int = DEFAULT_SPSS


def _uint(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name, "")
    if raw == "":
        return None
    if not raw.isdigit():
        raise TempoQueryError(f"invalid {name}: {raw!r} is not a non-negative integer")
    return int(raw)


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_traceql(query: str) -> tuple[str | None, dict[str, str]]:
    """(service, span tags) of `{ span.k = "v" && resource.service.name = "s" }`; `{}` matches
    every trace. TempoQueryError for anything this stand-in does not evaluate."""
    text = query.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise TempoQueryError(f"parse error: the stand-in reads one span set {{ ... }}, got {query!r}")
    inner = text[1:-1].strip()
    service: str | None = None
    tags: dict[str, str] = {}
    for term in inner.split("&&") if inner else ():
        match = _TRACEQL_TERM.fullmatch(term)
        if match is None:
            raise TempoQueryError(
                f'parse error: the stand-in evaluates only span.NAME = "VALUE" terms joined by &&, '
                f"got {term.strip()!r}"
            )
        scope, name, value = match.group(1), match.group(2), _unquote(match.group(3))
        if scope == "resource" and name == "service.name":
            service = value
        elif scope == "resource":
            raise TempoQueryError(f"the stand-in has no resource attribute {name!r} but service.name")
        else:
            tags[name] = value
    return service, tags


def parse_tags(logfmt: str) -> tuple[str | None, dict[str, str]]:
    """(service, span tags) of the older `tags=` parameter (logfmt `k=v k2="v 2"`)."""
    try:
        words = shlex.split(logfmt)
    except ValueError as exc:
        raise TempoQueryError(f"invalid tags: {exc}") from exc
    service: str | None = None
    tags: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise TempoQueryError(f"invalid tags: {word!r} is not key=value")
        if key == "service.name":
            service = value
        else:
            tags[key] = value
    return service, tags


def parse_search(params: Mapping[str, str]) -> SearchRequest:
    """A `GET /api/search` request from its query parameters; TempoQueryError (a 400) when
    Tempo would reject it or the stand-in cannot evaluate it."""
    if params.get("q") and params.get("tags"):
        raise TempoQueryError("invalid request: q and tags cannot both be given")
    for unsupported in ("minDuration", "maxDuration"):
        if params.get(unsupported):
            raise TempoQueryError(f"{unsupported} is not evaluated by the stand-in")
    if params.get("q"):
        service, tags = parse_traceql(params["q"])
    else:
        service, tags = parse_tags(params.get("tags", ""))
    start, end = _uint(params, "start"), _uint(params, "end")
    if (start is None) != (end is None):
        raise TempoQueryError("invalid start/end: give both or neither")
    if start is not None and end is not None and end <= start:
        raise TempoQueryError("invalid start/end: start must be before end")
    limit = _uint(params, "limit") or DEFAULT_LIMIT
    spss = _uint(params, "spss") or DEFAULT_SPSS
    return SearchRequest(service, tags, start, end, limit, spss)


def _root(trace: Sequence[Span]) -> Span | None:
    return next((s for s in trace if not s.get("parentId")), None)


def _matched(trace: Sequence[Span], request: SearchRequest) -> list[Span]:
    return [
        s
        for s in trace
        if (request.service is None or _service(s) == request.service.lower())
        and all((s.get("tags") or {}).get(k) == v for k, v in request.tags.items())
    ]


def _search_span(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {
        "spanID": str(span["id"]),
        "startTimeUnixNano": str(int(span.get("timestamp", 0)) * 1000),
        "durationNanos": str(int(span.get("duration", 0)) * 1000),
    }
    if span.get("name"):
        out["name"] = span["name"]
    return out


def _trace_metadata(trace: Sequence[Span], request: SearchRequest) -> dict[str, Any]:
    starts = [int(s.get("timestamp", 0)) for s in trace if s.get("timestamp")]
    ends = [int(s.get("timestamp", 0)) + int(s.get("duration", 0)) for s in trace if s.get("timestamp")]
    root = _root(trace)
    matched = _matched(trace, request)
    span_set = {"spans": [_search_span(s) for s in matched[: request.spss]], "matched": len(matched)}
    out: dict[str, Any] = {
        "traceID": trimmed_hex(str(trace[0]["traceId"]).zfill(32)),
        "rootServiceName": _service(root) if root is not None else _NO_ROOT,
    }
    if root is not None and root.get("name"):
        out["rootTraceName"] = root["name"]
    if starts:
        out["startTimeUnixNano"] = str(min(starts) * 1000)
        duration_ms = (max(ends) - min(starts)) // 1000
        if duration_ms:
            out["durationMs"] = duration_ms
    out["spanSet"] = span_set
    out["spanSets"] = [span_set]
    return out


def search_response(
    traces: Sequence[Sequence[Span]], request: SearchRequest, inspected: int
) -> dict[str, Any]:
    """`GET /api/search`'s 200 body for the traces found (newest first, at most `limit`)."""
    found = [_trace_metadata(t, request) for t in traces if t][: request.limit]
    metrics: dict[str, Any] = {"completedJobs": 1, "totalJobs": 1}
    if inspected:
        metrics["inspectedTraces"] = inspected
    return {"traces": found, "metrics": metrics}
