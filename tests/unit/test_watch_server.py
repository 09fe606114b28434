"""loadgen.watch.server on a free loopback port with a fake snapshot source: each route, health
turning 503 when the snapshot goes stale (a fake clock, not a sleep), stop freeing the port."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.watch.model import WatchSnapshot
from loadgen.watch.server import WatchServer, WatchServerError, health

from .watch_fixtures import NOW, sample_snapshot


class Fake:
    """The runner's side: the snapshot it published last, and the wall clock."""

    def __init__(self) -> None:
        self.snapshot: WatchSnapshot | None = sample_snapshot()
        self.now = NOW + 1.0

    def latest(self) -> WatchSnapshot | None:
        return self.snapshot

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Fake:
    return Fake()


@pytest.fixture
def server(fake: Fake) -> Iterator[WatchServer]:
    srv = WatchServer(fake.latest, host="127.0.0.1", port=0, stale_after_s=30.0, clock=fake.clock)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def get(srv: WatchServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_metrics_route(server: WatchServer) -> None:
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    up = families["loadgen_watch_up"].samples
    assert [(s.labels, s.value) for s in up] == [({"run_id": "watch-20251009-a1b2"}, 1.0)]
    assert families["loadgen_watch_requests"].type == "counter"


def test_page_route(server: WatchServer, fake: Fake) -> None:
    status, headers, body = get(server, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert b'id="card-decision-300s"' in body and b"watch-20251009-a1b2" in body
    assert headers["cache-control"] == "no-store"
    fake.snapshot = None
    status, _, body = get(server, "/")
    assert status == 200 and b"NO DATA YET" in body


def test_healthz_fresh_stale_and_missing(server: WatchServer, fake: Fake) -> None:
    assert get(server, "/healthz")[::2] == (200, b"ok\n")
    fake.now = NOW + 31.0  # the runner has not refreshed the snapshot for 31 s
    status, _, body = get(server, "/healthz")
    assert status == 503 and body.startswith(b"stale: the runner last refreshed its figures 31 s ago")
    fake.snapshot = replace(sample_snapshot(), now=NOW + 30.0)  # refreshed again
    assert get(server, "/healthz")[0] == 200
    fake.snapshot = None
    status, _, body = get(server, "/healthz")
    assert status == 503 and b"no snapshot yet" in body


def test_unknown_paths_and_head(server: WatchServer) -> None:
    status, _, body = get(server, "/nope")
    assert status == 404 and b"/metrics" in body
    assert get(server, "/metrics/extra")[0] == 404
    # A query string does not change the route.
    assert get(server, "/metrics?x=1")[0] == 200
    status, headers, body = get(server, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000


def test_a_renderer_error_is_a_500_without_traceback(server: WatchServer, fake: Fake) -> None:
    snap = sample_snapshot()
    fake.snapshot = replace(snap, ttq={k: replace(v, bucket_counts=(1,)) for k, v in snap.ttq.items()})
    status, _, body = get(server, "/metrics")
    assert status == 500 and body == b"internal error\n"
    # The endpoint keeps serving.
    fake.snapshot = sample_snapshot()
    assert get(server, "/metrics")[0] == 200


def test_health_function() -> None:
    snap = sample_snapshot()
    assert health(snap, NOW + 10.0, 10.0) == (200, "ok")
    status, reason = health(snap, NOW + 10.5, 10.0)
    assert status == 503 and "limit 10 s" in reason


def test_stop_frees_the_port_and_a_taken_port_says_so(fake: Fake) -> None:
    srv = WatchServer(fake.latest, port=0, clock=fake.clock)
    srv.start()
    port = srv.port
    assert srv.url == f"http://127.0.0.1:{port}/"
    assert get(srv, "/healthz")[0] == 200
    # While it listens, a second server on the same port fails with a readable error.
    other = WatchServer(fake.latest, port=port)
    with pytest.raises(WatchServerError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
        other.start()
    srv.stop()
    srv.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = srv.port
    # The port is free again: nothing listens there (a socket with SO_REUSEADDR, as the server
    # sets it, binds past the TIME_WAIT of the closed connections), and nothing answers.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()  # fails with EADDRINUSE while another socket listens on the port
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    # And a new endpoint can serve on it.
    with WatchServer(fake.latest, port=port) as again:
        assert get(again, "/metrics")[0] == 200
