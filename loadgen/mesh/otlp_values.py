"""How OpenTelemetry values read as Zipkin v2 fields (pure): the one home of these rules for both
directions loadgen needs them, the collector's OTLP ingest (loadgen.stack.collector.otlp) and the
readers that turn a backend's OTLP/JSON into Zipkin-shaped spans (loadgen.backends._otlp).

- `ZIPKIN_KINDS`: OTLP `Span.SpanKind` numbers -> Zipkin kinds. INTERNAL (1) and UNSPECIFIED (0)
  have none: Zipkin reads a span without `kind` as local (OpenTelemetry specification, "OpenTelemetry
  to Zipkin Transformation", SpanKind).
- `tag_string`: an attribute value (a plain Python value: str, bool, int, float, bytes, list, dict
  or None) as a Zipkin string tag, per the specification's "AnyValue representation for non-OTLP
  protocols": strings as they are, booleans `true`/`false`, integers and finite doubles as JSON
  numbers (`format_double`: shortest round-trip digits, no exponent, no trailing ".0", as Go's
  OpenTelemetry Collector and Jaeger print them), NaN/Infinity/-Infinity as those words, bytes in
  base64, empty as "", arrays and maps as compact JSON whose elements follow the array-element
  rules (non-finite doubles and bytes as JSON strings, empty as null).
- `annotation_value`: a span event as a Zipkin annotation value: its name, or with attributes
  `{"name":{"key":"value",...}}` (the specification's Events rule, keys sorted, values as tags).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["ZIPKIN_KINDS", "annotation_value", "format_double", "tag_string"]

ZIPKIN_KINDS = {2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def format_double(value: float) -> str:
    """A float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` prints it, which is how the
    OpenTelemetry Collector's Zipkin translator and Jaeger turn a double attribute into a
    string tag: shortest round-trip digits, never an exponent, no trailing ".0"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _element(value: Any) -> Any:
    """An array element or map value as the JSON value the specification asks for."""
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE[repr(value)]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_element(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _element(v) for k, v in value.items()}
    return value


def tag_string(value: Any) -> str:
    """An attribute value as a Zipkin string tag (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_double(value) if math.isfinite(value) else _NON_FINITE[repr(value)]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (list, Mapping)):
        return json.dumps(_element(value), separators=(",", ":"), allow_nan=False)
    return str(value)


def annotation_value(name: str, attributes: Mapping[str, str]) -> str:
    """A span event as a Zipkin annotation value: its name alone, or `{"name":{attributes}}`."""
    if not attributes:
        return name
    return json.dumps({name: dict(attributes)}, separators=(",", ":"), sort_keys=True)
