"""What one request of a header mode carries (pure data): the vocabulary `Sends` is written in.
Modes (`loadgen.mesh.modes`) are made of it; `loadgen.mesh.expect` derives Envoy's behaviour
from it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["B3Form", "Sends", "XridKind"]


class B3Form(StrEnum):
    MULTI = "multi"  # X-B3-TraceId / X-B3-SpanId / X-B3-ParentSpanId / X-B3-Sampled / X-B3-Flags
    SINGLE = "single"  # b3: {trace}-{span}[-{flag}[-{parent}]] or b3: {flag}


class XridKind(StrEnum):
    RANDOM = "random"  # a random UUIDv4
    CRAFTED = "crafted"  # a UUIDv4 whose first 8 hex digits decide Envoy's random sampling
    FORCED = "forced"  # a UUIDv4 with char 14 `a` (Envoy's "forced" trace reason)
    NON_UUID = "non_uuid"  # not a UUID, not hex: Envoy cannot sample on it
    NO_DASHES = "no_dashes"  # 32 hex digits (a UUID without dashes), crafted like CRAFTED


@dataclass(frozen=True)
class Sends:
    """What one request of a mode carries (the data the expectations are derived from)."""

    b3: B3Form | None = None
    b3_ids: bool = False  # trace id + span id
    b3_flag: str | None = None  # X-B3-Sampled / b3 flag sent: "1", "0", "d" or None
    trace_bits: int = 128
    b3_parent: bool = False  # X-B3-ParentSpanId / the b3 `-{parent}` suffix
    b3_debug_header: bool = False  # X-B3-Flags: 1
    b3_invalid_trace: bool = False  # an X-B3-TraceId Envoy cannot parse
    w3c: str | None = None  # traceparent flags "01" / "00"
    w3c_invalid: bool = False  # the traceparent's trace id is all zeros (invalid in W3C)
    tracestate: bool = False
    force_trace: bool = False  # x-envoy-force-trace: true
    client_trace_id: bool = False  # x-client-trace-id: <uuid>
    xrid: XridKind | None = None  # a client x-request-id
