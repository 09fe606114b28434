"""Pure decoder: OTLP/JSON `TracesData` (as Jaeger's api_v3 returns it under `"result"`; see
shared/specs/jaeger-api-v3-gettrace-example.json; and as Grafana Tempo returns it, under `"trace"`
in v2 and with the `resourceSpans` key renamed `batches` in v1, shared/specs/tempo/) -> spans in
Zipkin v2 JSON shape.

Field mapping (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding):
- `traceId`/`spanId`/`parentSpanId`: hex (base64, as some grpc-gateway versions and Tempo's
  gogo jsonpb print bytes, is accepted too) -> `traceId` (canonical form), `id`, `parentId`
  (absent when empty).
- `kind` 2..5 (or "SPAN_KIND_SERVER"…) -> SERVER, CLIENT, PRODUCER, CONSUMER. 1 (INTERNAL) and
  0 (UNSPECIFIED) have no Zipkin counterpart: no `kind`, which Zipkin reads as a local span.
- `startTimeUnixNano`/`endTimeUnixNano` (decimal strings) -> `timestamp`/`duration` in µs,
  truncated as Jaeger does.
- resource attribute `service.name` -> `localEndpoint.serviceName`.
- span attributes `{key, value: {stringValue|intValue|boolValue|doubleValue|bytesValue|arrayValue|
  kvlistValue}}` -> string tags (arrays and maps as compact JSON), as the OTel Collector's Zipkin
  translator prints them.
- `status.code` 1/2 -> tag `otel.status_code` OK/ERROR; an ERROR also sets `error` (the status
  message, else "true") unless the span already has that tag.
- events -> annotations: `{timestamp µs, value: name}`, or `{"name": {attrs}}` as JSON when the
  event has attributes (the OTel Zipkin exporter's form).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from typing import Any

from loadgen.backends.base import Span
from loadgen.mesh.ids import is_hex_id, normalize_trace_id
from loadgen.mesh.otlp_values import ZIPKIN_KINDS, annotation_value, tag_string

__all__ = ["SearchableSpan", "any_value_str", "otlp_id", "traces_data_to_spans"]

_KINDS = ZIPKIN_KINDS
_KIND_NAMES = {"SPAN_KIND_" + name: number for number, name in _KINDS.items()}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}

SearchableSpan = tuple[Span, dict[str, str]]
"""A converted span and every attribute a Jaeger tag search looks at (resource, span, events)."""


def otlp_id(value: Any, n_bytes: int) -> str | None:
    """An OTLP/JSON id as lowercase hex, or None when empty or malformed."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().lower()
    if is_hex_id(text, (2 * n_bytes,)):
        return text
    if n_bytes == 16 and is_hex_id(text, (16,)):  # a 64-bit trace id, not valid OTLP but clear
        return text.zfill(32)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == n_bytes else None


def _raw(value: Any) -> Any:
    """An AnyValue as a plain JSON-able value."""
    if not isinstance(value, Mapping):
        return None
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        try:
            return int(value["intValue"])  # int64 is a decimal string in OTLP/JSON
        except (TypeError, ValueError):
            return str(value["intValue"])
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return str(value["doubleValue"])
    if "bytesValue" in value:
        return str(value["bytesValue"])  # base64, as protobuf JSON prints bytes
    if "arrayValue" in value:
        items = (value["arrayValue"] or {}).get("values") or []
        return [_raw(v) for v in items]
    if "kvlistValue" in value:
        items = (value["kvlistValue"] or {}).get("values") or []
        return {str(kv.get("key")): _raw(kv.get("value")) for kv in items if isinstance(kv, Mapping)}
    return None


def any_value_str(value: Any) -> str:
    """An AnyValue as a Zipkin string tag (loadgen.mesh.otlp_values.tag_string)."""
    return tag_string(_raw(value))


def _attributes(items: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in items or ():
        if isinstance(kv, Mapping) and isinstance(kv.get("key"), str):
            out[kv["key"]] = any_value_str(kv.get("value"))
    return out


def _nanos(value: Any) -> int | None:
    try:
        nanos = int(value)
    except (TypeError, ValueError):
        return None
    return nanos if nanos > 0 else None


def _enum(value: Any, names: Mapping[str, int]) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return names.get(value, 0)
    return 0


def _annotation(event: Mapping[str, Any]) -> dict[str, Any] | None:
    nanos = _nanos(event.get("timeUnixNano"))
    name = str(event.get("name", ""))
    if nanos is None:
        return None
    return {"timestamp": nanos // 1000, "value": annotation_value(name, _attributes(event.get("attributes")))}


def _convert(span: Mapping[str, Any], service: str | None) -> SearchableSpan:
    trace_id = otlp_id(span.get("traceId"), 16)
    out: Span = {
        "traceId": normalize_trace_id(trace_id) if trace_id else "",
        "id": otlp_id(span.get("spanId"), 8) or "",
    }
    parent = otlp_id(span.get("parentSpanId"), 8)
    if parent is not None:
        out["parentId"] = parent
    kind = _KINDS.get(_enum(span.get("kind"), _KIND_NAMES))
    if kind is not None:
        out["kind"] = kind
    if isinstance(span.get("name"), str):
        out["name"] = span["name"]
    start, end = _nanos(span.get("startTimeUnixNano")), _nanos(span.get("endTimeUnixNano"))
    if start is not None:
        out["timestamp"] = start // 1000
        if end is not None and end >= start:
            out["duration"] = (end - start) // 1000
    if service:
        out["localEndpoint"] = {"serviceName": service}
    events = [e for e in span.get("events") or () if isinstance(e, Mapping)]
    annotations = [a for e in events if (a := _annotation(e)) is not None]
    if annotations:
        out["annotations"] = annotations
    tags = _attributes(span.get("attributes"))
    status = span.get("status")
    if not isinstance(status, Mapping):
        status = {}
    code = _enum(status.get("code"), _STATUS_NAMES)
    message = str(status.get("message") or "")
    if code == 1:
        tags["otel.status_code"] = "OK"
    elif code == 2:
        tags["otel.status_code"] = "ERROR"
        tags.setdefault("error", message or "true")
        if message:
            tags["otel.status_description"] = message
    if tags:
        out["tags"] = tags
    searchable = dict(tags)
    for event in events:
        searchable.update(_attributes(event.get("attributes")))
    return out, searchable


def iter_searchable(traces_data: Any) -> Iterator[SearchableSpan]:
    """Every span of an OTLP/JSON TracesData (its `resourceSpans`, or Tempo v1's `batches`),
    converted, with what a tag search can match (resource attributes under span attributes under
    event attributes)."""
    if not isinstance(traces_data, Mapping):
        return
    for resource_spans in traces_data.get("resourceSpans") or traces_data.get("batches") or ():
        if not isinstance(resource_spans, Mapping):
            continue
        resource = resource_spans.get("resource")
        resource_attrs = _attributes(resource.get("attributes") if isinstance(resource, Mapping) else None)
        service = resource_attrs.get("service.name") or None
        for scope_spans in resource_spans.get("scopeSpans") or ():
            if not isinstance(scope_spans, Mapping):
                continue
            for span in scope_spans.get("spans") or ():
                if isinstance(span, Mapping):
                    converted, searchable = _convert(span, service)
                    yield converted, {**resource_attrs, **searchable}


def traces_data_to_spans(traces_data: Any) -> list[Span]:
    """Every span of an OTLP/JSON TracesData in Zipkin v2 shape, in document order."""
    return [span for span, _ in iter_searchable(traces_data)]
