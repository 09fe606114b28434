"""Pure decoder: Jaeger UI-model traces (the `/api/traces` JSON, internal/uimodel/model.go; see
shared/specs/jaeger-uimodel-trace-example.json) -> spans in Zipkin v2 JSON shape.

Field mapping:
- `traceID` -> `traceId` in loadgen's canonical form (Jaeger prints `%x%016x`, so a 128-bit id
  whose high half has leading zeros comes back with 17..31 characters: it is re-padded first).
- `spanID` -> `id`; the parent is the first CHILD_OF reference within the same trace, else the
  first FOLLOWS_FROM one (Jaeger's own `Span.ParentSpanID` rule) -> `parentId`.
- `operationName` -> `name`; `startTime`/`duration` (µs) -> `timestamp`/`duration`.
- `processes[processID].serviceName` -> `localEndpoint.serviceName`.
- typed tags (string, bool, int64, float64, binary) -> string tags, formatted as the OTel
  Collector's Zipkin translator would; the `span.kind` tag becomes `kind` (SERVER, CLIENT,
  PRODUCER, CONSUMER; "internal" means no kind, as in Zipkin) and leaves the tags.
- logs -> annotations, best effort: the `event` field's value, else the fields as JSON.
Process tags, warnings and flags have no Zipkin counterpart and are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from loadgen.backends._common import format_double
from loadgen.backends.base import Span
from loadgen.mesh.ids import normalize_trace_id

__all__ = ["jaeger_trace_id", "tag_value", "ui_trace_to_spans"]

_KINDS = {"server": "SERVER", "client": "CLIENT", "producer": "PRODUCER", "consumer": "CONSUMER"}


def jaeger_trace_id(raw: str) -> str:
    """A trace id as Jaeger prints it -> loadgen's canonical form."""
    tid = raw.strip().lower()
    if 16 < len(tid) < 32:
        tid = tid.zfill(32)
    elif len(tid) < 16:
        tid = tid.zfill(16)
    return normalize_trace_id(tid)


def tag_value(tag: Mapping[str, Any]) -> str:
    """One typed UI-model tag value as a Zipkin string tag."""
    kind = str(tag.get("type", "string")).lower()
    value = tag.get("value")
    if kind == "bool":
        if isinstance(value, str):
            return value.lower()
        return "true" if value else "false"
    if kind == "int64":
        # Jaeger sends ints beyond 2**53 as strings so JavaScript keeps every digit.
        try:
            return str(int(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)
    if kind == "float64":
        try:
            return format_double(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)
    # string, and binary (already base64 in the JSON, which is how Zipkin tools print bytes)
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _parent_id(span: Mapping[str, Any], trace_id: str) -> str | None:
    follows_from: str | None = None
    for ref in span.get("references") or ():
        if not isinstance(ref, Mapping) or not isinstance(ref.get("spanID"), str):
            continue
        ref_trace = ref.get("traceID")
        if isinstance(ref_trace, str) and jaeger_trace_id(ref_trace) != trace_id:
            continue
        if ref.get("refType") == "CHILD_OF":
            return str(ref["spanID"])
        if ref.get("refType") == "FOLLOWS_FROM" and follows_from is None:
            follows_from = str(ref["spanID"])
    return follows_from


def _annotation(log: Mapping[str, Any]) -> dict[str, Any] | None:
    fields = [f for f in log.get("fields") or () if isinstance(f, Mapping) and "key" in f]
    if not isinstance(log.get("timestamp"), int) or not fields:
        return None
    values = {str(f["key"]): tag_value(f) for f in fields}
    if "event" in values and len(values) == 1:
        value = values["event"]
    else:
        value = json.dumps(values, separators=(",", ":"), sort_keys=True)
    return {"timestamp": log["timestamp"], "value": value}


def ui_span_to_span(span: Mapping[str, Any], processes: Mapping[str, Any]) -> Span:
    """One UI-model span -> one Zipkin-shaped span (see the module docstring)."""
    trace_id = jaeger_trace_id(str(span.get("traceID", "")))
    out: Span = {"traceId": trace_id, "id": str(span.get("spanID", ""))}
    parent = _parent_id(span, trace_id)
    if parent is not None:
        out["parentId"] = parent
    tags: dict[str, str] = {}
    for tag in span.get("tags") or ():
        if isinstance(tag, Mapping) and isinstance(tag.get("key"), str):
            tags[tag["key"]] = tag_value(tag)
    kind = _KINDS.get(tags.pop("span.kind", "").lower())
    if kind is not None:
        out["kind"] = kind
    if isinstance(span.get("operationName"), str):
        out["name"] = span["operationName"]
    if isinstance(span.get("startTime"), int):
        out["timestamp"] = span["startTime"]
    if isinstance(span.get("duration"), int):
        out["duration"] = span["duration"]
    process = processes.get(str(span.get("processID", "")))
    service = process.get("serviceName") if isinstance(process, Mapping) else None
    if isinstance(service, str) and service:
        out["localEndpoint"] = {"serviceName": service}
    annotations = [a for log in span.get("logs") or () if (a := _annotation(log)) is not None]
    if annotations:
        out["annotations"] = annotations
    if tags:
        out["tags"] = tags
    return out


def ui_trace_to_spans(trace: Mapping[str, Any]) -> list[Span]:
    """Every span of one UI-model trace, in the order Jaeger sent them."""
    processes = trace.get("processes")
    if not isinstance(processes, Mapping):
        processes = {}
    return [ui_span_to_span(s, processes) for s in trace.get("spans") or () if isinstance(s, Mapping)]
