"""HTTP plumbing shared by every reader, in one place: client construction from BackendOptions
(auth, TLS, timeouts, pool size), GET with retries and backoff, JSON-or-nothing bodies, and
messages that never carry a secret.

Retry policy: 5xx answers 500/502/503/504, 429, timeouts and connection errors are transient and
retried `options.retries` times; the delay before retry n (0-based) is `backoff_s * 2**n`, or the
server's Retry-After (seconds, capped at 30 s) when that is longer. Every other status is final
and returned to the reader, which decides what it means: a 404 is MISSING only in the backend's
own not-found form (its body says so), never because of the status alone.

Adaptive concurrency: an HttpClient given an `AimdController` (loadgen.backends._adaptive) tells
it how every attempt of `get` went (its latency; throttled: 429/503, server error: 500/502/504,
transport error: timeout or connection failure, or OK), and `run_limited` keeps at most the
controller's current limit of units in flight, re-reading it as answers come.
"""

from __future__ import annotations

import itertools
import json
import logging
import ssl
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypedDict, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from loadgen.backends._adaptive import AimdController, AimdSettings, Outcome
from loadgen.backends._common import loads_json
from loadgen.backends.base import BackendOptions, redact_url

__all__ = [
    "RETRY_STATUSES",
    "BackendOverrides",
    "HttpClient",
    "RequestFailed",
    "describe",
    "json_body",
    "media_type",
    "resolve_options",
    "run_concurrently",
    "run_limited",
]

logger = logging.getLogger("loadgen.backends")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Transient answers worth retrying; every other status is final."""
THROTTLE_STATUSES = frozenset({429, 503})
"""Answers that ask the client to slow down (the adaptive limit halves; counted as throttled)."""
# Cap on a server's Retry-After so a misbehaving proxy cannot stall a run.
_MAX_RETRY_AFTER_S = 30.0
# How much of an answer's body a message quotes.
_BODY_CHARS = 80

QueryParams = Mapping[str, str | int] | Sequence[tuple[str, str | int]]

T = TypeVar("T")
R = TypeVar("R")


class RequestFailed(Exception):
    """A request still failed after all retries (or failed in a way not worth retrying).
    The message is already scrubbed of secrets."""


class BackendOverrides(TypedDict, total=False):
    """Keyword overrides every reader's constructor accepts; they win over `options`."""

    headers: Mapping[str, str]
    bearer_token: str
    basic_auth: tuple[str, str]
    verify: bool | str
    timeout_s: float
    retries: int
    backoff_s: float
    concurrency: int
    max_concurrency: int
    adaptive: bool
    batch_size: int
    auth: httpx.Auth | tuple[str, str]
    """Kept for callers of the first ZipkinBackend: a (user, password) tuple is `basic_auth`,
    an httpx.Auth is used as is."""


def resolve_options(
    base_url: str, options: BackendOptions | None, overrides: BackendOverrides
) -> tuple[str, BackendOptions, httpx.Auth | None]:
    """(base URL without user:password and trailing slash, effective options, extra httpx auth).

    Credentials in the URL (`http://user:pw@host`) become basic auth unless `options`/overrides
    already carry credentials; either way they are removed from the URL, so they never reach a
    message, a log line (httpx logs request URLs) or `TraceBackend.url`.
    """
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"backend URL must start with http:// or https://, got {redact_url(base_url)!r}")
    flags: dict[str, Any] = {k: v for k, v in overrides.items() if k != "auth"}
    extra_auth: httpx.Auth | None = None
    auth = overrides.get("auth")
    if isinstance(auth, tuple):
        flags.setdefault("basic_auth", auth)
    elif auth is not None:
        extra_auth = auth
    resolved = (options or BackendOptions()).merged(flags)
    parts = urlsplit(base_url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        if resolved.bearer_token is None and resolved.basic_auth is None and extra_auth is None:
            resolved = resolved.merged({"basic_auth": (unquote(user), unquote(password))})
        base_url = urlunsplit(parts._replace(netloc=hostport))
    return base_url.rstrip("/"), resolved, extra_auth


def _ssl_verify(verify: bool | str) -> bool | ssl.SSLContext:
    if isinstance(verify, bool):
        return verify
    path = Path(verify)
    try:
        if path.is_dir():
            return ssl.create_default_context(capath=str(path))
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use CA bundle {verify!r}: {exc}") from exc


class HttpClient:
    """A pooled httpx.Client rooted at one API URL, with the shared retry policy. With a
    `controller`, every attempt of `get` is reported to it, and the pool holds its maximum."""

    def __init__(
        self,
        root: str,
        options: BackendOptions,
        auth: httpx.Auth | None = None,
        controller: AimdController | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.root = root.rstrip("/")
        self.options = options
        self.controller = controller
        self._clock = clock
        pool = max(options.concurrency, controller.maximum if controller is not None else 0)
        headers = dict(options.headers)
        if options.bearer_token is not None:
            headers["Authorization"] = f"Bearer {options.bearer_token}"
        if auth is None and options.basic_auth is not None:
            auth = httpx.BasicAuth(*options.basic_auth)
        self._secrets = options.secret_values()
        self._client = httpx.Client(
            headers=headers,
            auth=auth,
            verify=_ssl_verify(options.verify),
            timeout=httpx.Timeout(options.timeout_s),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            # httpx drops Authorization when a redirect leaves the origin.
            follow_redirects=True,
        )

    def scrub(self, text: str) -> str:
        """`text` with every secret replaced by ***: a server may echo request headers."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_url(text)

    def describe(self, exc: Exception) -> str:
        return self.scrub(describe(exc))

    def summary(self, resp: httpx.Response) -> str:
        """An answer in one short line, e.g. `404 text/plain "404 page not found"`: the status, the
        media type and the start of the body (whitespace collapsed, secrets scrubbed)."""
        # Scrubbed before it is cut, so that no secret is cut in half and half shown.
        text = self.scrub(" ".join(resp.text[: 4 * _BODY_CHARS].split()))
        if len(text) > _BODY_CHARS:
            text = text[: _BODY_CHARS - 3] + "..."
        return f'{resp.status_code} {self.scrub(media_type(resp))} "{text}"'

    def problem(self, resp: httpx.Response, path: str) -> str:
        """A short description of a non-success answer: `{path} answered {summary}`."""
        message = f"{path} answered {self.summary(resp)}"
        if resp.status_code in (414, 431):
            message += " (request too long: lower the batch size)"
        return message

    def get_once(self, path: str, params: QueryParams | None = None) -> httpx.Response:
        """One GET of `{root}{path}`, no retries; RequestFailed on any transport error."""
        try:
            return self._client.get(f"{self.root}{path}", params=_query(params))
        except httpx.RequestError as exc:
            raise RequestFailed(self.describe(exc)) from exc

    def get(self, path: str, params: QueryParams | None = None) -> httpx.Response:
        """GET `{root}{path}`, retrying transient failures; the final response has any status
        that is not retryable. Raises RequestFailed when retries run out."""
        attempt = 0
        retries, backoff_s = self.options.retries, self.options.backoff_s
        # Retries keep the first attempt's ticket: sent under the limit of then, they are the
        # same overload, which must not halve the limit again once it was halved for it.
        ticket = self.controller.begin() if self.controller is not None else 0
        while True:
            retry_after: float | None = None
            try:
                resp = self._attempt(path, params, ticket)
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts
                reason = self.describe(exc)
            except httpx.RequestError as exc:  # e.g. too many redirects: not transient
                raise RequestFailed(self.describe(exc)) from exc
            else:
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                reason = self.problem(resp, path)
                retry_after = _retry_after_s(resp)
            if attempt >= retries:
                raise RequestFailed(f"{reason} (gave up after {attempt + 1} attempts)")
            delay = backoff_s * 2**attempt
            if retry_after is not None:
                delay = max(delay, min(retry_after, _MAX_RETRY_AFTER_S))
            logger.debug("retrying %s in %.2fs: %s", path, delay, reason)
            time.sleep(delay)
            attempt += 1

    def _attempt(self, path: str, params: QueryParams | None, ticket: int) -> httpx.Response:
        """One GET, its outcome and latency reported to the controller (if any)."""
        controller = self.controller
        if controller is None:
            return self._client.get(f"{self.root}{path}", params=_query(params))
        start = self._clock()
        try:
            resp = self._client.get(f"{self.root}{path}", params=_query(params))
        except httpx.TransportError:
            controller.record(ticket, Outcome.TRANSPORT_ERROR, self._clock() - start)
            raise
        except httpx.RequestError:
            controller.record(ticket, Outcome.OK, self._clock() - start)  # not the backend's load
            raise
        controller.record(ticket, outcome_of(resp.status_code), self._clock() - start)
        return resp

    def close(self) -> None:
        self._client.close()


def outcome_of(status: int) -> Outcome:
    """How an answer's status drives the adaptive limit: 429/503 throttled, other retryable 5xx
    a server error, anything else (200, 404, 400, ...) OK."""
    if status in THROTTLE_STATUSES:
        return Outcome.THROTTLED
    if status in RETRY_STATUSES:
        return Outcome.SERVER_ERROR
    return Outcome.OK


def _query(
    params: QueryParams | None,
) -> Mapping[str, str | int] | tuple[tuple[str, str | int], ...] | None:
    if params is None or isinstance(params, Mapping):
        return params
    return tuple(params)  # repeated names, e.g. traceID=a&traceID=b


def media_type(resp: httpx.Response) -> str:
    """The answer's media type without parameters, lowercase (`text/plain`), or `no content type`."""
    return resp.headers.get("content-type", "").split(";")[0].strip().lower() or "no content type"


def json_body(resp: httpx.Response) -> Any:
    """The decoded JSON body, or None when it is not JSON (an HTML login page, a proxy error).
    What `resp.json()` gives, decoded by msgspec where it can (`loads_json`)."""
    try:
        return loads_json(resp.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def describe(exc: Exception) -> str:
    """Exception text for users; httpx messages do not include request headers."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retry_after_s(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # absent, or an HTTP date: use our own backoff


def run_concurrently(
    items: Sequence[T], fn: Callable[[T], R], concurrency: int, thread_name: str
) -> Generator[R, None, None]:
    """Yield `fn(item)` for every item on the caller's thread, in completion order, with at most
    `concurrency` calls in flight."""
    fixed = AimdController(AimdSettings(start=concurrency, maximum=concurrency, adaptive=False))
    return run_limited(items, fn, fixed, thread_name)


def run_limited(
    items: Sequence[T], fn: Callable[[T], R], controller: AimdController, thread_name: str
) -> Generator[R, None, None]:
    """Yield `fn(item)` for every item on the caller's thread, in completion order, with at most
    `controller.limit` calls in flight: the limit is read again after every call that ends, so a
    lower limit takes effect as calls finish (none is cancelled) and a higher one at once."""
    if len(items) <= 1 or controller.maximum == 1:
        for item in items:
            yield fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=min(controller.maximum, len(items)), thread_name_prefix=thread_name)
    waiting = iter(items)
    pending: set[Future[R]] = set()
    try:
        while True:
            for item in itertools.islice(waiting, max(0, controller.limit - len(pending))):
                pending.add(pool.submit(fn, item))
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            # Refilled before the results are handed over: the consumer's work overlaps the calls.
            for item in itertools.islice(waiting, max(0, controller.limit - len(pending))):
                pending.add(pool.submit(fn, item))
            for future in finished:
                yield future.result()
    finally:
        # Also reached when the consumer stops early (e.g. on_progress raised).
        pool.shutdown(wait=True, cancel_futures=True)
