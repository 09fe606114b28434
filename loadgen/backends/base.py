"""The trace-reader seam: one small interface every backend reader implements.

Whatever the backend (Zipkin, later Jaeger `/api` and `/api/v3`), a reader returns spans in the
**Zipkin v2 JSON shape** (https://zipkin.io/zipkin-api/#/default/post_spans), as plain dicts::

    {"traceId": "…", "id": "…", "parentId": "…", "kind": "SERVER", "name": "…",
     "timestamp": <epoch µs>, "duration": <µs>, "localEndpoint": {"serviceName": …},
     "remoteEndpoint": {…}, "annotations": [{"timestamp", "value"}], "tags": {str: str},
     "shared": true, "debug": false}

so the reconciler has one span model. Optional fields may be absent, exactly as in Zipkin JSON.

Result keys are always `normalize_trace_id(id)` (loadgen.propagation), the same form the ledger
and the collector use.

Outcome semantics the reconciler relies on:
- `FOUND`: the backend answered and holds at least one span of the trace.
- `MISSING`: the backend answered successfully and the trace was not in the answer.
- `ERROR`: the trace could not be queried (retries exhausted, 4xx, bad answer, invalid id). The
  reconciler reports it as *unknown*, never as *missing*: a backend outage is not span loss.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

__all__ = [
    "SUPPORTED_BACKEND_SPECS",
    "BackendError",
    "FetchStatus",
    "Fetched",
    "ProgressCallback",
    "Span",
    "TraceBackend",
    "parse_backend_spec",
    "redact_url",
]

Span = dict[str, Any]
"""One span in Zipkin v2 JSON shape."""

ProgressCallback = Callable[[int, int], None]
"""`on_progress(done_ids, total_ids)`, called on the caller's thread."""

_USERINFO = re.compile(r"//[^/?#\s]*@")

SUPPORTED_BACKEND_SPECS: tuple[str, ...] = ("zipkin:http[s]://HOST:9411[/PATH]",)


class FetchStatus(StrEnum):
    """What a reader learned about one trace id."""

    FOUND = "found"
    MISSING = "missing"
    ERROR = "error"


@dataclass(frozen=True)
class Fetched:
    """The answer for one trace id: its spans when FOUND, the reason when ERROR."""

    status: FetchStatus
    spans: tuple[Span, ...] = ()
    error: str | None = None


class BackendError(Exception):
    """The backend is unreachable or misconfigured; the message says what to do.

    Raised by `check()` and `search()`. `fetch_many()` never raises it for a failed request:
    it records `FetchStatus.ERROR` per id instead, so partial answers stay usable.
    """


class TraceBackend(abc.ABC):
    """A reader of traces from one tracing backend (Zipkin v2 spans out, whatever goes in)."""

    name: str
    """Short backend kind, e.g. "zipkin"."""
    url: str
    """Base URL for display, with any user:password removed."""

    @abc.abstractmethod
    def check(self) -> None:
        """Cheap reachability probe of the query API; raises BackendError with a hint."""

    @abc.abstractmethod
    def fetch_many(
        self,
        trace_ids: Sequence[str],
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Fetched]:
        """Fetch traces by id. Keys: every distinct `normalize_trace_id(id)`. Never raises for
        backend failures: those ids are `FetchStatus.ERROR`."""

    @abc.abstractmethod
    def search(
        self,
        *,
        tags: Mapping[str, str] | None,
        service: str | None,
        start_us: int,
        end_us: int,
        limit: int,
    ) -> list[list[Span]]:
        """Traces with a span matching all `tags` (and `service`) within [start_us, end_us]
        (epoch µs), at most `limit`. Raises BackendError when the query fails."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def redact_url(url: str) -> str:
    """`url` without its user:password part, safe for messages and logs."""
    return _USERINFO.sub("//***@", url)


def parse_backend_spec(spec: str, **options: Any) -> TraceBackend:
    """Build a reader from `KIND:URL`, e.g. `zipkin:http://zipkin.istio-system:9411`.

    `options` are passed to the reader's constructor (timeout_s, headers, auth, …).
    """
    kind, sep, url = spec.strip().partition(":")
    kind = kind.lower()
    if not sep or not url.startswith(("http://", "https://")) or kind not in ("zipkin",):
        supported = ", ".join(SUPPORTED_BACKEND_SPECS)
        raise ValueError(f"unsupported backend {redact_url(spec)!r}: expected one of {supported}")
    # Imported here so that base.py stays importable by every implementation.
    from loadgen.backends.zipkin import ZipkinBackend

    return ZipkinBackend(url, **options)
