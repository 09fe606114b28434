"""The collector's runtime fault control (loadgen.stack.collector.control): GET/POST
/control/faults changes the running collector's knobs, for loopback clients only, and the next
span POST obeys them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from loadgen.stack.collector.control import CONTROL_PATH, add_fault_control
from loadgen.stack.collector.server import make_app
from loadgen.stack.collector.store import SpanStore

TRACE = "a" * 32


def _span(span_id: str) -> dict[str, Any]:
    return {"traceId": TRACE, "id": span_id, "name": "get", "localEndpoint": {"serviceName": "gw"}}


def _with_client(test: Callable[[TestClient[Any, Any]], Awaitable[None]], *, control: bool = True) -> None:
    async def main() -> None:
        with SpanStore() as store:
            app = make_app(store)
            if control:
                add_fault_control(app)
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                await test(client)

    asyncio.run(main())


def test_loss_switched_on_and_off_while_it_runs() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        resp = await client.get(CONTROL_PATH)
        assert resp.status == 200
        assert await resp.json() == {"drop_probability": 0.0, "error_rate": 0.0, "added_latency_ms": 0.0}
        resp = await client.post(CONTROL_PATH, json={"drop_probability": 1.0})
        assert await resp.json() == {"drop_probability": 1.0, "error_rate": 0.0, "added_latency_ms": 0.0}
        assert (await client.post("/api/v2/spans", json=[_span("01" * 8)])).status == 202  # accepted...
        assert (await client.get(f"/api/v2/trace/{TRACE}")).status == 404  # ...and thrown away
        stats = await (await client.get("/loadgen/stats")).json()
        assert stats["faults"]["drop_probability"] == 1.0
        resp = await client.post(CONTROL_PATH, json={"drop_probability": 0, "error_rate": 1})
        assert await resp.json() == {"drop_probability": 0.0, "error_rate": 1.0, "added_latency_ms": 0.0}
        assert (await client.post("/api/v2/spans", json=[_span("02" * 8)])).status == 503
        await client.post(CONTROL_PATH, json={"error_rate": 0})
        assert (await client.post("/api/v2/spans", json=[_span("03" * 8)])).status == 202
        assert len(await (await client.get(f"/api/v2/trace/{TRACE}")).json()) == 1  # kept again

    _with_client(test)


def test_bad_changes_are_refused_and_change_nothing() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        for body in (
            {"drop_probability": 1.5},  # out of [0, 1]
            {"added_latency_ms": -1},
            {"drop_probability": True},
            {"drop_probability": "1"},
            {"seed": 3},  # not a runtime knob
            {},
            [0.5],
        ):
            resp = await client.post(CONTROL_PATH, data=json.dumps(body))
            assert resp.status == 400, body
            assert "error" in await resp.json()
        resp = await client.post(CONTROL_PATH, data=b"{not json")
        assert resp.status == 400
        after = await (await client.get(CONTROL_PATH)).json()
        assert after == {"drop_probability": 0.0, "error_rate": 0.0, "added_latency_ms": 0.0}

    _with_client(test)


def test_off_unless_asked_for() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        assert (await client.get(CONTROL_PATH)).status == 404
        assert (await client.post(CONTROL_PATH, json={"drop_probability": 1.0})).status in (404, 405)

    _with_client(test, control=False)


def test_a_remote_client_is_refused() -> None:
    async def main() -> None:
        with SpanStore() as store:
            app = make_app(store)
            add_fault_control(app)
            for peer, status in (
                (("10.1.2.3", 5555), 403),
                (("127.0.0.1", 5555), 200),
                (("::1", 5555, 0, 0), 200),
            ):
                transport = _Transport(peer)
                request = make_mocked_request("GET", CONTROL_PATH, app=app, transport=transport)
                handler = (await app.router.resolve(request)).handler  # the route's, as served
                resp = await handler(request)
                assert isinstance(resp, web.Response) and resp.status == status, peer

    asyncio.run(main())


class _Transport:
    """Just enough of an asyncio transport for aiohttp to read the peer's address."""

    def __init__(self, peer: tuple[object, ...]) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False
