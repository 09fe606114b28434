"""The collector's fault knobs, changed while it runs: `GET/POST /control/faults` (JSON).

    GET  /control/faults   -> {"drop_probability": 0.0, "error_rate": 0.0, "added_latency_ms": 0.0}
    POST /control/faults   {"drop_probability": 1.0}   (any of the three; the others stay)
                           -> the knobs now in force, or 400 with the reason

Off unless the collector is started with `--fault-control` (the embedded mesh passes it: its
collector is a test instrument on 127.0.0.1). Only loopback peers are answered (403 otherwise),
whatever address the collector binds: turning loss on is not something a remote client may do.
The new knobs apply to the next span POST; `GET /loadgen/stats` shows them under `faults`. A
demo or test turns collection loss on and off under a running `loadgen watch` this way.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

from aiohttp import web

from loadgen.stack.collector.server import COLLECTOR_KEY

__all__ = ["CONTROL_PATH", "KNOBS", "add_fault_control"]

CONTROL_PATH = "/control/faults"
#: The knobs the control changes (the other Faults fields are fixed at start).
KNOBS = ("drop_probability", "error_rate", "added_latency_ms")


def _loopback(request: web.Request) -> bool:
    try:
        return request.remote is not None and ipaddress.ip_address(request.remote).is_loopback
    except ValueError:
        return False


def _answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body) + "\n", content_type="application/json")


def _knobs(faults: object) -> dict[str, Any]:
    return {name: getattr(faults, name) for name in KNOBS}


def _changes(raw: object) -> dict[str, Any]:
    """The knobs a POST body sets; ValueError names what is wrong."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"expected a JSON object with some of {', '.join(KNOBS)}")
    unknown = sorted(set(raw) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(KNOBS)}")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        out[name] = float(value)
    return out


async def _faults(request: web.Request) -> web.Response:
    if not _loopback(request):
        return _answer(403, {"error": "the fault control answers loopback clients only"})
    collector = request.app[COLLECTOR_KEY]
    if request.method == "POST":
        try:
            changes = _changes(json.loads(await request.read() or b"null"))
            collector.faults = dataclasses.replace(collector.faults, **changes)  # Faults checks ranges
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError too
            return _answer(400, {"error": str(exc)})
    return _answer(200, _knobs(collector.faults))


def add_fault_control(app: web.Application) -> None:
    """Serve `CONTROL_PATH` on a collector app (before it starts)."""
    app.router.add_route("GET", CONTROL_PATH, _faults)
    app.router.add_route("POST", CONTROL_PATH, _faults)
