"""A hop of the mesh: a proxy a request crosses and the spans it leaves there (pure data).

Below both `stack/` (which knows the hops of the mesh it builds) and `analysis/` (which judges a
trace against them), so infrastructure never imports analysis.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Hop"]


class Hop(NamedTuple):
    """A proxy a request crosses, in call order, and the spans one sampled request leaves on it."""

    service: str  # Zipkin localEndpoint.serviceName
    spans: int
