"""Zipkin v2 query API reader (https://zipkin.io/zipkin-api/, shared/specs/zipkin2-api.yaml).

Traces are fetched in batches with `GET /api/v2/traceMany?traceIds=a,b,…` (a batch of one uses
`GET /api/v2/trace/{id}`), concurrently over a pooled `httpx.Client`, with retries on transient
failures. Old servers without `/traceMany` (404) are read one id at a time for the rest of the
session.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing
from typing import Any

import httpx

from loadgen.backends.base import (
    BackendError,
    Fetched,
    FetchStatus,
    ProgressCallback,
    Span,
    TraceBackend,
    redact_url,
)
from loadgen.propagation import is_hex_id, normalize_trace_id

__all__ = ["ZipkinBackend"]

# Transient answers worth retrying; every other status is final.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Cap on a server's Retry-After so a misbehaving proxy cannot stall a run.
_MAX_RETRY_AFTER_S = 30.0
_JAEGER_HINT = "For Jaeger use --backend jaeger:URL"


class _RequestFailed(Exception):
    """A request still failed after all retries (or failed in a way not worth retrying)."""


class ZipkinBackend(TraceBackend):
    """Reads traces from a Zipkin v2 query API rooted at `base_url` (which may carry a path prefix,
    e.g. `http://host/zipkin` → `http://host/zipkin/api/v2/…`).

    `retries` counts extra attempts after the first; the delay before retry n (0-based) is
    `backoff_s * 2**n`, or the server's Retry-After when longer. `headers` / `auth` are sent with
    every request and never appear in messages. Keep `batch_size` around 100: real Zipkin
    (Armeria) rejects request lines over ~4 KiB, and 100 × 33 characters is about 3.3 KiB.
    """

    name = "zipkin"

    def __init__(
        self,
        base_url: str,
        *,
        batch_size: int = 100,
        concurrency: int = 4,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        verify: bool | str = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"Zipkin URL must start with http:// or https://, got {redact_url(base_url)!r}")
        if batch_size < 1 or concurrency < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                "need batch_size >= 1, concurrency >= 1, retries >= 0, timeout_s > 0, backoff_s >= 0"
            )
        base = base_url.rstrip("/")
        self.url = redact_url(base)
        self._api = f"{base}/api/v2"
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._retries = retries
        self._backoff_s = backoff_s
        self._client = httpx.Client(
            headers=dict(headers or {}),
            auth=auth,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=True,
        )
        self._lock = threading.Lock()
        # False once the server answered 404 to /traceMany (older Zipkin): one GET per id from then on.
        self._trace_many = True
        # True once the server proved it is a Zipkin query API, so that a 404 for one trace id
        # can be trusted as MISSING rather than "wrong base path".
        self._api_verified = False
        # Set when /services proved the URL is not a Zipkin query API.
        self._api_broken: str | None = None

    # -- TraceBackend ------------------------------------------------------------------------

    def check(self) -> None:
        """`GET /api/v2/services` once, without retries; BackendError says what to fix."""
        where = f"{self.url}/api/v2/services"
        try:
            resp = self._client.get(f"{self._api}/services")
        except httpx.RequestError as exc:
            raise BackendError(
                f"cannot reach Zipkin at {self.url}: {_describe(exc)}. Is the backend running? {_JAEGER_HINT}"
            ) from exc
        problem = _services_problem(resp, where)
        if problem is not None:
            raise BackendError(problem)
        with self._lock:
            self._api_verified = True

    def fetch_many(
        self,
        trace_ids: Sequence[str],
        on_progress: ProgressCallback | None = None,
    ) -> dict[str, Fetched]:
        """Fetch traces by id (deduplicated, normalized); see TraceBackend.fetch_many."""
        unique = list(dict.fromkeys(normalize_trace_id(t) for t in trace_ids))
        results: dict[str, Fetched] = {}
        valid: list[str] = []
        for tid in unique:
            if is_hex_id(tid):
                valid.append(tid)
            else:
                results[tid] = Fetched(FetchStatus.ERROR, error=f"not a 16 or 32 hex trace id: {tid!r}")
        total = len(unique)
        done = len(results)
        batches = [valid[i : i + self._batch_size] for i in range(0, len(valid), self._batch_size)]
        with closing(self._run_batches(batches)) as finished:
            for batch_result in finished:
                results.update(batch_result)
                done += len(batch_result)
                if on_progress is not None:
                    on_progress(done, total)
        return results

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
            resp = self._get("/traces", params)
        except _RequestFailed as exc:
            raise BackendError(f"Zipkin search at {self.url} failed: {exc}") from exc
        if resp.status_code != 200:
            raise BackendError(f"Zipkin search at {self.url} failed: {_http_problem(resp, '/traces')}")
        traces = _parse_traces(resp)
        if traces is None:
            raise BackendError(
                f"Zipkin search at {self.url} answered 200 but not with a list of traces: "
                "is the URL the Zipkin query API?"
            )
        return traces

    def close(self) -> None:
        self._client.close()

    # -- fetching ----------------------------------------------------------------------------

    def _run_batches(self, batches: list[list[str]]) -> Generator[dict[str, Fetched], None, None]:
        """Yield each batch's results on the caller's thread, as batches finish."""
        if len(batches) <= 1 or self._concurrency == 1:
            for batch in batches:
                yield self._fetch_batch(batch)
            return
        pool = ThreadPoolExecutor(
            max_workers=min(self._concurrency, len(batches)), thread_name_prefix="zipkin-fetch"
        )
        try:
            pending: set[Future[dict[str, Fetched]]] = {pool.submit(self._fetch_batch, b) for b in batches}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            # Also reached when the consumer stops early (e.g. on_progress raised).
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_batch(self, ids: list[str]) -> dict[str, Fetched]:
        if len(ids) == 1 or not self._trace_many:
            return {tid: self._fetch_one(tid) for tid in ids}
        try:
            resp = self._get("/traceMany", {"traceIds": ",".join(ids)})
        except _RequestFailed as exc:
            return _all_error(ids, f"/traceMany: {exc}")
        if resp.status_code == 404:
            # Older Zipkin servers have no /traceMany; only trust that if /services answers.
            problem = self._verify_api()
            if problem is not None:
                return _all_error(ids, f"/traceMany answered 404 and {problem}")
            with self._lock:
                self._trace_many = False
            return {tid: self._fetch_one(tid) for tid in ids}
        if resp.status_code != 200:
            return _all_error(ids, _http_problem(resp, "/traceMany"))
        traces = _parse_traces(resp)
        if traces is None:
            return _all_error(ids, "/traceMany answered 200 but not with a list of traces")
        with self._lock:
            self._api_verified = True
        return _assign(ids, (span for trace in traces for span in trace))

    def _fetch_one(self, tid: str) -> Fetched:
        path = f"/trace/{tid}"
        try:
            resp = self._get(path)
        except _RequestFailed as exc:
            return Fetched(FetchStatus.ERROR, error=f"{path}: {exc}")
        if resp.status_code == 404:
            problem = self._verify_api()
            if problem is not None:
                return Fetched(FetchStatus.ERROR, error=f"{path} answered 404 and {problem}")
            return Fetched(FetchStatus.MISSING)
        if resp.status_code != 200:
            return Fetched(FetchStatus.ERROR, error=_http_problem(resp, path))
        spans = _parse_spans(_json(resp))
        if spans is None:
            return Fetched(FetchStatus.ERROR, error=f"{path} answered 200 but not with a list of spans")
        with self._lock:
            self._api_verified = True
        return _assign([tid], spans)[tid]

    def _verify_api(self) -> str | None:
        """None when the URL is a Zipkin query API (cached), else what is wrong with it."""
        with self._lock:
            if self._api_verified:
                return None
            if self._api_broken is not None:
                return self._api_broken
        try:
            resp = self._get("/services")
        except _RequestFailed as exc:
            return f"the /services probe failed: {exc}"  # transient: not cached
        problem = _services_problem(resp, f"{self.url}/api/v2/services")
        with self._lock:
            if problem is None:
                self._api_verified = True
            elif resp.status_code not in _RETRY_STATUSES:
                self._api_broken = problem
        return problem

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> httpx.Response:
        """GET `{api}{path}`, retrying transient failures; the final response has any status
        that is not retryable. Raises _RequestFailed when retries run out."""
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                resp = self._client.get(f"{self._api}{path}", params=params)
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                reason = _describe(exc)
            except httpx.RequestError as exc:  # e.g. too many redirects: not transient
                raise _RequestFailed(_describe(exc)) from exc
            else:
                if resp.status_code not in _RETRY_STATUSES:
                    return resp
                reason = _http_problem(resp, path)
                retry_after = _retry_after_s(resp)
            if attempt >= self._retries:
                raise _RequestFailed(f"{reason} (gave up after {attempt + 1} attempts)")
            delay = self._backoff_s * 2**attempt
            if retry_after is not None:
                delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
            time.sleep(delay)
            attempt += 1


# -- helpers (pure) --------------------------------------------------------------------------


def _assign(ids: Sequence[str], spans: Iterable[Any]) -> dict[str, Fetched]:
    """Group returned spans under the requested (normalized) ids.

    Zipkin may answer a 128-bit id with spans carrying its 64-bit low half (or the reverse,
    `strictTraceId=false`), so an exact match wins, then a low-half match. A 16-hex span id
    matching the low half of several requested 128-bit ids goes to each of them. Spans of
    traces that were not requested are ignored.
    """
    requested = set(ids)
    by_low_half: dict[str, list[str]] = {}
    for tid in ids:
        if len(tid) == 32:
            by_low_half.setdefault(tid[16:], []).append(tid)
    grouped: dict[str, list[Span]] = {tid: [] for tid in ids}
    for span in spans:
        raw = span.get("traceId") if isinstance(span, dict) else None
        if not isinstance(raw, str):
            continue
        got = normalize_trace_id(raw)
        if got in requested:
            targets = [got]
        elif len(got) == 32 and got[16:] in requested:
            targets = [got[16:]]
        else:
            targets = by_low_half.get(got, [])
        for target in targets:
            grouped[target].append(span)
    return {
        tid: Fetched(FetchStatus.FOUND, spans=tuple(found)) if found else Fetched(FetchStatus.MISSING)
        for tid, found in grouped.items()
    }


def _services_problem(resp: httpx.Response, where: str) -> str | None:
    """Why a `/services` answer shows this is not a usable Zipkin query API, or None."""
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
        return f"{where} answered {_http_problem(resp, '/services')}: is this a Zipkin query API?"
    body = _json(resp)
    if not isinstance(body, list) or not all(isinstance(s, str) for s in body):
        return (
            f"{where} answered 200 but not with a list of service names: this is not a Zipkin "
            "query API (a login page or proxy?)"
        )
    return None


def _all_error(ids: Sequence[str], reason: str) -> dict[str, Fetched]:
    return {tid: Fetched(FetchStatus.ERROR, error=reason) for tid in ids}


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _parse_spans(body: Any) -> list[Span] | None:
    if isinstance(body, list) and all(isinstance(span, dict) for span in body):
        return body
    return None


def _parse_traces(resp: httpx.Response) -> list[list[Span]] | None:
    body = _json(resp)
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


def _http_problem(resp: httpx.Response, path: str) -> str:
    """A short description of a non-success answer (status and the start of the body)."""
    text = " ".join(resp.text.split())[:200]
    message = f"HTTP {resp.status_code} from {path}"
    if resp.status_code in (414, 431):
        message += " (request too long: lower the batch size)"
    return f"{message}: {text}" if text else message


def _retry_after_s(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # absent, or an HTTP date: use our own backoff


def _describe(exc: Exception) -> str:
    """Exception text for users; httpx messages do not include request headers."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
