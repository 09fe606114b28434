"""Building a reader: `parse_backend_spec("KIND:URL")`, and `auto:URL`, which finds which trace
query API answers at URL (or URL/jaeger) with a few cheap GETs.

The one module that knows every concrete reader; base.py (the interface) knows none of them.

`auto` probes, per candidate base (URL, then URL/jaeger unless it already ends so), in this order:
1. `GET /api/v2/services` answering a JSON list of names -> `ZipkinBackend`.
2. `GET /api/services` answering Jaeger's `{"data": [...]}` envelope -> `JaegerBackend`. Preferred
   over api_v3 when both answer (every Jaeger up to v2.20 serves both): it fetches 100 ids per
   request instead of one, and it filters searches by tag on the server on every version, where
   api_v3 GET only does from v2.19 (Istio's addon runs 2.17).
3. `GET /api/v3/services` answering `{"services": [...]}` -> `JaegerV3Backend` (Jaeger after
   v2.20, which dropped `/api/services`).
Then, at URL only, Grafana Tempo (after all of the above, so that no other answer changes):
4. `GET /api/echo` answering `echo` (what Grafana's data-source test calls) -> `TempoBackend`.
5. `GET /api/status/buildinfo` answering `{"version", "revision", ...}` -> `TempoBackend`.
Probes are single attempts without retries; a connection failure stops the search at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from loadgen.backends._common import is_name_list, is_v3_services
from loadgen.backends._http import HttpClient, RequestFailed, json_body, resolve_options
from loadgen.backends.base import BackendError, BackendOptions, TraceBackend, redact_url
from loadgen.backends.jaeger import JaegerBackend, envelope_data
from loadgen.backends.jaeger_v3 import JaegerV3Backend
from loadgen.backends.tempo import TempoBackend
from loadgen.backends.zipkin import ZipkinBackend

__all__ = ["SUPPORTED_BACKEND_SPECS", "BackendDetectionError", "detect_backend", "parse_backend_spec"]

SUPPORTED_BACKEND_SPECS: tuple[str, ...] = (
    "zipkin:http[s]://HOST:9411[/PATH]",
    "jaeger:http[s]://HOST:16686[/jaeger]",
    "jaeger-v3:http[s]://HOST:16686[/jaeger]",
    "tempo:http[s]://HOST:3200[/PATH]",
    "auto:http[s]://HOST[:PORT][/PATH]",
)

_KINDS = ("zipkin", "jaeger", "jaeger-v3", "tempo", "auto")


class BackendDetectionError(BackendError, ValueError):
    """`auto:URL` found no trace query API. Also a ValueError: the spec could not be resolved."""


def parse_backend_spec(spec: str, options: BackendOptions | None = None, **overrides: Any) -> TraceBackend:
    """Build a reader from `KIND:URL`, e.g. `jaeger:http://tracing.istio-system/jaeger`.

    KIND is `zipkin`, `jaeger` (the `/api/...` JSON API), `jaeger-v3` (`/api/v3/...`), `tempo`
    (Grafana Tempo's `/api/...`; the tenant goes in an `X-Scope-OrgID` header) or `auto`
    (probes the URL, and URL/jaeger, with one cheap GET per candidate API; see the module
    docstring). `options` default to `BackendOptions.from_env(os.environ)`;
    `overrides` are BackendOptions fields (flags, winning over `options`) plus, for jaeger-v3,
    `param_style`. Raises ValueError for a malformed spec or bad options, and
    BackendDetectionError (a ValueError) when `auto` finds nothing.
    """
    kind, sep, url = spec.strip().partition(":")
    kind = kind.lower()
    if not sep or not url.startswith(("http://", "https://")) or kind not in _KINDS:
        supported = ", ".join(SUPPORTED_BACKEND_SPECS)
        raise ValueError(f"unsupported backend {redact_url(spec)!r}: expected one of {supported}")
    extra = {"param_style": overrides.pop("param_style")} if "param_style" in overrides else {}
    if extra and kind not in ("jaeger-v3", "auto"):
        raise TypeError(f"param_style only applies to jaeger-v3, not {kind}")
    base = options if options is not None else BackendOptions.from_env(os.environ)
    resolved = base.merged(overrides)
    if kind == "zipkin":
        return ZipkinBackend(url, resolved)
    if kind == "jaeger":
        return JaegerBackend(url, resolved)
    if kind == "jaeger-v3":
        return JaegerV3Backend(url, resolved, **extra)
    if kind == "tempo":
        return TempoBackend(url, resolved)
    return detect_backend(url, resolved, **extra)


def _is_jaeger(body: Any) -> bool:
    return envelope_data(body) is not None


def detect_backend(base_url: str, options: BackendOptions, **extra: Any) -> TraceBackend:
    """The reader for whichever API answers first (see the module docstring). `extra` goes to
    a JaegerV3Backend (param_style). Raises BackendDetectionError listing every probe's answer."""
    base, resolved, auth = resolve_options(base_url, options, {})
    probes: list[tuple[str, Callable[[Any], bool], Callable[[str], TraceBackend]]] = [
        ("/api/v2/services", is_name_list, lambda url: ZipkinBackend(url, resolved)),
        ("/api/services", _is_jaeger, lambda url: JaegerBackend(url, resolved)),
        ("/api/v3/services", is_v3_services, lambda url: JaegerV3Backend(url, resolved, **extra)),
    ]
    candidates = [base]
    if not urlsplit(base).path.rstrip("/").endswith("/jaeger"):
        candidates.append(f"{base}/jaeger")
    # The URL's own credentials were moved into `resolved`; probes and readers use the clean URL.
    answers: list[str] = []
    client = HttpClient(base, resolved.merged({"retries": 0}), auth)
    try:
        for candidate in candidates:
            prefix = candidate[len(base) :]
            for path, accepts, build in probes:
                try:
                    resp = client.get_once(prefix + path)
                except RequestFailed as exc:
                    raise BackendDetectionError(
                        f"auto: cannot reach {redact_url(base)}: {exc}. Is the backend running?"
                    ) from exc
                if resp.status_code == 200 and accepts(json_body(resp)):
                    return build(candidate)
                answers.append(f"{prefix}{path} -> HTTP {resp.status_code}")
                if resp.status_code in (401, 403):
                    raise BackendDetectionError(
                        f"auto: {redact_url(candidate)}{path} answered HTTP {resp.status_code}: the "
                        "backend wants credentials (LOADGEN_BACKEND_TOKEN, user/password or headers)"
                    )
        tempo = _detect_tempo(client, answers)
        if tempo:
            return TempoBackend(base, resolved)
    finally:
        client.close()
    receiver = any(a.endswith(("HTTP 400", "HTTP 202", "HTTP 405")) for a in answers)
    hint = (
        " Answers like 400/202 to a GET come from a span receiver (Jaeger's Zipkin receiver on 9411 "
        "only accepts spans): read from the query port 16686 (Istio: http://tracing.istio-system/jaeger)."
        if receiver
        else ""
    )
    raise BackendDetectionError(
        f"auto: no Zipkin, Jaeger or Tempo query API answered at {redact_url(base)}: {'; '.join(answers)}.{hint} "
        "Name the kind explicitly: zipkin:URL, jaeger:URL or jaeger-v3:URL (tempo:URL for Grafana Tempo)"
    )


def _is_tempo(path: str, resp: httpx.Response) -> bool:
    if path == "/api/echo":
        return resp.text.strip() == "echo"
    body = json_body(resp)
    return isinstance(body, dict) and isinstance(body.get("version"), str) and "revision" in body


def _detect_tempo(client: HttpClient, answers: list[str]) -> bool:
    """Whether Tempo answers at the client's root (`/api/echo`, then `/api/status/buildinfo`);
    each other answer is added to `answers`. Neither route needs a tenant, so a 401/403 here
    comes from something in front of Tempo."""
    for path in ("/api/echo", "/api/status/buildinfo"):
        try:
            resp = client.get_once(path)
        except RequestFailed as exc:
            raise BackendDetectionError(f"auto: cannot reach {redact_url(client.root)}: {exc}") from exc
        if resp.status_code == 200 and _is_tempo(path, resp):
            return True
        answers.append(f"{path} -> HTTP {resp.status_code}")
    return False
