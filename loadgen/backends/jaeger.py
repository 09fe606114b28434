"""Jaeger query "internal HTTP JSON" API reader (`{base}/api/...`, port 16686; Jaeger v1.x and
v2.0–v2.20; shared/specs/README.md and jaeger-api-trace-example.json).

- fetch: `GET /api/traces?traceID=a&traceID=b…` in batches. Every answer is the envelope
  `{"data": [UI trace…], "errors": [{"msg", "traceID"}] | null, …}`; ids not found come back in
  `errors[]` as "trace not found" (Jaeger v1) or are simply absent (v2): both are MISSING. A batch
  of one, and servers without the multi-get (404: the search route was removed after v2.20), use
  `GET /api/traces/{id}`, whose 404 with the "trace not found" envelope (`{"data": null, …,
  "errors": [{"code": 404, "msg": "trace not found"}]}`, sent by Go's http.Error as text/plain) is
  MISSING. A 404 in any other form comes from something else (a wrong base path, a proxy that routes
  only some paths) and is ERROR: it says nothing about the trace.
- search: `GET /api/traces?service=…&tags={json}&start=µs&end=µs&limit=N` (service required).
- check: `GET /api/services`.

Spans come back in Zipkin v2 shape (see loadgen.backends._uimodel for the field mapping).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Unpack
from urllib.parse import urlsplit, urlunsplit

import httpx

from loadgen.backends._common import all_error, assign, fetch_all, unchanged
from loadgen.backends._http import (
    BackendOverrides,
    HttpClient,
    RequestFailed,
    json_body,
    resolve_options,
)
from loadgen.backends._uimodel import jaeger_trace_id, ui_trace_to_spans
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

__all__ = ["JaegerBackend", "base_path_hint", "receiver_hint"]

T = TypeVar("T")

_NOT_FOUND = "trace not found"


def base_path_hint(url: str) -> str:
    """What to try when a Jaeger path answers 404 under `url`: the other usual base paths on the
    same host (Istio's addon: /jaeger; a default Jaeger: none), replacing the path in `url`."""
    parts = urlsplit(url)
    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    current = root + parts.path.rstrip("/")
    tries = " or ".join(c for c in (f"{root}/jaeger", root) if c != current)
    return (
        "Check the base path (jaeger_query.base_path, --query.base-path; Istio's Jaeger addon "
        f"serves the query API under /jaeger, e.g. http://tracing.istio-system/jaeger): try {tries}."
    )


def receiver_hint(url: str) -> str:
    """Why a GET answered like a span receiver, and where the query API is instead."""
    return (
        f"{url} looks like a span receiver, not a query API (Jaeger's Zipkin receiver on 9411 "
        "treats every request as a span upload). Read from Jaeger's query port 16686 instead "
        "(Istio addon: http://tracing.istio-system/jaeger)."
    )


class JaegerBackend(TraceBackend):
    """Reads traces from the Jaeger query service's `/api` JSON API rooted at `base_url`
    (which may carry the query base path, e.g. `http://tracing.istio-system/jaeger`).

    `options` (BackendOptions; keyword overrides win) give credentials, TLS, timeouts, retries,
    concurrency and the batch size. 100 ids make a ~4.2 KiB request line (`traceID=<32 hex>&`
    each), fine for Jaeger's Go server; lower `batch_size` behind a stricter proxy (414/431).
    """

    name = "jaeger"

    def __init__(
        self,
        base_url: str,
        options: BackendOptions | None = None,
        **overrides: Unpack[BackendOverrides],
    ) -> None:
        base, self._options, auth = resolve_options(base_url, options, overrides)
        self.url = redact_url(base)
        self._http = HttpClient(f"{base}/api", self._options, auth)
        # False once /api/traces?traceID= answered 404 on a server proven to be Jaeger (v2.21+
        # removed the search route): one GET /api/traces/{id} per id from then on.
        self._multi_get = True

    # -- TraceBackend ------------------------------------------------------------------------

    def check(self) -> None:
        """`GET /api/services` once, without retries; BackendError says what to fix."""
        try:
            resp = self._http.get_once("/services")
        except RequestFailed as exc:
            raise BackendError(
                f"cannot reach the Jaeger query API at {self.url}: {exc}. Is Jaeger running, and is "
                "this its query port (16686; Istio addon: http://tracing.istio-system/jaeger)?"
            ) from exc
        problem = self._services_problem(resp)
        if problem is None:
            return
        if resp.status_code == 404:
            # Jaeger after v2.20 dropped /api/services but still serves /api/v3.
            try:
                v3 = self._http.get_once("/v3/services")
            except RequestFailed:
                v3 = None
            if v3 is not None and v3.status_code == 200 and _is_v3_services(json_body(v3)):
                problem = (
                    f"{self.url}/api/services answered 404 but {self.url}/api/v3/services answered: "
                    "this Jaeger serves only the api_v3 endpoints (/api/services and the /api/traces "
                    f"search were removed after v2.20): use --backend jaeger-v3:{self.url}"
                )
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
            thread_name="jaeger-fetch",
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
        """`GET /api/traces?service=S&tags={"k":"v"}&start=µs&end=µs&limit=N`. Jaeger matches
        tags on span tags, process tags and log fields; `limit` is its search depth."""
        if end_us < start_us or limit < 1:
            raise ValueError(f"need start_us <= end_us and limit >= 1, got {start_us}, {end_us}, {limit}")
        if not service:
            raise BackendError(
                "Jaeger's /api/traces search needs a service name (Jaeger rejects a search without "
                "one): pass the service whose spans carry the tags, e.g. istio-ingressgateway.istio-system"
            )
        params: dict[str, str | int] = {"service": service, "start": start_us, "end": end_us, "limit": limit}
        if tags:
            params["tags"] = json.dumps(dict(tags), separators=(",", ":"))
        try:
            resp = self._http.get("/traces", params)
        except RequestFailed as exc:
            raise BackendError(f"Jaeger search at {self.url} failed: {exc}") from exc
        if resp.status_code == 404:
            raise BackendError(
                f"Jaeger search at {self.url} failed: {self._http.problem(resp, '/api/traces')}. "
                f"{base_path_hint(self.url)} Jaeger after v2.20 has no /api/traces search: "
                f"use --backend jaeger-v3:{self.url}"
            )
        if resp.status_code != 200:
            raise BackendError(
                f"Jaeger search at {self.url} failed: {self._http.problem(resp, '/api/traces')}"
            )
        data = _envelope_data(json_body(resp))
        if data is None:
            raise BackendError(
                f"Jaeger search at {self.url} answered 200 but not with Jaeger's "
                '{"data": [...]} envelope: is the URL the Jaeger query API?'
            )
        traces = [ui_trace_to_spans(t) for t in data if isinstance(t, Mapping)]
        return [t for t in traces if t]

    def close(self) -> None:
        self._http.close()

    # -- fetching ----------------------------------------------------------------------------

    def _fetch_batch(self, ids: list[str]) -> dict[str, Fetched]:
        if len(ids) == 1 or not self._multi_get:
            return {tid: self._fetch_one(tid)[0] for tid in ids}
        path = "/api/traces?traceID=…"
        try:
            resp = self._http.get("/traces", [("traceID", tid) for tid in ids])
        except RequestFailed as exc:
            return all_error(ids, f"{path}: {exc}")
        if resp.status_code == 404:
            # No multi-get here (Jaeger after v2.20), or not Jaeger at all: ask per id, and stop
            # batching only when those answers prove this is Jaeger.
            answers = {tid: self._fetch_one(tid) for tid in ids}
            if any(proven for _, proven in answers.values()):
                self._multi_get = False  # a plain bool store: atomic, and only ever set to False
            return {tid: fetched for tid, (fetched, _) in answers.items()}
        if resp.status_code != 200:
            return all_error(ids, self._http.problem(resp, path))
        body = json_body(resp)
        data = _envelope_data(body)
        if data is None:
            return all_error(
                ids, f"{path}: {self._http.summary(resp)} is not Jaeger's {{data, errors}} envelope"
            )
        result = assign(ids, _spans_of(data))
        for error in body.get("errors") or ():
            if not isinstance(error, Mapping):
                continue
            msg = str(error.get("msg", ""))
            raw = error.get("traceID")
            if not isinstance(raw, str) or _NOT_FOUND in msg.lower():
                continue  # "trace not found" is MISSING, which assign() already says
            tid = jaeger_trace_id(raw)
            if tid in result and result[tid].status is not FetchStatus.FOUND:
                result[tid] = Fetched(FetchStatus.ERROR, error=self._http.scrub(f"Jaeger: {msg}"))
        return result

    def _fetch_one(self, tid: str) -> tuple[Fetched, bool]:
        """The answer for one id, and whether it proved the URL is the Jaeger query API."""
        path = "/api/traces/{id}"
        try:
            resp = self._http.get(f"/traces/{tid}")
        except RequestFailed as exc:
            return Fetched(FetchStatus.ERROR, error=f"{path}: {exc}"), False
        body = json_body(resp)
        if resp.status_code == 404:
            if _is_not_found(body):
                return Fetched(FetchStatus.MISSING), True
            error = f'{path}: {self._http.summary(resp)} is not Jaeger\'s "trace not found" answer'
            return Fetched(FetchStatus.ERROR, error=error), False
        if resp.status_code != 200:
            return Fetched(FetchStatus.ERROR, error=self._http.problem(resp, path)), False
        data = _envelope_data(body)
        if data is None:
            error = f"{path}: {self._http.summary(resp)} is not Jaeger's {{data, errors}} envelope"
            return Fetched(FetchStatus.ERROR, error=error), False
        return assign([tid], _spans_of(data))[tid], True

    def trace_route_hint(self) -> str:
        return f"{super().trace_route_hint()} {base_path_hint(self.url)}"

    def _services_problem(self, resp: httpx.Response) -> str | None:
        """Why a `/api/services` answer shows this is not a usable Jaeger query API, or None."""
        where = f"{self.url}/api/services"
        status = resp.status_code
        if status in (401, 403):
            return (
                f"{where} answered HTTP {status}: the backend wants credentials; pass a token "
                "(LOADGEN_BACKEND_TOKEN), user/password or headers for it"
            )
        if status == 404:
            return f"{where} answered 404: this is not the Jaeger query API. {base_path_hint(self.url)}"
        if status in (202, 400, 405):
            return f"{where} answered HTTP {status}: {receiver_hint(self.url)}"
        if status != 200:
            return f"{where} answered {self._http.summary(resp)}: is this the Jaeger query API?"
        body = json_body(resp)
        if _envelope_data(body) is not None:
            return None
        if isinstance(body, list) and all(isinstance(s, str) for s in body):
            return f"{where} answered like a Zipkin query API: use --backend zipkin:{self.url}"
        return (
            f"{where} answered 200 but not with Jaeger's {{data: [...]}} envelope: this is not the "
            "Jaeger query API (a login page or proxy?)"
        )


# -- helpers (pure) --------------------------------------------------------------------------


def _envelope_data(body: Any) -> list[Any] | None:
    """`data` of a Jaeger `{data, total, limit, offset, errors}` answer ([] for null), else None."""
    if not isinstance(body, dict) or "data" not in body:
        return None
    data = body["data"]
    if data is None:
        return []
    return data if isinstance(data, list) else None


def _is_not_found(body: Any) -> bool:
    """Jaeger's 404 for one unknown id: its envelope with a "trace not found" entry in `errors`."""
    if _envelope_data(body) is None or not isinstance(body.get("errors"), list):
        return False
    return any(isinstance(e, Mapping) and _NOT_FOUND in str(e.get("msg", "")).lower() for e in body["errors"])


def _is_v3_services(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("services"), list)


def _spans_of(data: list[Any]) -> list[Span]:
    return [span for trace in data if isinstance(trace, Mapping) for span in ui_trace_to_spans(trace)]
