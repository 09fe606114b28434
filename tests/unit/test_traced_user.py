"""TracedUser's request task against a tiny HTTP server on 127.0.0.1, in a child process
(importing Locust monkey-patches the process with gevent): the modes it draws are random.choices'
draws from the same generator, and the ledger records what the general echo path (parse_echo of
json.loads) reads, with a Locust failure where the echo is not one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from loadgen.ledger import read_ledger
from loadgen.mesh.echo import parse_echo
from loadgen.mesh.tracer import TracerFamily

CHILD = r"""
import json, random, sys
from types import SimpleNamespace
import locust  # noqa: F401
from gevent.server import StreamServer
from locust.env import Environment
from loadgen.traffic.default_scenario import MeshUser
from loadgen.traffic.state import STATE

bodies = [b.encode() for b in json.loads(sys.argv[1])]
sent, names, failures = [], [], []

def handle(sock, _addr):  # answers the k-th request with bodies[k % len(bodies)]
    buf = b""
    while data := sock.recv(65536):
        buf += data
        while b"\r\n\r\n" in buf:
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")[1:]
            sent.append(dict(line.split(": ", 1) for line in lines))
            body = bodies[(len(sent) - 1) % len(bodies)]
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

server = StreamServer(("127.0.0.1", 0), handle)
server.start()
MeshUser.host = f"http://127.0.0.1:{server.server_port}"
env = Environment(user_classes=[MeshUser], parsed_options=SimpleNamespace(loadgen_ledger=sys.argv[3], loadgen_seed=5))

def on_request(name, exception, **_):
    names.append(name)
    if exception is not None:
        failures.append(str(exception))

env.events.request.add_listener(on_request)
user = MeshUser(env)
user.on_start()
# The oracle: random.choices from a generator in the state the user's starts in.
oracle = random.Random()
oracle.setstate(user._rng.getstate())
n = int(sys.argv[2])
for _ in range(n):
    user.traced_request()
STATE.close()
expected = [oracle.choices(user._modes, cum_weights=user._cum_weights)[0].value for _ in range(n)]
print(json.dumps({"sent": list(zip(names, sent)), "expected_modes": expected, "failures": failures}))
"""

T128 = "463ac35c9f6413ad48485a3953bb6124"
MESH = {
    "Host": "h",
    "X-Request-ID": "2cc12a23-e3b4-4b66-8689-60999f258179",
    "X-B3-Traceid": T128,
    "X-B3-Spanid": "2b0be974ad915801",
    "X-B3-Sampled": "1",
}
BODIES = [
    json.dumps({"headers": MESH}),
    json.dumps({"headers": {k: [v] for k, v in MESH.items()}}),  # go-httpbin
    json.dumps(
        {"headers": {"X-Request-Id": "AB-\u00e9", "b3": f"{T128}-2b0be974ad915801-0"}}
    ),  # general path
    "not json",
]


def test_traced_requests_draw_the_choices_modes_and_record_what_the_echo_says(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADGEN_")}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(BODIES), "400", str(ledger)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout.splitlines()[-1])
    records = list(read_ledger(ledger))
    assert len(records) == 400
    assert [r["mode"] for r in records] == out["expected_modes"]
    assert len(set(out["expected_modes"])) >= 4  # the default mix, not one mode
    for i, rec in enumerate(records):
        body = BODIES[i % len(BODIES)]
        name, headers = out["sent"][i]
        assert name == rec["mode"] and headers["x-loadgen-request-id"] == rec["rid"]
        if body == "not json":
            assert rec["error"].startswith("echo not parsable") and "up_trace" not in rec
            continue
        view = parse_echo(json.loads(body)["headers"], TracerFamily.ZIPKIN)
        got = (rec["up_trace"], rec["up_span"], rec["up_flag"], rec["up_xrid"])
        assert got == (view.trace_id, view.span_id, view.flag, view.request_id)
        assert rec["error"] is None
    assert len(out["failures"]) == 100  # every unparsable echo is a Locust failure
