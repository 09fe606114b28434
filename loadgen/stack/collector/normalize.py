"""Validation and normalization of reported spans (pure): a decoded `POST /api/v2/spans` body in,
spans in Zipkin v2 JSON shape out (shared/specs/zipkin2-api.yaml), normalized the way Zipkin's own
decoder does it: lowercase ids, a 128-bit trace id with a zero high half collapsed to 64 bits
(`loadgen.mesh.ids.normalize_trace_id`), lowercase span and service names, zero/empty/false
fields omitted, unknown fields dropped, endpoint addresses parsed as Zipkin's `parseIp` does
(`ip_fields`: under their own family, dropped when not an address), annotations sorted without
duplicates. A batch is accepted or rejected whole, as Zipkin does.

Two forms of the same rules:
- `validate_spans`: decoded JSON (dicts and lists) in, normalized span dicts out, with an error
  message naming the span index and field. The reference, and the path for proto3 bodies,
  OTLP's mapped spans and anything the typed form refuses.
- `ZipkinSpan` (a msgspec Struct, with `Endpoint` and `Annotation`): decoding JSON into it checks
  the types and ranges and its `__post_init__` applies the same normalization, in one step and
  mostly in C; encoding it gives the normalized JSON the store keeps (`omit_defaults`: absent,
  zero, empty and false fields are left out, fields in the order above). The collector's POST
  path decodes with it (loadgen.stack.collector.decode.decode_json_spans) and falls back to
  `validate_spans` for any body it refuses, so what is accepted, how it is normalized and every
  error message stay the reference's (tests/unit/test_collector_store.py checks the two agree).

This is the collector's hot path (every span of every POST): error messages are formatted only on
failure (building them for every field of every span was a third of validation's cost,
bench/collector_ingest.py), and each helper is called only for a field that is present.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from loadgen.mesh.ids import is_hex_id, normalize_trace_id

__all__ = [
    "INT64_MAX",
    "SPAN_KINDS",
    "Annotation",
    "Endpoint",
    "Span",
    "SpanValidationError",
    "Trace",
    "ZipkinSpan",
    "to_structs",
    "validate_spans",
]

Span = dict[str, Any]
Trace = list[Span]

SPAN_KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})
INT64_MAX = 2**63 - 1
"""Zipkin's integer fields are int64 (Java long), and so are SQLite's integers."""
_ENDPOINT_STR_FIELDS = ("serviceName", "ipv4", "ipv6")
_STR_ONLY = frozenset({str})


class SpanValidationError(ValueError):
    """A reported span list that Zipkin would reject; the message names the index and field."""


def validate_spans(obj: object) -> list[Span]:
    """Check a decoded `POST /api/v2/spans` body and return its spans normalized.

    Raises SpanValidationError on the first problem; a batch is accepted or rejected whole, as
    Zipkin does. Idempotent: validating normalized spans returns equal spans.
    """
    if not isinstance(obj, list):
        raise SpanValidationError(f"body: expected a JSON list of spans, got {type(obj).__name__}")
    return [_normalize_span(raw, i) for i, raw in enumerate(obj)]


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python; JSON true is not a timestamp.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_uint(value: object, index: int, field: str) -> int:
    if not _is_int(value) or not 0 <= value <= INT64_MAX:  # type: ignore[operator]
        raise SpanValidationError(f"span[{index}]{field}: expected an integer in [0, 2^63), got {value!r}")
    return value  # type: ignore[return-value]


def _check_str(value: object, index: int, field: str) -> str:
    if not isinstance(value, str):
        raise SpanValidationError(f"span[{index}]{field}: expected a string, got {type(value).__name__}")
    return value


def _check_flag(value: object, index: int, field: str) -> bool:
    if not isinstance(value, bool):
        raise SpanValidationError(f"span[{index}]{field}: expected a boolean, got {value!r}")
    return value


def _normalize_span(raw: object, index: int) -> Span:
    """One reported span, checked and normalized: ids, kind, name and times here; endpoints,
    annotations, tags and flags in `_normalize_extras` (one call per span: this is the hot path)."""
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
        if not isinstance(kind, str) or kind not in SPAN_KINDS:  # a list or object is unhashable
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
    _normalize_extras(raw, index, span)
    return span


def _normalize_extras(raw: dict[str, Any], index: int, span: Span) -> None:
    """Endpoints, annotations, tags and the debug/shared flags of `raw`, checked, into `span`."""
    endpoint = raw.get("localEndpoint")
    if endpoint is not None and (endpoint := _normalize_endpoint(endpoint, index, ".localEndpoint")):
        span["localEndpoint"] = endpoint
    endpoint = raw.get("remoteEndpoint")
    if endpoint is not None and (endpoint := _normalize_endpoint(endpoint, index, ".remoteEndpoint")):
        span["remoteEndpoint"] = endpoint
    annotations = raw.get("annotations")
    if annotations is not None and (checked := _normalize_annotations(annotations, index)):
        span["annotations"] = checked
    tags = raw.get("tags")
    if tags is not None:
        # type() over the keys and values at C speed (Envoy sends ~16 tags per span); the slow
        # check finds the culprit for the message, or accepts str subclasses from Python callers.
        if not (
            type(tags) is dict
            and set(map(type, tags)) <= _STR_ONLY
            and set(map(type, tags.values())) <= _STR_ONLY
        ):
            _check_tags(tags, index)
        if tags:
            span["tags"] = dict(tags)
    flag = raw.get("debug")
    if flag is not None and _check_flag(flag, index, ".debug"):
        span["debug"] = True
    flag = raw.get("shared")
    if flag is not None and _check_flag(flag, index, ".shared"):
        span["shared"] = True


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
    if "ipv4" in endpoint or "ipv6" in endpoint:
        ipv4, ipv6 = ip_fields(endpoint.pop("ipv4", None), endpoint.pop("ipv6", None))
        endpoint.update({k: v for k, v in (("ipv4", ipv4), ("ipv6", ipv6)) if v})
    port = raw.get("port")
    if port is not None:
        port = _check_uint(port, index, f"{where}.port")
        if port > 65535:
            raise SpanValidationError(f"span[{index}]{where}.port: {port} is not a port number")
        if port:
            endpoint["port"] = port
    return endpoint or None


@functools.cache
def _ip(text: str) -> tuple[str | None, str | None]:
    """(ipv4, ipv6) of one address as Zipkin's `Endpoint.Builder.parseIp` reads it: an IPv4
    address, or an IPv4-mapped IPv6 one, is ipv4; any other IPv6 address is ipv6 (RFC 5952 text,
    as Zipkin writes it); anything else is neither. Cached: a mesh reports a few addresses."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None, None
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        return (str(mapped), None) if mapped is not None else (None, str(address))
    return str(address), None


def ip_fields(ipv4: str | None, ipv6: str | None) -> tuple[str | None, str | None]:
    """An endpoint's (ipv4, ipv6) as Zipkin keeps them: each given text parsed as an address
    (`_ip`), put under its own family whichever field it came in, and dropped when it is no IP
    address (Zipkin's JSON reader drops it silently, never failing the span). The response schema
    says `format: ipv4` / `ipv6`: a stored non-address would be answered back against it."""
    a4, a6 = _ip(ipv4) if ipv4 else (None, None)
    b4, b6 = _ip(ipv6) if ipv6 else (None, None)
    return a4 or b4, b6 or a6


def _normalize_annotations(annotations: object, index: int) -> list[dict[str, Any]]:
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
        if not (_is_int(ts) and 0 <= ts <= INT64_MAX):  # type: ignore[operator]
            _check_uint(ts, index, f".annotations[{i}].timestamp")
        if not isinstance(text, str):
            _check_str(text, index, f".annotations[{i}].value")
        checked.append({"timestamp": ts, "value": text})
    if len(checked) > 1:  # sorted and without duplicates, as Zipkin's Span keeps them
        checked = [
            {"timestamp": t, "value": v} for t, v in sorted({(a["timestamp"], a["value"]) for a in checked})
        ]
    return checked


def _check_tags(tags: object, index: int) -> None:
    """SpanValidationError unless `tags` is a map of strings to strings."""
    if not isinstance(tags, dict):
        raise SpanValidationError(f"span[{index}].tags: expected an object, got {type(tags).__name__}")
    for key, value in tags.items():
        _check_str(key, index, ".tags key")
        _check_str(value, index, f".tags[{key!r}]")


# --- the typed form ----------------------------------------------------------------------------

_UInt64 = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
_Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
# After the 17..31 -> 32 padding only these lengths are left; checked here, not with Meta's
# `pattern` (re.search: its `$` also matches before a trailing newline).
_TRACE_ID = re.compile(r"[0-9a-fA-F]{16}(?:[0-9a-fA-F]{16})?")
_SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")
_ZERO_HIGH = "0" * 16


class Endpoint(msgspec.Struct, omit_defaults=True, gc=False):
    """`localEndpoint` / `remoteEndpoint`: empty strings and port 0 are absent; the service name
    is lowercased (Zipkin's lookup label)."""

    serviceName: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    port: _Port | None = None

    def __post_init__(self) -> None:
        if self.serviceName is not None:
            self.serviceName = self.serviceName.lower() or None
        if self.ipv4 or self.ipv6:
            self.ipv4, self.ipv6 = ip_fields(self.ipv4, self.ipv6)
        else:  # empty strings are absent
            self.ipv4 = self.ipv6 = None
        if self.port == 0:
            self.port = None


class Annotation(msgspec.Struct, gc=False):
    timestamp: _UInt64
    value: str


def _empty(endpoint: Endpoint) -> bool:
    return (
        endpoint.serviceName is None
        and endpoint.ipv4 is None
        and endpoint.ipv6 is None
        and endpoint.port is None
    )


class ZipkinSpan(msgspec.Struct, omit_defaults=True, gc=False):
    """One span normalized as `validate_spans` does it (see the module docstring). Decode JSON
    into it with msgspec (types and ranges checked; a ValueError here becomes msgspec's
    ValidationError); constructed in Python, `__post_init__` normalizes but types are not
    checked, so code that builds one by hand must pass validated values."""

    traceId: str
    id: str
    parentId: str | None = None
    kind: Literal["CLIENT", "SERVER", "PRODUCER", "CONSUMER"] | None = None
    name: str | None = None
    timestamp: _UInt64 | None = None
    duration: _UInt64 | None = None
    localEndpoint: Endpoint | None = None
    remoteEndpoint: Endpoint | None = None
    annotations: list[Annotation] | None = None
    tags: dict[str, str] | None = None
    debug: bool | None = None
    shared: bool | None = None

    def __post_init__(self) -> None:
        trace_id = self.traceId
        if 16 < len(trace_id) < 32:
            trace_id = trace_id.rjust(32, "0")
        if _TRACE_ID.fullmatch(trace_id) is None:
            raise ValueError("traceId: expected 16 to 32 hex characters")
        trace_id = trace_id.lower()
        self.traceId = trace_id[16:] if len(trace_id) == 32 and trace_id.startswith(_ZERO_HIGH) else trace_id
        if _SPAN_ID.fullmatch(self.id) is None:
            raise ValueError("id: expected 16 hex characters")
        self.id = self.id.lower()
        parent = self.parentId
        if parent is not None:
            if _SPAN_ID.fullmatch(parent) is None:
                raise ValueError("parentId: expected 16 hex characters")
            self.parentId = parent.lower() if parent != _ZERO_HIGH else None
        if self.name is not None:
            self.name = self.name.lower() or None
        if self.timestamp == 0:
            self.timestamp = None
        if self.duration == 0:
            self.duration = None
        self._post_init_extras()

    def _post_init_extras(self) -> None:
        if self.localEndpoint is not None and _empty(self.localEndpoint):
            self.localEndpoint = None
        if self.remoteEndpoint is not None and _empty(self.remoteEndpoint):
            self.remoteEndpoint = None
        if not self.annotations:
            self.annotations = None
        elif len(self.annotations) > 1:  # sorted and without duplicates, as Zipkin's Span keeps them
            unique = {(a.timestamp, a.value): a for a in self.annotations}
            self.annotations = [unique[key] for key in sorted(unique)]
        if not self.tags:
            self.tags = None
        if not self.debug:
            self.debug = None
        if not self.shared:
            self.shared = None


def to_structs(spans: Sequence[Span]) -> list[ZipkinSpan]:
    """Spans that `validate_spans` returned, in the typed form (msgspec checks them again, which
    cannot fail for them)."""
    return msgspec.convert(spans, list[ZipkinSpan])
