"""Collector endpoint probe: POST one span where Envoy would, read it back through the backend.

Envoy's Zipkin tracer POSTs Zipkin **v2** spans (HTTP_JSON or HTTP_PROTO) to `collector_endpoint`
on the collector cluster and expects 202 (shared/ENVOY-NOTES.md "Delivery to the collector"). The
probe does the same with one v2 JSON span (a fresh 128-bit trace id, tag `loadgen.probe=1`), then
polls the backend for that trace. When the configured path is refused (the walkthrough's
`/zipkin/api/v1/spans`), the usual candidates are tried so the report can say which path and format
do work; v1 JSON is only tried to explain a v1-only collector, since Envoy cannot send v1.

A span that comes back without its service name or tag was parsed as another format (Jaeger's
Zipkin receiver reads a path containing `api/v1/spans` as v1, shared/specs/README.md).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx

from loadgen.backends.base import BackendError, Fetched, FetchStatus, Span, TraceBackend, redact_url
from loadgen.doctor.bootstrap import V2_ENDPOINT, collector_path_problem
from loadgen.doctor.model import Check, CheckStatus
from loadgen.mesh.ids import new_trace_id

__all__ = [
    "PROBE_SERVICE",
    "PROBE_TAG",
    "ProbeResult",
    "SpanFormat",
    "check_backend",
    "check_collector",
    "endpoint_candidates",
    "fidelity_problems",
    "probe_spans",
    "split_collector_url",
]

PROBE_SERVICE = "loadgen-doctor"
PROBE_SPAN_NAME = "loadgen-doctor-probe"
PROBE_TAG = ("loadgen.probe", "1")
V1_ENDPOINT = "/api/v1/spans"


class SpanFormat(StrEnum):
    V2_JSON = "Zipkin v2 JSON"
    V1_JSON = "Zipkin v1 JSON"


def split_collector_url(url: str, default_path: str = V2_ENDPOINT) -> tuple[str, str]:
    """`http://h:9411` -> (`http://h:9411`, default_path); a path ending in /spans is the endpoint
    itself; any other path is a base path (reverse-proxy prefix) to which /api/v2/spans is added."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"collector URL must look like http://HOST:PORT[/PATH], got {redact_url(url)!r}")
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return origin, default_path
    if path.endswith("/spans"):
        return origin, path
    return origin, path + V2_ENDPOINT


def endpoint_candidates(path: str) -> list[tuple[str, SpanFormat]]:
    """Paths worth trying after `path` failed: v2 first (what Envoy sends), then v1 (diagnosis only).
    A prefix before /api/v{1,2}/spans is tried both kept and dropped."""
    prefix = path
    for suffix in (V2_ENDPOINT, V1_ENDPOINT):
        if path.endswith(suffix):
            prefix = path[: -len(suffix)]
            break
    else:
        prefix = ""
    out: list[tuple[str, SpanFormat]] = []
    for suffix, fmt in ((V2_ENDPOINT, SpanFormat.V2_JSON), (V1_ENDPOINT, SpanFormat.V1_JSON)):
        for base in dict.fromkeys((prefix, "")):
            candidate = (base + suffix, fmt)
            if candidate != (path, SpanFormat.V2_JSON) and candidate not in out:
                out.append(candidate)
    return out


def probe_spans(fmt: SpanFormat, trace_id: str, now_us: int) -> list[dict[str, Any]]:
    """One probe span in the given wire format (pure)."""
    span_id = trace_id[-16:]
    if fmt is SpanFormat.V2_JSON:
        return [
            {
                "traceId": trace_id,
                "id": span_id,
                "kind": "SERVER",
                "name": PROBE_SPAN_NAME,
                "timestamp": now_us,
                "duration": 1000,
                "localEndpoint": {"serviceName": PROBE_SERVICE},
                "tags": {PROBE_TAG[0]: PROBE_TAG[1]},
            }
        ]
    endpoint = {"serviceName": PROBE_SERVICE, "ipv4": "127.0.0.1"}
    return [
        {
            "traceId": trace_id,
            "id": span_id,
            "name": PROBE_SPAN_NAME,
            "timestamp": now_us,
            "duration": 1000,
            "annotations": [
                {"timestamp": now_us, "value": "sr", "endpoint": endpoint},
                {"timestamp": now_us + 1000, "value": "ss", "endpoint": endpoint},
            ],
            "binaryAnnotations": [{"key": PROBE_TAG[0], "value": PROBE_TAG[1], "endpoint": endpoint}],
        }
    ]


def fidelity_problems(spans: tuple[Span, ...] | list[Span]) -> list[str]:
    """What the stored probe span lost on the way in (empty when it came back intact)."""
    if not spans:
        return ["no span came back"]
    problems = []
    services = {str((s.get("localEndpoint") or {}).get("serviceName", "")).lower() for s in spans}
    if PROBE_SERVICE not in services:
        problems.append(f"service name {PROBE_SERVICE!r} lost (got {sorted(services - {''}) or 'none'})")
    if not any((s.get("tags") or {}).get(PROBE_TAG[0]) == PROBE_TAG[1] for s in spans):
        problems.append(f"tag {PROBE_TAG[0]}={PROBE_TAG[1]} lost")
    return problems


@dataclass(frozen=True)
class ProbeResult:
    url: str
    path: str
    fmt: SpanFormat
    trace_id: str
    status_code: int | None = None
    error: str | None = None  # transport failure
    body: str = ""
    readback: Fetched | None = None  # None: not attempted (not accepted, or no backend)
    waited_s: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.status_code in (200, 202)

    @property
    def problems(self) -> list[str]:
        if self.readback is None or self.readback.status is not FetchStatus.FOUND:
            return []
        return fidelity_problems(self.readback.spans)

    @property
    def works(self) -> bool:
        """Accepted, and (when a backend was given) read back intact."""
        if not self.accepted:
            return False
        if self.readback is None:
            return True
        return self.readback.status is FetchStatus.FOUND and not self.problems

    def outcome(self) -> str:
        if self.error is not None:
            return self.error
        text = f"HTTP {self.status_code}" + (f" {self.body!r}" if self.body and not self.accepted else "")
        if self.readback is not None:
            if self.readback.status is FetchStatus.FOUND:
                text += ", read back" + (f" but {'; '.join(self.problems)}" if self.problems else " intact")
            elif self.readback.status is FetchStatus.MISSING:
                text += f", not found in the backend after {self.waited_s:.0f} s"
            else:
                text += f", backend error: {self.readback.error}"
        return text


def _poll(backend: TraceBackend, trace_id: str, timeout_s: float, interval_s: float) -> tuple[Fetched, float]:
    start = time.monotonic()
    while True:
        fetched = backend.fetch_many([trace_id]).get(trace_id, Fetched(FetchStatus.MISSING))
        waited = time.monotonic() - start
        if fetched.status is FetchStatus.FOUND or waited >= timeout_s:
            return fetched, waited
        time.sleep(interval_s)


def _probe(
    client: httpx.Client,
    origin: str,
    path: str,
    fmt: SpanFormat,
    backend: TraceBackend | None,
    rng: random.Random,
    readback_timeout_s: float,
    poll_interval_s: float,
) -> ProbeResult:
    trace_id = new_trace_id(rng)
    url = origin + path
    body = probe_spans(fmt, trace_id, int(time.time() * 1_000_000))
    try:
        resp = client.post(url, json=body)
    except httpx.HTTPError as exc:
        return ProbeResult(url, path, fmt, trace_id, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    result = ProbeResult(url, path, fmt, trace_id, resp.status_code, body=" ".join(resp.text.split())[:120])
    if not result.accepted or backend is None:
        return result
    fetched, waited = _poll(backend, trace_id, readback_timeout_s, poll_interval_s)
    return ProbeResult(url, path, fmt, trace_id, resp.status_code, None, result.body, fetched, waited)


def check_backend(backend: TraceBackend) -> Check:
    """The query API answers (one cheap request); the failure message says what to fix."""
    try:
        backend.check()
    except BackendError as exc:
        return Check(
            "backend.query", CheckStatus.FAIL, f"{backend.name} query API at {backend.url} failed", str(exc)
        )
    return Check("backend.query", CheckStatus.PASS, f"{backend.name} query API answers at {backend.url}")


def check_collector(
    collector_url: str,
    backend: TraceBackend | None,
    *,
    client: httpx.Client | None = None,
    default_path: str = V2_ENDPOINT,
    readback_timeout_s: float = 10.0,
    poll_interval_s: float = 0.5,
    rng: random.Random | None = None,
) -> list[Check]:
    """`collector.endpoint` (the configured path takes Envoy's format) and `collector.readback`
    (what it accepted is queryable). Never raises: errors become failed checks."""
    try:
        origin, path = split_collector_url(collector_url, default_path)
    except ValueError as exc:
        return [
            Check(
                "collector.endpoint",
                CheckStatus.FAIL,
                str(exc),
                "pass --collector http://HOST:9411[/api/v2/spans]",
            ),
            Check("collector.readback", CheckStatus.SKIP, "no collector URL"),
        ]
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(5.0))
    rng = rng or random.Random()

    def probe(p: str, fmt: SpanFormat) -> ProbeResult:
        return _probe(http, origin, p, fmt, backend, rng, readback_timeout_s, poll_interval_s)

    try:
        return _check_collector(origin, path, backend, probe)
    finally:
        if own_client:
            http.close()


def _check_collector(
    origin: str,
    path: str,
    backend: TraceBackend | None,
    probe: Callable[[str, SpanFormat], ProbeResult],
) -> list[Check]:
    where = redact_url(origin)
    configured = probe(path, SpanFormat.V2_JSON)
    data: dict[str, Any] = {"url": redact_url(configured.url), "probe_trace_id": configured.trace_id}
    if configured.error is not None:
        return [
            Check(
                "collector.endpoint",
                CheckStatus.FAIL,
                f"cannot reach the collector at {where}: {configured.error}",
                "check --collector (Zipkin and Jaeger's Zipkin receiver listen on 9411; from outside the "
                "cluster: kubectl -n istio-system port-forward svc/zipkin 9411)",
                data=data,
            ),
            Check("collector.readback", CheckStatus.SKIP, "the collector was not reachable"),
        ]
    path_status, why, path_hint = collector_path_problem(path)
    if configured.accepted:
        return _accepted_checks(configured, path_status, why, path_hint, backend, data)

    # Refused: find which path/format works, to say exactly what to configure.
    tried = [configured]
    working: ProbeResult | None = None
    for candidate_path, fmt in endpoint_candidates(path):
        if working is not None and fmt is SpanFormat.V1_JSON:
            break  # a v2 path works: v1 would only explain a v1-only collector
        result = probe(candidate_path, fmt)
        tried.append(result)
        if result.works and working is None:
            working = result
    details = tuple(f"POST {r.path} ({r.fmt.value}): {r.outcome()}" for r in tried)
    summary = f"POST {configured.path} ({SpanFormat.V2_JSON.value}) answered {configured.outcome()}"
    if path_status is not CheckStatus.PASS:
        summary += f". {why}"
    readback = Check("collector.readback", CheckStatus.SKIP, f"nothing was accepted at {configured.path}")
    if working is not None and working.fmt is SpanFormat.V2_JSON:
        confirmed = "accepted and read back" if working.readback is not None else "accepted (202)"
        hint = (
            f"use collectorEndpoint {working.path} with collectorEndpointVersion HTTP_JSON "
            f"(a probe to {redact_url(working.url)} was {confirmed})"
        )
        data["working_endpoint"] = working.path
        if working.readback is not None:
            readback = Check(
                "collector.readback",
                CheckStatus.PASS,
                f"the probe posted to {working.path} was read back through {backend.url if backend else ''} "
                f"after {working.waited_s:.1f} s",
                data={"probe_trace_id": working.trace_id},
            )
    elif working is not None:
        hint = (
            f"only the Zipkin v1 API answers ({working.path}): Envoy cannot send v1 (HTTP_JSON_V1 was "
            "removed); point Envoy at a collector with the v2 API (Zipkin 2.x, Jaeger's or the "
            "OpenTelemetry Collector's Zipkin receiver) at /api/v2/spans"
        )
        data["working_endpoint"] = working.path
    else:
        hint = (
            "no path accepted a span: is this the collector (Zipkin or Jaeger's Zipkin receiver, port "
            f"9411)? {path_hint or ''}"
        ).strip()
    return [Check("collector.endpoint", CheckStatus.FAIL, summary, hint, details, data), readback]


def _accepted_checks(
    configured: ProbeResult,
    path_status: CheckStatus,
    why: str,
    path_hint: str,
    backend: TraceBackend | None,
    data: dict[str, Any],
) -> list[Check]:
    accepted = f"POST {configured.path} ({SpanFormat.V2_JSON.value}) answered {configured.status_code}"
    if configured.status_code == 200:
        endpoint = Check(
            "collector.endpoint",
            CheckStatus.WARN,
            f"{accepted}, not 202: spans are stored, but Envoy counts every such report as dropped "
            "(tracing.zipkin.reports_dropped)",
            "answer 202 Accepted to span POSTs (Zipkin's contract)",
            data=data,
        )
    elif path_status is CheckStatus.PASS:
        endpoint = Check("collector.endpoint", CheckStatus.PASS, accepted, data=data)
    else:
        endpoint = Check(
            "collector.endpoint", CheckStatus.WARN, f"{accepted}, but {why}", path_hint, data=data
        )
    if backend is None:
        return [
            endpoint,
            Check("collector.readback", CheckStatus.SKIP, "no --backend to read the probe back"),
        ]
    readback = configured.readback
    assert readback is not None
    tid = configured.trace_id
    if readback.status is FetchStatus.FOUND and not configured.problems:
        return [
            endpoint,
            Check(
                "collector.readback",
                CheckStatus.PASS,
                f"probe trace {tid} read back through {backend.url} after {configured.waited_s:.1f} s",
                data={"probe_trace_id": tid},
            ),
        ]
    if readback.status is FetchStatus.FOUND:
        summary = (
            f"the probe was stored but came back damaged ({'; '.join(configured.problems)}): "
            f"the collector parsed the body as another format"
        )
        return [
            Check("collector.endpoint", CheckStatus.FAIL, f"{accepted}, but the span was misread", path_hint or
                  "use collectorEndpoint /api/v2/spans with collectorEndpointVersion HTTP_JSON", data=data),
            Check("collector.readback", CheckStatus.FAIL, summary, "post Zipkin v2 JSON to /api/v2/spans",
                  data={"probe_trace_id": tid}),
        ]  # fmt: skip
    if readback.status is FetchStatus.MISSING:
        return [
            endpoint,
            Check(
                "collector.readback",
                CheckStatus.FAIL,
                f"the collector accepted probe trace {tid}, but {backend.url} does not have it after "
                f"{configured.waited_s:.0f} s",
                "the backend reads a different storage than this collector writes (check --backend), the "
                "collector samples or drops spans (e.g. an OpenTelemetry Collector sampler), or ingestion "
                "is slower than the wait (raise the read-back timeout)",
                data={"probe_trace_id": tid},
            ),
        ]
    return [
        endpoint,
        Check(
            "collector.readback",
            CheckStatus.FAIL,
            f"could not query {backend.url} for probe trace {tid}: {readback.error}",
            "fix the backend first (see backend.query)",
            data={"probe_trace_id": tid},
        ),
    ]
