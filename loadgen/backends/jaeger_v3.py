"""Jaeger api_v3 HTTP reader (`{base}/api/v3/...`, port 16686; Jaeger v2.x; shared/specs/
jaeger-api-v3-query_service*.openapi.yaml, jaeger-api-v3-gettrace-example.json).

- fetch: `GET /api/v3/traces/{32-hex id}` -> `{"result": OTLP TracesData}`. There is no batch
  endpoint, so ids are fetched one per request, under the engine's adaptive limit (from
  `concurrency`, up to `max_concurrency`: 32 by default; loadgen.backends._engine). An unknown
  id is MISSING only in Jaeger's own answer: 404 with the grpc-gateway style body `{"error": {"httpCode": 404,
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
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Unpack

import httpx

from loadgen.backends._common import is_v3_services
from loadgen.backends._engine import ByIdRoute, HttpReader, SearchRoute
from loadgen.backends._http import BackendOverrides, RequestFailed, json_body
from loadgen.backends._otlp import iter_searchable, traces_data_to_spans
from loadgen.backends.base import BackendError, BackendOptions, Span
from loadgen.backends.jaeger import base_path_hint, jaeger_services_problem, jaeger_unreachable

__all__ = ["JaegerV3Backend", "ParamStyle", "rfc3339_nanos"]

_RESULT = '{"result": TracesData}'
Searchable = tuple[Span, dict[str, str]]
"""A converted span and the attributes a tag search matches on it."""

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


# -- decoding (pure) -------------------------------------------------------------------------


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


def _is_not_found_answer(resp: httpx.Response, _tid: str) -> bool:
    return _is_not_found(json_body(resp))


def _result(body: Any) -> dict[str, Any] | None:
    """The TracesData of a `{"result": TracesData}` answer, else None."""
    result = body.get("result") if isinstance(body, dict) else None
    return result if isinstance(result, dict) else None


def _trace_spans(body: Any) -> list[Span] | None:
    result = _result(body)
    return None if result is None else traces_data_to_spans(result)


def _searchable(body: Any) -> list[Searchable] | None:
    result = _result(body)
    return None if result is None else list(iter_searchable(result))


class JaegerV3Backend(HttpReader):
    """Reads traces from Jaeger's api_v3 HTTP endpoints rooted at `base_url` (which may carry
    the query base path, e.g. `http://tracing.istio-system/jaeger`).

    `options` (BackendOptions; keyword overrides win) give credentials, TLS, timeouts, retries and
    `concurrency` (ids fetched at once at first; adaptive up to `max_concurrency` unless
    `adaptive=False`); `batch_size` only sets how often progress is reported
    (api_v3 has no batch endpoint).
    """

    name = "jaeger-v3"
    api_path = "/api/v3"
    by_id = ByIdRoute(
        label="/api/v3/traces/{id}",
        path=lambda tid: f"/traces/{tid.zfill(32)}",
        is_not_found=_is_not_found_answer,
        not_found_form='Jaeger\'s "No traces found" answer',
        decode=_trace_spans,
        form=_RESULT,
    )
    search_route = SearchRoute(
        who="Jaeger api_v3",
        label="/api/v3/traces",
        decode=_searchable,
        form=_RESULT,
        api="Jaeger query API",
        no_match=_is_not_found,
    )

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
        super().__init__(base_url, options, **overrides)
        # Settled on the first search when AUTO.
        self._style: ParamStyle | None = None if style is ParamStyle.AUTO else style

    @property
    def param_style(self) -> ParamStyle:
        """The parameter generation in use (AUTO until the first search settles it)."""
        return self._style or ParamStyle.AUTO

    def _unreachable(self, exc: RequestFailed) -> str:
        return jaeger_unreachable(self.url, exc)

    def _services_problem(self, resp: httpx.Response) -> str | None:
        """Why a `/api/v3/services` answer shows this is not a usable Jaeger api_v3, or None."""
        return jaeger_services_problem(
            resp,
            self._http,
            self.url,
            "/api/v3/services",
            accepts=is_v3_services,
            api="a Jaeger api_v3",
            question="Jaeger",
            form='{"services": [...]}',
            on_404=(
                f"this is not a Jaeger api_v3. {base_path_hint(self.url)} "
                f"A Jaeger without /api/v3 may still serve --backend jaeger:{self.url}"
            ),
        )

    def trace_route_hint(self) -> str:
        return f"{super().trace_route_hint()} {base_path_hint(self.url)}"

    # -- searching ---------------------------------------------------------------------------

    def _search(
        self, tags: dict[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[list[Span]]:
        """`GET /api/v3/traces` over [start_us, end_us] (see the module docstring for the two
        parameter generations and the client-side tag filter of the older one)."""
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
        return self._search_request(params)

    def _groups(self, resp: httpx.Response) -> dict[str, list[Searchable]]:
        """Converted spans per trace id (in answer order) from a search answer; {} for a 404 "No
        traces found"; BackendError for anything else that is not a TracesData."""
        groups: dict[str, list[Searchable]] = {}
        for span, searchable in self._search_answer(resp):
            groups.setdefault(span["traceId"], []).append((span, searchable))
        return groups

    def _search_snake(
        self, tags: Mapping[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[list[Span]]:
        if not tags:
            groups = self._groups(self._find(ParamStyle.SNAKE, tags, service, start_us, end_us, limit))
            return [[span for span, _ in group] for group in groups.values()][:limit]
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
