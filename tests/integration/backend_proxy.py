"""A stand-in "proxy in front of the backend" for tests (a test helper, not product code).

Real trace backends often sit behind something loadgen did not build: an ingress, an auth proxy,
a Go service with its default mux. `BackendProxy` is such a thing on 127.0.0.1: a reverse proxy to
a Zipkin-compatible base URL whose trace routes (`/api/v2/trace/{id}`, `/api/v2/traceMany`) answer
according to a switchable mode, while `/api/v2/services`, the search `/api/v2/traces` and every
other route pass through (unless the mode is "down"):

    pass        forward to the backend
    foreign404  404 `text/plain` "404 page not found" (Go's http.NotFound)
    html404     404 `text/html` page (nginx's)
    500         500 `text/plain`
    hang        never answer within any sane client timeout (released when the proxy stops)
    down        the listener is closed (connection refused) and a kept-alive connection that
                sends a request is closed without an answer

    with BackendProxy(collector_url) as proxy:
        backend = f"zipkin:{proxy.url}"
        proxy.set_mode("hang")  # takes effect for the next request, also mid-run
        proxy.hits["trace"]     # requests seen per route kind (trace, search, services, other)

It runs its own event loop in a daemon thread, so a test can switch modes while a run (in this
process or a child) is reading back through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import Counter
from typing import Any, Self

import aiohttp
from aiohttp import web

MODES = ("pass", "foreign404", "html404", "500", "hang", "down")
GO_404_BODY = "404 page not found\n"
HTML_404_BODY = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp recomputes: never forwarded.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)


def route_kind(path: str) -> str:
    """Which of the routes a mode applies to: "trace" (mode applies), else always passed."""
    if path.startswith("/api/v2/trace/") or path == "/api/v2/traceMany":
        return "trace"
    if path == "/api/v2/traces":
        return "search"
    if path == "/api/v2/services":
        return "services"
    return "other"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BackendProxy:
    """A reverse proxy on 127.0.0.1 in front of `upstream` (a Zipkin-compatible base URL)."""

    def __init__(self, upstream: str, mode: str = "pass", *, hang_s: float = 600.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.upstream = upstream.rstrip("/")
        self._mode = mode
        self.hang_s = hang_s
        self.forward_host = False  # pass the client's Host upstream (a gateway in front of a mesh)
        self.port = _free_port()
        self.hits: Counter[str] = Counter()  # route kind -> requests seen
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._release: asyncio.Event | None = None  # ends every hanging request
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Switch the mode; it applies to the next request. Entering or leaving "down" closes or
        reopens the listener (same port) before this returns."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        previous, self._mode = self._mode, mode
        if self._loop is not None and (previous == "down") != (mode == "down"):
            future = asyncio.run_coroutine_threadsafe(self._apply_listener(), self._loop)
            future.result(timeout=10.0)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._thread_main, name="backend-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=10.0):
            raise RuntimeError("the backend proxy did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError(f"the backend proxy did not start: {self._startup_error!r}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._release = asyncio.Event(), asyncio.Event()
        try:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30.0), auto_decompress=False
            )
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
            await self._runner.setup()
            await self._apply_listener()
        except BaseException as exc:  # reported to start()
            self._startup_error = exc
            self._ready.set()
            await self._cleanup()
            return
        self._ready.set()
        await self._stop.wait()
        await self._cleanup()

    async def _cleanup(self) -> None:
        if self._release is not None:
            self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _apply_listener(self) -> None:
        """Listening unless the mode is "down" (then connections are refused)."""
        assert self._runner is not None
        if self._mode == "down":
            if self._site is not None:
                await self._site.stop()
                self._site = None
        elif self._site is None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()

    # --- requests ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = route_kind(request.path)
        self.hits[kind] += 1
        mode = self._mode
        if mode == "down":
            # A connection kept alive from before the listener closed: drop it, answer nothing.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)  # never reaches the closed connection
        if kind == "trace" and mode != "pass":
            return await self._fault(mode)
        return await self._forward(request)

    async def _fault(self, mode: str) -> web.StreamResponse:
        if mode == "foreign404":
            return web.Response(
                status=404,
                text=GO_404_BODY,
                content_type="text/plain",
                charset="utf-8",
                headers={"X-Content-Type-Options": "nosniff"},
            )
        if mode == "html404":
            return web.Response(status=404, text=HTML_404_BODY, content_type="text/html")
        if mode == "500":
            return web.Response(status=500, text="Internal Server Error\n", content_type="text/plain")
        assert mode == "hang" and self._release is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), timeout=self.hang_s)
        return web.Response(status=504, text="backend proxy: hung request released\n")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        if self.forward_host and request.host:  # a gateway routes by Host
            headers["Host"] = request.host
        body = await request.read()
        target = f"{self.upstream}{request.rel_url}"
        try:
            async with self._session.request(
                request.method, target, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                out: dict[str, Any] = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _NOT_FORWARDED
                }
                if upstream.headers.get("Content-Encoding"):
                    out["Content-Encoding"] = upstream.headers["Content-Encoding"]
                return web.Response(status=upstream.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"backend proxy: upstream unreachable: {exc!r}\n")
