"""The echo upstream of the embedded mesh: an httpbin-like `/headers` that returns the request
headers it received, so the ledger records what the upstream *actually saw* (trace id,
`X-B3-Sampled`, `b3`, the `x-request-id` into which Envoy wrote its sampling decision).

Run as `python -m loadgen.stack.echo --port 0`; it prints one JSON ready line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys

from aiohttp import web


def _title_case(name: str) -> str:
    # httpbin (werkzeug) shows header names title-cased: x-b3-traceid -> X-B3-Traceid.
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


async def headers(request: web.Request) -> web.Response:
    echoed: dict[str, str] = {}
    for name, value in request.headers.items():
        key = _title_case(name)
        echoed[key] = f"{echoed[key]},{value}" if key in echoed else value
    return web.json_response({"headers": echoed})


async def status(request: web.Request) -> web.Response:
    try:
        code = int(request.match_info["code"])
    except ValueError:
        return web.Response(status=400, text="status code must be an integer\n")
    if not 200 <= code <= 599:
        return web.Response(status=400, text="status code must be 200..599\n")
    return web.Response(status=code)


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/headers", headers)
    app.router.add_get("/get", headers)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/health", health)
    return app


def require_loopback(host: str, allow_non_loopback: bool) -> None:
    if allow_non_loopback:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        if host == "localhost":
            return
    raise SystemExit(
        f"refusing to listen on {host}: embedded services bind loopback only (--allow-non-loopback)"
    )


async def serve(app: web.Application, host: str, port: int) -> None:
    """Listen, print the ready line, run until SIGINT/SIGTERM."""
    # aiohttp sets TCP_NODELAY on accepted sockets (Nagle stalls responses ~40 ms otherwise).
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None
    bound_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    sys.stdout.write(
        json.dumps({"ready": True, "url": f"http://{host}:{bound_port}", "pid": os.getpid()}) + "\n"
    )
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="httpbin-like echo upstream for the embedded mesh")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--allow-non-loopback", action="store_true")
    args = parser.parse_args(argv)
    require_loopback(args.host, args.allow_non_loopback)
    asyncio.run(serve(make_app(), args.host, args.port))


if __name__ == "__main__":
    main()
