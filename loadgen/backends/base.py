"""The trace-reader seam: one small interface every backend reader implements.

Whatever the backend (Zipkin, Jaeger `/api` or Jaeger `/api/v3`), a reader returns spans in the
**Zipkin v2 JSON shape** (https://zipkin.io/zipkin-api/#/default/post_spans), as plain dicts::

    {"traceId": "…", "id": "…", "parentId": "…", "kind": "SERVER", "name": "…",
     "timestamp": <epoch µs>, "duration": <µs>, "localEndpoint": {"serviceName": …},
     "remoteEndpoint": {…}, "annotations": [{"timestamp", "value"}], "tags": {str: str},
     "shared": true, "debug": false}

so the reconciler has one span model. Optional fields may be absent, exactly as in Zipkin JSON.

Build a reader from a `KIND:URL` spec with `loadgen.backends.factory.parse_backend_spec`; this
module knows no concrete reader.

Result keys are always `normalize_trace_id(id)` (loadgen.mesh.ids), the same form the ledger
and the collector use.

Outcome semantics the reconciler relies on:
- `FOUND`: the backend answered and holds at least one span of the trace.
- `MISSING`: the backend itself said it does not hold the trace: its own not-found answer (Zipkin's
  404 `<id> not found`, Jaeger's "trace not found" / "No traces found" bodies) or a well-formed
  batch answer without the trace. A 404 in any other form (a proxy's `404 page not found`, an HTML
  page) proves nothing about the trace and is `ERROR`.
- `ERROR`: the trace could not be queried (retries exhausted, 4xx, bad answer, invalid id). The
  reconciler reports it as *unknown*, never as *missing*: a backend outage is not span loss.
"""

from __future__ import annotations

import abc
import base64
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

from loadgen.mesh.ids import normalize_trace_id
from loadgen.redact import redact_url

__all__ = [
    "BackendError",
    "BackendOptions",
    "FetchStatus",
    "Fetched",
    "ProgressCallback",
    "QueryStats",
    "Span",
    "TraceBackend",
    "parse_headers",
    "redact_url",
]

Span = dict[str, Any]
"""One span in Zipkin v2 JSON shape."""

ProgressCallback = Callable[[int, int], None]
"""`on_progress(done_ids, total_ids)`, called on the caller's thread."""

T = TypeVar("T")

DEFAULT_MAX_CONCURRENCY_PER_ID = 32
"""Adaptive limit's default bound for readers asking one id per request (Tempo, Jaeger api_v3)."""
DEFAULT_MAX_CONCURRENCY_BATCHED = 8
"""Adaptive limit's default bound for batched readers (Zipkin traceMany, Jaeger multi-get)."""

REDUCED_CHUNK_IDS = 1000
"""Ids per `fetch_many` call in the default `TraceBackend.fetch_reduced`."""


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
    partial: bool = False
    """FOUND, but the backend itself says these are not all its spans (Tempo's `PARTIAL`
    status: the trace was cut at a size limit): never counted complete."""


@dataclass(frozen=True)
class QueryStats:
    """How a reader's queries went, cumulative over its session (`TraceBackend.query_stats`).

    Counts are request attempts: a retried request counts once per attempt."""

    requests: int
    """Request attempts sent (fetches and searches; not `check()`'s probe)."""
    throttled: int
    """Answers 429 or 503: the backend asked to slow down."""
    server_errors: int
    """Answers 500, 502 or 504."""
    transport_errors: int
    """Attempts without an answer: timeouts, connection errors."""
    busy_s: float
    """Wall seconds spent inside fetches and searches (overlapping calls counted once), retry
    waits included."""
    qps: float | None
    """Queries per second achieved: requests / busy_s; None when no request was sent."""
    concurrency: int
    """The limit on requests in flight now."""
    lowest_concurrency: int
    """The lowest limit used (the start until the backend pushed back)."""
    highest_concurrency: int
    """The highest limit used."""
    max_concurrency: int
    """The bound the limit may grow to (equal to the start when not adaptive)."""
    adaptive: bool
    """False: the limit was fixed at BackendOptions.concurrency."""


class BackendError(Exception):
    """The backend is unreachable or misconfigured; the message says what to do.

    Raised by `check()`, `check_trace_route()` and `search()`. `fetch_many()` never raises it
    for a failed request: it records `FetchStatus.ERROR` per id instead, so partial answers stay
    usable.
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

    def check_trace_route(self) -> None:
        """Preflight of the fetch-by-id route: GET one random, well-formed trace id that cannot
        exist, which must come back as the backend's own not-found answer (MISSING). Anything else
        (a proxy's 404, an HTML page, a 5xx, a timeout) raises BackendError with a one-line message
        naming the answer's status and content type: with such a route every trace would be
        *unknown*, and before this check an ordinary 404 was mistaken for span loss.

        Built on `fetch_many`, so every reader whose `fetch_many` keeps the MISSING contract (see
        the module docstring) gets it as is; readers override `trace_route_hint` to add advice."""
        probe = _unknown_trace_id()
        fetched = self.fetch_many([probe]).get(probe)
        if fetched is not None and fetched.status is FetchStatus.MISSING:
            return
        if fetched is None:
            reason = "no answer for it"
        elif fetched.status is FetchStatus.FOUND:
            reason = f"{len(fetched.spans)} span(s) for it, though it cannot exist"
        else:
            reason = fetched.error or "an error"
        raise BackendError(
            f"{self.name} at {self.url} does not answer an unknown trace id ({probe}) with its own "
            f"not-found answer: {reason}. {self.trace_route_hint()}"
        )

    def query_stats(self) -> QueryStats | None:
        """How this reader's queries went so far (see QueryStats), or None when the reader does
        not count them (the default)."""
        return None

    def none_found_problem(self, sampled: int) -> str | None:
        """Why finding none of `sampled` traces known to be sampled (the probe's own) says more
        about the reader's settings than about the mesh, or None (the default: then it is a
        measurement, 100 % loss, and the run goes on to report it). Tempo: a wrong tenant."""
        return None

    def trace_route_hint(self) -> str:
        """What to check when `check_trace_route` fails."""
        return (
            "A proxy or ingress in front of the backend may route only some paths; "
            "check the base path / tenant."
        )

    @abc.abstractmethod
    def fetch_many(
        self,
        trace_ids: Sequence[str],
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Fetched]:
        """Fetch traces by id. Keys: every distinct `normalize_trace_id(id)`. Never raises for
        backend failures: those ids are `FetchStatus.ERROR`."""

    def fetch_reduced(
        self,
        trace_ids: Sequence[str],
        reduce: Callable[[Fetched], T],
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, T]:
        """`fetch_many` with every answer passed through `reduce` as soon as it is decoded, so
        that the raw spans of a large read-back are never all in memory at once: only the reduced
        values (e.g. `loadgen.analysis.reconcile.TraceObservation`) are kept. Same keys and errors as
        `fetch_many`; `reduce` may run on a reader's worker thread.

        This default asks `fetch_many` for `REDUCED_CHUNK_IDS` ids at a time; the readers here
        reduce each batched answer as it arrives instead."""
        unique = list(dict.fromkeys(normalize_trace_id(t) for t in trace_ids))
        total = len(unique)
        out: dict[str, T] = {}
        for start in range(0, total, REDUCED_CHUNK_IDS):
            chunk = unique[start : start + REDUCED_CHUNK_IDS]
            progress = None if on_progress is None else _offset_progress(on_progress, start, total)
            out.update({tid: reduce(fetched) for tid, fetched in self.fetch_many(chunk, progress).items()})
        return out

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"  # url is already redacted

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _offset_progress(on_progress: ProgressCallback, before: int, total: int) -> ProgressCallback:
    """Progress within one chunk, reported as progress of the whole."""
    return lambda done, _chunk_total: on_progress(before + done, total)


def _unknown_trace_id() -> str:
    """A random 128-bit trace id (32 lowercase hex, non-zero high half so no reader shortens it):
    well-formed, and with odds of about n / 2**128 of naming one of n traces that exist."""
    while True:
        tid = secrets.token_hex(16)
        if tid[:16] != "0" * 16:
            return tid


# -- options shared by every reader ------------------------------------------------------------

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
# Header names whose values are credentials: scrubbed from messages, masked in repr().
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|key|cookie|password|session", re.IGNORECASE)
# Shorter "secrets" would scrub ordinary text (a header value "1" must not blank every 1).
_MIN_SECRET_LEN = 4


@dataclass(frozen=True)
class BackendOptions:
    """How every reader talks to its backend: credentials, TLS, timeouts, retries, parallelism.

    Precedence is the caller's: `BackendOptions.from_env(os.environ).merged(flags)` gives
    flags > `LOADGEN_BACKEND_*` environment > these defaults. Secrets (`bearer_token`, the
    password, credential-looking header values) never appear in `repr()`; readers scrub them from
    every message they produce (see `secret_values`).
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra request headers, e.g. `{"X-Scope-OrgID": "tenant-1"}`."""
    bearer_token: str | None = None
    """Sent as `Authorization: Bearer <token>`."""
    basic_auth: tuple[str, str] | None = None
    """(user, password) for HTTP basic auth."""
    verify: bool | str = True
    """TLS: True (system CAs), False (no verification), or the path of a CA bundle (PEM)."""
    timeout_s: float = 10.0
    """Per request (connect, read, write, pool)."""
    retries: int = 3
    """Extra attempts after the first, on 5xx/429/timeouts/connection errors."""
    backoff_s: float = 0.2
    """Delay before retry n (0-based) is `backoff_s * 2**n`, or the server's Retry-After if longer."""
    concurrency: int = 4
    """Requests in flight at first; with `adaptive`, the limit then follows the backend's
    answers between 1 and `max_concurrency` (AIMD, loadgen.backends._adaptive); without, fixed."""
    max_concurrency: int | None = None
    """The highest limit `adaptive` may reach (also the connection pool size). None: the
    reader's default, DEFAULT_MAX_CONCURRENCY_PER_ID (one id per request) or
    DEFAULT_MAX_CONCURRENCY_BATCHED, or `concurrency` if higher."""
    adaptive: bool = True
    """False: exactly `concurrency` requests in flight, whatever the backend answers."""
    batch_size: int = 100
    """Trace ids per batched request (Zipkin traceMany, Jaeger multi-get); also the progress step."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", dict(self.headers))
        if (
            self.batch_size < 1
            or self.concurrency < 1
            or (self.max_concurrency is not None and self.max_concurrency < self.concurrency)
            or self.retries < 0
            or self.timeout_s <= 0
            or self.backoff_s < 0
        ):
            raise ValueError(
                "need batch_size >= 1, concurrency >= 1, max_concurrency >= concurrency, retries >= 0, "
                "timeout_s > 0, backoff_s >= 0"
            )
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("choose one of a bearer token and basic auth (user/password), not both")
        if (self.bearer_token is not None or self.basic_auth is not None) and any(
            name.lower() == "authorization" for name in self.headers
        ):
            raise ValueError("an Authorization header and a bearer token / basic auth conflict: choose one")
        if not isinstance(self.verify, bool) and not self.verify:
            raise ValueError("verify must be True, False or the path of a CA bundle")

    def __repr__(self) -> str:
        headers = {name: "***" for name in self.headers}
        token = None if self.bearer_token is None else "***"
        basic = None if self.basic_auth is None else (self.basic_auth[0], "***")
        return (
            f"BackendOptions(headers={headers!r}, bearer_token={token!r}, basic_auth={basic!r}, "
            f"verify={self.verify!r}, timeout_s={self.timeout_s!r}, retries={self.retries!r}, "
            f"backoff_s={self.backoff_s!r}, concurrency={self.concurrency!r}, "
            f"max_concurrency={self.max_concurrency!r}, adaptive={self.adaptive!r}, "
            f"batch_size={self.batch_size!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BackendOptions:
        """Options from `LOADGEN_BACKEND_*` variables (unset ones keep the defaults):

        - `LOADGEN_BACKEND_TOKEN`: bearer token.
        - `LOADGEN_BACKEND_USER` / `LOADGEN_BACKEND_PASSWORD`: basic auth.
        - `LOADGEN_BACKEND_HEADERS`: extra headers, `"Name: value; Name2: value2"`.
        - `LOADGEN_BACKEND_CA`: CA bundle (PEM) to verify the backend's certificate.
        - `LOADGEN_BACKEND_INSECURE=1`: do not verify TLS certificates.
        """
        token = environ.get("LOADGEN_BACKEND_TOKEN") or None
        user = environ.get("LOADGEN_BACKEND_USER") or None
        password = environ.get("LOADGEN_BACKEND_PASSWORD")
        if password and user is None:
            raise ValueError("LOADGEN_BACKEND_PASSWORD is set without LOADGEN_BACKEND_USER")
        headers = parse_headers(environ.get("LOADGEN_BACKEND_HEADERS", ""), "LOADGEN_BACKEND_HEADERS")
        ca = environ.get("LOADGEN_BACKEND_CA") or None
        insecure_raw = environ.get("LOADGEN_BACKEND_INSECURE", "").strip().lower()
        if insecure_raw not in _TRUE | _FALSE:
            raise ValueError(f"LOADGEN_BACKEND_INSECURE must be 1 or 0, got {insecure_raw!r}")
        insecure = insecure_raw in _TRUE
        if insecure and ca:
            raise ValueError("LOADGEN_BACKEND_INSECURE=1 and LOADGEN_BACKEND_CA contradict: choose one")
        verify: bool | str = False if insecure else (ca or True)
        return cls(
            headers=headers,
            bearer_token=token,
            basic_auth=(user, password or "") if user is not None else None,
            verify=verify,
        )

    def merged(self, flags: Mapping[str, Any]) -> BackendOptions:
        """These options overridden by `flags` (field name -> value; None means "not given").

        Headers merge, a flag header winning over one of the same name. Credentials given as
        flags replace the environment's of the other kind (a flag token drops an env user/password).
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(flags) - known)
        if unknown:
            raise TypeError(f"unknown backend option(s) {unknown}; known: {sorted(known)}")
        given = {name: value for name, value in flags.items() if value is not None}
        if "headers" in given:
            headers = {n: v for n, v in self.headers.items() if n.lower() not in _lower(given["headers"])}
            given["headers"] = {**headers, **given["headers"]}
        if "bearer_token" in given and "basic_auth" not in given:
            given["basic_auth"] = None
        if "basic_auth" in given and "bearer_token" not in given:
            given["bearer_token"] = None
        if "basic_auth" in given and given["basic_auth"] is not None:
            given["basic_auth"] = tuple(given["basic_auth"])
        return replace(self, **given)

    def concurrency_bound(self, batched: bool) -> int:
        """The highest limit on requests in flight: `concurrency` when not adaptive, else
        `max_concurrency`, or the default for the reader's kind (never below `concurrency`)."""
        if not self.adaptive:
            return self.concurrency
        if self.max_concurrency is not None:
            return self.max_concurrency
        default = DEFAULT_MAX_CONCURRENCY_BATCHED if batched else DEFAULT_MAX_CONCURRENCY_PER_ID
        return max(default, self.concurrency)

    def secret_values(self) -> tuple[str, ...]:
        """Every string that must not appear in a message: the token, the password, the basic
        credentials as sent on the wire, credential-looking header values (and their parts)."""
        found: set[str] = set()
        if self.bearer_token:
            found.add(self.bearer_token)
        if self.basic_auth is not None:
            user, password = self.basic_auth
            found.add(password)
            found.add(base64.b64encode(f"{user}:{password}".encode()).decode())
        for name, value in self.headers.items():
            if _SENSITIVE_HEADER.search(name):
                found.add(value)
                found.update(value.split())
        return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET_LEN), key=len, reverse=True))


def _lower(headers: Mapping[str, str]) -> set[str]:
    return {name.lower() for name in headers}


def parse_headers(text: str, source: str = "headers") -> dict[str, str]:
    """`"Name: value; Name2: value2"` -> dict. Values are never echoed in errors (they may be
    credentials)."""
    headers: dict[str, str] = {}
    for n, entry in enumerate(text.split(";"), start=1):
        if not entry.strip():
            continue
        name, sep, value = entry.partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name):
            raise ValueError(f"{source}: entry {n} is not of the form 'Name: value' (entries split on ';')")
        headers[name] = value.strip()
    return headers
