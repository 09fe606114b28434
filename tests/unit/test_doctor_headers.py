"""mesh.tracer and mesh.header_mix (issue 12): which headers the mesh honours, and which modes of
a mix its tracer ignores. Expected mode lists are written out from the header-mode table."""

from __future__ import annotations

import httpx

from loadgen.doctor import Check, CheckStatus, check_gateway
from loadgen.doctor.headers import TracerFact, check_header_mix, check_mesh_tracer, mode_reach, tracer_facts
from loadgen.mesh.modes import DEFAULT_MIX, HeaderMode, parse_mix
from loadgen.mesh.tracer import TracerFamily

OTEL, ZIPKIN = TracerFamily.OPENTELEMETRY, TracerFamily.ZIPKIN


def _tracer(family: TracerFamily, w3c: bool | None = None, source: str = "bootstrap") -> Check:
    return check_mesh_tracer([TracerFact(family, w3c, source)])


def test_the_default_mix_on_an_opentelemetry_mesh_is_mostly_b3() -> None:
    check = check_header_mix(DEFAULT_MIX, _tracer(OTEL))
    assert check.status is CheckStatus.WARN
    # DEFAULT_MIX: none=4, b3_multi_sampled=1, b3_multi_not_sampled=1, b3_multi_no_flag=2,
    # b3_single_sampled=1, b3_single_not_sampled=0 (unused), b3_single_no_flag=1.
    assert check.data["ignored"] == [
        "b3_multi_sampled",
        "b3_multi_not_sampled",
        "b3_multi_no_flag",
        "b3_single_sampled",
        "b3_single_no_flag",
    ]
    assert "5 of 6 modes (60 % of the weight)" in check.summary
    # Flag 1 -> w3c_sampled, 0 -> w3c_not_sampled, no flag -> none (4 + 2 + 1).
    assert check.fix_hint == "--mix none=7,w3c_sampled=2,w3c_not_sampled=1"
    assert parse_mix(check.fix_hint.removeprefix("--mix "))  # the suggestion is a valid --mix


def test_traceparent_modes_on_a_zipkin_mesh_depend_on_w3c_propagation() -> None:
    mix = parse_mix("none=1,w3c_sampled=1,w3c_not_sampled_tracestate=1,w3c_sampled_client_trace_id=1")
    use_b3 = check_header_mix(mix, _tracer(ZIPKIN, w3c=False))
    assert use_b3.status is CheckStatus.WARN
    assert use_b3.data == {
        "ignored": ["w3c_sampled", "w3c_not_sampled_tracestate"],
        "partly_ignored": ["w3c_sampled_client_trace_id"],  # x-client-trace-id still forces
    }
    assert "USE_B3_WITH_W3C_PROPAGATION" in use_b3.fix_hint
    assert use_b3.fix_hint.startswith(
        "--mix none=1,b3_multi_sampled=1,b3_multi_not_sampled=1,w3c_sampled_client_trace_id=1"
    )
    assert check_header_mix(mix, _tracer(ZIPKIN, w3c=True)).status is CheckStatus.PASS


def test_mixed_modes_are_partly_ignored_under_opentelemetry() -> None:
    mix = parse_mix("w3c_sampled_b3_not_sampled=1,force_trace_not_sampled=1,w3c_sampled=1")
    check = check_header_mix(mix, _tracer(OTEL))
    assert check.data == {
        "ignored": [],
        "partly_ignored": ["w3c_sampled_b3_not_sampled", "force_trace_not_sampled"],
    }
    assert "a request with only its x-envoy-force-trace" in " ".join(check.details)
    reach = mode_reach(HeaderMode.W3C_SAMPLED_B3_NOT_SAMPLED, OTEL, True)
    assert (reach.honoured, reach.ignored, reach.other) == (("traceparent",), ("B3",), ())
    assert (
        check_header_mix(parse_mix("none=1,w3c_sampled=1,xrid_random=1"), _tracer(OTEL)).status
        is CheckStatus.PASS
    )


def test_the_users_tracer_wins_and_disagreement_is_a_warning() -> None:
    checks = [
        Check("gateway.tracer", CheckStatus.PASS, "", data={"family": "zipkin", "w3c": False}),
        Check("bootstrap.tracer", CheckStatus.PASS, "", data={"family": "opentelemetry", "w3c": True}),
    ]
    facts = tracer_facts(checks, OTEL)
    assert [(f.family, f.source) for f in facts] == [
        (OTEL, "--tracer"),
        (ZIPKIN, "gateway"),
        (OTEL, "bootstrap"),
    ]
    tracer = check_mesh_tracer(facts)
    assert tracer.status is CheckStatus.WARN and tracer.data["family"] == "opentelemetry"
    assert "zipkin (gateway)" in tracer.summary
    agreed = check_mesh_tracer(tracer_facts(checks[:1]))
    assert agreed.status is CheckStatus.PASS
    assert agreed.details[:2] == (
        "honours: X-B3-*, b3",
        "ignores (forwarded untouched): traceparent, tracestate",
    )
    unknown = check_mesh_tracer([])
    assert unknown.status is CheckStatus.SKIP
    assert check_header_mix(DEFAULT_MIX, unknown).status is CheckStatus.SKIP


def _otel_gateway(request: httpx.Request) -> httpx.Response:
    """An upstream behind Envoy's OpenTelemetry tracer: B3 forwarded untouched, a traceparent
    written with the gateway's span id; x-client-trace-id forces the flag to 01."""
    headers = dict(request.headers)
    incoming = headers.get("traceparent", "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00").split("-")
    flag = "01" if "x-client-trace-id" in headers else incoming[3]
    headers["traceparent"] = f"00-{incoming[1]}-{'ef' * 8}-{flag}"
    return httpx.Response(200, json={"headers": headers}, headers={"x-envoy-upstream-service-time": "1"})


def test_the_gateway_check_recognises_an_opentelemetry_tracer_and_forces_a_trace() -> None:
    client = httpx.Client(transport=httpx.MockTransport(_otel_gateway))
    checks = {c.name: c for c in check_gateway("http://gw", "httpbin.example", client)}
    assert checks["gateway.tracer"].data == {"family": "opentelemetry", "w3c": True}
    assert checks["gateway.b3"].status is CheckStatus.SKIP
    forced = checks["gateway.traceparent"]
    assert forced.status is CheckStatus.PASS, forced
    assert forced.data["forced_trace_id"] == forced.data["sent_trace_id"]


def test_the_gateway_check_tells_whether_zipkin_reads_traceparent() -> None:
    def zipkin(w3c: bool) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            headers = dict(request.headers)
            trace = headers.get("x-b3-traceid") or "12" * 16
            if w3c and "traceparent" in headers and "x-b3-traceid" not in headers:
                trace = headers["traceparent"].split("-")[1]
            headers.update({"x-b3-traceid": trace, "x-b3-spanid": "34" * 8, "x-b3-sampled": "1"})
            return httpx.Response(200, json={"headers": headers})

        return httpx.MockTransport(handler)

    for w3c in (False, True):
        checks = {c.name: c for c in check_gateway("http://gw", None, httpx.Client(transport=zipkin(w3c)))}
        assert checks["gateway.tracer"].data == {"family": "zipkin", "w3c": w3c}
        assert checks["gateway.b3"].status is CheckStatus.PASS
