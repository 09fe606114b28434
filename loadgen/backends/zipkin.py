"""Zipkin v2 query API reader (https://zipkin.io/zipkin-api/, shared/specs/zipkin2-api.yaml).

Traces are fetched in batches with `GET /api/v2/traceMany?traceIds=a,b,…` (a batch of one uses
`GET /api/v2/trace/{id}`), concurrently over a pooled client, with retries on transient failures
(loadgen.backends._http). Old servers without `/traceMany` (404) are read one id at a time for the
rest of the session, once a per-id answer has shown they are Zipkin.

An id is MISSING only when Zipkin itself says so: a 200 `/traceMany` list of traces without it, or
Zipkin's own answer to `GET /api/v2/trace/{id}` for an unknown id, which is (openzipkin/zipkin,
ZipkinQueryApiV2.getTrace) status 404, `Content-Type: text/*` (Armeria's ANY_TEXT_TYPE; Zipkin
2.12-2.16 sent `text/plain; charset=utf-8`) and the body `<id> not found`, the id normalized
(`Span.normalizeTraceId`: left-padded to 16 or 32 hex, a zero high half dropped). Any other answer,
a proxy's `404 page not found` included, is ERROR: it says nothing about the trace.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Unpack

import httpx

from loadgen.backends._common import all_error, assign, fetch_all, unchanged
from loadgen.backends._http import (
    BackendOverrides,
    HttpClient,
    RequestFailed,
    json_body,
    media_type,
    resolve_options,
)
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

__all__ = ["ZipkinBackend", "is_not_found_answer"]

T = TypeVar("T")

_JAEGER_HINT = "For Jaeger use --backend jaeger:URL"
# Zipkin's not-found answer (see the module docstring): its media types, and the body.
_NOT_FOUND_TYPES = frozenset({"text/*", "text/plain"})
_NOT_FOUND_BODY = re.compile(r"([0-9a-fA-F]{1,32}) not found")
_TRACE_ROUTE = "/trace/{id}"


class ZipkinBackend(TraceBackend):
    """Reads traces from a Zipkin v2 query API rooted at `base_url` (which may carry a path prefix,
    e.g. `http://host/zipkin` → `http://host/zipkin/api/v2/…`).

    `options` (BackendOptions; keyword overrides win) give credentials, TLS, timeouts, retries,
    concurrency and the batch size. Keep `batch_size` around 100: real Zipkin (Armeria) rejects
    request lines over ~4 KiB, and 100 × 33 characters is about 3.3 KiB.
    """

    name = "zipkin"

    def __init__(
        self,
        base_url: str,
        options: BackendOptions | None = None,
        **overrides: Unpack[BackendOverrides],
    ) -> None:
        base, self._options, auth = resolve_options(base_url, options, overrides)
        self.url = redact_url(base)
        self._http = HttpClient(f"{base}/api/v2", self._options, auth)
        # False once /traceMany answered 404 and /trace/{id} answered like Zipkin (a Zipkin older
        # than 2.17): one GET per id from then on. Plain bool stores: atomic, each set only once.
        self._trace_many = True
        # True once /traceMany answered a list: this server has it, so a later 404 is not "old".
        self._trace_many_seen = False

    # -- TraceBackend ------------------------------------------------------------------------

    def check(self) -> None:
        """`GET /api/v2/services` once, without retries; BackendError says what to fix."""
        try:
            resp = self._http.get_once("/services")
        except RequestFailed as exc:
            raise BackendError(
                f"cannot reach Zipkin at {self.url}: {exc}. Is the backend running? {_JAEGER_HINT}"
            ) from exc
        problem = self._services_problem(resp)
        if problem is not None:
            raise BackendError(problem)

    def fetch_many(
        self,
        trace_ids: Sequence[str],
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Fetched]:
        """Fetch traces by id (deduplicated, normalized); see TraceBackend.fetch_many."""
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
            self._fetch_batch,
            reduce=reduce,
            unit_size=self._options.batch_size,
            concurrency=self._options.concurrency,
            progress_step=1,  # after every batch
            on_progress=on_progress,
            thread_name="zipkin-fetch",
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
        """`GET /api/v2/traces`: `endTs`/`lookback` in ms (rounded outward so the whole
        [start_us, end_us] window is covered), tags as `annotationQuery` `k=v and k2=v2`."""
        if end_us < start_us or limit < 1:
            raise ValueError(f"need start_us <= end_us and limit >= 1, got {start_us}, {end_us}, {limit}")
        end_ms = -(-end_us // 1000)  # ceil
        params: dict[str, str | int] = {
            "endTs": end_ms,
            "lookback": end_ms - start_us // 1000,
            "limit": limit,
        }
        if service:
            params["serviceName"] = service
        if tags:
            params["annotationQuery"] = _annotation_query(tags)
        try:
            resp = self._http.get("/traces", params)
        except RequestFailed as exc:
            raise BackendError(f"Zipkin search at {self.url} failed: {exc}") from exc
        if resp.status_code != 200:
            raise BackendError(f"Zipkin search at {self.url} failed: {self._http.problem(resp, '/traces')}")
        traces = _parse_traces(resp)
        if traces is None:
            raise BackendError(
                f"Zipkin search at {self.url} answered 200 but not with a list of traces: "
                "is the URL the Zipkin query API?"
            )
        return traces

    def close(self) -> None:
        self._http.close()

    # -- fetching ----------------------------------------------------------------------------

    def _fetch_batch(self, ids: list[str]) -> dict[str, Fetched]:
        if len(ids) == 1 or not self._trace_many:
            return {tid: self._fetch_one(tid)[0] for tid in ids}
        try:
            resp = self._http.get("/traceMany", {"traceIds": ",".join(ids)})
        except RequestFailed as exc:
            return all_error(ids, f"/traceMany: {exc}")
        if resp.status_code == 404 and not self._trace_many_seen:
            # Zipkin before 2.17 has no /traceMany, and its 404 for an unknown route is a generic
            # one (Armeria's, or Spring's before 2.12) that no proxy's 404 can be told apart from:
            # evidence of nothing, so it never makes an id MISSING. Ask /trace/{id} per id instead,
            # whose not-found answer names the id and so proves itself; stop trying /traceMany for
            # the session only once one of those answers shows this is Zipkin. After /traceMany
            # has answered a list in this session, a 404 comes from something in between: ERROR.
            answers = {tid: self._fetch_one(tid) for tid in ids}
            if any(proven for _, proven in answers.values()):
                self._trace_many = False
            return {tid: fetched for tid, (fetched, _) in answers.items()}
        if resp.status_code != 200:
            return all_error(ids, self._http.problem(resp, "/traceMany"))
        traces = _parse_traces(resp)
        if traces is None:
            return all_error(ids, f"/traceMany: {self._http.summary(resp)} is not a JSON list of traces")
        self._trace_many_seen = True
        return assign(ids, (span for trace in traces for span in trace))

    def _fetch_one(self, tid: str) -> tuple[Fetched, bool]:
        """The answer for one id, and whether it proved the URL is a Zipkin query API."""
        try:
            resp = self._http.get(f"/trace/{tid}")
        except RequestFailed as exc:
            return Fetched(FetchStatus.ERROR, error=f"{_TRACE_ROUTE}: {exc}"), False
        if resp.status_code == 404:
            if is_not_found_answer(resp, tid):
                return Fetched(FetchStatus.MISSING), True
            error = f"{_TRACE_ROUTE}: {self._http.summary(resp)} is not Zipkin's not-found answer"
            return Fetched(FetchStatus.ERROR, error=error), False
        if resp.status_code != 200:
            return Fetched(FetchStatus.ERROR, error=self._http.problem(resp, _TRACE_ROUTE)), False
        spans = _parse_spans(json_body(resp))
        if spans is None:
            error = f"{_TRACE_ROUTE}: {self._http.summary(resp)} is not a JSON list of spans"
            return Fetched(FetchStatus.ERROR, error=error), False
        return assign([tid], spans)[tid], True

    def _services_problem(self, resp: httpx.Response) -> str | None:
        """Why a `/services` answer shows this is not a usable Zipkin query API, or None."""
        where = f"{self.url}/api/v2/services"
        status = resp.status_code
        if status in (401, 403):
            return (
                f"{where} answered HTTP {status}: the backend wants credentials; "
                "pass the right auth/headers for the backend"
            )
        if status == 404:
            return (
                f"{where} answered 404: this is not a Zipkin query API. Check the base path "
                "(e.g. http://zipkin:9411 or http://host/zipkin). Jaeger's Zipkin receiver on 9411 "
                f"only accepts spans; {_JAEGER_HINT} (its query port, e.g. 16686)"
            )
        if status != 200:
            return f"{where} answered {self._http.summary(resp)}: is this a Zipkin query API?"
        body = json_body(resp)
        if not isinstance(body, list) or not all(isinstance(s, str) for s in body):
            return (
                f"{where} answered 200 but not with a list of service names: this is not a Zipkin "
                "query API (a login page or proxy?)"
            )
        return None


# -- helpers (pure) --------------------------------------------------------------------------


def is_not_found_answer(resp: httpx.Response, trace_id: str) -> bool:
    """Whether `resp` is Zipkin's own answer to `GET /api/v2/trace/{trace_id}` for an unknown id:
    404, a text media type, and the body `<id> not found` naming the same id (compared as a
    number, so Zipkin's padding, shortening or case of it does not matter)."""
    if resp.status_code != 404 or media_type(resp) not in _NOT_FOUND_TYPES:
        return False
    match = _NOT_FOUND_BODY.fullmatch(resp.text.strip())
    return match is not None and int(match.group(1), 16) == int(trace_id, 16)


def _parse_spans(body: Any) -> list[Span] | None:
    if isinstance(body, list) and all(isinstance(span, dict) for span in body):
        return body
    return None


def _parse_traces(resp: httpx.Response) -> list[list[Span]] | None:
    body = json_body(resp)
    if not isinstance(body, list):
        return None
    traces: list[list[Span]] = []
    for trace in body:
        spans = _parse_spans(trace)
        if spans is None:
            return None
        traces.append(spans)
    return traces


def _annotation_query(tags: Mapping[str, str]) -> str:
    """`k=v and k2=v2`: Zipkin splits terms on " and " and each term on its first "="."""
    terms = []
    for key, value in tags.items():
        if not key or "=" in key or " and " in key or " and " in value:
            raise ValueError(f"tag {key!r}={value!r} cannot be expressed as a Zipkin annotationQuery term")
        terms.append(f"{key}={value}")
    return " and ".join(terms)
