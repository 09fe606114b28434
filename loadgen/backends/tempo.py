"""Grafana Tempo query API reader (`tempo:URL`, Tempo's HTTP port 3200; shared/specs/tempo/).

- fetch: one GET per id (Tempo has no batch route), through the engine's adaptive limit (starts at
  `concurrency`, up to `max_concurrency`, 32 by default; loadgen.backends._engine), the id as 32 hex:
  1. v2 `GET /api/v2/traces/{id}` -> `{"trace": {"resourceSpans": [...]}, "status", "message"}`.
     `"status": "PARTIAL"` (the trace was cut at a size limit, or filtered) makes the answer
     FOUND but `partial`: it never counts as complete. `status` is absent when COMPLETE.
  2. v1 `GET /api/traces/{id}` -> `{"batches": [...]}` (older Tempo, without v2), asked when v2
     answers a 404 *with* a body (a router's "404 page not found": no such route); once v1 has
     answered in its own form and v2 never did, v1 alone is asked for the rest of the session.
  Ids in these bodies are base64 (gogo jsonpb), hex is accepted too (loadgen.backends._otlp).
  An unknown id is MISSING only in Tempo's own answer, a **404 without a body**; a 404 with a
  body (a proxy, an HTML page, an unrouted path) is ERROR: it says nothing about the trace.
- search `GET /api/search`, windows in whole epoch seconds: by TraceQL, `q={ span.TAG = "V" &&
  resource.service.name = "S" }`, or the older `tags=TAG=V service.name=S` (logfmt); `auto`
  (default) takes TraceQL unless `/api/status/buildinfo` names a Tempo 1.x, and falls back to
  `tags=` for the session when TraceQL is refused with a 400. Each page asks at most
  `search_page` traces (`limit`): a full page is searched again in two halves of its window,
  down to one second, where the page grows instead (up to the caller's limit). Results carry
  hex ids with the leading zeros trimmed (normalized here) and no full spans: the traces found
  are fetched by id, then kept only if one span matches the tags, the service and the exact
  [start_us, end_us] window (Tempo's tag search matches substrings, its windows are seconds).
- check: `GET /api/search` for the last minute with `limit=1` (once, no retries): it needs the
  tenant when multi-tenancy is on, where `/api/echo` would not.
- multi-tenancy: the tenant goes in `X-Scope-OrgID` (BackendOptions.headers: `--tempo-tenant` or
  `--backend-header 'X-Scope-OrgID: T'`). A 401/403 is one clear error naming that header. A
  wrong tenant can also look like an empty Tempo (every trace a bodiless 404): the run's
  preflight probe, which must find its own traces, tells the two apart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Unpack

import httpx

from loadgen.backends._common import assign
from loadgen.backends._engine import ByIdRoute, HttpReader, SearchRoute
from loadgen.backends._http import BackendOverrides, RequestFailed, json_body
from loadgen.backends._otlp import traces_data_to_spans
from loadgen.backends.base import BackendError, BackendOptions, Fetched, FetchStatus, Span
from loadgen.mesh.ids import is_hex_id, normalize_trace_id

__all__ = [
    "TENANT_HEADER",
    "SearchStyle",
    "TempoBackend",
    "decode_trace",
    "is_not_found_answer",
    "logfmt_tags",
    "traceql",
    "untrimmed_id",
]

TENANT_HEADER = "X-Scope-OrgID"
DEFAULT_SEARCH_PAGE = 500
"""Traces asked per search request (Tempo's own default is 20; a querier may cap it)."""
_TRACE_FORM = '{"trace": {...}} or {"batches": [...]}'
_NOT_FOUND_FORM = "Tempo's not-found answer (404 without a body)"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-/:]+")
_VERSION = re.compile(r"v?(\d+)\.")


class SearchStyle(StrEnum):
    """How `GET /api/search` is asked for the run tag."""

    AUTO = "auto"
    TRACEQL = "traceql"  # q={ span.TAG = "V" }, Tempo 2.0+
    TAGS = "tags"  # tags=TAG=V (logfmt), every Tempo


# -- pure helpers ------------------------------------------------------------------------------


def is_not_found_answer(resp: httpx.Response, _tid: str = "") -> bool:
    """Tempo's answer to a trace-by-id for an unknown id: 404 and no body at all."""
    return resp.status_code == 404 and not resp.content.strip()


def decode_trace(body: Any) -> tuple[list[Span], bool] | None:
    """(spans in Zipkin v2 shape, partial) of a trace-by-id body: v2 `{"trace": {...},
    "status"}` (`"PARTIAL"`, or its enum number 1, marks a cut trace) or v1 `{"batches": [...]}`
    (`resourceSpans` accepted too); None when the body is neither."""
    if not isinstance(body, dict):
        return None
    if "trace" in body:
        trace = body["trace"]
        if trace is not None and not isinstance(trace, dict):
            return None
        partial = body.get("status") in ("PARTIAL", 1)
        return traces_data_to_spans(trace or {}), partial
    if isinstance(body.get("batches"), list) or isinstance(body.get("resourceSpans"), list):
        return traces_data_to_spans(body), False
    return None


def untrimmed_id(trace_id: Any) -> str | None:
    """A search result's trace id (hex, leading zeros trimmed) in the canonical form, or None."""
    if not isinstance(trace_id, str) or not 1 <= len(trace_id) <= 32:
        return None
    full = trace_id.lower().zfill(32)
    return normalize_trace_id(full) if is_hex_id(full, (32,)) else None


def _search_ids(body: Any) -> list[str] | None:
    """The normalized trace ids of a `GET /api/search` answer, in answer order; None when the
    body is not `{"traces": [{"traceID": hex}, ...]}`."""
    traces = body.get("traces") if isinstance(body, dict) else None
    if traces is None and isinstance(body, dict) and "metrics" in body:
        return []  # jsonpb leaves an empty list out
    if not isinstance(traces, list):
        return None
    ids = [untrimmed_id(t.get("traceID")) if isinstance(t, dict) else None for t in traces]
    return None if any(tid is None for tid in ids) else [tid for tid in ids if tid is not None]


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def traceql(tags: Mapping[str, str], service: str | None) -> str:
    """`{ span.k = "v" && resource.service.name = "s" }`; `{}` without conditions. An attribute
    name outside [A-Za-z0-9_.-/:] is quoted (`span."a b"`)."""
    terms = [f"span.{k if _PLAIN_NAME.fullmatch(k) else _quoted(k)} = {_quoted(v)}" for k, v in tags.items()]
    if service:
        terms.append(f"resource.service.name = {_quoted(service)}")
    return "{ " + " && ".join(terms) + " }" if terms else "{}"


def logfmt_tags(tags: Mapping[str, str], service: str | None) -> str:
    """The older search's `tags=` value: logfmt `k=v service.name=s`, values quoted when needed."""
    pairs = dict(tags)
    if service:
        pairs["service.name"] = service
    for key in pairs:
        if not _PLAIN_NAME.fullmatch(key):
            raise ValueError(f"tag {key!r} cannot be expressed in Tempo's tags= search")
    return " ".join(f"{k}={v if _PLAIN_NAME.fullmatch(v) else _quoted(v)}" for k, v in pairs.items())


def _span_matches(
    span: Span, tags: Mapping[str, str], service: str | None, start_us: int, end_us: int
) -> bool:
    ts = span.get("timestamp")
    if not isinstance(ts, int) or not start_us <= ts <= end_us:
        return False
    if service and (span.get("localEndpoint") or {}).get("serviceName") != service:
        return False
    span_tags = span.get("tags") or {}
    return all(span_tags.get(k) == v for k, v in tags.items())


def _major_version(body: Any) -> int | None:
    version = body.get("version") if isinstance(body, dict) else None
    match = _VERSION.match(version) if isinstance(version, str) else None
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class _Answer:
    """One trace-by-id answer: what it says of the id, whether it proves the route is Tempo's,
    and whether it was a 404 with a body (no such route, or something in between)."""

    fetched: Fetched
    proven: bool = False
    foreign_404: bool = False


class TempoBackend(HttpReader):
    """Reads traces from Grafana Tempo's HTTP query API rooted at `base_url` (which may carry a
    path prefix, e.g. a gateway's `http://gw/tempo`).

    `options` (BackendOptions; keyword overrides win) give the tenant header, credentials, TLS,
    timeouts, retries and `concurrency` (ids fetched at once); `batch_size` only sets how often
    progress is reported. `search_style` and `search_page`: see the module docstring.
    """

    name = "tempo"
    api_path = "/api"
    by_id = ByIdRoute(
        label="/api/v2/traces/{id}",
        path=lambda tid: f"/v2/traces/{tid.zfill(32)}",
        is_not_found=is_not_found_answer,
        not_found_form=_NOT_FOUND_FORM,
        decode=lambda body: None if (d := decode_trace(body)) is None else d[0],
        form=_TRACE_FORM,
    )
    v1_by_id = replace(by_id, label="/api/traces/{id}", path=lambda tid: f"/traces/{tid.zfill(32)}")
    search_route = SearchRoute(
        who="Tempo",
        label="/api/search",
        decode=_search_ids,
        form='{"traces": [...]}',
        api="Tempo query API (e.g. http://tempo:3200)",
        path="/search",
    )

    def __init__(
        self,
        base_url: str,
        options: BackendOptions | None = None,
        *,
        search_style: SearchStyle | str = SearchStyle.AUTO,
        search_page: int = DEFAULT_SEARCH_PAGE,
        **overrides: Unpack[BackendOverrides],
    ) -> None:
        try:
            style = SearchStyle(search_style)
        except ValueError:
            raise ValueError(
                f"search_style must be one of auto, traceql, tags; got {search_style!r}"
            ) from None
        if search_page < 1:
            raise ValueError(f"search_page must be >= 1, got {search_page}")
        super().__init__(base_url, options, **overrides)
        self._style: SearchStyle | None = None if style is SearchStyle.AUTO else style
        self._page = search_page
        # Plain bool stores, each set once: v2 answered in its own form / v2 proved absent.
        self._v2_answered = False
        self._v1_only = False

    # -- what Tempo says -------------------------------------------------------------------------

    def tenant_problem(self, status: int, where: str) -> str:
        """The one error for a 401/403: a tenant (X-Scope-OrgID) missing or refused."""
        sent = self._tenant()
        given = f"X-Scope-OrgID {sent!r} was refused" if sent else "no X-Scope-OrgID was sent"
        return (
            f"Tempo at {self.url} answered HTTP {status} to {where}: it wants a tenant or credentials "
            f"({given}). With multi-tenancy on, send the tenant as X-Scope-OrgID (--tempo-tenant TENANT "
            f"or --backend-header 'X-Scope-OrgID: TENANT'); a proxy in front may want auth too"
        )

    def none_found_problem(self, sampled: int) -> str | None:
        """A wrong tenant looks like an empty Tempo: every trace a 404 without a body."""
        sent = self._tenant()
        given = f"the tenant sent was X-Scope-OrgID {sent!r}" if sent else "no X-Scope-OrgID was sent"
        return (
            f"none of the {sampled} sampled probe traces was found in Tempo at {self.url} ({given}). "
            "With multi-tenancy on, another tenant's Tempo looks empty: check --tempo-tenant "
            "(X-Scope-OrgID) and that the mesh exports to this Tempo. To measure a mesh that loses "
            "every trace, run with --no-probe"
        )

    def _tenant(self) -> str | None:
        headers = self._http.options.headers.items()
        return next((v for k, v in headers if k.lower() == TENANT_HEADER.lower()), None)

    def trace_route_hint(self) -> str:
        return (
            "Tempo's HTTP port is e.g. http://tempo:3200, its tenant goes in X-Scope-OrgID. "
            "A proxy or ingress in front of the backend may route only some paths; check the base path / tenant."
        )

    def _unreachable(self, exc: RequestFailed) -> str:
        return f"cannot reach Tempo at {self.url}: {exc}. Is the backend running (HTTP port 3200)?"

    def check(self) -> None:
        """`GET /api/search` over the last minute, `limit=1`, once; BackendError says what to fix."""
        now = int(time.time())
        try:
            resp = self._http.get_once("/search", {"start": now - 60, "end": now + 1, "limit": 1})
        except RequestFailed as exc:
            raise BackendError(self._unreachable(exc)) from exc
        problem = self._services_problem(resp)
        if problem is not None:
            raise BackendError(problem)

    def _services_problem(self, resp: httpx.Response) -> str | None:
        """Why a `/api/search` answer shows this is not a usable Tempo query API, or None."""
        where = f"{self.url}/api/search"
        if resp.status_code in (401, 403):
            return self.tenant_problem(resp.status_code, "/api/search")
        if resp.status_code == 404:
            return (
                f"{where} answered 404: this is not a Tempo query API. Check the base path "
                "(Tempo's HTTP port, e.g. http://tempo:3200, not its OTLP or Zipkin receiver)"
            )
        if resp.status_code != 200:
            return f"{where} answered {self._http.summary(resp)}: is this a Tempo query API?"
        if _search_ids(json_body(resp)) is None:
            return (
                f"{where} answered 200 but not with Tempo's search answer: this is not a Tempo "
                "query API (a login page or proxy?)"
            )
        return None

    # -- fetching --------------------------------------------------------------------------------

    def _ask(self, route: ByIdRoute, tid: str) -> _Answer:
        try:
            resp = self._http.get(route.path(tid))
        except RequestFailed as exc:
            return _Answer(Fetched(FetchStatus.ERROR, error=f"{route.label}: {exc}"))
        status = resp.status_code
        if status == 404:
            if is_not_found_answer(resp):
                return _Answer(Fetched(FetchStatus.MISSING), proven=True)
            error = f"{route.label}: {self._http.summary(resp)} is not {_NOT_FOUND_FORM}"
            return _Answer(Fetched(FetchStatus.ERROR, error=error), foreign_404=True)
        if status in (401, 403):
            return _Answer(Fetched(FetchStatus.ERROR, error=self.tenant_problem(status, route.label)))
        if status != 200:
            return _Answer(Fetched(FetchStatus.ERROR, error=self._http.problem(resp, route.label)))
        decoded = decode_trace(json_body(resp))
        if decoded is None:
            error = f"{route.label}: {self._http.summary(resp)} is not {_TRACE_FORM}"
            return _Answer(Fetched(FetchStatus.ERROR, error=error))
        spans, partial = decoded
        fetched = assign([tid], spans)[tid]
        if partial and fetched.status is FetchStatus.FOUND:
            fetched = replace(fetched, partial=True)
        return _Answer(fetched, proven=True)

    def _fetch_one(self, tid: str) -> tuple[Fetched, bool]:
        """v2, then v1 when v2 answers a 404 with a body (see the module docstring)."""
        if not self._v1_only:
            answer = self._ask(self.by_id, tid)
            if answer.proven:
                self._v2_answered = True
            if not answer.foreign_404 or self._v2_answered:
                return answer.fetched, answer.proven
        answer = self._ask(self.v1_by_id, tid)
        if answer.proven and not self._v2_answered:
            self._v1_only = True
        return answer.fetched, answer.proven

    # -- searching -------------------------------------------------------------------------------

    def _search(
        self, tags: dict[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[list[Span]]:
        """Trace ids by `GET /api/search` (paged by window), then the traces by id, kept when a
        span matches exactly (see the module docstring)."""
        ids = self._find_ids(tags, service, start_us, end_us, limit)
        fetched = self.fetch_many(ids)
        traces: list[list[Span]] = []
        for tid in ids:
            answer = fetched[tid]
            if answer.status is FetchStatus.ERROR:
                raise BackendError(
                    f"Tempo search at {self.url} found trace {tid} but cannot fetch it: {answer.error}"
                )
            if any(_span_matches(s, tags, service, start_us, end_us) for s in answer.spans):
                traces.append(list(answer.spans))
        return traces[:limit]

    def _find_ids(
        self, tags: dict[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[str]:
        found: dict[str, None] = {}
        # Whole seconds covering [start_us, end_us]; the exact window is checked on the spans.
        windows = [(start_us // 1_000_000, end_us // 1_000_000 + 1, min(limit, self._page))]
        while windows and len(found) < limit:
            lo, hi, page = windows.pop()
            hits = self._search_page(tags, service, lo, hi, page)
            found.update(dict.fromkeys(hits))
            if len(hits) < page:
                continue
            if hi - lo > 1:  # a full page: there may be more, in either half
                mid = (lo + hi) // 2
                windows += [(lo, mid, page), (mid, hi, page)]
            elif page < limit:  # one second is the narrowest window Tempo knows: ask for more
                windows.append((lo, hi, min(limit, page * 4)))
        return list(found)[:limit]

    def _search_page(
        self, tags: dict[str, str], service: str | None, lo: int, hi: int, page: int
    ) -> list[str]:
        style = self._style if self._style is not None else self._pick_style()
        params: dict[str, str | int] = {"start": lo, "end": hi, "limit": page, "spss": 1}
        if style is SearchStyle.TRACEQL:
            params["q"] = traceql(tags, service)
        elif tags or service:
            params["tags"] = logfmt_tags(tags, service)
        resp = self._search_request(params)
        if resp.status_code == 400 and style is SearchStyle.TRACEQL and self._style is None:
            self._style = SearchStyle.TAGS  # TraceQL refused: an older Tempo
            return self._search_page(tags, service, lo, hi, page)
        if resp.status_code in (401, 403):
            raise BackendError(self.tenant_problem(resp.status_code, "/api/search"))
        ids: list[str] = self._search_answer(resp)
        self._style = style
        return ids

    def _pick_style(self) -> SearchStyle:
        """TraceQL, unless `/api/status/buildinfo` names a Tempo 1.x (no TraceQL)."""
        try:
            resp = self._http.get_once("/status/buildinfo")
        except RequestFailed:
            return SearchStyle.TRACEQL
        if resp.status_code in (401, 403):  # an open route in Tempo: something in front wants auth
            raise BackendError(self.tenant_problem(resp.status_code, "/api/status/buildinfo"))
        major = _major_version(json_body(resp)) if resp.status_code == 200 else None
        return SearchStyle.TAGS if major is not None and major < 2 else SearchStyle.TRACEQL

    def _search_404_hint(self) -> str:
        return (
            "Tempo's search is GET /api/search on its HTTP port (e.g. http://tempo:3200): check the base path"
        )
