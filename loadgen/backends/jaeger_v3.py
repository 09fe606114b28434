"""Jaeger api_v3 HTTP reader (`{base}/api/v3/...`, port 16686; Jaeger v2.x; shared/specs/
jaeger-api-v3-query_service*.openapi.yaml, jaeger-api-v3-gettrace-example.json).

- fetch: `GET /api/v3/traces/{32-hex id}` -> `{"result": OTLP TracesData}`. There is no batch
  endpoint, so ids are fetched one per request, `concurrency` at a time. An unknown id is MISSING
  only in Jaeger's own answer: 404 with the grpc-gateway style body `{"error": {"httpCode": 404,
  "message": "No traces found"}}` (or "trace not found"), sent by Go's http.Error as text/plain
  (jaeger apiv3/http_gateway.go). Any other 404 (a wrong base path, a proxy routing only some
  paths) is ERROR: it says nothing about the trace.
- search: `GET /api/v3/traces` with the time window as RFC 3339 with nanoseconds (required by the
  server). Two parameter generations exist (`param_style`):
  - "camel" (v2.19+): `query.serviceName`, `query.startTimeMin`, `query.startTimeMax`,
    `query.searchDepth`, and `query.attributes` (a JSON string map) to filter by tag on the server.
  - "snake" (up to v2.18, still accepted later): `query.service_name`, `query.start_time_min`,
    `query.start_time_max`, `query.num_traces`. These servers have **no attribute filter on GET**,
    so tags are matched here, client side, on the returned spans (span, resource and event
    attributes, as Jaeger matches them); when a page of unfiltered traces is full the window is
    split in halves and searched again, so no matching trace hides behind the page limit.
  - "auto" (default): camel first; a 400 naming `query.start_time_min` (what v2.17/v2.18 answer to
    camelCase names) switches this reader to snake for the rest of the session.
  No match is a 404 `{"error": {"httpCode": 404, "message": "No traces found"}}`, read as [].
- check: `GET /api/v3/services` -> `{"services": [...]}`.

Spans come back in Zipkin v2 shape (see loadgen.backends._otlp for the field mapping).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar, Unpack

import httpx

from loadgen.backends._common import assign, fetch_all, unchanged
from loadgen.backends._http import (
    BackendOverrides,
    HttpClient,
    RequestFailed,
    json_body,
    resolve_options,
)
from loadgen.backends._otlp import iter_searchable, traces_data_to_spans
from loadgen.backends.base import (
    BackendError,
    BackendOptions,
    Fetched,
    FetchStatus,
    ProgressCallback,
    Span,
    TraceBackend,
    redact_url,
)
from loadgen.backends.jaeger import base_path_hint, receiver_hint

__all__ = ["JaegerV3Backend", "ParamStyle", "rfc3339_nanos"]

T = TypeVar("T")

# The smallest window the snake-case search splits down to before giving up (1 ms).
_MIN_SPLIT_WINDOW_US = 1_000
# Traces asked for per page when tags are matched client side (the page holds unfiltered traces).
_MIN_UNFILTERED_DEPTH = 100


class ParamStyle(StrEnum):
    """Which generation of `GET /api/v3/traces` query parameter names to send."""

    AUTO = "auto"
    CAMEL = "camel"  # Jaeger v2.19+
    SNAKE = "snake"  # Jaeger up to v2.18 (accepted as deprecated aliases later)


def rfc3339_nanos(epoch_ns: int) -> str:
    """`2019-10-08T08:34:21.059232000Z`: RFC 3339 with nine fractional digits, UTC, exact
    (integer arithmetic, no float rounding)."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


class JaegerV3Backend(TraceBackend):
    """Reads traces from Jaeger's api_v3 HTTP endpoints rooted at `base_url` (which may carry
    the query base path, e.g. `http://tracing.istio-system/jaeger`).

    `options` (BackendOptions; keyword overrides win) give credentials, TLS, timeouts, retries and
    `concurrency` (ids fetched at once); `batch_size` only sets how often progress is reported.
    """

    name = "jaeger-v3"

    def __init__(
        self,
        base_url: str,
        options: BackendOptions | None = None,
        *,
        param_style: ParamStyle | str = ParamStyle.AUTO,
        **overrides: Unpack[BackendOverrides],
    ) -> None:
        try:
            style = ParamStyle(param_style)
        except ValueError:
            raise ValueError(f"param_style must be one of auto, camel, snake; got {param_style!r}") from None
        base, self._options, auth = resolve_options(base_url, options, overrides)
        self.url = redact_url(base)
        self._http = HttpClient(f"{base}/api/v3", self._options, auth)
        # Settled on the first search when AUTO.
        self._style: ParamStyle | None = None if style is ParamStyle.AUTO else style

    @property
    def param_style(self) -> ParamStyle:
        """The parameter generation in use (AUTO until the first search settles it)."""
        return self._style or ParamStyle.AUTO

    # -- TraceBackend ------------------------------------------------------------------------

    def check(self) -> None:
        """`GET /api/v3/services` once, without retries; BackendError says what to fix."""
        try:
            resp = self._http.get_once("/services")
        except RequestFailed as exc:
            raise BackendError(
                f"cannot reach the Jaeger query API at {self.url}: {exc}. Is Jaeger running, and is "
                "this its query port (16686; Istio addon: http://tracing.istio-system/jaeger)?"
            ) from exc
        problem = self._services_problem(resp)
        if problem is not None:
            raise BackendError(problem)

    def fetch_many(
        self,
        trace_ids: Sequence[str],
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Fetched]:
        """Fetch traces by id, one request per id; see TraceBackend.fetch_many."""
        return self.fetch_reduced(trace_ids, unchanged, on_progress)

    def fetch_reduced(
        self,
        trace_ids: Sequence[str],
        reduce: Callable[[Fetched], T],
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, T]:
        """Each answer is reduced as soon as its request is decoded; see TraceBackend.fetch_reduced."""
        return fetch_all(
            trace_ids,
            lambda ids: {tid: self._fetch_one(tid) for tid in ids},
            reduce=reduce,
            unit_size=1,
            concurrency=self._options.concurrency,
            progress_step=self._options.batch_size,
            on_progress=on_progress,
            thread_name="jaeger-v3-fetch",
        )

    def search(
        self,
        *,
        tags: Mapping[str, str] | None,
        service: str | None,
        start_us: int,
        end_us: int,
        limit: int,
    ) -> list[list[Span]]:
        """`GET /api/v3/traces` over [start_us, end_us] (see the module docstring for the two
        parameter generations and the client-side tag filter of the older one)."""
        if end_us < start_us or limit < 1:
            raise ValueError(f"need start_us <= end_us and limit >= 1, got {start_us}, {end_us}, {limit}")
        tags = dict(tags or {})
        if self._style is ParamStyle.SNAKE:
            return self._search_snake(tags, service, start_us, end_us, limit)
        resp = self._find(ParamStyle.CAMEL, tags, service, start_us, end_us, limit)
        if self._style is None and resp.status_code == 400 and "start_time_min" in resp.text:
            self._style = ParamStyle.SNAKE
            return self._search_snake(tags, service, start_us, end_us, limit)
        groups = self._groups(resp)
        if self._style is None:
            self._style = ParamStyle.CAMEL
        return [[span for span, _ in group] for group in groups.values()][:limit]

    def close(self) -> None:
        self._http.close()

    # -- searching ---------------------------------------------------------------------------

    def _find(
        self,
        style: ParamStyle,
        tags: Mapping[str, str],
        service: str | None,
        start_us: int,
        end_us: int,
        depth: int,
    ) -> httpx.Response:
        # start_time_max is exclusive: one µs past end_us keeps the whole end_us microsecond in.
        lo, hi = rfc3339_nanos(start_us * 1000), rfc3339_nanos((end_us + 1) * 1000)
        params: dict[str, str | int]
        if style is ParamStyle.CAMEL:
            params = {"query.startTimeMin": lo, "query.startTimeMax": hi, "query.searchDepth": depth}
            if service:
                params["query.serviceName"] = service
            if tags:
                params["query.attributes"] = json.dumps(tags, separators=(",", ":"))
        else:
            params = {"query.start_time_min": lo, "query.start_time_max": hi, "query.num_traces": depth}
            if service:
                params["query.service_name"] = service
        try:
            return self._http.get("/traces", params)
        except RequestFailed as exc:
            raise BackendError(f"Jaeger api_v3 search at {self.url} failed: {exc}") from exc

    def _groups(self, resp: httpx.Response) -> dict[str, list[tuple[Span, dict[str, str]]]]:
        """Converted spans per trace id (in answer order) from a search answer; {} for a 404 "No
        traces found"; BackendError for anything else that is not a TracesData."""
        body = json_body(resp)
        if resp.status_code == 404:
            if _is_not_found(body):
                return {}
            raise BackendError(
                f"Jaeger api_v3 search at {self.url} failed: {self._http.problem(resp, '/api/v3/traces')}. "
                f"{base_path_hint(self.url)}"
            )
        if resp.status_code != 200:
            raise BackendError(
                f"Jaeger api_v3 search at {self.url} failed: {self._http.problem(resp, '/api/v3/traces')}"
            )
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise BackendError(
                f"Jaeger api_v3 search at {self.url} answered 200 but not with "
                '{"result": TracesData}: is the URL the Jaeger query API?'
            )
        groups: dict[str, list[tuple[Span, dict[str, str]]]] = {}
        for span, searchable in iter_searchable(result):
            groups.setdefault(span["traceId"], []).append((span, searchable))
        return groups

    def _search_snake(
        self, tags: Mapping[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[list[Span]]:
        if not tags:
            resp = self._find(ParamStyle.SNAKE, tags, service, start_us, end_us, limit)
            return [[span for span, _ in group] for group in self._groups(resp).values()][:limit]
        depth = max(limit, _MIN_UNFILTERED_DEPTH)
        found: dict[str, list[Span]] = {}
        windows = [(start_us, end_us)]
        while windows and len(found) < limit:
            lo, hi = windows.pop()
            groups = self._groups(self._find(ParamStyle.SNAKE, tags, service, lo, hi, depth))
            for tid, group in groups.items():
                if tid not in found and any(_matches(searchable, tags) for _, searchable in group):
                    found[tid] = [span for span, _ in group]
            if len(groups) >= depth:  # a full unfiltered page: matching traces may be beyond it
                if hi - lo < _MIN_SPLIT_WINDOW_US:
                    raise BackendError(
                        f"Jaeger at {self.url} cannot filter by tag on the server (api_v3 before "
                        f"v2.19) and more than {depth} traces started within {hi - lo + 1} µs: "
                        "narrow the search with a service name"
                    )
                mid = (lo + hi) // 2
                windows += [(lo, mid), (mid + 1, hi)]
        return list(found.values())[:limit]

    # -- fetching ----------------------------------------------------------------------------

    def _fetch_one(self, tid: str) -> Fetched:
        path = "/api/v3/traces/{id}"
        try:
            resp = self._http.get(f"/traces/{tid.zfill(32)}")
        except RequestFailed as exc:
            return Fetched(FetchStatus.ERROR, error=f"{path}: {exc}")
        body = json_body(resp)
        if resp.status_code == 404:
            if _is_not_found(body):
                return Fetched(FetchStatus.MISSING)
            error = f'{path}: {self._http.summary(resp)} is not Jaeger\'s "No traces found" answer'
            return Fetched(FetchStatus.ERROR, error=error)
        if resp.status_code != 200:
            return Fetched(FetchStatus.ERROR, error=self._http.problem(resp, path))
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            error = f'{path}: {self._http.summary(resp)} is not {{"result": TracesData}}'
            return Fetched(FetchStatus.ERROR, error=error)
        return assign([tid], traces_data_to_spans(result))[tid]

    def trace_route_hint(self) -> str:
        return f"{super().trace_route_hint()} {base_path_hint(self.url)}"

    def _services_problem(self, resp: httpx.Response) -> str | None:
        """Why a `/api/v3/services` answer shows this is not a usable Jaeger api_v3, or None."""
        where = f"{self.url}/api/v3/services"
        status = resp.status_code
        if status in (401, 403):
            return (
                f"{where} answered HTTP {status}: the backend wants credentials; pass a token "
                "(LOADGEN_BACKEND_TOKEN), user/password or headers for it"
            )
        if status == 404:
            return (
                f"{where} answered 404: this is not a Jaeger api_v3. {base_path_hint(self.url)} "
                f"A Jaeger without /api/v3 may still serve --backend jaeger:{self.url}"
            )
        if status in (202, 400, 405):
            return f"{where} answered HTTP {status}: {receiver_hint(self.url)}"
        if status != 200:
            return f"{where} answered {self._http.summary(resp)}: is this Jaeger?"
        body = json_body(resp)
        if isinstance(body, dict) and isinstance(body.get("services"), list):
            return None
        if isinstance(body, list) and all(isinstance(s, str) for s in body):
            return f"{where} answered like a Zipkin query API: use --backend zipkin:{self.url}"
        return (
            f'{where} answered 200 but not with {{"services": [...]}}: this is not a Jaeger api_v3 '
            "(a login page or proxy?)"
        )


def _is_not_found(body: Any) -> bool:
    """Jaeger's grpc-gateway style `{"error": {"httpCode": 404, "message": "No traces found"}}`
    ("trace not found" when the storage reports ErrTraceNotFound)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("httpCode", 404) != 404:
        return False
    message = str(error.get("message", "")).strip().lower()
    return message in ("no traces found", "trace not found")


def _matches(searchable: Mapping[str, str], tags: Mapping[str, str]) -> bool:
    return all(searchable.get(key) == value for key, value in tags.items())
