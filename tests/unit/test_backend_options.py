"""BackendOptions (environment, flags, validation, repr) and what every reader does with them over
real loopback HTTP(S): credentials and headers sent, TLS verified or not, secrets kept out of
URLs, repr(), messages and logs."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen.backends import (
    BackendError,
    BackendOptions,
    FetchStatus,
    JaegerBackend,
    JaegerV3Backend,
    TraceBackend,
    ZipkinBackend,
    parse_backend_spec,
)
from tests.unit.backend_contract import (
    FakeJaeger,
    FakeJaegerV3,
    FakeZipkin,
    LoopbackServer,
    clean_backend_env,
    tid,
    zspan,
)

__all__ = ["clean_backend_env"]  # an autouse fixture, imported to be active here

TOKEN = "tok-9f8e7d6c5b4a"
PASSWORD = "pw-Zx81!secret"

READERS: list[tuple[str, type[LoopbackServer], type[TraceBackend]]] = [
    ("zipkin", FakeZipkin, ZipkinBackend),
    ("jaeger", FakeJaeger, JaegerBackend),
    ("jaeger-v3", FakeJaegerV3, JaegerV3Backend),
]


class TestFromEnv:
    def test_defaults(self) -> None:
        assert BackendOptions.from_env({}) == BackendOptions()
        assert BackendOptions() == BackendOptions(
            headers={},
            bearer_token=None,
            basic_auth=None,
            verify=True,
            timeout_s=10.0,
            retries=3,
            backoff_s=0.2,
            concurrency=4,
            batch_size=100,
        )

    def test_everything(self, tmp_path: Path) -> None:
        ca = tmp_path / "ca.pem"
        options = BackendOptions.from_env(
            {
                "LOADGEN_BACKEND_TOKEN": TOKEN,
                "LOADGEN_BACKEND_HEADERS": " X-Scope-OrgID: tenant-1 ;X-Api-Key:  k:v:w ;; ",
                "LOADGEN_BACKEND_CA": str(ca),
                "UNRELATED": "x",
            }
        )
        assert options.bearer_token == TOKEN
        assert options.headers == {"X-Scope-OrgID": "tenant-1", "X-Api-Key": "k:v:w"}
        assert options.verify == str(ca)
        basic = BackendOptions.from_env(
            {
                "LOADGEN_BACKEND_USER": "ann",
                "LOADGEN_BACKEND_PASSWORD": PASSWORD,
                "LOADGEN_BACKEND_INSECURE": "1",
            }
        )
        assert basic.basic_auth == ("ann", PASSWORD) and basic.verify is False
        assert BackendOptions.from_env({"LOADGEN_BACKEND_USER": "ann"}).basic_auth == ("ann", "")
        assert BackendOptions.from_env({"LOADGEN_BACKEND_INSECURE": "false"}).verify is True

    @pytest.mark.parametrize(
        "env, message",
        [
            ({"LOADGEN_BACKEND_HEADERS": f"Authorization Bearer {TOKEN}"}, "entry 1 is not of the form"),
            ({"LOADGEN_BACKEND_HEADERS": f"A: b; : {TOKEN}"}, "entry 2 is not of the form"),
            ({"LOADGEN_BACKEND_INSECURE": "1", "LOADGEN_BACKEND_CA": "/ca.pem"}, "contradict"),
            ({"LOADGEN_BACKEND_INSECURE": "sure"}, "must be 1 or 0"),
            ({"LOADGEN_BACKEND_PASSWORD": PASSWORD}, "without LOADGEN_BACKEND_USER"),
            ({"LOADGEN_BACKEND_TOKEN": TOKEN, "LOADGEN_BACKEND_USER": "ann"}, "not both"),
        ],
    )
    def test_errors_never_echo_values(self, env: dict[str, str], message: str) -> None:
        with pytest.raises(ValueError, match=message) as info:
            BackendOptions.from_env(env)
        assert TOKEN not in str(info.value) and PASSWORD not in str(info.value)


class TestMergedAndValidation:
    def test_flags_win(self) -> None:
        env = BackendOptions(headers={"X-Scope-OrgID": "env", "X-Other": "o"}, basic_auth=("ann", PASSWORD))
        merged = env.merged(
            {"headers": {"x-scope-orgid": "flag"}, "bearer_token": TOKEN, "timeout_s": 2.5, "retries": None}
        )
        assert merged.headers == {"X-Other": "o", "x-scope-orgid": "flag"}
        assert merged.bearer_token == TOKEN and merged.basic_auth is None  # flag token replaces env basic
        assert merged.timeout_s == 2.5 and merged.retries == 3  # None means "not given"
        back = merged.merged({"basic_auth": ["bob", "pw"]})
        assert back.basic_auth == ("bob", "pw") and back.bearer_token is None
        assert env.merged({}) == env

    def test_unknown_flag(self) -> None:
        with pytest.raises(TypeError, match="unknown backend option"):
            BackendOptions().merged({"tiemout_s": 1})

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"batch_size": 0}, "batch_size >= 1"),
            ({"concurrency": 0}, "concurrency >= 1"),
            ({"retries": -1}, "retries >= 0"),
            ({"timeout_s": 0}, "timeout_s > 0"),
            ({"backoff_s": -0.1}, "backoff_s >= 0"),
            ({"bearer_token": TOKEN, "basic_auth": ("a", "b")}, "not both"),
            ({"bearer_token": TOKEN, "headers": {"authorization": "x"}}, "conflict"),
            ({"verify": ""}, "CA bundle"),
        ],
    )
    def test_validation(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            BackendOptions(**kwargs)

    def test_repr_masks_secrets(self) -> None:
        options = BackendOptions(headers={"X-Api-Key": "key-123456"}, bearer_token=TOKEN)
        text = repr(options)
        assert TOKEN not in text and "key-123456" not in text
        assert "X-Api-Key" in text and "bearer_token='***'" in text
        basic = repr(BackendOptions(basic_auth=("ann", PASSWORD)))
        assert PASSWORD not in basic and "('ann', '***')" in basic
        assert str(options) == text

    def test_secret_values(self) -> None:
        options = BackendOptions(
            headers={"Authorization": f"Token {TOKEN}", "X-Scope-OrgID": "t1", "Cookie": "sid=abcdef"},
        )
        assert set(options.secret_values()) == {f"Token {TOKEN}", TOKEN, "Token", "sid=abcdef"}
        basic = BackendOptions(basic_auth=("ann", PASSWORD)).secret_values()
        assert PASSWORD in basic and "YW5uOnB3LVp4ODEhc2VjcmV0" in basic  # base64 of ann:PASSWORD
        assert BackendOptions(bearer_token="abc").secret_values() == ()  # too short to scrub safely


@pytest.fixture(params=READERS, ids=[r[0] for r in READERS])
def reader(request: pytest.FixtureRequest) -> Iterator[tuple[LoopbackServer, Callable[..., TraceBackend]]]:
    _, fake_cls, backend_cls = request.param
    fake = fake_cls()
    fake.start()
    made: list[TraceBackend] = []

    def make(url: str | None = None, options: BackendOptions | None = None, **overrides: Any) -> TraceBackend:
        overrides.setdefault("backoff_s", 0.0)
        backend: TraceBackend = backend_cls(url or fake.url, options, **overrides)
        made.append(backend)
        return backend

    yield fake, make
    for backend in made:
        backend.close()
    fake.stop()


class TestCredentialsOnTheWire:
    def test_bearer_and_headers_sent_everywhere(self, reader: Any) -> None:
        fake, make = reader
        fake.add_trace([zspan(tid(1), ts_us=1_000_000)])
        backend = make(options=BackendOptions(bearer_token=TOKEN, headers={"X-Scope-OrgID": "tenant-1"}))
        backend.check()
        backend.fetch_many([tid(1), tid(2)])
        backend.search(tags=None, service="istio-ingressgateway", start_us=0, end_us=2_000_000, limit=5)
        assert len(fake.requests) >= 3
        for _, _, headers in fake.requests:
            assert headers["authorization"] == f"Bearer {TOKEN}"
            assert headers["x-scope-orgid"] == "tenant-1"

    @pytest.mark.parametrize("how", ["options", "url", "auth-kwarg"])
    def test_basic_auth_sent(self, reader: Any, how: str) -> None:
        fake, make = reader
        if how == "options":
            backend = make(options=BackendOptions(basic_auth=("ann", PASSWORD)))
        elif how == "url":
            backend = make(url=fake.url.replace("//", f"//ann:{PASSWORD.replace('!', '%21')}@"))
        else:
            backend = make(auth=("ann", PASSWORD))
        backend.check()
        assert fake.requests[-1][2]["authorization"] == "Basic YW5uOnB3LVp4ODEhc2VjcmV0"
        assert backend.url == fake.url

    @pytest.mark.parametrize("echo_status", [401, 503, 400, 404])
    def test_secrets_never_in_messages_repr_or_logs(
        self, reader: Any, echo_status: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        fake, make = reader
        caplog.set_level(logging.DEBUG)
        url = fake.url.replace("//", f"//ann:{PASSWORD.replace('!', '%21')}@")
        secret_header = {"X-Api-Key": "apikey-778899"}
        backends = [
            make(url=url, retries=1, headers=secret_header),
            make(options=BackendOptions(bearer_token=TOKEN, headers=secret_header), retries=1),
        ]
        fake.echo_headers_status = echo_status  # a proxy that echoes request headers in its error
        messages: list[str] = []
        for backend in backends:
            messages += [repr(backend), backend.url]
            messages += [f.error or "" for f in backend.fetch_many([tid(1), tid(2)]).values()]
            for call in (
                backend.check,
                backend.check_trace_route,
                lambda b=backend: b.search(tags={"k": "v"}, service="svc", start_us=0, end_us=1, limit=1),
            ):
                with pytest.raises(BackendError) as info:
                    call()
                messages.append(str(info.value))
        # The echoed headers did reach the server (so the scrubbing is what keeps them out).
        assert any(h.get("authorization", "").startswith("Bearer") for _, _, h in fake.requests)
        assert any(h.get("authorization", "").startswith("Basic") for _, _, h in fake.requests)
        messages += [record.getMessage() for record in caplog.records]
        assert any(str(echo_status) in m for m in messages)
        for message in messages:
            for secret in (TOKEN, PASSWORD, "apikey-778899", "YW5uOnB3LVp4ODEhc2VjcmV0", "%21secret"):
                assert secret not in message, message

    def test_a_secret_at_the_quoting_limit_is_not_half_shown(self, reader: Any) -> None:
        # Messages quote the start of a body; a secret there is scrubbed before the cut, so its
        # first characters do not survive as the end of the quote.
        fake, make = reader
        fake.fetch_answer = (404, "x" * 72 + " " + TOKEN + " more", "text/plain")
        backend = make(options=BackendOptions(bearer_token=TOKEN), retries=0)
        error = backend.fetch_many([tid(1)])[tid(1)].error or ""
        assert "x" * 10 in error and "***" in error
        assert TOKEN[:4] not in error, error
        with pytest.raises(BackendError) as info:
            backend.check_trace_route()
        assert TOKEN[:4] not in str(info.value)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the openssl CLI; no Python crypto dependency)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS tests need the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(params=READERS, ids=[r[0] for r in READERS])
def tls_reader(
    request: pytest.FixtureRequest, certificate: tuple[Path, Path]
) -> Iterator[tuple[LoopbackServer, type[TraceBackend], str]]:
    kind, fake_cls, backend_cls = request.param
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    fake = fake_cls(ssl_context=context)
    fake.add_trace([zspan(tid(1))])
    fake.start()
    yield fake, backend_cls, kind
    fake.stop()


class TestTls:
    def test_unknown_ca_is_refused(self, tls_reader: Any) -> None:
        fake, backend_cls, _ = tls_reader
        assert fake.url.startswith("https://")
        with backend_cls(fake.url, retries=0) as backend:
            out = backend.fetch_many([tid(1), tid(2)])
            assert {f.status for f in out.values()} == {FetchStatus.ERROR}
            assert "CERTIFICATE_VERIFY_FAILED" in (out[tid(1)].error or "")
            with pytest.raises(BackendError, match="CERTIFICATE_VERIFY_FAILED"):
                backend.check()

    def test_ca_bundle_and_insecure(
        self, tls_reader: Any, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fake, backend_cls, kind = tls_reader
        for options in (BackendOptions(verify=str(certificate[0])), BackendOptions(verify=False)):
            with backend_cls(fake.url, options) as backend:
                backend.check()
                assert backend.fetch_many([tid(1), tid(2)])[tid(1)].status is FetchStatus.FOUND
        monkeypatch.setenv("LOADGEN_BACKEND_CA", str(certificate[0]))
        with parse_backend_spec(f"{kind}:{fake.url}") as backend:
            backend.check()
        monkeypatch.delenv("LOADGEN_BACKEND_CA")
        monkeypatch.setenv("LOADGEN_BACKEND_INSECURE", "1")
        with parse_backend_spec(f"auto:{fake.url}") as backend:
            assert type(backend) is backend_cls

    def test_missing_ca_file(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="cannot use CA bundle"):
            ZipkinBackend("https://127.0.0.1:1", verify=str(tmp_path / "nope.pem"))
