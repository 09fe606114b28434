"""Gateway checks on behaviours the embedded mesh does not have (a gateway that keeps the client's
x-request-id, no header echo, a proxy that rewrites trace ids), via httpx.MockTransport."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from loadgen.doctor import Check, CheckStatus, check_gateway
from loadgen.doctor.gateway import same_request_id
from loadgen.doctor.headers import check_mesh_tracer, tracer_facts

Handler = Callable[[httpx.Request], httpx.Response]


def _echo(rewrite: Callable[[dict[str, str]], dict[str, str]] = lambda h: h) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {k.title(): v for k, v in request.headers.items()}
        return httpx.Response(
            200, json={"headers": rewrite(headers)}, headers={"x-envoy-upstream-service-time": "1"}
        )

    return handler


def _run(handler: Handler) -> dict[str, Check]:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return {c.name: c for c in check_gateway("http://gw", "httpbin.example", client)}


def test_same_request_id_ignores_character_14() -> None:
    sent = "3f2b1c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
    assert same_request_id(sent, sent[:14] + "9" + sent[15:])
    assert not same_request_id(sent, "4f2b1c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d")
    assert not same_request_id(sent, "")


def test_kept_x_request_id_is_reported_as_kept() -> None:
    def keep_and_mark(headers: dict[str, str]) -> dict[str, str]:
        xrid = headers.get("X-Request-Id", "00000000-0000-4000-8000-000000000000")
        out = {**headers, "X-Request-Id": xrid[:14] + "9" + xrid[15:]}
        if "X-B3-Spanid" in headers:
            out["X-B3-Spanid"] = "00000000000000aa"
        return out

    checks = _run(_echo(keep_and_mark))
    xrid = checks["gateway.x_request_id"]
    assert xrid.status is CheckStatus.PASS
    assert xrid.data["x_request_id"] == "kept"
    assert xrid.data["decision"] == "sampled"
    assert "KEEPS" in xrid.summary


def test_untouched_span_id_means_the_gateway_did_not_trace() -> None:
    checks = _run(_echo())  # a plain proxy: forwards everything as is (x-request-id kept too)
    b3 = checks["gateway.b3"]
    assert b3.status is CheckStatus.WARN
    assert "did not create a span" in b3.summary
    assert "forced_trace_id" not in b3.data
    # No context added upstream: the tracer check warns and names no family for mesh.tracer.
    assert checks["gateway.tracer"].status is CheckStatus.WARN
    assert "family" not in checks["gateway.tracer"].data and tracer_facts(list(checks.values())) == []


def test_replaced_trace_id_fails() -> None:
    def new_trace(headers: dict[str, str]) -> dict[str, str]:
        return (
            {**headers, "X-B3-Traceid": "f" * 32, "X-B3-Spanid": "1" * 16}
            if "X-B3-Traceid" in headers
            else headers
        )

    b3 = _run(_echo(new_trace))["gateway.b3"]
    assert b3.status is CheckStatus.FAIL and "replaced the client's trace id" in b3.summary


def test_no_echo_warns_statistical_mode() -> None:
    checks = _run(lambda request: httpx.Response(200, text="hello"))
    echo = checks["gateway.echo"]
    assert echo.status is CheckStatus.WARN
    assert "statistical" in echo.fix_hint
    assert checks["gateway.x_request_id"].status is CheckStatus.SKIP
    # Issue 12's tracer checks stay inconclusive: nothing was seen, so no tracer is assumed.
    assert checks["gateway.tracer"].status is CheckStatus.SKIP
    facts = tracer_facts(list(checks.values()))
    assert facts == [] and check_mesh_tracer(facts).status is CheckStatus.SKIP


def test_upstream_404_and_503_are_told_apart_from_no_route() -> None:
    upstream_404 = _run(lambda r: httpx.Response(404, headers={"x-envoy-upstream-service-time": "2"}))
    routing = upstream_404["gateway.routing"]
    assert routing.status is CheckStatus.FAIL and "upstream answered 404" in routing.summary
    no_healthy = _run(lambda r: httpx.Response(503, text="no healthy upstream"))["gateway.routing"]
    assert no_healthy.status is CheckStatus.FAIL and "endpoints" in no_healthy.fix_hint
