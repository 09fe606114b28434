"""TracedUser: a Locust FastHttpUser that sends the header-mode mix and writes the ledger.

This package is the only one (with scenarios/) that imports Locust, because `import locust`
monkey-patches the whole process with gevent.

Configuration comes from Locust's own argument parser (so the web UI shows it too), each option
also readable from a LOADGEN_* environment variable; `loadgen run` sets those variables.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import time
from bisect import bisect
from collections.abc import Iterator
from typing import Any, TypeGuard

import gevent
from geventhttpclient.response import HTTPSocketPoolResponse
from geventhttpclient.url import URL
from locust import events, task
from locust.contrib.fasthttp import FAILURE_EXCEPTIONS, FastHttpUser, FastResponse
from locust.env import Environment
from locust.exception import CatchResponseError, StopUser
from locust.runners import MasterRunner

from loadgen.ledger import LedgerWriter
from loadgen.mesh.echo import EchoContext, echo_context, parse_echo
from loadgen.mesh.encode import EncodeOptions, encode
from loadgen.mesh.headers import DEFAULT_GATEWAY_HOST, REQUEST_ID_HEADER, RUN_ID_HEADER
from loadgen.mesh.ids import IdStyle
from loadgen.mesh.modes import DEFAULT_MIX, HeaderMode, format_mix, parse_mix
from loadgen.mesh.tracer import TracerFamily, sampled_fact
from loadgen.redact import redact_text
from loadgen.traffic import webui as _webui  # noqa: F401  (registers the web UI's Tracing tab)
from loadgen.traffic.locustfile_paths import GATEWAY_USERINFO_ENV
from loadgen.traffic.relay import LEDGER_MESSAGE
from loadgen.traffic.shape import step_interval
from loadgen.traffic.state import STATE
from loadgen.traffic.web_tab import WEB_STATE_ENV
from loadgen.userinfo import basic_auth_header

DEFAULT_HOST_HEADER = DEFAULT_GATEWAY_HOST


#: Options `loadgen run --web` sets for the run and its read-back: not editable in its web UI.
RUN_FIXED = frozenset(
    {"loadgen_run_id", "loadgen_ledger", "loadgen_host_header", "loadgen_path", "loadgen_xrid_percent",
     "loadgen_tracer", "loadgen_max_requests"}
)  # fmt: skip


def show_in_web_ui(action: Any, web_mode: bool) -> Any:
    """Mark an option for Locust's web UI. Locust lists the actions its own parser's add_argument
    marked (`include_in_web_ui`); an argument group's add_argument is argparse's and marks none."""
    action.include_in_web_ui = not (web_mode and action.dest in RUN_FIXED)
    action.is_secret = action.is_required = action.is_multiple = False
    return action


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("loadgen", "Traced traffic for loadgen (see `loadgen run --help`)")
    for action in _loadgen_options(group):
        show_in_web_ui(action, web_mode=bool(os.environ.get(WEB_STATE_ENV)))
    # Set by loadgen, not a knob (never in the web UI): Locust's master sends its custom options to
    # the workers, but not -u, so without it each worker would pace its share to the whole rate.
    total = group.add_argument(
        "--loadgen-users",
        env_var="LOADGEN_USERS",
        type=int,
        default=0,
        help="The run's users over all processes, who share --loadgen-rate (0: this process's -u)",
    )
    show_in_web_ui(total, web_mode=False).include_in_web_ui = False


def _loadgen_options(group: Any) -> list[Any]:
    """The loadgen options (each also read from its LOADGEN_* variable)."""
    return [
        group.add_argument(
            "--loadgen-run-id",
            env_var="LOADGEN_RUN_ID",
            default="",
            help="Run id sent in x-loadgen-run-id and used for the run folder (default: generated)",
        ),
        group.add_argument(
            "--loadgen-ledger",
            env_var="LOADGEN_LEDGER",
            default="",
            help="Ledger file (default: reports/<run-id>/ledger.jsonl)",
        ),
        group.add_argument(
            "--loadgen-host-header",
            env_var="LOADGEN_HOST_HEADER",
            default=DEFAULT_HOST_HEADER,
            help="Host header the gateway routes on",
        ),
        group.add_argument(
            "--loadgen-path",
            env_var="LOADGEN_PATH",
            default="/headers",
            help="Request path (an echo of headers)",
        ),
        group.add_argument(
            "--loadgen-mix",
            env_var="LOADGEN_MIX",
            default=format_mix(DEFAULT_MIX),
            help="Header-mode weights MODE=W,... (modes: " + ", ".join(m.value for m in HeaderMode) + ")",
        ),
        group.add_argument(
            "--loadgen-rate",
            env_var="LOADGEN_RATE",
            type=float,
            default=0.0,
            help="Target requests/s over all users (0 = as fast as the users go)",
        ),
        group.add_argument(
            "--loadgen-seed", env_var="LOADGEN_SEED", type=int, default=None, help="Seed for the mode choice"
        ),
        group.add_argument(
            "--loadgen-max-requests",
            env_var="LOADGEN_MAX_REQUESTS",
            type=int,
            default=0,
            help="Stop the run after this many requests in this process (0 = no limit; calibration uses it)",
        ),
        group.add_argument(
            "--loadgen-id-style",
            env_var="LOADGEN_ID_STYLE",
            choices=[s.value for s in IdStyle],
            default=IdStyle.RANDOM.value,
            help="128-bit trace ids: fully random, or k6's layout (prefix dc0742, then the unix time in "
            "ns as a varint, then 4 random bytes; see loadgen.mesh.ids.k6_trace_id)",
        ),
        group.add_argument(
            "--loadgen-xrid-percent",
            env_var="LOADGEN_XRID_PERCENT",
            type=float,
            default=None,
            help="The gateway's sampling percent that crafted x-request-ids (modes xrid_crafted, "
            "xrid_no_dashes) target, so each decision is predicted before sending (default: unknown, "
            "ids are random and no prediction is recorded)",
        ),
        group.add_argument(
            "--loadgen-xrid-sampled-fraction",
            env_var="LOADGEN_XRID_SAMPLED_FRACTION",
            type=float,
            default=0.5,
            help="Share of crafted x-request-ids crafted to be sampled (default 0.5)",
        ),
        group.add_argument(
            "--loadgen-tracer",
            env_var="LOADGEN_TRACER",
            choices=[t.value for t in TracerFamily],
            default=None,
            help="The mesh's tracer: where each request's sampled fact is read (zipkin: B3, else "
            "x-request-id char 14; opentelemetry: the forwarded traceparent). Default zipkin",
        ),
    ]


def given(opts: Any, name: str) -> Any:
    """An option's value, None when unset: the web UI's form sends an option without a default
    (None) as an empty string, which Locust then stores as the value."""
    value = getattr(opts, name, None) if opts else None
    return None if value is None or value == "" else value


def encode_options(opts: Any) -> EncodeOptions:
    """The id options from Locust's parsed options (or their LOADGEN_* variables)."""
    style = str(getattr(opts, "loadgen_id_style", "") or os.environ.get("LOADGEN_ID_STYLE", "") or "random")
    percent = given(opts, "loadgen_xrid_percent")
    if percent is None and os.environ.get("LOADGEN_XRID_PERCENT"):
        percent = float(os.environ["LOADGEN_XRID_PERCENT"])
    fraction = given(opts, "loadgen_xrid_sampled_fraction")
    if fraction is None:
        fraction = float(os.environ.get("LOADGEN_XRID_SAMPLED_FRACTION", "0.5"))
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"--loadgen-xrid-sampled-fraction must be in [0, 1], got {fraction}")
    if percent is not None and not 0.0 <= float(percent) <= 100.0:
        raise ValueError(f"--loadgen-xrid-percent must be in [0, 100], got {percent}")
    return EncodeOptions(
        id_style=IdStyle(style),
        crafted_percent=None if percent is None else float(percent),
        crafted_sampled_fraction=float(fraction),
        tracer=tracer_option(opts),
    )


def tracer_option(opts: Any) -> TracerFamily:
    """--loadgen-tracer / LOADGEN_TRACER (zipkin when unset)."""
    name = given(opts, "loadgen_tracer")
    return TracerFamily(name or os.environ.get("LOADGEN_TRACER") or TracerFamily.ZIPKIN)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):

        def on_ledger_batch(msg: Any, **__: Any) -> None:
            STATE.configure(environment)
            ledger = STATE.ledger
            assert isinstance(ledger, LedgerWriter)
            for record in msg.data:
                ledger.append(record)

        runner.register_message(LEDGER_MESSAGE, on_ledger_batch)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    STATE.configure(environment)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if STATE.ledger is not None:
        STATE.ledger.flush()


@events.quit.add_listener
def _on_quit(exit_code: int, **_: Any) -> None:
    # `quit` fires after the runner has stopped every user (`quitting` fires before, while
    # users may still finish a request), so no record is written after the close.
    STATE.close()


#: What FastHttpSession.request adds to every request's headers (unless given).
ACCEPT_ENCODING = "gzip, deflate, br"

#: A sent request's outcome: geventhttpclient's response, or what sending it raised.
Sent = HTTPSocketPoolResponse | BaseException


class TracedUser(FastHttpUser):
    """Sends one request per task with a header mode drawn from the configured mix.

    A request is sent below Locust's session layer: straight through the geventhttpclient
    HTTPClient that FastHttpSession's user agent would use (same connection pool, timeouts, URL
    and wire headers), and the user fires Locust's request event itself, with the fields the
    session would fire. Locust's session layer (FastHttpSession.request, its user agent's
    urlopen: a parsed URL, a header copy and a cookie-jar pass per request, FastResponse,
    ResponseContextManager) cost more CPU per request than all of loadgen's own work
    (bench/generator.py, issue 15), and no plain 200 needs any of it. Anything that is not a
    plain 200 (an error, another status, a redirect, a Set-Cookie, an encoded body) is handed,
    as received, to the session's own code (`_through_session`), which then judges, follows
    and reports it exactly as if it had sent the request: Locust's stats, failures and every
    message stay the session's. With cookies in the jar every request goes through the session.
    """

    abstract = True
    #: A fixed mix (`MODE=W,...`) for this user class; None takes --loadgen-mix.
    mix: str | None = None

    def on_start(self) -> None:
        STATE.configure(self.environment)
        opts = self.environment.parsed_options
        mix = parse_mix(
            self.mix or (getattr(opts, "loadgen_mix", "") if opts else "") or format_mix(DEFAULT_MIX)
        )
        self._modes = [m for m, w in mix.items() if w > 0]
        self._mode_names = [m.value for m in self._modes]
        self._cum_weights = list(itertools.accumulate(mix[m] for m in self._modes))
        # random.choices(modes, cum_weights=...)[0], unrolled: the same draw from the same generator
        # (so --loadgen-seed gives the same sequence), without its checks and list per request.
        self._total_weight = self._cum_weights[-1] + 0.0
        self._last_mode = len(self._modes) - 1
        self._limit = int(getattr(opts, "loadgen_max_requests", 0) or 0) if opts else 0
        seed = given(opts, "loadgen_seed")
        # One generator per user: reproducible mode sequences with --loadgen-seed, fresh ids anyway.
        self._rng = random.Random(None if seed is None else (int(seed), id(self)).__hash__())
        self._id_rng = random.Random()
        self._encode_options = encode_options(opts)
        self._tracer = self._encode_options.tracer
        self._host_header = (
            getattr(opts, "loadgen_host_header", DEFAULT_HOST_HEADER) if opts else DEFAULT_HOST_HEADER
        )
        self._path = getattr(opts, "loadgen_path", "/headers") if opts else "/headers"
        self._path_shown = redact_text(self._path)  # the ledger never holds a ?token= of --path
        self._rate = float(getattr(opts, "loadgen_rate", 0.0) or 0.0) if opts else 0.0
        self._cp_last_run = time.perf_counter()
        self._cp_last_wait_time = 0.0
        userinfo = os.environ.get(GATEWAY_USERINFO_ENV)
        if userinfo:  # the gateway's credentials, kept out of the host Locust shows
            self.client.auth_header = basic_auth_header(userinfo)
        self._prepare_send()

    def _prepare_send(self) -> None:
        """What FastHttpSession.request and its user agent work out per request, worked out once:
        the URL (the session's _build_url), the request URI as the agent sends it, the pooled
        HTTPClient, and the agent's default headers (which the client merges first)."""
        session = self.client
        agent = session.client
        self._url = session._build_url(self._path)
        split = URL(self._url)
        self._uri = str(getattr(split, "quoted_uri", split.request_uri))
        self._http = agent.clientpool.get_client(split)
        defaults = list(agent.default_headers.items())
        self._default_headers = dict(defaults)
        # A field given twice (two lines) would be one in a dict: then the session sends.
        self._fast = len(self._default_headers) == len(defaults)
        self._jar = session.cookiejar

    def wait_time(self) -> float:
        """Constant pacing towards the target rate, split over the users currently running.
        A capacity run's step shape sets the per-user interval instead (loadgen.traffic.shape)."""
        stepped = step_interval()
        if stepped is None and self._rate <= 0:
            return 0.0
        runner = self.environment.runner
        opts = self.environment.parsed_options
        # All users of the run share the rate: --loadgen-users (or -u on the master) is the run's
        # total, while runner.user_count is only this process's share. A worker gets no -u.
        total = int(given(opts, "loadgen_users") or getattr(opts, "num_users", 0) or 0) if opts else 0
        users = max(1, total or (runner.user_count if runner else 1))
        interval = users / self._rate if stepped is None else stepped
        run_time = time.perf_counter() - self._cp_last_run - self._cp_last_wait_time
        self._cp_last_wait_time = max(0.0, interval - run_time)
        self._cp_last_run = time.perf_counter()
        return self._cp_last_wait_time

    @task
    def traced_request(self) -> None:
        # Per-request work is the generator's overhead over bare Locust (bench/generator.py):
        # one draw for the mode, ids from the user's own generator, the echo read by msgspec
        # (parse_echo_body), the record encoded by msgspec into the writer's buffer.
        i = bisect(self._cum_weights, self._rng.random() * self._total_weight, 0, self._last_mode)
        mode, name = self._modes[i], self._mode_names[i]
        injection = encode(mode, self._id_rng, self._encode_options)
        rid = f"{self._id_rng.getrandbits(128):032x}"
        headers = {
            "Host": self._host_header,
            RUN_ID_HEADER: STATE.run_id,
            REQUEST_ID_HEADER: rid,
            **injection.headers,
        }
        record: dict[str, Any] = {
            "rid": rid,
            "mode": name,
            "path": self._path_shown,
            "inj_trace": injection.trace_id,
            "inj_span": injection.span_id,
            "inj_flag": injection.flag,
        }
        if injection.request_id is not None:
            record["xrid_sent"] = injection.request_id
            record["predicted"] = injection.predicted
        ts = time.time()
        start = time.perf_counter()
        sent = self._send(headers)
        if sent is None or not self._plain_200(sent):
            self._through_session(name, headers, record, sent, ts, start)
        else:
            self._report(name, record, sent, ts, start)
        STATE.counts[name] = STATE.counts.get(name, 0) + 1
        if STATE.ledger is not None:
            STATE.ledger.append(record)
        if self._limit:
            self._stop_at_limit(self._limit)

    def _send(self, headers: dict[str, str]) -> Sent | None:
        """Send as FastHttpSession.request would, through its client's HTTPClient: the agent's
        default headers first, the session's Authorization and Accept-Encoding last. None (not
        sent) when the session must send it: cookies in the jar, or default headers a dict
        cannot hold."""
        if not self._fast or len(self._jar):
            return None
        wire = {**self._default_headers, **headers}
        auth = self.client.auth_header
        if auth:
            wire["Authorization"] = auth
        wire["Accept-Encoding"] = ACCEPT_ENCODING
        try:
            return self._http.request("GET", self._uri, body=None, headers=wire)
        except gevent.GreenletExit:
            raise
        except BaseException as exc:  # the agent's urlopen catches the same
            return exc

    @staticmethod
    def _plain_200(sent: Sent) -> TypeGuard[HTTPSocketPoolResponse]:
        """A 200 the session would take as it is: nothing for its cookie jar, nothing to decode."""
        return (
            isinstance(sent, HTTPSocketPoolResponse)
            and sent.get_code() == 200
            and "set-cookie" not in sent
            and "content-encoding" not in sent
        )

    def _report(
        self, name: str, record: dict[str, Any], raw: HTTPSocketPoolResponse, ts: float, start: float
    ) -> None:
        """A plain 200: read the body, judge the echo, fire Locust's request event with what
        FastHttpSession.request and ResponseContextManager would fire for it."""
        exception: Exception | None = None
        try:
            content = raw.read()
            raw.release()
            length = len(content)
        except FAILURE_EXCEPTIONS as exc:  # the session's length read failed: its exception
            content = raw.read()  # what a second read gives (the body buffered so far)
            length = 0
            exception = exc
        elapsed = time.perf_counter() - start
        record["latency_ms"] = round(elapsed * 1000.0, 3)
        record["ts"] = ts
        record["status"] = 200
        error = self._judge(record, content)
        record["error"] = error
        response = FastResponse(raw)
        response._cached_content = content
        self.client.request_event.fire(
            request_type="GET",
            name=name,
            context={**self.context()},
            response=response,
            exception=CatchResponseError(error) if error is not None else exception,
            start_time=ts,
            url=self._url,
            response_length=length,
            response_time=elapsed * 1000.0,
        )

    def _judge(self, record: dict[str, Any], content: bytes | None) -> str | None:
        """A 200's body into the record: the upstream context, or the error (not an echo)."""
        context = echo_context(content, self._tracer) if content else None
        if context is None:
            context, error = self._read_echo(content)
            if context is None:
                return error
        trace, span, flag, xrid = context
        record["up_trace"] = trace
        record["up_span"] = span
        record["up_flag"] = flag
        record["up_xrid"] = xrid
        if sampled_fact(self._tracer, flag, xrid):
            name = record["mode"]
            STATE.sampled[name] = STATE.sampled.get(name, 0) + 1
        return None

    def _through_session(
        self,
        name: str,
        headers: dict[str, str],
        record: dict[str, Any],
        sent: Sent | None,
        ts: float,
        start: float,
    ) -> None:
        """Locust's own path: FastHttpSession.request with catch_response. What was sent already
        (a response or the error) is handed to the session's agent in place of sending it again,
        so the agent judges, follows and retries it as its own; the request event then counts the
        time from the send."""
        with (
            self._replaying(sent),
            self.client.get(self._path, headers=headers, name=name, catch_response=True) as resp,
        ):
            if sent is not None:
                resp.request_meta["start_time"] = ts
                resp.request_meta["response_time"] = (time.perf_counter() - start) * 1000.0
            record["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 3)
            record["ts"] = ts
            status = resp.status_code
            record["status"] = status or 0
            if status == 200:
                error = self._judge(record, resp.content)
            else:
                # Locust's response has `error` only after an error (a 201 has none)
                failed = getattr(resp, "error", None)
                error = redact_text(str(failed)) if failed else f"HTTP {status}"
            if error is not None:
                resp.failure(error)
            record["error"] = error

    @contextlib.contextmanager
    def _replaying(self, sent: Sent | None) -> Iterator[None]:
        """The session's agent, for its first send, gives back `sent` (or raises it) instead of
        sending; any further send (a redirect, a retry) goes out as usual."""
        if sent is None:
            yield
            return
        agent = self.client.client
        pending = [sent]

        def replay(request: Any) -> Any:
            if not pending:
                return type(agent)._urlopen(agent, request)
            first = pending.pop()
            if isinstance(first, BaseException):
                raise first
            return agent.response_type(first, request=request, sent_request=first._sent_request)

        agent._urlopen = replay  # type: ignore[method-assign]
        try:
            yield
        finally:
            del agent._urlopen

    def _read_echo(self, content: bytes | None) -> tuple[EchoContext | None, str | None]:
        """The general path for an echo echo_context leaves to it: (context, None), or (None, the
        error) when it is not an echo."""
        try:
            view = parse_echo(json.loads(content or b"null").get("headers", {}), self._tracer)
        except (ValueError, AttributeError) as exc:
            return None, f"echo not parsable: {exc}"
        return (view.trace_id, view.span_id, view.flag, view.request_id), None

    def _stop_at_limit(self, limit: int) -> None:
        if sum(STATE.counts.values()) >= limit and not STATE.limit_reached:
            STATE.limit_reached = True
            runner = self.environment.runner
            if runner is not None:
                # quit() from a user greenlet: stop the other users, then end the process.
                gevent.spawn(runner.quit)
            raise StopUser()
