"""`loadgen watch`'s HTTP endpoint: `/metrics` (Prometheus text format 0.0.4), `/healthz` and the
status page at `/`, all rendered from the snapshot the runner published last.

A stdlib ThreadingHTTPServer on a thread of its own, not a handler on the runner's event loop:
a scrape or a slow client never waits for the runner and the runner never waits for them, and
/healthz still answers (503, stale) when the runner is stuck, which it could not do from inside
the stuck loop. Each request gets its own daemon thread; rendering only reads the immutable
snapshot, so no lock is needed. `port=0` binds a free port; `port` tells which.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client.exposition import generate_latest

from loadgen.watch.metrics import CONTENT_TYPE, SnapshotSource, make_registry
from loadgen.watch.model import WatchSnapshot
from loadgen.watch.page import render_page

log = logging.getLogger(__name__)

#: /healthz turns 503 when the latest snapshot is older than this (seconds), by default.
DEFAULT_STALE_AFTER_S = 30.0


class WatchServerError(RuntimeError):
    """The endpoint could not start (e.g. the port is taken); the message says where and why."""


def health(snapshot: WatchSnapshot | None, now: float, stale_after_s: float) -> tuple[int, str]:
    """(status, text) of /healthz: 200 "ok" while the runner refreshed the snapshot within
    `stale_after_s` seconds, else 503 and why."""
    if snapshot is None:
        return 503, "no snapshot yet: watch is starting"
    age = now - snapshot.now
    if age > stale_after_s:
        return (
            503,
            f"stale: the runner last refreshed its figures {age:.0f} s ago (limit {stale_after_s:g} s)",
        )
    return 200, "ok"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted watch must be able to bind its port again while old connections linger.
    allow_reuse_address = True
    endpoint: WatchServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    #: Seconds a client may take to send its request before its thread gives up.
    timeout = 10
    server_version = "loadgen-watch"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        try:
            status, content_type, body = self.server.endpoint.respond(urlsplit(self.path).path)
        except Exception as exc:  # a renderer bug must not kill the endpoint or show a traceback
            log.warning("loadgen watch: %s failed: %s: %s", self.path, type(exc).__name__, exc)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a scrape every few seconds is not news."""


class WatchServer:
    """Serves /metrics, /healthz and / from `latest()`; `start()` binds and returns at once,
    `stop()` closes the socket and joins the thread."""

    def __init__(
        self,
        latest: SnapshotSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        refresh_s: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.latest = latest
        self.host = host
        self.requested_port = port
        self.stale_after_s = stale_after_s
        self.refresh_s = refresh_s
        self.clock = clock
        self._registry = make_registry(latest)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the free one picked when asked for 0)."""
        if self._httpd is None:
            raise RuntimeError("the watch endpoint is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET of `path`."""
        if path == "/metrics":
            return 200, CONTENT_TYPE, generate_latest(self._registry)
        if path == "/healthz":
            status, text = health(self.latest(), self.clock(), self.stale_after_s)
            return status, "text/plain; charset=utf-8", f"{text}\n".encode()
        if path in ("/", "/index.html"):
            page = render_page(self.latest(), refresh_s=self.refresh_s)
            return 200, "text/html; charset=utf-8", page.encode()
        return 404, "text/plain; charset=utf-8", b"not found: try /, /metrics or /healthz\n"

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("the watch endpoint is already started")
        server_class = _Server6 if ":" in self.host else _Server
        try:
            httpd = server_class((self.host, self.requested_port), _Handler)
        except OSError as exc:
            where = f"{self.host}:{self.requested_port}"
            raise WatchServerError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None
        httpd.endpoint = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="loadgen-watch-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        httpd, thread = self._httpd, self._thread
        self._httpd, self._thread = None, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> WatchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
