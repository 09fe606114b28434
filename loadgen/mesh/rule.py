"""Envoy's x-request-id sampling rule (pure), measured in shared/ENVOY-NOTES.md:

    sampled  <=>  int(xrid[0:8], 16) % 10000  <  int(10000 * (p / 100.0))

and the mark Envoy writes into character 14 of the x-request-id it forwards.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable

__all__ = [
    "XRID_TRACE_REASON",
    "craft_head",
    "envoy_random_sampled",
    "random_sampler",
    "sampling_threshold",
    "xrid_decision",
]

#: Eight hex digits at the start of an id (what `int(head, 16)` may read: no sign, space, `0x`, `_`).
_HEAD = re.compile(r"[0-9a-fA-F]{8}").match
_UINT32_MAX = 0xFFFFFFFF


def sampling_threshold(percent: float) -> int:
    """Envoy's numerator over 10000 for a `random_sampling` percent (ProtobufPercentHelper::
    convertPercent: `uint64_t(10000 * (percent / 100.0))`, truncated: 33.33 % -> 3332). The float
    rounding of that exact expression decides the boundary: 0.29 % -> 28, not 29."""
    return int(10000 * (percent / 100.0))


def _below(request_id: str, threshold: int) -> bool | None:
    """The rule's comparison against an already computed threshold (None: no 8 hex digits)."""
    if _HEAD(request_id) is None:
        return None
    return int(request_id[:8], 16) % 10000 < threshold


def envoy_random_sampled(request_id: str, percent: float) -> bool | None:
    """Envoy's random-sampling rule on an x-request-id UUID (measured, shared/ENVOY-NOTES.md):
    sampled <=> int(xrid[0:8], 16) % 10000 < int(10000 * (percent / 100.0)). None if unparsable."""
    return _below(request_id, sampling_threshold(percent))


def random_sampler(percent: float) -> Callable[[str], bool | None]:
    """`envoy_random_sampled(request_id, percent)` as a function of the id alone, for deciding
    many ids at one percentage (the threshold is worked out once)."""
    return functools.partial(_below, threshold=sampling_threshold(percent))


def craft_head(rng: random.Random, percent: float, sampled: bool) -> int:
    """A random 32-bit value v with `(v % 10000 < threshold) == sampled`, uniform over the
    residues that give the wanted answer. ValueError when the percentage makes it impossible
    (sampled at 0 %, not sampled at 100 %)."""
    threshold = min(10000, max(0, sampling_threshold(percent)))
    low, high = (0, threshold) if sampled else (threshold, 10000)
    if low >= high:
        raise ValueError(f"no x-request-id is {'sampled' if sampled else 'not sampled'} at {percent} %")
    residue = rng.randrange(low, high)
    quotient = rng.randrange(0, (_UINT32_MAX - residue) // 10000 + 1)
    return quotient * 10000 + residue


# Character 14 of an Envoy-generated x-request-id carries the trace decision (pack_trace_reason).
XRID_TRACE_REASON = {"9": "sampled", "4": "not_sampled", "a": "forced", "b": "client_forced"}


def xrid_decision(request_id: str | None) -> bool | None:
    """The decision Envoy wrote into character 14 (None: no id, or no mark Envoy writes)."""
    if not request_id or len(request_id) < 15:
        return None
    reason = XRID_TRACE_REASON.get(request_id[14].lower())
    if reason is None:
        return None
    return reason != "not_sampled"
