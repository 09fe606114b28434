"""Span POST bodies as sent -> Zipkin v2 spans: inflating per Content-Encoding (bounded, so a
compression bomb is cut off), JSON, and zipkin.proto3. `decode_json_spans` decodes and validates
a JSON body in one step (typed spans, loadgen.stack.collector.normalize.ZipkinSpan); the others
return raw JSON-shaped values for `validate_spans`.

Failures are `BadRequest` (answer 400 with its message) or `TooLarge` (413); a proto3 field value
Zipkin would reject is a SpanValidationError, as for JSON.
"""

from __future__ import annotations

import ipaddress
import json
import zlib
from typing import Any

import msgspec

from loadgen.stack.collector import zipkin_pb2
from loadgen.stack.collector.normalize import SpanValidationError, ZipkinSpan, to_structs, validate_spans

__all__ = [
    "JSON_TYPES",
    "PROTO_TYPES",
    "SUPPORTED_ENCODINGS",
    "BadRequest",
    "TooLarge",
    "decode_json",
    "decode_json_spans",
    "decode_proto_spans",
    "inflate",
]

JSON_TYPES = frozenset({"application/json"})
PROTO_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
# Inflated by the handler (`inflate`), bounded by max_body_bytes, never by aiohttp: see start_server.
SUPPORTED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
_PROTO_KINDS = {1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}


class BadRequest(Exception):
    """Answer 400 with this message."""


class TooLarge(Exception):
    """Answer 413."""


# --- proto3 ------------------------------------------------------------------------------------


def _ip_text(raw: bytes, version: int, where: str) -> str:
    try:
        address = ipaddress.IPv4Address(raw) if version == 4 else ipaddress.IPv6Address(raw)
    except ValueError as exc:
        raise SpanValidationError(f"{where}: {exc}") from exc
    return str(address)


def _proto_endpoint(endpoint: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if endpoint.service_name:
        out["serviceName"] = endpoint.service_name
    if endpoint.ipv4:
        out["ipv4"] = _ip_text(endpoint.ipv4, 4, f"{where}.ipv4")
    if endpoint.ipv6:
        out["ipv6"] = _ip_text(endpoint.ipv6, 6, f"{where}.ipv6")
    if endpoint.port:
        out["port"] = endpoint.port
    return out


def decode_proto_spans(body: bytes) -> list[dict[str, Any]]:
    """`zipkin.proto3.ListOfSpans` bytes -> raw Zipkin v2 JSON-shaped dicts (not yet validated).

    proto3 cannot tell "absent" from zero/empty, so zero values map to absent fields.
    """
    try:
        message = zipkin_pb2.ListOfSpans.FromString(body)
    except Exception as exc:  # third-party decoder: any failure here means a bad body
        raise BadRequest(f"malformed zipkin.proto3.ListOfSpans: {exc}") from exc

    return [_proto_span(pspan, f"span[{i}]") for i, pspan in enumerate(message.spans)]


def _proto_span(pspan: Any, where: str) -> dict[str, Any]:
    """One `zipkin.proto3.Span` as a raw Zipkin v2 JSON-shaped dict; zero values are absent."""
    span: dict[str, Any] = {"traceId": pspan.trace_id.hex(), "id": pspan.id.hex()}
    if pspan.parent_id:
        span["parentId"] = pspan.parent_id.hex()
    if pspan.kind:
        kind = _PROTO_KINDS.get(pspan.kind)
        if kind is None:
            raise SpanValidationError(f"{where}.kind: unknown enum value {pspan.kind}")
        span["kind"] = kind
    if pspan.name:
        span["name"] = pspan.name
    if pspan.timestamp:
        span["timestamp"] = pspan.timestamp
    if pspan.duration:
        span["duration"] = pspan.duration
    if pspan.HasField("local_endpoint"):
        span["localEndpoint"] = _proto_endpoint(pspan.local_endpoint, f"{where}.localEndpoint")
    if pspan.HasField("remote_endpoint"):
        span["remoteEndpoint"] = _proto_endpoint(pspan.remote_endpoint, f"{where}.remoteEndpoint")
    if pspan.annotations:
        span["annotations"] = [{"timestamp": a.timestamp, "value": a.value} for a in pspan.annotations]
    if pspan.tags:
        span["tags"] = dict(pspan.tags)
    if pspan.debug:
        span["debug"] = True
    if pspan.shared:
        span["shared"] = True
    return span


def decode_json(body: bytes) -> object:
    try:
        return json.loads(body)  # bytes: UTF-8/16/32 detected per RFC 8259
    except (ValueError, RecursionError) as exc:  # JSONDecodeError/UnicodeDecodeError, deep nesting
        raise BadRequest(f"malformed JSON: {exc}") from exc


_SPANS_DECODER = msgspec.json.Decoder(list[ZipkinSpan])


def decode_json_spans(body: bytes) -> list[ZipkinSpan]:
    """A `POST /api/v2/spans` JSON body -> its spans, checked and normalized, in one step.

    msgspec decodes straight into `ZipkinSpan` (C speed; about a third of `json.loads` +
    `validate_spans` for Envoy's spans, bench/collector_ingest.py). Any body it refuses goes the
    reference way, `validate_spans(decode_json(body))`, so the answer is exactly the reference's:
    the same BadRequest / SpanValidationError message, or the spans it accepts (JSON msgspec does
    not read: UTF-16/32, a BOM, lone surrogates, NaN in an ignored field, a duplicate key whose
    first value is invalid)."""
    try:
        spans: list[ZipkinSpan] = _SPANS_DECODER.decode(body)
        return spans
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        pass
    return to_structs(validate_spans(decode_json(body)))


# --- Content-Encoding --------------------------------------------------------------------------


def _inflate_stream(raw: bytes, wbits: int, limit: int, name: str) -> bytes:
    out = bytearray()
    data = raw
    while True:  # gzip allows several members, one after the other
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))  # never more than limit + 1
        except zlib.error as exc:
            raise BadRequest(f"cannot read body: corrupt {name} stream: {exc}") from exc
        if len(out) > limit:
            raise TooLarge
        if not inflater.eof:
            raise BadRequest(f"cannot read body: truncated {name} stream")
        data = inflater.unused_data
        if wbits != 31 or not data:
            return bytes(out)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent, decoded per Content-Encoding: at most `limit` bytes (else TooLarge, so
    a compression bomb is cut off after limit + 1 bytes), BadRequest for a corrupt or truncated
    stream. HTTP's `deflate` is the zlib format; raw deflate, which some clients send, also works."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return _inflate_stream(body, 31, limit, "gzip")
    try:
        return _inflate_stream(body, 15, limit, "deflate")
    except BadRequest:
        return _inflate_stream(body, -15, limit, "deflate")
