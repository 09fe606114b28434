"""Where reference spans go per --reference-protocol (loadgen.emitter.protocols.reference_target)."""

from __future__ import annotations

import pytest

from loadgen.emitter import ReferenceProtocol, reference_target

BASIC_U_P = ("Authorization", "Basic dTpw")  # base64("u:p")


def test_zipkin_and_otlp_http_endpoints_are_paths_under_the_collector() -> None:
    z = reference_target("zipkin", "http://c:9411/")
    assert (z.protocol, z.endpoint, z.headers, z.shown) == (
        ReferenceProtocol.ZIPKIN,
        "http://c:9411/api/v2/spans",
        (),
        "http://c:9411/api/v2/spans",
    )
    h = reference_target("otlp-http", "https://otel.example:4318")
    assert (h.endpoint, h.shown) == (
        "https://otel.example:4318/v1/traces",
        "https://otel.example:4318/v1/traces",
    )
    # A URL that already names the signal path keeps it; a prefix before it is kept.
    assert reference_target("otlp-http", "http://gw/otlp/v1/traces").endpoint == "http://gw/otlp/v1/traces"
    assert reference_target("otlp-http", "http://gw/otlp").endpoint == "http://gw/otlp/v1/traces"


def test_otlp_grpc_defaults_to_the_collector_host_on_4317() -> None:
    g = reference_target("otlp-grpc", "http://otel.example:4318/")
    assert (g.endpoint, g.tls, g.shown) == ("otel.example:4317", False, "http://otel.example:4317")
    assert reference_target("otlp-grpc", "https://otel.example").tls is True
    v6 = reference_target("otlp-grpc", "http://[::1]:9411")
    assert (v6.endpoint, v6.shown) == ("[::1]:4317", "http://[::1]:4317")


def test_otlp_grpc_endpoint_given_as_host_port_or_url() -> None:
    assert reference_target("otlp-grpc", "http://c:9411", "127.0.0.1:14317").endpoint == "127.0.0.1:14317"
    tls = reference_target("otlp-grpc", "http://c:9411", "https://otel:443")
    assert (tls.endpoint, tls.tls) == ("otel:443", True)
    for bad in ("otel", "otel:notaport", "http://otel:4317/v1/traces", "ftp://otel:4317"):
        with pytest.raises(ValueError, match="OTLP/gRPC endpoint"):
            reference_target("otlp-grpc", "http://c:9411", bad)


def test_user_info_becomes_basic_auth_and_never_stays_in_the_endpoint() -> None:
    for protocol in ("zipkin", "otlp-http", "otlp-grpc"):
        t = reference_target(protocol, "http://u:p@c:9411")
        assert t.headers == (BASIC_U_P,), protocol
        assert "u:p" not in t.endpoint and "@" not in t.endpoint and "@" not in t.shown
        assert t.collector == "http://c:9411"
    # percent-encoded user-info is decoded first, as requests does: base64("a@b:p:q")
    assert reference_target("otlp-http", "http://a%40b:p%3Aq@c").headers == (
        ("Authorization", "Basic YUBiOnA6cQ=="),
    )
    # otlp-grpc: the gRPC endpoint's own user-info wins over the collector's
    own = reference_target("otlp-grpc", "http://u:p@c:9411", "http://x:y@g:4317")
    assert (own.endpoint, own.headers) == ("g:4317", (("Authorization", "Basic eDp5"),))
    inherited = reference_target("otlp-grpc", "http://u:p@c:9411", "g:4317")
    assert inherited.headers == (BASIC_U_P,)


def test_secret_query_parameters_are_masked_where_shown() -> None:
    t = reference_target("otlp-http", "http://c:4318?token=abc")
    assert t.endpoint == "http://c:4318/v1/traces?token=abc"  # the exporter still sends it
    assert t.shown == "http://c:4318/v1/traces?token=***" and t.collector == "http://c:4318?token=***"


def test_bad_protocol_and_bad_collector_url_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="one of zipkin, otlp-http, otlp-grpc, got 'jaeger'"):
        reference_target("jaeger", "http://c:9411")
    with pytest.raises(ValueError, match="the collector must be an http:// or https:// URL"):
        reference_target("otlp-http", "c:4318")
    with pytest.raises(ValueError, match=r"got 'http://\*\*\*@'"):
        reference_target("zipkin", "http://u:secret@")
