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
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from loadgen.backends._common import assign, is_name_list, is_v3_services
from loadgen.backends._engine import BatchRoute, ByIdRoute, HttpReader, SearchRoute
from loadgen.backends._http import HttpClient, RequestFailed, json_body
from loadgen.backends._uimodel import jaeger_trace_id, ui_trace_to_spans
from loadgen.backends.base import BackendError, Fetched, FetchStatus, Span

__all__ = [
    "JaegerBackend",
    "base_path_hint",
    "jaeger_services_problem",
    "jaeger_unreachable",
    "receiver_hint",
]

_NOT_FOUND = "trace not found"
_ENVELOPE = "Jaeger's {data, errors} envelope"


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


def jaeger_unreachable(url: str, exc: RequestFailed) -> str:
    """The message when a Jaeger query API (either generation) cannot be reached at all."""
    return (
        f"cannot reach the Jaeger query API at {url}: {exc}. Is Jaeger running, and is "
        "this its query port (16686; Istio addon: http://tracing.istio-system/jaeger)?"
    )


def jaeger_services_problem(
    resp: httpx.Response,
    http: HttpClient,
    url: str,
    path: str,
    *,
    accepts: Callable[[Any], bool],
    api: str,
    question: str,
    form: str,
    on_404: str,
) -> str | None:
    """Why the answer of a Jaeger at `url` to `GET {path}` (its `…/services`) shows this is not a
    usable `api`, or None when its body `accepts`. `question` ends "is this …?" for an unexpected
    status, `form` names the body expected, `on_404` follows "answered 404: "."""
    where = f"{url}{path}"
    status = resp.status_code
    if status in (401, 403):
        return (
            f"{where} answered HTTP {status}: the backend wants credentials; pass a token "
            "(LOADGEN_BACKEND_TOKEN), user/password or headers for it"
        )
    if status == 404:
        return f"{where} answered 404: {on_404}"
    if status in (202, 400, 405):
        return f"{where} answered HTTP {status}: {receiver_hint(url)}"
    if status != 200:
        return f"{where} answered {http.summary(resp)}: is this {question}?"
    body = json_body(resp)
    if accepts(body):
        return None
    if is_name_list(body):
        return f"{where} answered like a Zipkin query API: use --backend zipkin:{url}"
    return f"{where} answered 200 but not with {form}: this is not {api} (a login page or proxy?)"


# -- decoding (pure) -------------------------------------------------------------------------


def envelope_data(body: Any) -> list[Any] | None:
    """`data` of a Jaeger `{data, total, limit, offset, errors}` answer ([] for null), else None."""
    if not isinstance(body, dict) or "data" not in body:
        return None
    data = body["data"]
    if data is None:
        return []
    return data if isinstance(data, list) else None


def _is_not_found(resp: httpx.Response, _tid: str) -> bool:
    """Jaeger's 404 for one unknown id: its envelope with a "trace not found" entry in `errors`."""
    body = json_body(resp)
    if envelope_data(body) is None or not isinstance(body.get("errors"), list):
        return False
    return any(isinstance(e, Mapping) and _NOT_FOUND in str(e.get("msg", "")).lower() for e in body["errors"])


def _spans_of(data: list[Any]) -> list[Span]:
    return [span for trace in data if isinstance(trace, Mapping) for span in ui_trace_to_spans(trace)]


def _trace_spans(body: Any) -> list[Span] | None:
    """The spans of a `GET /api/traces/{id}` answer; None when it is not the envelope."""
    data = envelope_data(body)
    return None if data is None else _spans_of(data)


def _batch_answers(ids: list[str], body: Any) -> dict[str, Fetched] | None:
    """Every requested id's answer from a multi-get envelope: its spans, MISSING when absent or
    "trace not found" in `errors[]`, ERROR for any other error naming it (quoted as "Jaeger: msg",
    scrubbed by the engine). None when the body is not the envelope."""
    data = envelope_data(body)
    if data is None:
        return None
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
            result[tid] = Fetched(FetchStatus.ERROR, error=f"Jaeger: {msg}")
    return result


class JaegerBackend(HttpReader):
    """Reads traces from the Jaeger query service's `/api` JSON API rooted at `base_url`
    (which may carry the query base path, e.g. `http://tracing.istio-system/jaeger`).

    `options` (BackendOptions; keyword overrides win) give credentials, TLS, timeouts, retries,
    concurrency (where the adaptive limit starts, and its bound) and the batch size. 100 ids
    make a ~4.2 KiB request line (`traceID=<32 hex>&` each), fine for Jaeger's Go server; lower
    `batch_size` behind a stricter proxy (414/431).
    """

    name = "jaeger"
    api_path = "/api"
    by_id = ByIdRoute(
        label="/api/traces/{id}",
        path=lambda tid: f"/traces/{tid}",
        is_not_found=_is_not_found,
        not_found_form='Jaeger\'s "trace not found" answer',
        decode=_trace_spans,
        form=_ENVELOPE,
    )
    # A 404 here: no multi-get (Jaeger after v2.20 removed the search route), or not Jaeger at
    # all; the engine asks per id, and stops batching only when those answers prove Jaeger.
    batch = BatchRoute(
        label="/api/traces?traceID=…",
        path="/traces",
        params=lambda ids: [("traceID", tid) for tid in ids],
        decode=_batch_answers,
        form=_ENVELOPE,
    )
    search_route = SearchRoute(
        who="Jaeger",
        label="/api/traces",
        decode=envelope_data,
        form='Jaeger\'s {"data": [...]} envelope',
        api="Jaeger query API",
    )

    def _unreachable(self, exc: RequestFailed) -> str:
        return jaeger_unreachable(self.url, exc)

    def _services_problem(self, resp: httpx.Response) -> str | None:
        """Why a `/api/services` answer shows this is not a usable Jaeger query API, or None. A 404
        there, with `/api/v3/services` answering, is a Jaeger after v2.20 (only api_v3 left)."""
        problem = jaeger_services_problem(
            resp,
            self._http,
            self.url,
            "/api/services",
            accepts=lambda body: envelope_data(body) is not None,
            api="the Jaeger query API",
            question="the Jaeger query API",
            form="Jaeger's {data: [...]} envelope",
            on_404=f"this is not the Jaeger query API. {base_path_hint(self.url)}",
        )
        if problem is None or resp.status_code != 404:
            return problem
        try:
            v3 = self._http.get_once("/v3/services")
        except RequestFailed:
            return problem
        if v3.status_code == 200 and is_v3_services(json_body(v3)):
            return (
                f"{self.url}/api/services answered 404 but {self.url}/api/v3/services answered: "
                "this Jaeger serves only the api_v3 endpoints (/api/services and the /api/traces "
                f"search were removed after v2.20): use --backend jaeger-v3:{self.url}"
            )
        return problem

    def _search(
        self, tags: dict[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[list[Span]]:
        """`GET /api/traces?service=S&tags={"k":"v"}&start=µs&end=µs&limit=N`. Jaeger matches
        tags on span tags, process tags and log fields; `limit` is its search depth."""
        if not service:
            raise BackendError(
                "Jaeger's /api/traces search needs a service name (Jaeger rejects a search without "
                "one): pass the service whose spans carry the tags, e.g. istio-ingressgateway.istio-system"
            )
        params: dict[str, str | int] = {"service": service, "start": start_us, "end": end_us, "limit": limit}
        if tags:
            params["tags"] = json.dumps(tags, separators=(",", ":"))
        data = self._search_answer(self._search_request(params))
        traces = [ui_trace_to_spans(t) for t in data if isinstance(t, Mapping)]
        return [t for t in traces if t]

    def _search_404_hint(self) -> str:
        return (
            f"{base_path_hint(self.url)} Jaeger after v2.20 has no /api/traces search: "
            f"use --backend jaeger-v3:{self.url}"
        )

    def trace_route_hint(self) -> str:
        return f"{super().trace_route_hint()} {base_path_hint(self.url)}"
