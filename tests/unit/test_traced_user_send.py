"""TracedUser sends below Locust's session layer (issue 15 goal 1): what Locust and the ledger see
must be what the session layer gave. A differential test: in a child process (importing Locust
monkey-patches the process with gevent), the same requests go to a tiny HTTP server on 127.0.0.1
through TracedUser's send path and through the one it replaced (Locust's `self.client.get(...,
catch_response=True)`, kept below as the oracle), and for every answer the server can give (an
echo, a body that is no echo, 503, 201, a redirect, a gzip body, a Set-Cookie, no listener, a
timeout, a closed connection, a truncated body, basic-auth user-info) the request events, Locust's
stats and failures table, the ledger records and the bytes on the wire are compared. Ids differ
per request and are masked; everything else must be equal.

The oracle has one fix, made in the new path too: the old code read `resp.error`, which Locust's
response has only after an error, so a 2xx other than 200 (or a 3xx it does not follow) raised
AttributeError in the task: no request event, no ledger record. Both now record "HTTP 201"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

CHILD = r"""
import gzip, json, os, socket, sys, time
import gevent
from gevent.server import StreamServer
from types import SimpleNamespace
import locust  # noqa: F401  (gevent's monkey-patching first)
from bisect import bisect
from typing import Any
from locust import task
from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment
from loadgen.mesh.echo import echo_context
from loadgen.mesh.encode import encode
from loadgen.mesh.headers import REQUEST_ID_HEADER, RUN_ID_HEADER
from loadgen.mesh.tracer import sampled_fact
from loadgen.redact import redact_text
from loadgen.traffic.state import STATE
from loadgen.traffic.user import TracedUser

# --- the server: answers by path, keeps each request's head -------------------------------------
heads = []

def answer(path, head):
    if path == "/echo" or path == "/cookie" or path == "/201" or path == "/gzip":
        lines = head.decode("latin-1").split("\r\n")[1:]
        body = json.dumps({"headers": dict(l.split(": ", 1) for l in lines if l)}).encode()
        status, extra = {"/echo": ("200 OK", b""), "/201": ("201 Created", b""),
                         "/cookie": ("200 OK", b"Set-Cookie: s=1; Path=/\r\n"),
                         "/gzip": ("200 OK", b"Content-Encoding: gzip\r\n")}[path]
        if path == "/gzip":
            body = gzip.compress(body)
    elif path == "/notecho":
        status, extra, body = "200 OK", b"", b"not json"
    elif path == "/503":
        status, extra, body = "503 Service Unavailable", b"", b"upstream connect error"
    elif path == "/redirect":
        status, extra, body = "302 Found", b"Location: /echo\r\n", b""
    elif path == "/slow":
        gevent.sleep(3)
        status, extra, body = "200 OK", b"", b"late"
    elif path == "/close":
        return None
    elif path == "/truncated":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"headers\": {"
    else:
        status, extra, body = "404 Not Found", b"", b"no"
    return (b"HTTP/1.1 " + status.encode() + b"\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)

def handle(sock, _addr):
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        while b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
            heads.append(head)
            out = answer(head.split(b" ")[1].decode(), head)
            if out is None:
                sock.close()
                return
            sock.sendall(out)
            if out.endswith(b"{"):  # truncated
                sock.close()
                return

server = StreamServer(("127.0.0.1", 0), handle)
server.start()
port = server.server_port
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
closed_port = probe.getsockname()[1]
probe.close()  # nothing listens there: connection refused

# --- the oracle: TracedUser.traced_request as it was, through Locust's session layer -------------
def old_traced_request(self) -> None:
    i = bisect(self._cum_weights, self._rng.random() * self._total_weight, 0, self._last_mode)
    mode, name = self._modes[i], self._mode_names[i]
    injection = encode(mode, self._id_rng, self._encode_options)
    rid = f"{self._id_rng.getrandbits(128):032x}"
    headers = {"Host": self._host_header, RUN_ID_HEADER: STATE.run_id, REQUEST_ID_HEADER: rid,
               **injection.headers}
    record: dict[str, Any] = {"rid": rid, "mode": name, "path": self._path_shown,
                              "inj_trace": injection.trace_id, "inj_span": injection.span_id,
                              "inj_flag": injection.flag}
    if injection.request_id is not None:
        record["xrid_sent"] = injection.request_id
        record["predicted"] = injection.predicted
    ts = time.time()
    start = time.perf_counter()
    with self.client.get(self._path, headers=headers, name=name, catch_response=True) as resp:
        record["latency_ms"] = round((time.perf_counter() - start) * 1000.0, 3)
        record["ts"] = ts
        status = resp.status_code
        record["status"] = status or 0
        error = None
        if status == 200:
            content = resp.content
            context = echo_context(content, self._tracer) if content else None
            if context is None:
                context, error = self._read_echo(content)
            if context is None:
                resp.failure(error)
            else:
                trace, span, flag, xrid = context
                record["up_trace"] = trace
                record["up_span"] = span
                record["up_flag"] = flag
                record["up_xrid"] = xrid
                if sampled_fact(self._tracer, flag, xrid):
                    STATE.sampled[name] = STATE.sampled.get(name, 0) + 1
        else:
            # getattr: the one change to the old code, see the module's docstring
            error = redact_text(str(resp.error)) if getattr(resp, "error", None) else f"HTTP {status}"
            resp.failure(error)
        record["error"] = error
    STATE.counts[name] = STATE.counts.get(name, 0) + 1
    if STATE.ledger is not None:
        STATE.ledger.append(record)

class Records:
    def __init__(self): self.rows = []
    def append(self, record): self.rows.append(dict(record))
    def close(self): pass
    def flush(self): pass

session_calls = [0]
_request = FastHttpSession.request
def counted(self, *a, **kw):
    session_calls[0] += 1
    return _request(self, *a, **kw)
FastHttpSession.request = counted

STATE.run_id = "run-under-test"
MASKED = {"x-loadgen-request-id", "x-b3-traceid", "x-b3-spanid", "b3", "traceparent", "x-request-id"}

def run(impl, path, n, host):
    STATE.ledger = Records()
    heads.clear()
    session_calls[0] = 0

    class User(TracedUser):
        mix = "b3_multi_sampled=1"
        network_timeout = 0.5
        connection_timeout = 0.5
        abstract = False
    User.host = host
    env = Environment(user_classes=[User], parsed_options=SimpleNamespace(loadgen_path=path))
    env.create_local_runner()  # the runner registers Locust's stats listener
    events = []

    def on_request(**kw):
        exc = kw["exception"]
        events.append({
            "keys": sorted(kw),
            "request_type": kw["request_type"], "name": kw["name"], "url": kw["url"],
            "response_length": kw["response_length"], "context": kw["context"],
            "exception": None if exc is None else [type(exc).__name__, str(exc)],
            "timed": isinstance(kw["response_time"], float) and kw["response_time"] > 0
                     and abs(kw["start_time"] - time.time()) < 60,
            "response": type(kw["response"]).__name__ if impl == "old" else None,
            "status": getattr(kw["response"], "status_code", None),
        })
    env.events.request.add_listener(on_request)
    user = User(env)
    user.on_start()
    for _ in range(n):
        if impl == "old":
            old_traced_request(user)
        else:
            user.traced_request()
    wire = []
    for head in heads:
        lines = head.decode("latin-1").split("\r\n")
        wire.append([lines[0]] + [
            [k, "*" if k.lower() in MASKED else v] for k, v in (l.split(": ", 1) for l in lines[1:])
        ])
    stats = sorted([e.method, e.name, e.num_requests, e.num_failures, e.total_content_length]
                   for e in env.stats.entries.values())
    errors = sorted([e["method"], e["name"], e["error"], e["occurrences"]]
                    for e in env.stats.serialize_errors().values())
    masked = []
    for r in STATE.ledger.rows:
        assert isinstance(r.pop("latency_ms"), float) and isinstance(r.pop("ts"), float)
        masked.append({k: ("*" if k in ("rid", "inj_trace", "inj_span", "up_trace", "up_span",
                           "up_xrid") and v is not None else v) for k, v in r.items()})
    return {"events": events, "stats": stats, "errors": errors, "records": masked, "wire": wire,
            "session_calls": session_calls[0]}

cases = json.loads(sys.argv[1])
out = {}
for case, (path, n, where, userinfo) in cases.items():
    host = f"http://127.0.0.1:{closed_port if where == 'closed' else port}"
    if userinfo:
        os.environ["LOADGEN_GATEWAY_USERINFO"] = userinfo
    else:
        os.environ.pop("LOADGEN_GATEWAY_USERINFO", None)
    out[case] = {impl: run(impl, path, n, host) for impl in ("old", "new")}
print(json.dumps(out))
"""

#: case: (path, requests, where, user-info); "closed" is a port nobody listens on.
CASES: dict[str, tuple[str, int, str, str]] = {
    "echo": ("/echo", 3, "open", ""),
    "not_echo": ("/notecho", 3, "open", ""),
    "status_503": ("/503", 3, "open", ""),
    "status_201": ("/201", 2, "open", ""),
    "redirect": ("/redirect", 2, "open", ""),
    "gzip": ("/gzip", 2, "open", ""),
    "cookie": ("/cookie", 3, "open", ""),
    "refused": ("/echo", 2, "closed", ""),
    "timeout": ("/slow", 2, "open", ""),
    "closed": ("/close", 2, "open", ""),
    "truncated": ("/truncated", 2, "open", ""),
    "userinfo": ("/echo", 2, "open", "gw%40user:s3cr%3At"),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADGEN_")}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(CASES)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=180,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    out: dict[str, dict[str, dict[str, Any]]] = json.loads(child.stdout.splitlines()[-1])
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_locust_and_the_ledger_see_what_the_session_layer_gave(
    runs: dict[str, dict[str, dict[str, Any]]], case: str
) -> None:
    old, new = runs[case]["old"], runs[case]["new"]
    n = CASES[case][1]
    assert len(old["events"]) == n and len(old["records"]) == n  # one event, one record each
    for key in ("stats", "errors", "records", "wire"):
        assert new[key] == old[key], key
    for got, want in zip(new["events"], old["events"], strict=True):
        assert {**got, "response": None} == {**want, "response": None}
        assert want["timed"]  # response_time in ms > 0, start_time a wall-clock time


def test_a_plain_200_is_sent_below_the_session_and_anything_else_through_it(
    runs: dict[str, dict[str, dict[str, Any]]],
) -> None:
    """Not vacuous: the new path really skips the session for plain 200s, and the oracle used it."""
    for case, (_, n, _, _) in CASES.items():
        assert runs[case]["old"]["session_calls"] == n, case
    assert runs["echo"]["new"]["session_calls"] == 0
    assert runs["not_echo"]["new"]["session_calls"] == 0
    assert runs["userinfo"]["new"]["session_calls"] == 0
    for case in ("status_503", "status_201", "redirect", "gzip", "refused", "timeout", "closed"):
        assert runs[case]["new"]["session_calls"] == CASES[case][1], case
    # the first answer sets a cookie (through the session); with a cookie in the jar, all do
    assert runs["cookie"]["new"]["session_calls"] == 3


def test_the_cases_show_what_they_claim(runs: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Absolute expectations on the old path (so the comparison compares something)."""

    def old(case: str) -> dict[str, Any]:
        return runs[case]["old"]

    assert [r["error"] for r in old("echo")["records"]] == [None] * 3
    assert [s[:4] for s in old("echo")["stats"]] == [["GET", "b3_multi_sampled", 3, 0]]
    assert [s[:4] for s in old("not_echo")["stats"]] == [["GET", "b3_multi_sampled", 3, 3]]
    assert old("echo")["records"][0]["up_flag"] == "1" and old("echo")["errors"] == []
    assert all(r["error"].startswith("echo not parsable") for r in old("not_echo")["records"])
    assert [e[2:] for e in old("status_503")["errors"]] == [
        [f"CatchResponseError('URL http://127.0.0.1:{_port(old('echo'))}/503: code=503')", 3]
    ]
    assert [r["error"] for r in old("status_201")["records"]] == ["HTTP 201"] * 2
    assert [w[0] for w in old("redirect")["wire"]] == ["GET /redirect HTTP/1.1", "GET /echo HTTP/1.1"] * 2
    assert [r["status"] for r in old("redirect")["records"]] == [200, 200]
    assert [r["error"] for r in old("gzip")["records"]] == [None] * 2
    cookies = [dict(w[1:]).get("Cookie") for w in old("cookie")["wire"]]
    assert cookies == [None, "s=1", "s=1"]
    assert [r["status"] for r in old("refused")["records"]] == [0, 0]
    assert all("Connection refused" in r["error"] for r in old("refused")["records"])
    assert [r["status"] for r in old("timeout")["records"]] == [0, 0]
    assert all("timed out" in r["error"] for r in old("timeout")["records"])
    assert all(r["error"] for r in old("closed")["records"] + old("truncated")["records"])
    auth = [dict(w[1:]).get("Authorization") for w in old("userinfo")["wire"]]
    assert auth == ["Basic Z3dAdXNlcjpzM2NyOnQ="] * 2  # base64 of "gw@user:s3cr:t"
    assert "Authorization" not in dict(old("echo")["wire"][0][1:])


def _port(run: dict[str, Any]) -> str:
    return str(run["events"][0]["url"]).split(":")[2].split("/")[0]
