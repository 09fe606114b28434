"""Transitional re-export of the names that lived here before issue 11 split this module into
loadgen.mesh.{ids, rule, sends, expect, modes, encode, echo}. New code imports from those."""

from __future__ import annotations

from loadgen.mesh.echo import UpstreamView, parse_b3_single, parse_echo, parse_traceparent, same_request_id
from loadgen.mesh.encode import DEFAULT_ENCODE_OPTIONS, EncodeOptions, Injection, encode
from loadgen.mesh.expect import DEFAULT_CONTEXT, Decision, ExpectationContext, Expected, expect
from loadgen.mesh.ids import (
    K6_LOCAL_CODE,
    K6_PREFIX,
    IdStyle,
    craft_request_id,
    forced_request_id,
    is_hex_id,
    k6_trace_id,
    k6_trace_time_ns,
    new_span_id,
    new_trace_id,
    non_uuid_request_id,
    normalize_trace_id,
    random_request_id,
)
from loadgen.mesh.modes import (
    DEFAULT_MIX,
    LEGACY_MODES,
    MODE_SPECS,
    HeaderMode,
    ModeSpec,
    format_mix,
    mode_spec,
    parse_mix,
)
from loadgen.mesh.rule import (
    XRID_TRACE_REASON,
    craft_head,
    envoy_random_sampled,
    sampling_threshold,
    xrid_decision,
)
from loadgen.mesh.sends import B3Form, Sends, XridKind

__all__ = [
    "DEFAULT_CONTEXT",
    "DEFAULT_ENCODE_OPTIONS",
    "DEFAULT_MIX",
    "K6_LOCAL_CODE",
    "K6_PREFIX",
    "LEGACY_MODES",
    "MODE_SPECS",
    "XRID_TRACE_REASON",
    "B3Form",
    "Decision",
    "EncodeOptions",
    "ExpectationContext",
    "Expected",
    "HeaderMode",
    "IdStyle",
    "Injection",
    "ModeSpec",
    "Sends",
    "UpstreamView",
    "XridKind",
    "craft_head",
    "craft_request_id",
    "encode",
    "envoy_random_sampled",
    "expect",
    "forced_request_id",
    "format_mix",
    "is_hex_id",
    "k6_trace_id",
    "k6_trace_time_ns",
    "mode_spec",
    "new_span_id",
    "new_trace_id",
    "non_uuid_request_id",
    "normalize_trace_id",
    "parse_b3_single",
    "parse_echo",
    "parse_mix",
    "parse_traceparent",
    "random_request_id",
    "same_request_id",
    "sampling_threshold",
    "xrid_decision",
]
