"""The one fetch/search engine every HTTP reader runs on.

The readers (zipkin.py, jaeger.py, jaeger_v3.py, tempo.py) differ only in what they ask and how
they read the answers; `HttpReader` does the rest the same way for each (tempo.py asks by id
itself: v2, then v1, with a PARTIAL status and a tenant):

- fetch by id (`fetch_many`, `fetch_reduced`): ids normalized and deduplicated, invalid ones ERROR,
  the rest fetched in units (one batched request, or one id), each answer reduced as soon as it is
  decoded. Units in flight: the reader's AIMD limit (loadgen.backends._adaptive), starting at
  `concurrency`, growing up to `concurrency_bound` while answers stay fast, halving on 429/503,
  5xx, timeouts or latency blowing up; fixed at `concurrency` with `adaptive=False`. The limit,
  the requests and the time spent are the reader's `query_stats()`. A reader names its routes as data:
  - `ByIdRoute`: `GET` one trace; its 404 is MISSING only in the backend's own not-found form
    (`is_not_found`), any other 404 is ERROR; a 200 is decoded by `decode`.
  - `BatchRoute` (optional): `GET` many ids at once. A 404 there is evidence of nothing: the ids
    are asked one by one instead, and when one of those answers proves the backend (its own
    not-found answer, or a 200 in its form) batching stops for the session.
- search: `GET {api}/traces` (or the route's `path`) with the reader's parameters; `SearchRoute`
  names the answer's form, a 404 that means "no match" (if the backend has one) and the advice
  for any other 404.
- check: `GET {api}/services` once, without retries; the reader says what a wrong answer means.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar, Unpack

import httpx

from loadgen.backends._adaptive import AimdController, AimdSettings, BusyClock
from loadgen.backends._common import all_error, assign
from loadgen.backends._http import (
    BackendOverrides,
    HttpClient,
    QueryParams,
    RequestFailed,
    json_body,
    resolve_options,
    run_limited,
)
from loadgen.backends.base import (
    BackendError,
    BackendOptions,
    Fetched,
    FetchStatus,
    ProgressCallback,
    QueryStats,
    Span,
    TraceBackend,
    redact_url,
)
from loadgen.mesh.ids import is_hex_id, normalize_trace_id

__all__ = ["BatchRoute", "ByIdRoute", "HttpReader", "SearchRoute", "fetch_all", "unchanged"]

T = TypeVar("T")


def _never(_body: Any) -> bool:
    return False


@dataclass(frozen=True)
class ByIdRoute:
    """`GET` one trace by id."""

    label: str
    """The route as messages name it, e.g. `/api/traces/{id}`."""
    path: Callable[[str], str]
    """The request path (below the API root) for a normalized trace id."""
    is_not_found: Callable[[httpx.Response, str], bool]
    """Whether a 404 for this id is the backend's own not-found answer (then MISSING)."""
    not_found_form: str
    """That answer, as named when a 404 is something else, e.g. `Zipkin's not-found answer`."""
    decode: Callable[[Any], Iterable[Span] | None]
    """The spans of a 200's JSON body, None when the body is not in `form`."""
    form: str
    """The form of a 200's body, as named when it is not, e.g. `a JSON list of spans`."""


@dataclass(frozen=True)
class BatchRoute:
    """`GET` many trace ids in one request."""

    label: str
    """The route as messages name it, e.g. `/traceMany`."""
    path: str
    """The request path below the API root."""
    params: Callable[[list[str]], QueryParams]
    """The query parameters naming the ids."""
    decode: Callable[[list[str], Any], dict[str, Fetched] | None]
    """The answer for every requested id from a 200's JSON body, None when the body is not in
    `form`. Error texts it writes may quote the answer: the engine scrubs them of secrets."""
    form: str
    """The form of a 200's body, as named when it is not."""
    final_404_once_answered: bool = False
    """True: once this route has answered in its form in this session, a later 404 comes from
    something in between and is ERROR for the batch, without asking per id."""
    reduce_body: Callable[[list[str], bytes, Callable[[Fetched], Any]], dict[str, Any] | None] | None = None
    """Optional: `reduce` of the answer for every requested id straight from a 200's raw body,
    for a `reduce` the reader knows a faster way to (e.g. a read-back's observations from spans
    decoded into typed structs); None when it does not know the reduce or cannot read the body
    that way: then `decode`, and `reduce` each answer. Whenever it answers, the result is what
    that would give, and carries no error text."""


@dataclass(frozen=True)
class SearchRoute:
    """`GET {api}{path}` with search parameters."""

    who: str
    """Starts every message, e.g. `Jaeger api_v3` in "Jaeger api_v3 search at URL failed: ..."."""
    label: str
    """The route as messages name it, e.g. `/api/traces`."""
    decode: Callable[[Any], list[Any] | None]
    """A 200's JSON body as a list of traces (in whatever shape the reader reads), None when the
    body is not in `form`."""
    form: str
    """The form of a 200's body, as named when it is not."""
    api: str
    """What the URL should be, as in "is the URL the Jaeger query API?"."""
    no_match: Callable[[Any], bool] = _never
    """Whether a 404's JSON body is the backend's answer for "no trace matches" (read as [])."""
    path: str = "/traces"
    """The request path below the API root (Tempo's is `/search`)."""


def unchanged(fetched: Fetched) -> Fetched:
    """The `reduce` of a plain `fetch_many`: every answer kept as it is, spans and all."""
    return fetched


def fetch_all(
    trace_ids: Sequence[str],
    fetch_unit: Callable[[list[str], Callable[[Fetched], T]], dict[str, T]],
    *,
    reduce: Callable[[Fetched], T],
    unit_size: int,
    concurrency: int | AimdController,
    progress_step: int,
    on_progress: ProgressCallback | None,
    thread_name: str,
) -> dict[str, T]:
    """The shape of every `fetch_many` and `fetch_reduced`: ids normalized and deduplicated,
    invalid ones ERROR, the rest fetched in units of `unit_size` ids (`concurrency` units in
    flight: a fixed number, or a controller's limit as it moves), and `on_progress(done, total)`
    on the caller's thread after a unit once at least `progress_step` more ids are done since the
    last call, and after the last unit.

    `fetch_unit(ids, reduce)` gives the reduced answer of each of a unit's ids: each answer is
    passed through `reduce` on the thread that decoded it, as soon as its unit is decoded: with a
    reducing `reduce` the decoded spans of at most `concurrency` units (at most the controller's
    maximum) are alive at any time, whatever the number of ids."""
    unique = list(dict.fromkeys(normalize_trace_id(t) for t in trace_ids))
    results: dict[str, T] = {}
    valid: list[str] = []
    for tid in unique:
        if is_hex_id(tid):
            valid.append(tid)
        else:
            results[tid] = reduce(Fetched(FetchStatus.ERROR, error=f"not a 16 or 32 hex trace id: {tid!r}"))
    total = len(unique)
    done = reported = len(results)
    units = [valid[i : i + unit_size] for i in range(0, len(valid), unit_size)]

    def fetch_reduced(ids: list[str]) -> dict[str, T]:
        return fetch_unit(ids, reduce)

    if isinstance(concurrency, int):
        concurrency = AimdController(AimdSettings(start=concurrency, maximum=concurrency, adaptive=False))
    with closing(run_limited(units, fetch_reduced, concurrency, thread_name)) as finished:
        for unit_result in finished:
            results.update(unit_result)
            done += len(unit_result)
            if on_progress is not None and (done - reported >= progress_step or done == total):
                reported = done
                on_progress(done, total)
    return results


class HttpReader(TraceBackend):
    """A TraceBackend over one HTTP query API rooted at `{base_url}{api_path}`: the engine (see
    the module docstring). Subclasses set the routes and the `check` messages."""

    api_path: ClassVar[str]
    """The API root below the base URL, e.g. `/api/v2`."""
    by_id: ClassVar[ByIdRoute]
    batch: ClassVar[BatchRoute | None] = None
    """None: one request per id, and `batch_size` only sets how often progress is reported."""
    search_route: ClassVar[SearchRoute]

    def __init__(
        self,
        base_url: str,
        options: BackendOptions | None = None,
        **overrides: Unpack[BackendOverrides],
    ) -> None:
        base, self._options, auth = resolve_options(base_url, options, overrides)
        self.url = redact_url(base)
        # One limit for the session: what the backend taught one fetch holds for the next.
        self._limiter = AimdController(
            AimdSettings(
                start=self._options.concurrency,
                maximum=self._options.concurrency_bound(batched=self.batch is not None),
                adaptive=self._options.adaptive,
            )
        )
        self._busy = BusyClock()
        self._http = HttpClient(f"{base}{self.api_path}", self._options, auth, self._limiter)
        # False once the batch route answered 404 and the per-id answers proved this is the
        # backend (e.g. a Zipkin before 2.17, a Jaeger after v2.20): one GET per id from then on.
        # Plain bool stores: atomic, each set only once.
        self._batching = self.batch is not None
        # True once the batch route answered in its form: this server has it.
        self._batch_answered = False

    # -- TraceBackend ------------------------------------------------------------------------

    def check(self) -> None:
        """`GET {api}/services` once, without retries; BackendError says what to fix."""
        try:
            resp = self._http.get_once("/services")
        except RequestFailed as exc:
            raise BackendError(self._unreachable(exc)) from exc
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
        batched = self.batch is not None
        with self._busy.busy():
            return fetch_all(
                trace_ids,
                self._fetch_unit,
                reduce=reduce,
                unit_size=self._options.batch_size if batched else 1,
                concurrency=self._limiter,
                progress_step=1 if batched else self._options.batch_size,  # batched: after every batch
                on_progress=on_progress,
                thread_name=f"{self.name}-fetch",
            )

    def query_stats(self) -> QueryStats:
        """Requests, throttled/failed answers, time and limits of every fetch and search so far."""
        state = self._limiter.state()
        busy_s = self._busy.seconds()
        return QueryStats(
            requests=state.requests,
            throttled=state.throttled,
            server_errors=state.server_errors,
            transport_errors=state.transport_errors,
            busy_s=busy_s,
            qps=state.requests / busy_s if state.requests and busy_s > 0 else None,
            concurrency=state.limit,
            lowest_concurrency=state.lowest,
            highest_concurrency=state.highest,
            max_concurrency=self._limiter.maximum,
            adaptive=self._options.adaptive,
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
        """Traces matching `tags` (and `service`) within [start_us, end_us]; see
        TraceBackend.search and the reader's `_search`."""
        if end_us < start_us or limit < 1:
            raise ValueError(f"need start_us <= end_us and limit >= 1, got {start_us}, {end_us}, {limit}")
        with self._busy.busy():
            return self._search(dict(tags or {}), service, start_us, end_us, limit)

    def close(self) -> None:
        self._http.close()

    # -- what a reader says ------------------------------------------------------------------

    @abc.abstractmethod
    def _unreachable(self, exc: RequestFailed) -> str:
        """The message when `check` cannot reach the backend at all."""

    @abc.abstractmethod
    def _services_problem(self, resp: httpx.Response) -> str | None:
        """Why a `/services` answer shows this is not a usable query API, or None."""

    @abc.abstractmethod
    def _search(
        self, tags: dict[str, str], service: str | None, start_us: int, end_us: int, limit: int
    ) -> list[list[Span]]:
        """The search, its arguments checked; built on `_search_request` and `_search_answer`."""

    def _search_404_hint(self) -> str:
        """Advice added to a search's 404 that is not the backend's "no match" answer."""
        return ""

    # -- searching ---------------------------------------------------------------------------

    def _search_request(self, params: QueryParams) -> httpx.Response:
        """`GET {api}{route.path}` (with retries); BackendError when it cannot be asked at all."""
        try:
            return self._http.get(self.search_route.path, params)
        except RequestFailed as exc:
            raise BackendError(f"{self.search_route.who} search at {self.url} failed: {exc}") from exc

    def _search_answer(self, resp: httpx.Response) -> list[Any]:
        """The decoded traces of a search answer ([] for the backend's "no match" 404);
        BackendError for any other answer that is not a 200 in the route's form."""
        route = self.search_route
        where = f"{route.who} search at {self.url}"
        body = json_body(resp)
        if resp.status_code == 404 and route.no_match(body):
            return []
        if resp.status_code != 200:
            problem = f"{where} failed: {self._http.problem(resp, route.label)}"
            hint = self._search_404_hint() if resp.status_code == 404 else ""
            raise BackendError(f"{problem}. {hint}" if hint else problem)
        traces = route.decode(body)
        if traces is None:
            raise BackendError(f"{where} answered 200 but not with {route.form}: is the URL the {route.api}?")
        return traces

    # -- fetching ----------------------------------------------------------------------------

    def _fetch_unit(self, ids: list[str], reduce: Callable[[Fetched], T]) -> dict[str, T]:
        if self.batch is None or len(ids) == 1 or not self._batching:
            return {tid: reduce(self._fetch_one(tid)[0]) for tid in ids}
        try:
            resp = self._http.get(self.batch.path, self.batch.params(ids))
        except RequestFailed as exc:
            return {tid: reduce(f) for tid, f in all_error(ids, f"{self.batch.label}: {exc}").items()}
        if resp.status_code == 200 and self.batch.reduce_body is not None:
            reduced = self.batch.reduce_body(ids, resp.content, reduce)
            if reduced is not None:
                self._batch_answered = True
                return reduced
        return {tid: reduce(fetched) for tid, fetched in self._batch_answer(self.batch, ids, resp).items()}

    def _batch_answer(self, route: BatchRoute, ids: list[str], resp: httpx.Response) -> dict[str, Fetched]:
        if resp.status_code == 404 and not (route.final_404_once_answered and self._batch_answered):
            # No batch route here (an older or newer server), or not this backend at all: a 404
            # that no proxy's 404 can be told apart from, evidence of nothing, so it never makes
            # an id MISSING. Ask per id instead, whose not-found answer proves itself; stop
            # batching for the session only once one of those answers shows this is the backend.
            answers = {tid: self._fetch_one(tid) for tid in ids}
            if any(proven for _, proven in answers.values()):
                self._batching = False
            return {tid: fetched for tid, (fetched, _) in answers.items()}
        if resp.status_code != 200:
            return all_error(ids, self._http.problem(resp, route.label))
        result = route.decode(ids, json_body(resp))
        if result is None:
            return all_error(ids, f"{route.label}: {self._http.summary(resp)} is not {route.form}")
        self._batch_answered = True
        return {tid: self._scrubbed(fetched) for tid, fetched in result.items()}

    def _fetch_one(self, tid: str) -> tuple[Fetched, bool]:
        """The answer for one id, and whether it proved the URL is this backend's query API."""
        route = self.by_id
        try:
            resp = self._http.get(route.path(tid))
        except RequestFailed as exc:
            return Fetched(FetchStatus.ERROR, error=f"{route.label}: {exc}"), False
        if resp.status_code == 404:
            if route.is_not_found(resp, tid):
                return Fetched(FetchStatus.MISSING), True
            error = f"{route.label}: {self._http.summary(resp)} is not {route.not_found_form}"
            return Fetched(FetchStatus.ERROR, error=error), False
        if resp.status_code != 200:
            return Fetched(FetchStatus.ERROR, error=self._http.problem(resp, route.label)), False
        spans = route.decode(json_body(resp))
        if spans is None:
            error = f"{route.label}: {self._http.summary(resp)} is not {route.form}"
            return Fetched(FetchStatus.ERROR, error=error), False
        return assign([tid], spans)[tid], True

    def _scrubbed(self, fetched: Fetched) -> Fetched:
        if fetched.error is None:
            return fetched
        return replace(fetched, error=self._http.scrub(fetched.error))
