"""Adaptive concurrency over real loopback HTTP: a Tempo-shaped stand-in that throttles (429 with
Retry-After) whatever exceeds K requests in flight, and one that never throttles.

The stand-in answers `GET /api/v2/traces/{id}` with Tempo's not-found answer (404, no body: the
reader's MISSING) after `delay_s`; with `max_in_flight=K`, a request arriving while K others are
being answered gets `429 Retry-After: 0` at once instead, as do the first `refuse_first` requests. Assertions follow from these rules and
the controller's (halve on a 429, +1 per round of fast answers), never from timing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadgen.backends import FetchStatus, QueryStats, TempoBackend
from tests.unit.backend_contract import tid


class StandIn:
    """A Tempo-shaped trace-by-id route on 127.0.0.1:<free port>; see the module docstring."""

    def __init__(self, delay_s: float, max_in_flight: int | None = None, refuse_first: int = 0) -> None:
        self.delay_s = delay_s
        self.max_in_flight = max_in_flight
        self.refuse_first = refuse_first
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak_admitted = 0
        self.answered = 0
        self.throttled = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stand_in.handle(self)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        with self.lock:
            full = self.max_in_flight is not None and self.in_flight >= self.max_in_flight
            if full or self.throttled < self.refuse_first:
                self.throttled += 1
                admitted = False
            else:
                self.in_flight += 1
                self.peak_admitted = max(self.peak_admitted, self.in_flight)
                admitted = True
        if not admitted:
            body = b"slow down"
            req.send_response(429)
            req.send_header("Retry-After", "0")
            req.send_header("Content-Type", "text/plain")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)
            return
        try:
            time.sleep(self.delay_s)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.answered += 1
        req.send_response(404)  # Tempo's not-found answer: no body
        req.send_header("Content-Length", "0")
        req.end_headers()

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def read(url: str, n_ids: int, **options: object) -> tuple[dict[str, FetchStatus], QueryStats]:
    with TempoBackend(url, retries=50, backoff_s=0.005, **options) as backend:  # type: ignore[arg-type]
        out = backend.fetch_many([tid(i) for i in range(n_ids)])
        stats = backend.query_stats()
    return {t: f.status for t, f in out.items()}, stats


K = 4
IDS = 600


@pytest.fixture
def limited() -> Iterator[StandIn]:
    with StandIn(delay_s=0.01, max_in_flight=K) as server:
        yield server


class TestRateLimitedBackend:
    def test_adaptive_comes_down_to_the_limit_and_stays_near_it(self, limited: StandIn) -> None:
        statuses, stats = read(limited.url, IDS, concurrency=2 * K, max_concurrency=4 * K)
        assert set(statuses.values()) == {FetchStatus.MISSING}  # every id answered in the end
        # Every attempt is counted: the stand-in's answers are exactly the reader's requests.
        assert stats.requests == limited.answered + limited.throttled
        assert stats.throttled == limited.throttled >= 1
        assert (stats.server_errors, stats.transport_errors) == (0, 0)
        # Starting at 2K, the first 429 halves the limit to K at most, and it never reaches 2K
        # again: each climb past K meets the stand-in's 429s, which halve it.
        assert stats.lowest_concurrency <= K
        assert stats.highest_concurrency == 2 * K
        assert stats.concurrency < 2 * K
        assert stats.qps is not None and stats.busy_s > 0

    def test_adaptive_sees_far_fewer_429s_than_a_fixed_limit_above_it(self, limited: StandIn) -> None:
        _, fixed = read(limited.url, IDS, concurrency=2 * K, adaptive=False)
        before = limited.throttled
        _, adaptive = read(limited.url, IDS, concurrency=2 * K, max_concurrency=4 * K)
        assert fixed.throttled + adaptive.throttled == limited.throttled
        assert adaptive.throttled == limited.throttled - before
        # Fixed at 2K: whenever more than K of its 2K requests (retries included) are at the
        # stand-in, the rest are refused, all along the read. Adaptive: a burst while the first
        # 2K are in flight, then only a 429 each time it probes K+1 again, which it does after
        # lingering at K (its plateau) for several rounds.
        assert adaptive.throttled * 2 < fixed.throttled
        assert (fixed.concurrency, fixed.lowest_concurrency, fixed.highest_concurrency) == (2 * K,) * 3
        assert fixed.adaptive is False and adaptive.adaptive is True


class TestFastBackend:
    def test_concurrency_rises_above_the_start(self) -> None:
        with StandIn(delay_s=0.01) as server:
            statuses, stats = read(server.url, IDS, concurrency=2, max_concurrency=6)
            assert server.throttled == 0
        assert set(statuses.values()) == {FetchStatus.MISSING}
        assert stats.requests == IDS and stats.throttled == 0
        assert stats.lowest_concurrency == 2
        assert stats.highest_concurrency > 2
        assert server.peak_admitted > 2

    def test_fixed_stays_at_the_start(self) -> None:
        with StandIn(delay_s=0.005) as server:
            _, stats = read(server.url, 100, concurrency=2, adaptive=False)
        assert server.peak_admitted <= 2
        assert (stats.concurrency, stats.lowest_concurrency, stats.highest_concurrency) == (2, 2, 2)
        assert stats.max_concurrency == 2 and stats.requests == 100


def test_no_request_no_qps() -> None:
    with StandIn(delay_s=0.0) as server, TempoBackend(server.url) as backend:
        stats = backend.query_stats()
        assert (stats.requests, stats.qps, stats.busy_s) == (0, None, 0.0)
        assert (stats.concurrency, stats.max_concurrency, stats.adaptive) == (4, 32, True)
        assert backend.fetch_many(["not-hex"])["not-hex"].status is FetchStatus.ERROR
        assert backend.query_stats().qps is None  # an invalid id is never asked


def test_the_retries_of_one_request_halve_the_limit_once() -> None:
    with StandIn(delay_s=0.0, refuse_first=5) as server:
        statuses, stats = read(server.url, 1, concurrency=8)
    assert list(statuses.values()) == [FetchStatus.MISSING]
    assert (stats.requests, stats.throttled) == (6, 5)
    # One request throttled five times is one overload: 8 -> 4, not 8 -> 4 -> 2 -> 1.
    assert (stats.concurrency, stats.lowest_concurrency) == (4, 4)
