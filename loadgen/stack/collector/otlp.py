"""OTLP trace ingest, pure: `ExportTraceServiceRequest` bodies -> Zipkin v2 spans (normalized, in
the typed form the store takes: loadgen.stack.collector.normalize.ZipkinSpan), and the answer
bodies OTLP specifies. I/O (HTTP, gRPC, the store) is in server.py and otlp_grpc.py.

Decoding (OTLP specification, https://opentelemetry.io/docs/specs/otlp/): binary protobuf
(`application/x-protobuf`, and every gRPC body), or OTLP/JSON (`application/json`): proto3's JSON
mapping, except that `traceId`/`spanId`/`parentSpanId` (of spans and links) are case-insensitive
hex; unknown fields are ignored, 64-bit integers may be strings or numbers. A body that does not
decode, a JSON value of the wrong type, or a trace id that is not 16 non-zero bytes / a span id
that is not 8 non-zero bytes (a parent id: 8 bytes or empty) is `BadRequest` for the whole request.

Mapping to Zipkin v2 (OpenTelemetry specification, "OpenTelemetry to Zipkin Transformation" and
"OpenTelemetry Transformation to non-OTLP Formats"):
- ids: bytes -> lowercase hex `traceId`, `id`, `parentId` (absent for a root).
- `localEndpoint.serviceName`: the resource's `service.name`, else `unknown_service` (the SDK's
  default resource); `kind`: SERVER/CLIENT/PRODUCER/CONSUMER, none for INTERNAL.
- `timestamp` = start ns // 1000, `duration` = (end - start) ns // 1000 (whole microseconds,
  absent when zero).
- tags, later ones winning: the resource's other attributes (`service.namespace` included), the
  scope's attributes, the span's attributes, `otel.scope.name`/`otel.scope.version` and their
  deprecated aliases `otel.library.name`/`otel.library.version`, `otel.dropped_attributes_count`
  / `otel.dropped_events_count` / `otel.dropped_links_count` when non-zero, and the status:
  `otel.status_code` OK or ERROR; for ERROR also `error` = the status message ("" when none),
  for the others an `error` tag of "false" is removed. Values as strings: loadgen.mesh.otlp_values.
- events -> annotations `{timestamp: time // 1000, value}` (`annotation_value`); events with no
  time are left out.
- `remoteEndpoint` of CLIENT and PRODUCER spans: the first attribute present of the
  specification's ranking (peer.service, server.address, net.peer.name, network.peer.address
  (+ .port), ...); an IP address fills ipv4/ipv6, anything else serviceName.
- trace state and links have no Zipkin mapping (the specification leaves them TBD): dropped.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from loadgen.mesh.otlp_values import ZIPKIN_KINDS, annotation_value, tag_string
from loadgen.stack.collector.decode import BadRequest, decode_json
from loadgen.stack.collector.normalize import Annotation, Endpoint, ZipkinSpan

__all__ = [
    "DEFAULT_SERVICE",
    "JSON_TYPE",
    "OTLP_TYPES",
    "PROTO_TYPE",
    "parse_json",
    "parse_proto",
    "request_to_spans",
    "request_to_structs",
    "status_body",
    "success_body",
]

PROTO_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"
OTLP_TYPES = frozenset({PROTO_TYPE, JSON_TYPE})
DEFAULT_SERVICE = "unknown_service"

_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})*")
_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})  # hex in OTLP/JSON, in every message
_STATUS_OK, _STATUS_ERROR = 1, 2
_CLIENT_KINDS = frozenset({3, 4})  # CLIENT, PRODUCER: Zipkin wants their remote endpoint
# The specification's ranking for remoteEndpoint: (attribute, its port attribute or "").
_REMOTE_RANKING = (
    ("peer.service", ""),
    ("server.address", ""),
    ("net.peer.name", ""),
    ("network.peer.address", "network.peer.port"),
    ("server.socket.domain", ""),
    ("server.socket.address", "server.socket.port"),
    ("net.sock.peer.name", ""),
    ("net.sock.peer.addr", "net.sock.peer.port"),
    ("peer.hostname", ""),
    ("peer.address", ""),
    ("db.name", ""),
)


# --- decoding ----------------------------------------------------------------------------------


def parse_proto(body: bytes) -> ExportTraceServiceRequest:
    """Binary protobuf -> ExportTraceServiceRequest, BadRequest when it does not decode."""
    try:
        request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(body)
        return request
    except (DecodeError, RecursionError, ValueError) as exc:
        raise BadRequest(f"malformed ExportTraceServiceRequest: {exc}") from exc


def _repeated(field: Any) -> bool:
    is_repeated = getattr(field, "is_repeated", None)  # protobuf >= 6; `label` before (gone in 7)
    return bool(is_repeated) if is_repeated is not None else bool(field.label == field.LABEL_REPEATED)


def _otlp_json_value(field: Any, value: Any, where: str) -> Any:
    """One field's JSON value, checked where json_format is lenient and rewritten where OTLP/JSON
    differs from proto3's JSON mapping: ids are hex (proto3: base64)."""
    if field.message_type is not None:
        return _otlp_json_message(value, field.message_type, where)
    if field.name in _ID_FIELDS and isinstance(value, str):
        if not _HEX_RE.fullmatch(value):
            raise BadRequest(f"{where}: expected hex, got {value[:40]!r}")
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    if field.enum_type is not None and isinstance(value, str) and value not in field.enum_type.values_by_name:
        # OTLP/JSON enums are integers; json_format ignores an unknown name with unknown fields.
        raise BadRequest(f"{where}: expected an integer enum value, got {value[:40]!r}")
    return value


def _otlp_json_message(value: Any, descriptor: Any, where: str) -> Any:
    """A JSON object for `descriptor`, with every nested message checked to be an object (a
    string there would be read by json_format as an object of its characters, all unknown)."""
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: expected an object, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None or item is None:
            out[key] = item  # unknown (ignored) or null (the default)
        elif _repeated(field) and isinstance(item, list):
            out[key] = [_otlp_json_value(field, v, f"{where}.{key}[{i}]") for i, v in enumerate(item)]
        else:
            out[key] = _otlp_json_value(field, item, f"{where}.{key}")
    return out


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON -> ExportTraceServiceRequest, BadRequest for malformed JSON, wrong types or ids
    that are not hex."""
    document = decode_json(body)
    request = ExportTraceServiceRequest()
    try:
        document = _otlp_json_message(document, request.DESCRIPTOR, "request")
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except RecursionError as exc:
        raise BadRequest("malformed OTLP/JSON: nested too deeply") from exc
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise BadRequest(f"malformed OTLP/JSON: {exc}") from exc
    return request


# --- answers ---------------------------------------------------------------------------------------


def success_body(media_type: str) -> bytes:
    """A full success: an ExportTraceServiceResponse with `partial_success` unset."""
    if media_type == JSON_TYPE:
        return b"{}"
    body: bytes = ExportTraceServiceResponse().SerializeToString()
    return body


def status_body(media_type: str, message: str) -> bytes:
    """The body of an OTLP/HTTP 4xx/5xx: a google.rpc.Status with `message`, in the request's
    encoding (binary protobuf unless it was JSON)."""
    status = status_pb2.Status(message=message)
    if media_type == JSON_TYPE:
        return json.dumps(json_format.MessageToDict(status), separators=(",", ":")).encode()
    body: bytes = status.SerializeToString()
    return body


# --- mapping ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """An AnyValue as a plain Python value (None when empty)."""
    which = value.WhichOneof("value")
    if which is None or which == "string_value_strindex":  # a profiles-only dictionary reference
        return None
    if which == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def _tags(attributes: Iterable[Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for kv in attributes:
        key = kv.key
        if key:
            value = kv.value
            # A non-empty string_value is the string case (a oneof): nearly every attribute, so
            # taken without the generic conversion. Anything else, "" included, goes through it.
            text = value.string_value
            tags[key] = text if text else tag_string(_plain(value))
    return tags


def _scope_names(scope: Any) -> dict[str, str]:
    """The instrumentation scope's name and version, under their names and deprecated aliases."""
    tags: dict[str, str] = {}
    if scope.name:
        tags["otel.scope.name"] = tags["otel.library.name"] = scope.name
    if scope.version:
        tags["otel.scope.version"] = tags["otel.library.version"] = scope.version
    return tags


def _id_hex(raw: bytes, size: int, at: tuple[int, int, int], field: str) -> str:
    """A trace id (16 bytes) or span id (8) as hex; BadRequest naming the span (formatted only
    then: this runs for every id of every span) unless it is `size` non-zero bytes."""
    if len(raw) != size or raw == bytes(size):
        got = f"{len(raw)} bytes" if raw != bytes(size) else "all zeros"
        where = "resourceSpans[{}].scopeSpans[{}].spans[{}]".format(*at)
        raise BadRequest(f"{where}.{field}: expected {size} non-zero bytes ({2 * size} hex), got {got}")
    return raw.hex()


def _parent_hex(raw: bytes, at: tuple[int, int, int]) -> str | None:
    """The parent span id as hex, None for a root (absent or all zeros: no parent either)."""
    return None if not raw or raw == bytes(8) else _id_hex(raw, 8, at, "parentSpanId")


@functools.lru_cache(maxsize=1024)
def _address(value: str) -> tuple[str, str]:
    """A remote endpoint's value as its Endpoint field: an IP address as ipv4/ipv6 (in its
    canonical text), anything else as serviceName. Cached: a mesh has few peers, and parsing is
    most of a CLIENT span's mapping otherwise."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "serviceName", value
    return ("ipv4" if address.version == 4 else "ipv6"), str(address)


def _remote_endpoint(tags: dict[str, str]) -> Endpoint | None:
    for name, port_name in _REMOTE_RANKING:
        value = tags.get(name)
        if not value:
            continue
        field, text = _address(value)
        if field == "ipv4":
            endpoint = Endpoint(ipv4=text)
        elif field == "ipv6":
            endpoint = Endpoint(ipv6=text)
        else:
            endpoint = Endpoint(serviceName=text)
        port = tags.get(port_name, "") if port_name else ""
        if port.isdigit() and 0 < int(port) < 65536:
            endpoint.port = int(port)
        return endpoint
    return None


def _status_tags(status: Any, tags: dict[str, str]) -> None:
    if status.code == _STATUS_ERROR:
        tags["otel.status_code"] = "ERROR"
        tags["error"] = status.message
        return
    if status.code == _STATUS_OK:
        tags["otel.status_code"] = "OK"
    if tags.get("error") == "false":
        del tags["error"]  # Zipkin reads any `error` tag as failed


def _span(span: Any, service: str, base_tags: dict[str, str], at: tuple[int, int, int]) -> ZipkinSpan:
    """One OTLP Span as a Zipkin v2 span; `base_tags`: resource and scope tags."""
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    tags = {**base_tags, **_tags(span.attributes)}
    remote = _remote_endpoint(tags) if span.kind in _CLIENT_KINDS else None
    annotations = [
        Annotation(event.time_unix_nano // 1000, annotation_value(event.name, _tags(event.attributes)))
        for event in span.events
        if event.time_unix_nano // 1000
    ]
    for name, count in (
        ("otel.dropped_attributes_count", span.dropped_attributes_count),
        ("otel.dropped_events_count", span.dropped_events_count),
        ("otel.dropped_links_count", span.dropped_links_count),
    ):
        if count:
            tags[name] = str(count)
    _status_tags(span.status, tags)
    # Every value is in range and of its type here (ids checked, times // 1000 of uint64 ns,
    # protobuf strings are valid UTF-8); ZipkinSpan's __post_init__ normalizes as for Zipkin JSON.
    return ZipkinSpan(
        traceId=_id_hex(span.trace_id, 16, at, "traceId"),
        id=_id_hex(span.span_id, 8, at, "spanId"),
        parentId=_parent_hex(span.parent_span_id, at),
        kind=ZIPKIN_KINDS.get(span.kind),  # type: ignore[arg-type]
        name=span.name or None,
        timestamp=start // 1000 or None,
        duration=(end - start) // 1000 or None if start and end > start else None,
        localEndpoint=Endpoint(serviceName=service),
        remoteEndpoint=remote,
        annotations=annotations or None,
        tags=tags or None,
    )


def request_to_structs(request: ExportTraceServiceRequest) -> list[ZipkinSpan]:
    """Every span of `request` as a normalized Zipkin v2 span (the typed form the store takes:
    nothing to validate again), in request order; BadRequest naming the first span with a
    malformed id."""
    spans: list[ZipkinSpan] = []
    for r, resource_spans in enumerate(request.resource_spans):
        resource_tags = _tags(resource_spans.resource.attributes)
        service = resource_tags.pop("service.name", "") or DEFAULT_SERVICE
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            # The scope's attributes go over the resource's; the span's attributes over both.
            base_tags = {**resource_tags, **_tags(scope_spans.scope.attributes)}
            scope_names = _scope_names(scope_spans.scope)
            for n, span in enumerate(scope_spans.spans):
                converted = _span(span, service, base_tags, (r, s, n))
                if scope_names:  # the scope's own name and version win over any span attribute
                    converted.tags = {**(converted.tags or {}), **scope_names}
                spans.append(converted)
    return spans


def request_to_spans(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """`request_to_structs` as Zipkin v2 JSON-shaped dicts (normalized: what the store keeps)."""
    spans: list[dict[str, Any]] = msgspec.to_builtins(request_to_structs(request))
    return spans
