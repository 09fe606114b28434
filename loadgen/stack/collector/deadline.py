"""Serving the collector's app with a request-head deadline (aiohttp has no header timeout):
`start_server`, and `mark_busy`, the middleware that stops a request's clock once its handler runs.

A request head must arrive within `Limits.header_timeout_s` of its first byte, else the connection
is closed (slowloris); idle keep-alive connections are left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from loadgen.stack.collector.limits import Limits

__all__ = ["LIMITS_KEY", "mark_busy", "start_server"]

LIMITS_KEY = web.AppKey("limits", Limits)


class _HeadDeadline(asyncio.Protocol):
    """In front of aiohttp's RequestHandler (which has no header timeout): bytes arriving while no
    request is being handled start a request head, which must be complete within the timeout,
    else `_Sweeper` closes the connection. The clock stops when the request's handler starts
    (`mark_busy`). An idle keep-alive connection sends no bytes and is left alone."""

    def __init__(self, handler: RequestHandler, sweeper: _Sweeper) -> None:
        self._handler = handler
        self._sweeper = sweeper
        self.transport: asyncio.Transport | None = None
        self.head_since: float | None = None  # loop time of the first byte of a pending head
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sweeper.guards[self._handler] = self
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.head_since is None:
            self.head_since = self._sweeper.loop.time()
        self._handler.data_received(data)

    def eof_received(self) -> None:
        self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweeper.guards.pop(self._handler, None)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class _Sweeper:
    """Closes connections whose request head is late. One timer per server, not one per request:
    a connection is cut between `timeout_s` and 1.25 x `timeout_s` after its head began."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.guards: dict[RequestHandler, _HeadDeadline] = {}
        self.cut = 0  # connections closed for a late head
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self.loop.call_later(self.timeout_s / 4, self._sweep)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        too_old = self.loop.time() - self.timeout_s
        for guard in list(self.guards.values()):
            since = guard.head_since
            if since is not None and since <= too_old and not guard.busy and guard.transport is not None:
                self.cut += 1
                guard.transport.close()
        self.start()


_SWEEPERS: list[_Sweeper] = []  # the servers running in this process (usually one)


def _guard_of(request: web.Request) -> _HeadDeadline | None:
    for sweeper in _SWEEPERS:
        guard = sweeper.guards.get(request.protocol)
        if guard is not None:
            return guard
    return None


@web.middleware
async def mark_busy(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guard = _guard_of(request)
    if guard is None:
        return await handler(request)
    guard.busy = True
    guard.head_since = None
    try:
        return await handler(request)
    finally:
        guard.busy = False


class _Runner(web.AppRunner):
    """AppRunner whose sites accept connections through `_HeadDeadline`."""

    def __init__(self, app: web.Application, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s
        self.sweeper: _Sweeper | None = None

    async def setup(self) -> None:
        await super().setup()
        self.sweeper = _Sweeper(asyncio.get_running_loop(), self._header_timeout_s)
        self.sweeper.start()
        _SWEEPERS.append(self.sweeper)

    async def cleanup(self) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
            _SWEEPERS.remove(self.sweeper)
        await super().cleanup()

    @property
    def server(self) -> Any:  # sites call it as the protocol factory
        real = super().server
        sweeper = self.sweeper
        if real is None or sweeper is None:
            return real

        def protocol() -> _HeadDeadline:
            return _HeadDeadline(real(), sweeper)

        return protocol


async def start_server(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve `app` on host:port (0 = a free port); return the runner (to `cleanup()`) and base URL.

    Access logging is off: one log line per span POST costs more than handling it. aiohttp sets
    TCP_NODELAY on every accepted connection (base_protocol.connection_made); /loadgen/stats
    reports it.

    aiohttp's own decompression is off: its parser raises a corrupt deflate stream's error when
    the message ends, outside the handler, which then waits for a body that never comes (the
    client hangs, found by fuzzing), and a mid-stream error resurfaces after the 400 and resets
    the keep-alive connection. The handler inflates instead (`inflate`).
    """
    limits = app.get(LIMITS_KEY) or Limits()
    # lingering_time: after an early answer (408, 413, 503) aiohttp drains the unread body this
    # long before closing, so a stalled sender does not hold the connection for aiohttp's 10 s.
    runner = _Runner(
        app,
        limits.header_timeout_s,
        access_log=None,
        shutdown_timeout=5.0,
        auto_decompress=False,
        lingering_time=1.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{url_host}:{bound_port}"
