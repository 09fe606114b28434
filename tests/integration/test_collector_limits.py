"""The collector under a full disk, a kill mid-write, slow clients and too many bodies at once.

Each test runs `python -m loadgen.stack.collector` as a subprocess on loopback (stopped by PID)
and takes a few seconds at most.

- Full disk: RLIMIT_FSIZE in the collector process makes every write past the limit fail with
  EFBIG, like ENOSPC on a full filesystem (no root, no tmpfs needed). Then a SIGKILL and a restart
  without the limit: every span answered 202 is there, and no span of a batch answered 5xx.
- Kill mid-write: SIGKILL while POSTs are in flight; after a restart every batch is there whole
  or not at all, and every 202'd one is there.
- Slow clients: a request head sent byte by byte is cut off after --header-timeout; a stalled
  body gets a 408 after --body-timeout; an idle keep-alive connection is left alone.
- Bodies over --max-buffered-bytes together: 503 with Retry-After, and the cap frees up again.
"""

from __future__ import annotations

import json
import resource
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

JSON_CT = {"content-type": "application/json"}


class Collector:
    def __init__(self, data_dir: Path, *args: str, preexec: Callable[[], None] | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        with (data_dir.parent / f"{data_dir.name}.stderr.log").open("a") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadgen.stack.collector", "--port", "0",
                 "--data-dir", str(data_dir), *args],
                stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=preexec,
            )  # fmt: skip
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if readable else ""
        if not line:
            self.stop()
            pytest.fail("collector did not start")
        self.url = str(json.loads(line)["url"])
        split = urlsplit(self.url)
        self.addr = (str(split.hostname), int(split.port or 0))

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    started: list[Collector] = []
    yield started
    for c in started:
        c.stop()


def batch(trace_id: str, n: int, pad: int = 0) -> list[dict[str, Any]]:
    return [
        {"traceId": trace_id, "id": f"{i + 1:016x}", "name": "get", "timestamp": 1_700_000_000_000_000 + i,
         "localEndpoint": {"serviceName": "gw"}, "tags": {"pad": "x" * pad}}
        for i in range(n)
    ]  # fmt: skip


def stored_traces(data_dir: Path, ids: list[str]) -> dict[str, int]:
    """trace id -> spans readable after a restart (without any limit), via the HTTP API."""
    c = Collector(data_dir)
    try:
        with httpx.Client(base_url=c.url, timeout=30) as http:
            found: dict[str, int] = {}
            for i in range(0, len(ids), 50):
                chunk = ids[i : i + 50] + [secrets.token_hex(16)]  # traceMany wants 2 ids or more
                response = http.get("/api/v2/traceMany", params={"traceIds": ",".join(chunk)})
                assert response.status_code == 200, response.text
                for trace in response.json():
                    found[trace[0]["traceId"]] = len(trace)
            return found
    finally:
        c.stop(signal.SIGTERM)


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # soft: raised again without privilege

    return apply


# --- finding 2 of issue 10: the JSON-lines store lost 202'd spans after ENOSPC and kept 500'd ones


def test_full_disk_keeps_every_202_and_no_5xx(tmp_path: Path, collectors: list[Collector]) -> None:
    """The disk fills up (writes fail with EFBIG past a file-size limit), then space is freed (the
    limit is raised on the running collector), then the collector is killed and restarted."""
    data = tmp_path / "data"
    c = Collector(data, preexec=_file_size_limit(400_000))
    collectors.append(c)
    accepted: dict[str, int] = {}
    refused: list[str] = []
    accepted_after_refusal = 0
    with httpx.Client(base_url=c.url, timeout=10) as http:

        def post(i: int) -> None:
            nonlocal accepted_after_refusal
            # Mixed sizes: small batches squeeze into what is left, large ones (~20 KB) do not.
            n, pad = (1, 0) if i % 3 else (10, 2000)
            tid = secrets.token_hex(16)
            response = http.post("/api/v2/spans", content=json.dumps(batch(tid, n, pad)), headers=JSON_CT)
            if response.status_code == 202:
                accepted[tid] = n
                accepted_after_refusal += bool(refused)
            else:
                assert response.status_code == 500, response.text
                assert "not stored" in response.text
                refused.append(tid)

        i = 0
        while len(refused) < 30 and i < 600:
            post(i)
            i += 1
        assert refused, "the file-size limit never bit: raise the number of batches"
        resource.prlimit(c.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        for j in range(i, i + 30):  # space is back: accepted again, each one on its own
            post(j)
        assert http.get("/health").status_code == 200  # still serving
        stats = http.get("/loadgen/stats").json()
    assert len(accepted) > 20 and accepted_after_refusal >= 20
    assert stats["ingest"]["store_errors"] == len(refused)
    assert stats["spans_accepted"] == sum(accepted.values())
    c.stop(signal.SIGKILL)

    found = stored_traces(data, list(accepted) + refused)
    assert found == accepted  # every 202'd span, whole; nothing of a 500'd batch


def test_sigkill_mid_write_leaves_whole_batches(tmp_path: Path, collectors: list[Collector]) -> None:
    data = tmp_path / "data"
    c = Collector(data)
    collectors.append(c)
    accepted: dict[str, int] = {}
    unanswered: dict[str, int] = {}
    stop = threading.Event()

    def post_forever(seed: int) -> None:
        with httpx.Client(base_url=c.url, timeout=5) as http:
            i = 0
            while not stop.is_set():
                i += 1
                tid = secrets.token_hex(16)
                n = 1 + (seed * 7 + i) % 40  # up to ~40 spans: several pages per COMMIT
                try:
                    response = http.post(
                        "/api/v2/spans", content=json.dumps(batch(tid, n, 200)), headers=JSON_CT
                    )
                except httpx.HTTPError:
                    unanswered[tid] = n
                    return
                assert response.status_code == 202
                accepted[tid] = n

    threads = [threading.Thread(target=post_forever, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    c.stop(signal.SIGKILL)  # with POSTs in flight: some in the middle of their COMMIT
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(accepted) > 20

    found = stored_traces(data, list(accepted) + list(unanswered))
    assert {tid: found.get(tid) for tid in accepted} == accepted  # every 202'd batch, whole
    for tid, n in unanswered.items():  # never answered: all of it or nothing
        assert found.get(tid) in (None, n)


# --- finding 3: no header/body timeouts, unbounded buffered bodies ----------------------------------


def _closed_within(sock: socket.socket, timeout_s: float) -> float | None:
    """Seconds until the peer closed the connection (recv returns b""), or None."""
    start = time.monotonic()
    sock.settimeout(timeout_s)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return time.monotonic() - start
    except TimeoutError:
        return None
    except ConnectionResetError:
        return time.monotonic() - start


def test_slowloris_head_is_cut_off_idle_keepalive_is_not(tmp_path: Path, collectors: list[Collector]) -> None:
    c = Collector(tmp_path / "data", "--header-timeout", "0.6")
    collectors.append(c)
    idle = socket.create_connection(c.addr, timeout=5)  # keep-alive connection sending nothing
    slow = socket.create_connection(c.addr, timeout=5)
    start = time.monotonic()
    slow.sendall(b"POST /api/v2/spans HTTP/1.1\r\n")
    closed = False
    for i in range(40):  # one header byte every 50 ms: never a complete head
        try:
            slow.sendall(b"x-slow: %d\r\n"[:1] if i % 2 else b"x")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        readable, _, _ = select.select([slow], [], [], 0.05)
        if readable and not slow.recv(4096):
            closed = True
            break
    elapsed = time.monotonic() - start
    slow.close()
    assert closed, "a head sent byte by byte was never cut off"
    assert 0.5 <= elapsed <= 1.5, elapsed  # between the timeout and 1.25 x it, plus slack

    idle.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    idle.settimeout(5)
    assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")
    idle.close()


def test_stalled_body_gets_408(tmp_path: Path, collectors: list[Collector]) -> None:
    c = Collector(tmp_path / "data", "--body-timeout", "0.5")
    collectors.append(c)
    with socket.create_connection(c.addr, timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /api/v2/spans HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n[{\"traceId\"")  # fmt: skip
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert time.monotonic() - start < 2.0
        assert _closed_within(sock, 2.0) is not None
    with httpx.Client(base_url=c.url) as http:
        assert http.get("/loadgen/stats").json()["ingest"]["body_timeouts"] == 1


def _valid_body(size: int) -> bytes:
    """A JSON batch of one span, padded with whitespace to exactly `size` bytes."""
    body = json.dumps(batch(secrets.token_hex(16), 1)).encode()
    return body + b" " * (size - len(body))


def _post_raw(addr: tuple[str, int], head: bytes, body: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(head + body)
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
        return reply


def test_buffered_bytes_over_the_cap_get_503_retry_after(tmp_path: Path, collectors: list[Collector]) -> None:
    c = Collector(tmp_path / "data", "--max-body-bytes", "65536", "--max-buffered-bytes", "100000")
    collectors.append(c)

    def head(length: int | None) -> bytes:
        framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
        return f"POST /api/v2/spans HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{framing}\r\n\r\n".encode()

    holder_body = _valid_body(60_000)
    holder = socket.create_connection(c.addr, timeout=5)  # holds 60,000 bytes of the 100,000
    holder.sendall(head(60_000) + holder_body[:100])
    time.sleep(0.2)

    refused = _post_raw(c.addr, head(60_000), _valid_body(60_000))  # declared: refused up front
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    assert b"\r\nretry-after: 1\r\n" in refused.lower()

    def chunked(body: bytes) -> bytes:
        parts = [body[i : i + 10_000] for i in range(0, len(body), 10_000)]
        return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"

    refused = _post_raw(c.addr, head(None), chunked(_valid_body(50_000)))  # refused while streaming
    assert refused.startswith(b"HTTP/1.1 503 "), refused

    holder.sendall(holder_body[100:])  # the holder finishes: accepted, and its bytes are released
    holder.settimeout(5)
    assert holder.recv(4096).startswith(b"HTTP/1.1 202 ")
    holder.close()
    assert _post_raw(c.addr, head(60_000), _valid_body(60_000)).startswith(b"HTTP/1.1 202 ")
    with httpx.Client(base_url=c.url) as http:
        stats = http.get("/loadgen/stats").json()
    assert stats["ingest"]["busy"] == 2 and stats["buffered_bytes"] == 0
    assert stats["limits"]["max_buffered_bytes"] == 100_000
