"""The echo upstream of the embedded mesh: an httpbin-like `/headers` that returns the request
headers it received, so the ledger records what the upstream *actually saw* (trace id,
`X-B3-Sampled`, `b3`, the `x-request-id` into which Envoy wrote its sampling decision).

Fan-out (multi-hop mesh): `GET /fanout` calls a second service through the app's own sidecar,
as an Istio app's outbound traffic does, and forwards the trace headers it received (a
well-behaved app); `GET /fanout-nopropagate` makes the same call without them (an app that forgets
to forward headers, which splits the trace in two). Both answer with the headers this app received
and the headers the backend received. Where the outbound listener is (known only once the sidecar
is up) is read from `--outbound-file`, a JSON file `{"url": ..., "host": ...}` the mesh writes.

`--no-echo` makes it an app that is not httpbin: `/headers`, `/get` and the fan-out routes answer
200 `{"ok": true}` (the fan-out still makes its outbound call), so a client learns nothing about
what the upstream saw.

Run as `python -m loadgen.stack.echo --port 0`; it prints one JSON ready line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from loadgen.mesh.headers import REQUEST_ID_HEADER, RUN_ID_HEADER, X_REQUEST_ID

# What a well-behaved app forwards on its outbound calls: Istio's list of trace headers
# (https://istio.io/latest/docs/tasks/observability/distributed-tracing/overview/), plus the
# loadgen run id so the backend's spans carry the run tag too.
PROPAGATED_HEADERS = (
    X_REQUEST_ID,
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    RUN_ID_HEADER,
)
# Headers a non-propagating app may still be asked to forward (`?keep=a,b`): correlation headers
# that are not trace context, e.g. x-request-id kept for logs while B3 is forgotten.
KEEPABLE_HEADERS = frozenset({X_REQUEST_ID, RUN_ID_HEADER, REQUEST_ID_HEADER})
OUTBOUND_PATH = "/headers"
OUTBOUND_TIMEOUT_S = 5.0


def _title_case(name: str) -> str:
    # httpbin (werkzeug) shows header names title-cased: x-b3-traceid -> X-B3-Traceid.
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def _echo(request: web.Request) -> dict[str, str]:
    echoed: dict[str, str] = {}
    for name, value in request.headers.items():
        key = _title_case(name)
        echoed[key] = f"{echoed[key]},{value}" if key in echoed else value
    return echoed


NO_ECHO_BODY = {"ok": True}


async def headers(request: web.Request) -> web.Response:
    if not request.app[ECHO_HEADERS]:
        return web.json_response(NO_ECHO_BODY)
    return web.json_response({"headers": _echo(request)})


ECHO_HEADERS = web.AppKey("echo_headers", bool)
OUTBOUND_FILE = web.AppKey("outbound_file", Path)
OUTBOUND_TARGET = web.AppKey("outbound_target", list)  # [(url, host)] once read
SESSION = web.AppKey("session", aiohttp.ClientSession)


def _outbound_target(app: web.Application) -> tuple[str, str] | None:
    """(url, host) of the sidecar's outbound listener, or None while none is configured (the
    file appears once the sidecar is up; read until it parses, then cached)."""
    cached = app[OUTBOUND_TARGET]
    if cached:
        url, host = cached[0]
        return str(url), str(host)
    path = app.get(OUTBOUND_FILE)
    if path is None:
        return None
    try:
        target = json.loads(path.read_text())
        found = (str(target["url"]).rstrip("/"), str(target["host"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cached.append(found)
    return found


def forwarded_headers(received: Any, propagate: bool, keep: str = "") -> dict[str, str]:
    """The headers the app puts on its outbound call (pure). Propagating: every trace header it
    received, unchanged. Not propagating: only the correlation headers named in `keep`."""
    names = set(PROPAGATED_HEADERS) if propagate else {k.strip().lower() for k in keep.split(",")}
    if not propagate:
        names &= KEEPABLE_HEADERS
    return {name: str(received[name]) for name in sorted(names) if name in received}


async def _fanout(request: web.Request, propagate: bool) -> web.Response:
    received = _echo(request)
    target = _outbound_target(request.app)
    if target is None:
        return web.json_response(
            {"headers": received, "error": "no outbound listener configured (--outbound-file)"}, status=503
        )
    url, host = target
    sent = forwarded_headers(request.headers, propagate, request.query.get("keep", ""))
    backend: dict[str, Any] = {"url": f"{url}{OUTBOUND_PATH}", "host": host, "sent": sent}
    try:
        async with request.app[SESSION].get(f"{url}{OUTBOUND_PATH}", headers={"Host": host, **sent}) as resp:
            backend["status"] = resp.status
            body = await resp.json(content_type=None) if resp.status == 200 else None
            backend["headers"] = body.get("headers") if isinstance(body, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        backend.update(status=0, headers=None, error=repr(exc))
    status = 200 if backend.get("status") == 200 else 502
    if not request.app[ECHO_HEADERS]:
        return web.json_response(NO_ECHO_BODY, status=status)
    return web.json_response(
        {"headers": received, "propagated": propagate, "backend": backend}, status=status
    )


async def fanout(request: web.Request) -> web.Response:
    return await _fanout(request, propagate=True)


async def fanout_nopropagate(request: web.Request) -> web.Response:
    return await _fanout(request, propagate=False)


async def _client_session(app: web.Application) -> Any:
    timeout = aiohttp.ClientTimeout(total=OUTBOUND_TIMEOUT_S)
    # No cookie jar: the app relays requests, it must not carry state between them.
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as session:
        app[SESSION] = session
        yield


async def status(request: web.Request) -> web.Response:
    try:
        code = int(request.match_info["code"])
    except ValueError:
        return web.Response(status=400, text="status code must be an integer\n")
    if not 200 <= code <= 599:
        return web.Response(status=400, text="status code must be 200..599\n")
    return web.Response(status=code)


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


# --- upstream faults (capacity runs: a slow or failing app behind the sidecar) --------------------

DELAY_DISTS = ("fixed", "exp")


@dataclass(frozen=True)
class UpstreamFaults:
    """Deliberate slowness and failures of the app, all off by default; /health is exempt.

    delay_ms_mean: every request waits this long before it is answered: exactly (`fixed`) or an
        exponential draw with this mean (`exp`, the service time of a busy server).
    error_rate: this fraction of requests is answered 503 (after the delay).
    seed: seeds the one random.Random behind both draws, so a run is reproducible.
    """

    delay_ms_mean: float = 0.0
    delay_dist: str = "fixed"
    error_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.delay_ms_mean < float("inf"):
            raise ValueError(f"delay_ms_mean must be a finite number >= 0, got {self.delay_ms_mean}")
        if self.delay_dist not in DELAY_DISTS:
            raise ValueError(f"delay_dist must be one of {', '.join(DELAY_DISTS)}, got {self.delay_dist!r}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {self.error_rate}")

    @property
    def active(self) -> bool:
        return self.delay_ms_mean > 0 or self.error_rate > 0

    def middleware(self) -> Middleware:
        rng = random.Random(self.seed)

        @web.middleware
        async def upstream_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path == "/health":
                return await handler(request)
            if self.delay_ms_mean > 0:
                mean = self.delay_ms_mean
                delay_ms = mean if self.delay_dist == "fixed" else rng.expovariate(1.0 / mean)
                await asyncio.sleep(delay_ms / 1000.0)
            if self.error_rate > 0 and rng.random() < self.error_rate:
                return web.Response(status=503, text="injected fault: error_rate\n")
            return await handler(request)

        return upstream_faults


def make_app(outbound_file: Path | None = None, echo_headers: bool = True) -> web.Application:
    app = web.Application()
    app[ECHO_HEADERS] = echo_headers
    app[OUTBOUND_TARGET] = []
    if outbound_file is not None:
        app[OUTBOUND_FILE] = outbound_file
    app.cleanup_ctx.append(_client_session)
    app.router.add_get("/headers", headers)
    app.router.add_get("/get", headers)
    app.router.add_get("/fanout", fanout)
    app.router.add_get("/fanout-nopropagate", fanout_nopropagate)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/health", health)
    return app


def require_loopback(host: str, allow_non_loopback: bool) -> None:
    if allow_non_loopback:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    raise SystemExit(
        f"refusing to listen on {host}: embedded services bind loopback only (--allow-non-loopback)"
    )


async def serve(app: web.Application, host: str, port: int, faults: UpstreamFaults | None = None) -> None:
    """Listen, print the ready line, run until SIGINT/SIGTERM."""
    # aiohttp sets TCP_NODELAY on accepted sockets (Nagle stalls responses ~40 ms otherwise).
    if faults is not None and faults.active:
        app.middlewares.append(faults.middleware())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None
    bound_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    sys.stdout.write(
        json.dumps({"ready": True, "url": f"http://{host}:{bound_port}", "pid": os.getpid()}) + "\n"
    )
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="httpbin-like echo upstream for the embedded mesh")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--allow-non-loopback", action="store_true")
    parser.add_argument(
        "--delay-ms-mean", type=float, default=0.0, help="fault: delay every answer this long on average (ms)"
    )
    parser.add_argument(
        "--delay-dist", choices=DELAY_DISTS, default="fixed", help="fault: the delay is fixed or exponential"
    )
    parser.add_argument("--error-rate", type=float, default=0.0, help="fault: answer 503 to this fraction")
    parser.add_argument("--seed", type=int, default=None, help="seed for the fault draws")
    parser.add_argument(
        "--outbound-file",
        type=Path,
        default=None,
        help='JSON {"url": ..., "host": ...}: the sidecar outbound listener /fanout calls (read per request)',
    )
    parser.add_argument(
        "--no-echo",
        action="store_true",
        help='answer {"ok": true} instead of echoing the request headers (an app that is not httpbin)',
    )
    args = parser.parse_args(argv)
    require_loopback(args.host, args.allow_non_loopback)
    try:
        faults = UpstreamFaults(args.delay_ms_mean, args.delay_dist, args.error_rate, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(
        serve(make_app(args.outbound_file, echo_headers=not args.no_echo), args.host, args.port, faults)
    )


if __name__ == "__main__":
    main()
