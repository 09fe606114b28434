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
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from loadgen.backends._common import assign, group_by_trace, is_name_list
from loadgen.backends._engine import BatchRoute, ByIdRoute, HttpReader, SearchRoute
from loadgen.backends._http import RequestFailed, json_body, media_type
from loadgen.backends.base import Fetched, FetchStatus, Span

if TYPE_CHECKING:
    from loadgen.analysis.observation import SpanFields, TraceObservation

__all__ = ["ZipkinBackend", "is_not_found_answer"]

_JAEGER_HINT = "For Jaeger use --backend jaeger:URL"
# Zipkin's not-found answer (see the module docstring): its media types, and the body.
_NOT_FOUND_TYPES = frozenset({"text/*", "text/plain"})
_NOT_FOUND_BODY = re.compile(r"([0-9a-fA-F]{1,32}) not found")


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


def _parse_traces(body: Any) -> list[list[Span]] | None:
    if not isinstance(body, list):
        return None
    traces: list[list[Span]] = []
    for trace in body:
        spans = _parse_spans(trace)
        if spans is None:
            return None
        traces.append(spans)
    return traces


def _assign_traces(ids: list[str], body: Any) -> dict[str, Fetched] | None:
    """A `/traceMany` answer's spans under the requested ids; None when it is not a list of traces."""
    traces = _parse_traces(body)
    if traces is None:
        return None
    return assign(ids, (span for trace in traces for span in trace))


@cache
def _trace_many_decoder(run_id_tag: str) -> msgspec.json.Decoder[list[list[SpanFields]]]:
    from loadgen.analysis.observation import span_fields_type

    span = span_fields_type(run_id_tag)
    decoder: msgspec.json.Decoder[list[list[SpanFields]]] = msgspec.json.Decoder(list[list[span]])  # type: ignore[valid-type]
    return decoder


def _observe_traces(
    ids: list[str], content: bytes, reduce: Callable[[Fetched], Any]
) -> dict[str, TraceObservation] | None:
    """A read-back's observations (`reduce` an `ObserveTrace`) of a `/traceMany` answer, its spans
    decoded straight into `SpanFields`: what `_assign_traces` and `reduce` give for the same
    body, in about half the time. None for any other reduce, and for any body msgspec does not
    decode into that form (not JSON, not UTF-8, not a list of lists of objects, a value of
    another type, JSON that only `json.loads` reads): the engine then reads it as dicts."""
    from loadgen.analysis.observation import ObserveTrace, TraceObservation

    if type(reduce) is not ObserveTrace or (reduce.run_id and not reduce.run_id_tag):
        return None
    if not content.isascii():
        try:  # msgspec does not check the UTF-8 of strings it skips; json.loads refuses it
            content.decode()
        except UnicodeDecodeError:
            return None
    try:
        traces = _trace_many_decoder(reduce.run_id_tag).decode(content)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    grouped = group_by_trace(ids, ((span.traceId, span) for trace in traces for span in trace))
    run_id = reduce.run_id
    return {
        tid: TraceObservation.from_span_fields(spans, run_id)
        if spans
        else reduce(Fetched(FetchStatus.MISSING))
        for tid, spans in grouped.items()
    }


def _annotation_query(tags: Mapping[str, str]) -> str:
    """`k=v and k2=v2`: Zipkin splits terms on " and " and each term on its first "="."""
    terms = []
    for key, value in tags.items():
        if not key or "=" in key or " and " in key or " and " in value:
            raise ValueError(f"tag {key!r}={value!r} cannot be expressed as a Zipkin annotationQuery term")
        terms.append(f"{key}={value}")
    return " and ".join(terms)


class ZipkinBackend(HttpReader):
    """Reads traces from a Zipkin v2 query API rooted at `base_url` (which may carry a path prefix,
    e.g. `http://host/zipkin` → `http://host/zipkin/api/v2/…`).

    `options` (BackendOptions; keyword overrides win) give credentials, TLS, timeouts, retries,
    concurrency and the batch size. Keep `batch_size` around 100: real Zipkin (Armeria) rejects
    request lines over ~4 KiB, and 100 × 33 characters is about 3.3 KiB.
    """

    name = "zipkin"
    api_path = "/api/v2"
    by_id = ByIdRoute(
        label="/trace/{id}",
        path=lambda tid: f"/trace/{tid}",
        is_not_found=is_not_found_answer,
        not_found_form="Zipkin's not-found answer",
        decode=_parse_spans,
        form="a JSON list of spans",
    )
    # Zipkin before 2.17 has no /traceMany, and its 404 for an unknown route is a generic one
    # (Armeria's, or Spring's before 2.12): the engine then asks /trace/{id} per id. After
    # /traceMany has answered a list in this session, a 404 comes from something in between.
    batch = BatchRoute(
        label="/traceMany",
        path="/traceMany",
        params=lambda ids: {"traceIds": ",".join(ids)},
        decode=_assign_traces,
        form="a JSON list of traces",
        final_404_once_answered=True,
        reduce_body=_observe_traces,
    )
    search_route = SearchRoute(
        who="Zipkin",
        label="/traces",
        decode=_parse_traces,
        form="a list of traces",
        api="Zipkin query API",
    )

    def _unreachable(self, exc: RequestFailed) -> str:
        return f"cannot reach Zipkin at {self.url}: {exc}. Is the backend running? {_JAEGER_HINT}"

    def _search(
        self, tags: dict[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[list[Span]]:
        """`GET /api/v2/traces`: `endTs`/`lookback` in ms (rounded outward so the whole
        [start_us, end_us] window is covered), tags as `annotationQuery` `k=v and k2=v2`."""
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
        return self._search_answer(self._search_request(params))

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
        if not is_name_list(json_body(resp)):
            return (
                f"{where} answered 200 but not with a list of service names: this is not a Zipkin "
                "query API (a login page or proxy?)"
            )
        return None
