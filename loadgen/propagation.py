"""Trace-context identifiers and header encoders (pure: no I/O).

References: B3 propagation (https://github.com/openzipkin/b3-propagation) and the Envoy
behaviour measured in shared/ENVOY-NOTES.md.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdef")


def normalize_trace_id(trace_id: str) -> str:
    """Canonical form used for every lookup: lowercase hex, a 128-bit id whose high half is
    zero collapses to its 16-character low half (what Zipkin does with `strictTraceId=false`
    padding), anything else unchanged."""
    tid = trace_id.strip().lower()
    if len(tid) == 32 and tid[:16] == "0" * 16:
        return tid[16:]
    return tid


def is_hex_id(value: str, lengths: tuple[int, ...] = (16, 32)) -> bool:
    return len(value) in lengths and all(c in _HEX for c in value)
