"""Where reference spans go, per protocol, and the real exporter that sends them there.

Three protocols (``--reference-protocol``), each through the OpenTelemetry project's own exporter:

* ``zipkin``    - Zipkin v2 JSON, ``POST <collector>/api/v2/spans`` (opentelemetry-exporter-zipkin-json);
* ``otlp-http`` - OTLP/HTTP protobuf, ``POST <collector>/v1/traces`` (opentelemetry-exporter-otlp-proto-http);
* ``otlp-grpc`` - OTLP/gRPC ``TraceService/Export`` to ``host:port`` (opentelemetry-exporter-otlp-proto-grpc):
  the given gRPC endpoint, else the collector's host on 4317 (the OTLP/gRPC port by convention).

Credentials in a URL's user-info never reach an exporter's URL (its log lines and errors may quote
it): they are sent as ``Authorization: Basic ...`` (gRPC metadata ``authorization``), which is what
``requests`` made of them when the Zipkin exporter was handed the raw URL.

`reference_target` is pure; `build_exporter` only constructs (no I/O until the first export); the
empty-request `check_reference_target` is the run's preflight of the reference path.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from opentelemetry.sdk.trace.export import SpanExporter

from loadgen.redact import redact_text, redact_url

__all__ = [
    "OTLP_GRPC_PORT",
    "OTLP_HTTP_TRACES_PATH",
    "ZIPKIN_SPANS_PATH",
    "ReferenceProtocol",
    "ReferenceTarget",
    "build_exporter",
    "check_reference_options",
    "check_reference_target",
    "otlp_traces_url",
    "reference_target",
    "zipkin_spans_url",
]

ZIPKIN_SPANS_PATH = "/api/v2/spans"
OTLP_HTTP_TRACES_PATH = "/v1/traces"
OTLP_GRPC_PORT = 4317

Note = Callable[[str], None]


class ReferenceProtocol(StrEnum):
    """How reference spans reach the collector (``--reference-protocol``)."""

    ZIPKIN = "zipkin"
    OTLP_HTTP = "otlp-http"
    OTLP_GRPC = "otlp-grpc"


@dataclass(frozen=True, slots=True)
class ReferenceTarget:
    """The resolved destination of reference spans.

    ``endpoint`` is what the exporter is given and never holds credentials: a URL for ``zipkin`` and
    ``otlp-http``, ``host:port`` for ``otlp-grpc``. ``headers`` carry the URL's user-info."""

    protocol: ReferenceProtocol
    endpoint: str
    headers: tuple[tuple[str, str], ...] = ()
    tls: bool = False  # otlp-grpc: a TLS channel (an https:// URL)
    collector: str = ""  # the collector URL it was derived from, without credentials (for messages)

    @property
    def shown(self) -> str:
        """The endpoint as stored and shown (the run's log, messages): a URL, without credentials."""
        if self.protocol is ReferenceProtocol.OTLP_GRPC:
            return f"{'https' if self.tls else 'http'}://{self.endpoint}"
        return redact_url(self.endpoint)


def _under(collector_url: str, suffix: str) -> str:
    """`suffix` appended to the URL's path (kept when the path already ends in it); query kept."""
    parts = urlsplit(collector_url)
    path = parts.path.rstrip("/")
    return urlunsplit(parts._replace(path=path if path.endswith(suffix) else path + suffix))


def zipkin_spans_url(collector_url: str) -> str:
    """Zipkin v2 spans endpoint for a collector base URL (an URL already ending in it is kept)."""
    return _under(collector_url, ZIPKIN_SPANS_PATH)


def otlp_traces_url(collector_url: str) -> str:
    """OTLP/HTTP traces endpoint for a collector base URL (an URL already ending in it is kept)."""
    return _under(collector_url, OTLP_HTTP_TRACES_PATH)


def _split_userinfo(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(URL without user-info, the basic-auth header its user-info stands for)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, ()
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=hostport)), (("Authorization", f"Basic {token}"),)


def _http_url(url: str, what: str) -> str:
    if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host, got {redact_url(url)!r}")
    return url


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _grpc_endpoint(text: str) -> tuple[str, bool, tuple[tuple[str, str], ...]]:
    """``host:port`` or ``http(s)://host:port`` -> (host:port, tls, headers from user-info)."""
    url = text if "://" in text else f"http://{text}"
    url, headers = _split_userinfo(_http_url(url, "the OTLP/gRPC endpoint"))
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"the OTLP/gRPC endpoint must be HOST:PORT, got {redact_url(text)!r}")
    return _host_port(parts.hostname, port), parts.scheme == "https", headers


def check_reference_options(protocol: str, grpc_endpoint: str | None = None) -> ReferenceProtocol:
    """The protocol, once it and the gRPC endpoint are known to be usable (ValueError says why not:
    an unknown protocol, a gRPC endpoint that is not HOST:PORT or given with another protocol)."""
    try:
        proto = ReferenceProtocol(protocol)
    except ValueError:
        choices = ", ".join(p.value for p in ReferenceProtocol)
        raise ValueError(f"reference protocol must be one of {choices}, got {protocol!r}") from None
    if grpc_endpoint:
        if proto is not ReferenceProtocol.OTLP_GRPC:
            raise ValueError(f"a gRPC endpoint is only for otlp-grpc, not {proto.value}")
        _grpc_endpoint(grpc_endpoint)
    return proto


def reference_target(protocol: str, collector_url: str, grpc_endpoint: str | None = None) -> ReferenceTarget:
    """Where reference spans go for ``protocol`` given the collector's base URL.

    ``otlp-grpc`` uses ``grpc_endpoint`` (``HOST:PORT`` or ``http(s)://HOST:PORT``) when given, else
    the collector's host on port 4317 (TLS when the collector URL is https). Its credentials are the
    gRPC endpoint's user-info, else the collector URL's. Raises ValueError naming the bad input."""
    proto = check_reference_options(protocol, grpc_endpoint)
    base, headers = _split_userinfo(_http_url(collector_url, "the collector"))
    shown = redact_url(base)
    if proto is ReferenceProtocol.ZIPKIN:
        return ReferenceTarget(proto, zipkin_spans_url(base), headers, collector=shown)
    if proto is ReferenceProtocol.OTLP_HTTP:
        return ReferenceTarget(proto, otlp_traces_url(base), headers, collector=shown)
    if grpc_endpoint:
        endpoint, tls, own = _grpc_endpoint(grpc_endpoint)
        return ReferenceTarget(proto, endpoint, own or headers, tls, shown)
    parts = urlsplit(base)
    assert parts.hostname is not None  # _http_url checked it
    endpoint = _host_port(parts.hostname, OTLP_GRPC_PORT)
    return ReferenceTarget(proto, endpoint, headers, parts.scheme == "https", shown)


# -- the exporters -------------------------------------------------------------------------------


class _NotingSession(requests.Session):
    """A requests session that tells `note` why an export failed: a non-2xx answer (with its body)
    or the exception of a request that got no answer. The exporters return a bare FAILURE."""

    def __init__(self, note: Note, headers: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self._note = note
        self.headers.update(dict(headers))
        self.hooks["response"].append(self._on_response)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if not 200 <= response.status_code < 300:
            self._note(f"HTTP {response.status_code}: {_body_text(response)}")

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().request(*args, **kwargs)
        except Exception as exc:
            self._note(f"{type(exc).__name__}: {exc}")
            raise


def _body_text(response: requests.Response) -> str:
    """A response body for a message: text as is, a protobuf body (an OTLP Status) by its size."""
    kind = response.headers.get("Content-Type", "")
    if "protobuf" in kind:
        return f"({len(response.content)} bytes of {kind})"
    return response.text.strip()


def build_exporter(target: ReferenceTarget, timeout_s: float, note: Note) -> SpanExporter:
    """The real exporter for ``target``; ``note`` hears why an export failed (the exporters return
    a bare FAILURE and only log the cause)."""
    if target.protocol is ReferenceProtocol.ZIPKIN:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        return ZipkinExporter(
            endpoint=target.endpoint,
            # requests accepts a float timeout; the annotation says int.
            timeout=timeout_s,  # type: ignore[arg-type]
            session=_NotingSession(note, target.headers),
        )
    if target.protocol is ReferenceProtocol.OTLP_HTTP:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=target.endpoint,
            timeout=timeout_s,
            compression=Compression.NoCompression,
            session=_NotingSession(note, target.headers),
        )
    from loadgen.emitter.grpc_export import noting_grpc_exporter

    return noting_grpc_exporter(target.endpoint, target.tls, target.headers, timeout_s, note)


def check_reference_target(target: ReferenceTarget, timeout_s: float = 5.0) -> str | None:
    """One empty export to ``target`` (a run's preflight): None when it is accepted, else a one-line
    reason naming the endpoint (without credentials)."""
    if target.protocol is ReferenceProtocol.OTLP_GRPC:
        from loadgen.emitter.grpc_export import check_grpc

        return check_grpc(target.endpoint, target.tls, target.headers, timeout_s)
    zipkin = target.protocol is ReferenceProtocol.ZIPKIN
    body, kind = (b"[]", "application/json") if zipkin else (b"", "application/x-protobuf")
    try:
        resp = requests.post(
            target.endpoint,
            data=body,
            headers={**dict(target.headers), "Content-Type": kind},
            timeout=timeout_s,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return f"collector {target.collector} is unreachable: {redact_text(repr(exc))}. Check --collector."
    want = 202 if zipkin else 200
    if resp.status_code == want:
        return None
    hint = (
        "is it a Zipkin v2 endpoint (Jaeger's Zipkin receiver listens on 9411)?"
        if zipkin
        else "is it an OTLP/HTTP receiver (port 4318 by convention)?"
    )
    path = ZIPKIN_SPANS_PATH if zipkin else OTLP_HTTP_TRACES_PATH
    return f"collector {target.collector} answered {resp.status_code} to POST {path} (want {want}): {hint}"
