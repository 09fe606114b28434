"""Where reference spans go, per protocol, and the real exporter that sends them there.

Three protocols (``--reference-protocol``), each through the OpenTelemetry project's own exporter:

* ``zipkin``    - Zipkin v2 JSON, ``POST <collector>/api/v2/spans`` (opentelemetry-exporter-zipkin-json);
* ``otlp-http`` - OTLP/HTTP protobuf, ``POST <collector>/v1/traces`` (opentelemetry-exporter-otlp-proto-http);
* ``otlp-grpc`` - OTLP/gRPC ``TraceService/Export`` to ``host:port`` (opentelemetry-exporter-otlp-proto-grpc):
  the given gRPC endpoint, else the collector's host on 4317 (the OTLP/gRPC port by convention).

Credentials in a URL's user-info never reach an exporter's URL (its log lines and errors may quote
it): they are sent as ``Authorization: Basic ...`` (gRPC metadata ``authorization``), which is what
``requests`` made of them when the Zipkin exporter was handed the raw URL.

The OpenTelemetry SDK's environment variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_ZIPKIN_ENDPOINT,
OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT/HEADERS/PROTOCOL) fill what loadgen's options leave unset:
`reference_settings`, pure, reads them from the mapping it is given.

`reference_target` is pure; `build_exporter` only constructs (no I/O until the first export); the
empty-request `check_reference_target` is the run's preflight of the reference path.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
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
    "OTLP_PROTOCOLS",
    "ZIPKIN_SPANS_PATH",
    "ReferenceProtocol",
    "ReferenceSettings",
    "ReferenceTarget",
    "build_exporter",
    "check_reference_options",
    "check_reference_target",
    "otlp_traces_url",
    "parse_otel_headers",
    "reference_settings",
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


def reference_target(
    protocol: str,
    collector_url: str,
    grpc_endpoint: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> ReferenceTarget:
    """Where reference spans go for ``protocol`` given the collector's base URL.

    ``otlp-grpc`` uses ``grpc_endpoint`` (``HOST:PORT`` or ``http(s)://HOST:PORT``) when given, else
    the collector's host on port 4317 (TLS when the collector URL is https). Its credentials are the
    gRPC endpoint's user-info, else the collector URL's. ``headers`` (OTEL_EXPORTER_OTLP_HEADERS)
    are sent too, after those. Raises ValueError naming the bad input."""
    proto = check_reference_options(protocol, grpc_endpoint)
    base, userinfo = _split_userinfo(_http_url(collector_url, "the collector"))
    extra = tuple(headers)
    shown = redact_url(base)
    if proto is ReferenceProtocol.ZIPKIN:
        return ReferenceTarget(proto, zipkin_spans_url(base), (*userinfo, *extra), collector=shown)
    if proto is ReferenceProtocol.OTLP_HTTP:
        return ReferenceTarget(proto, otlp_traces_url(base), (*userinfo, *extra), collector=shown)
    if grpc_endpoint:
        endpoint, tls, own = _grpc_endpoint(grpc_endpoint)
        return ReferenceTarget(proto, endpoint, (*(own or userinfo), *extra), tls, shown)
    parts = urlsplit(base)
    assert parts.hostname is not None  # _http_url checked it
    endpoint = _host_port(parts.hostname, OTLP_GRPC_PORT)
    return ReferenceTarget(proto, endpoint, (*userinfo, *extra), parts.scheme == "https", shown)


# -- the OpenTelemetry SDK's environment variables ----------------------------------------------

#: OTEL_EXPORTER_OTLP_PROTOCOL's values (the SDK specification's) -> the side-emitter's protocol.
OTLP_PROTOCOLS = {"grpc": ReferenceProtocol.OTLP_GRPC, "http/protobuf": ReferenceProtocol.OTLP_HTTP}


@dataclass(frozen=True, slots=True)
class ReferenceSettings:
    """Where and how reference spans go once loadgen's options and the OpenTelemetry variables
    are combined (`reference_settings`); `applied` names the variables that set something and
    `ignored` those that could not (the embedded mesh, or an explicit option, decides instead)."""

    protocol: ReferenceProtocol
    collector: str = ""
    grpc_endpoint: str = ""
    service_name: str | None = None  # None: the emitter's default
    headers: tuple[tuple[str, str], ...] = ()
    applied: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """(name, value) of the first of `names` set to a non-blank value (signal-specific first)."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def parse_otel_headers(text: str, variable: str) -> tuple[tuple[str, str], ...]:
    """OTEL_EXPORTER_OTLP_HEADERS: `key1=value1,key2=value2`, values percent-decoded (the W3C
    Baggage format the specification names). ValueError names the variable and the entry: a
    header the SDK would skip with a log line would leave every export unauthorised here."""
    out: list[tuple[str, str]] = []
    for index, item in enumerate(text.split(","), 1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
            raise ValueError(f"{variable}: entry {index} is not key=value (expected key1=value1,key2=value2)")
        out.append((key.strip(), unquote(value.strip())))
    return tuple(out)


def _service_name(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """OTEL_SERVICE_NAME, else service.name in OTEL_RESOURCE_ATTRIBUTES (the SDK's order)."""
    found = _first(environ, "OTEL_SERVICE_NAME")
    if found:
        return found
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "service.name" and value.strip():
            return "OTEL_RESOURCE_ATTRIBUTES", unquote(value.strip())
    return None


def _otel_protocol(environ: Mapping[str, str]) -> tuple[str, ReferenceProtocol] | None:
    found = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if found is None:
        return None
    name, value = found
    protocol = OTLP_PROTOCOLS.get(value.lower())
    if protocol is None:
        raise ValueError(
            f"{name}={value!r}: the side-emitter sends OTLP as grpc or http/protobuf (http/json is not supported)"
            if value.lower() == "http/json"
            else f"{name}={value!r}: expected grpc or http/protobuf"
        )
    return name, protocol


def _grpc_url(value: str, environ: Mapping[str, str]) -> str:
    """An OTLP/gRPC endpoint variable as a URL: its scheme decides TLS; without one,
    OTEL_EXPORTER_OTLP_(TRACES_)INSECURE=true means plain text, else TLS (the specification's)."""
    if "://" in value:
        return value
    insecure = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")
    return ("http://" if insecure and insecure[1].lower() == "true" else "https://") + value


def _otel_endpoint(environ: Mapping[str, str], protocol: ReferenceProtocol) -> tuple[str, str] | None:
    """(variable, collector URL) for `protocol`: OTEL_EXPORTER_ZIPKIN_ENDPOINT (the full
    /api/v2/spans URL); OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full /v1/traces URL) over
    OTEL_EXPORTER_OTLP_ENDPOINT (a base, /v1/traces added); for grpc the endpoint as a URL."""
    if protocol is ReferenceProtocol.ZIPKIN:
        return _first(environ, "OTEL_EXPORTER_ZIPKIN_ENDPOINT")
    found = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if found is None:
        return None
    name, value = found
    return (name, _grpc_url(value, environ)) if protocol is ReferenceProtocol.OTLP_GRPC else (name, value)


def reference_settings(
    environ: Mapping[str, str],
    *,
    protocol: ReferenceProtocol | None,
    collector: str,
    grpc_endpoint: str,
    embedded: bool,
) -> ReferenceSettings:
    """The side-emitter's settings: loadgen's options (None / empty: not given) win, the
    OpenTelemetry SDK's variables fill the rest, as the SDK would read them:

    * OTEL_SERVICE_NAME (else service.name in OTEL_RESOURCE_ATTRIBUTES): the reference spans'
      service.name;
    * OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL: grpc -> otlp-grpc,
      http/protobuf -> otlp-http, when --reference-protocol is not given;
    * OTEL_EXPORTER_OTLP_TRACES_HEADERS / OTEL_EXPORTER_OTLP_HEADERS: sent with every OTLP export;
    * the endpoint variables (`_otel_endpoint`): where reference spans go on an existing mesh when
      neither --collector nor --reference-grpc-endpoint is given. The embedded mesh ignores them:
      its own collector is the one read back.

    A signal-specific variable (…_TRACES_…) wins over the general one. ValueError names a variable
    whose value cannot be used. Pure: `environ` is the only input."""
    applied: list[str] = []
    ignored: list[str] = []
    from_env = _otel_protocol(environ)
    chosen = protocol
    if chosen is None and from_env is not None:
        chosen = from_env[1]
        applied.append(from_env[0])
    elif from_env is not None:
        ignored.append(from_env[0])
    chosen = chosen or ReferenceProtocol.ZIPKIN
    headers: tuple[tuple[str, str], ...] = ()
    found = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    if found is not None and chosen is not ReferenceProtocol.ZIPKIN:
        headers = parse_otel_headers(found[1], found[0])
        applied.append(found[0])
    endpoint = _otel_endpoint(environ, chosen)
    if endpoint is not None:
        if embedded or collector or grpc_endpoint:
            ignored.append(endpoint[0])
        else:
            collector = endpoint[1]
            if chosen is ReferenceProtocol.OTLP_GRPC:
                grpc_endpoint = endpoint[1]
            applied.append(endpoint[0])
    service = _service_name(environ)
    if service is not None:
        applied.append(service[0])
    return ReferenceSettings(
        protocol=chosen,
        collector=collector,
        grpc_endpoint=grpc_endpoint,
        service_name=service[1] if service else None,
        headers=headers,
        applied=tuple(applied),
        ignored=tuple(ignored),
    )


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
