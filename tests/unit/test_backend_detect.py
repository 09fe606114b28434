"""parse_backend_spec: the KIND:URL forms, and `auto:` detection against the loopback fakes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from loadgen.backends import (
    BackendDetectionError,
    BackendError,
    BackendOptions,
    JaegerBackend,
    JaegerV3Backend,
    ParamStyle,
    ZipkinBackend,
    parse_backend_spec,
)
from loadgen.backends.factory import SUPPORTED_BACKEND_SPECS
from tests.unit.backend_contract import (
    FakeJaeger,
    FakeJaegerV3,
    FakeZipkin,
    LoopbackServer,
    clean_backend_env,
    closed_port,
    tid,
    zspan,
)

__all__ = ["clean_backend_env"]  # an autouse fixture, imported to be active here


@pytest.fixture
def servers() -> Iterator[list[LoopbackServer]]:
    started: list[LoopbackServer] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[LoopbackServer], server: LoopbackServer) -> Any:
    server.start()
    servers.append(server)
    return server


def paths(server: LoopbackServer) -> list[str]:
    return [server.api_root + p for p, _, _ in server.requests]


class TestAuto:
    def test_zipkin(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeZipkin())
        with parse_backend_spec(f"auto:{fake.url}") as backend:
            assert isinstance(backend, ZipkinBackend) and backend.url == fake.url
        assert paths(fake) == ["/api/v2/services"]

    def test_jaeger_api_preferred_over_v3(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeJaeger())  # answers /api/services and /api/v3/services
        with parse_backend_spec(f"auto:{fake.url}") as backend:
            assert isinstance(backend, JaegerBackend) and backend.url == fake.url
        assert fake.requests[0][0] == "/v2/services"  # the Zipkin probe, 404
        assert [p for p, _, _ in fake.requests] == ["/v2/services", "/services"]

    def test_jaeger_under_base_path(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeJaeger(prefix="/jaeger"))
        fake.add_trace([zspan(tid(1))])
        root = fake.url[: -len("/jaeger")]
        with parse_backend_spec(f"auto:{root}") as backend:
            assert isinstance(backend, JaegerBackend) and backend.url == fake.url
            assert backend.fetch_many([tid(1), tid(2)])[tid(1)].spans

    def test_v3_only_jaeger(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeJaeger())
        fake.v3_only = True  # Jaeger after v2.20
        with parse_backend_spec(f"auto:{fake.url}") as backend:
            assert isinstance(backend, JaegerV3Backend)

    def test_v3_gets_param_style(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeJaegerV3())
        with parse_backend_spec(f"auto:{fake.url}", param_style="snake") as backend:
            assert isinstance(backend, JaegerV3Backend) and backend.param_style is ParamStyle.SNAKE

    @pytest.mark.parametrize(
        "make_fake, kind, cls",
        [
            (FakeZipkin, "zipkin", ZipkinBackend),
            (FakeJaeger, "jaeger", JaegerBackend),
            (lambda: FakeJaeger(prefix="/jaeger"), "jaeger", JaegerBackend),
            (FakeJaegerV3, "jaeger-v3", JaegerV3Backend),
        ],
    )
    def test_chosen_reader_names_its_concrete_kind(
        self, servers: list[LoopbackServer], make_fake: Any, kind: str, cls: type
    ) -> None:
        fake = start(servers, make_fake())
        root = fake.url.removesuffix("/jaeger")
        with parse_backend_spec(f"auto:{root}") as backend:
            assert type(backend) is cls
            assert backend.name == kind  # what a caller records: never "auto"
            recorded = f"{backend.name}:{backend.url}"
            backend.check_trace_route()  # the auto-detected reader has the preflight too
        assert recorded == f"{kind}:{fake.url}"
        # The recorded spec builds the same reader again, with no detection probes.
        before = len(fake.requests)
        with parse_backend_spec(recorded) as again:
            assert type(again) is cls and again.url == fake.url
        assert len(fake.requests) == before

    def test_v3_only_jaeger_is_named_jaeger_v3(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeJaeger())
        fake.v3_only = True
        with parse_backend_spec(f"auto:{fake.url}") as backend:
            assert backend.name == "jaeger-v3"

    def test_listing_only_proxy_is_detected_but_fails_the_trace_route_check(
        self, servers: list[LoopbackServer]
    ) -> None:
        # Issue 9: detection only needs /services, so it succeeds; the preflight catches the rest.
        fake = start(servers, FakeZipkin())
        fake.routed = {"/services"}
        with parse_backend_spec(f"auto:{fake.url}", retries=0) as backend:
            assert backend.name == "zipkin"
            with pytest.raises(BackendError) as info:
                backend.check_trace_route()
        message = str(info.value)
        assert message.startswith(f"zipkin at {fake.url} does not answer an unknown trace id (")
        assert '404 text/plain "404 page not found" is not Zipkin\'s not-found answer' in message
        assert message.endswith("may route only some paths; check the base path / tenant.")

    def test_nothing_answers(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeZipkin())
        fake.not_found_everywhere = True
        with pytest.raises(BackendDetectionError) as info:
            parse_backend_spec(f"auto:{fake.url}")
        assert isinstance(info.value, ValueError) and isinstance(info.value, BackendError)
        message = str(info.value)
        for probe in ("/api/v2/services", "/api/services", "/api/v3/services", "/jaeger/api/v3/services"):
            assert f"{probe} -> HTTP 404" in message
        assert "zipkin:URL, jaeger:URL or jaeger-v3:URL" in message
        for probe in ("/api/echo", "/api/status/buildinfo"):  # Tempo, at the URL only
            assert f"{probe} -> HTTP 404" in message
        assert len(fake.requests) == 8

    def test_span_receiver_hint(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeZipkin())
        fake.fail_next(100, 400)  # Jaeger's Zipkin receiver: every GET is a bad span upload
        with pytest.raises(BackendDetectionError, match="only accepts spans"):
            parse_backend_spec(f"auto:{fake.url}")

    def test_unreachable_stops_at_once(self) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        with pytest.raises(BackendDetectionError, match=f"cannot reach {url}: ConnectError"):
            parse_backend_spec(f"auto:{url}", retries=5)

    def test_credentials_wanted(self, servers: list[LoopbackServer]) -> None:
        fake = start(servers, FakeZipkin())
        fake.fail_next(1, 401)
        with pytest.raises(BackendDetectionError, match="wants credentials"):
            parse_backend_spec(f"auto:{fake.url}")
        assert len(fake.requests) == 1

    def test_url_credentials_reach_probes_and_reader_not_messages(
        self, servers: list[LoopbackServer]
    ) -> None:
        fake = start(servers, FakeJaeger())
        with parse_backend_spec("auto:" + fake.url.replace("//", "//ann:s3cr3t-pw@")) as backend:
            assert isinstance(backend, JaegerBackend)
            assert backend.url == fake.url and "s3cr3t" not in repr(backend)
            backend.check()
        assert {h["authorization"] for _, _, h in fake.requests} == {"Basic YW5uOnMzY3IzdC1wdw=="}


class TestSpecs:
    @pytest.mark.parametrize(
        "kind, cls", [("zipkin", ZipkinBackend), ("jaeger", JaegerBackend), ("jaeger-v3", JaegerV3Backend)]
    )
    def test_explicit_kinds_do_no_io(self, kind: str, cls: type) -> None:
        url = f"http://127.0.0.1:{closed_port()}/jaeger/"
        with parse_backend_spec(f" {kind.upper()}:{url}") as backend:
            assert type(backend) is cls
            assert backend.url == url.rstrip("/") and backend.name == kind

    @pytest.mark.parametrize(
        "spec",
        [
            "http://h:16686",
            "jaeger:h:16686",
            "jaeger:",
            "jaeger-v2:http://h",
            "jaegerv3:http://h",
            "",
            "auto",
        ],
    )
    def test_bad_specs_list_every_form(self, spec: str) -> None:
        with pytest.raises(ValueError) as info:
            parse_backend_spec(spec)
        for form in SUPPORTED_BACKEND_SPECS:
            assert form in str(info.value)
        assert {form.split(":")[0] for form in SUPPORTED_BACKEND_SPECS} == {
            "zipkin",
            "jaeger",
            "jaeger-v3",
            "tempo",
            "auto",
        }

    def test_bad_spec_hides_credentials(self) -> None:
        with pytest.raises(ValueError) as info:
            parse_backend_spec("nope:http://u:secret@h")
        assert "secret" not in str(info.value)

    def test_option_errors(self) -> None:
        with pytest.raises(TypeError, match="param_style only applies to jaeger-v3"):
            parse_backend_spec("zipkin:http://h", param_style="snake")
        with pytest.raises(TypeError, match="unknown backend option"):
            parse_backend_spec("zipkin:http://h", batchsize=3)
        with pytest.raises(ValueError, match="batch_size >= 1"):
            parse_backend_spec("jaeger:http://h", batch_size=0)

    def test_options_and_overrides(
        self, servers: list[LoopbackServer], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fake = start(servers, FakeJaeger())
        monkeypatch.setenv("LOADGEN_BACKEND_TOKEN", "env-token")
        monkeypatch.setenv("LOADGEN_BACKEND_HEADERS", "X-Scope-OrgID: tenant-1")
        # No options: the environment applies.
        with parse_backend_spec(f"jaeger:{fake.url}") as backend:
            backend.check()
        assert fake.requests[-1][2]["authorization"] == "Bearer env-token"
        assert fake.requests[-1][2]["x-scope-orgid"] == "tenant-1"
        # Explicit options replace the environment; overrides (flags) win over options.
        options = BackendOptions(bearer_token="opt-token", batch_size=50)
        with parse_backend_spec(f"jaeger:{fake.url}", options, bearer_token="flag-token") as backend:
            backend.check()
        assert fake.requests[-1][2]["authorization"] == "Bearer flag-token"
        assert "x-scope-orgid" not in fake.requests[-1][2]
