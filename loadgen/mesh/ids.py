"""Identifiers loadgen generates and compares (pure: no I/O): trace and span ids (random or
k6-style), the x-request-ids a mode sends, and the canonical form every trace-id lookup uses.

References: B3 propagation (https://github.com/openzipkin/b3-propagation), W3C Trace Context
(https://www.w3.org/TR/trace-context/), grafana/k6's tracing instrumentation.
"""

from __future__ import annotations

import random
import re
import uuid
from enum import StrEnum

from loadgen.mesh.rule import craft_head

__all__ = [
    "K6_LOCAL_CODE",
    "K6_PREFIX",
    "IdStyle",
    "craft_request_id",
    "forced_request_id",
    "is_hex_id",
    "k6_trace_id",
    "k6_trace_time_ns",
    "new_span_id",
    "new_trace_id",
    "non_uuid_request_id",
    "normalize_trace_id",
    "random_request_id",
]


def normalize_trace_id(trace_id: str) -> str:
    """Canonical form used for every lookup: lowercase hex, a 128-bit id whose high half is
    zero collapses to its 16-character low half (what Zipkin does with `strictTraceId=false`
    padding), anything else unchanged. An id already in that form is returned as is (the same
    object: a read-back keyed by 100k ids then holds each id once)."""
    tid = trace_id.strip().lower()
    if len(tid) == 32 and tid[:16] == "0" * 16:
        return tid[16:]
    return trace_id if tid == trace_id else tid


_HEX_RUN = re.compile(r"[0-9a-f]+")


def is_hex_id(value: str, lengths: tuple[int, ...] = (16, 32)) -> bool:
    # A regex match instead of a per-character loop: this runs for every id of every span the
    # collector accepts (it was 30 % of the collector's CPU in bench/collector_ingest.py).
    return len(value) in lengths and _HEX_RUN.fullmatch(value) is not None


# --- trace and span ids ---------------------------------------------------------------------


_HEX_FORMATS = {64: "016x", 128: "032x"}  # per request: not rebuilt for every id


def new_trace_id(rng: random.Random, bits: int = 128) -> str:
    """Random lowercase-hex trace id; never all zeros (invalid in B3)."""
    spec = _HEX_FORMATS.get(bits) or f"0{bits // 4}x"
    while True:
        value = rng.getrandbits(bits)
        if value:
            return format(value, spec)


def new_span_id(rng: random.Random) -> str:
    return new_trace_id(rng, 64)


class IdStyle(StrEnum):
    RANDOM = "random"  # every bit random (the default)
    K6 = "k6"  # grafana/k6's structured trace ids (see k6_trace_id)


K6_PREFIX = 0o756  # "Being 075 the ASCII code for 'K'" (k6 source)
K6_LOCAL_CODE = 33  # k6's code for a local (non-cloud) run; 12 is k6 Cloud


def _zigzag_varint(value: int) -> bytes:
    """Go's binary.PutVarint: zig-zag then unsigned LEB128 (7 bits per byte, low bits first)."""
    ux = (value << 1) ^ (value >> 63) if value < 0 else value << 1
    ux &= (1 << 64) - 1
    out = bytearray()
    while ux >= 0x80:
        out.append((ux & 0x7F) | 0x80)
        ux >>= 7
    out.append(ux)
    return bytes(out)


def k6_trace_id(rng: random.Random, unix_nanos: int, code: int = K6_LOCAL_CODE) -> str:
    """A 128-bit trace id laid out like k6's `http` tracing instrumentation
    (k6/experimental/tracing `newTraceID`): varint(0o756) ‖ varint(code) ‖ varint(unix time in
    ns) ‖ random bytes up to 16, each varint Go's zig-zag `PutVarint`. For a local run at a
    present-day time this is `dc0742` + 9 bytes of time + 4 random bytes; the time is readable
    back with `k6_trace_time_ns`, so the id tells when the request was generated."""
    head = _zigzag_varint(K6_PREFIX) + _zigzag_varint(code) + _zigzag_varint(unix_nanos)
    if len(head) >= 16:
        raise ValueError("time does not fit a k6 trace id")
    fill = 16 - len(head)
    return (head + rng.getrandbits(8 * fill).to_bytes(fill, "big")).hex()


def k6_trace_time_ns(trace_id: str) -> int | None:
    """The generation time (unix ns) of a k6-style trace id, None if it is not one."""
    try:
        data = bytes.fromhex(trace_id)
    except ValueError:
        return None
    values: list[int] = []
    pos = 0
    for _ in range(3):
        shift, ux = 0, 0
        while True:
            if pos >= len(data) or shift > 63:
                return None
            byte = data[pos]
            pos += 1
            ux |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append((ux >> 1) ^ -(ux & 1))
    if values[0] != K6_PREFIX or values[1] not in (K6_LOCAL_CODE, 12):
        return None
    return values[2]


# --- x-request-ids ---------------------------------------------------------------------------


def random_request_id(rng: random.Random) -> str:
    """A random UUIDv4 string (version nibble at char 14 is `4`, Envoy's "not traced" mark)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def craft_request_id(rng: random.Random, percent: float, sampled: bool, *, dashes: bool = True) -> str:
    """A UUIDv4-shaped x-request-id that Envoy samples (or not) at `percent`: its first 8 hex
    digits are `craft_head`, the rest random. `dashes=False` gives the 32-hex form."""
    rid = f"{craft_head(rng, percent, sampled):08x}" + random_request_id(rng)[8:]
    return rid if dashes else rid.replace("-", "")


def non_uuid_request_id(rng: random.Random) -> str:
    """An x-request-id Envoy cannot sample on (not hex in its first 8 characters)."""
    return "loadgen-" + "".join(rng.choice("ghijklmnopqrstuvwxyz") for _ in range(16))


def forced_request_id(rng: random.Random) -> str:
    """A UUID with char 14 set to `a`: Envoy's "forced" trace reason (pack_trace_reason)."""
    rid = random_request_id(rng)
    return rid[:14] + "a" + rid[15:]
