"""Gateway checks: reachable, Host routing, header echo, x-request-id handling, the tracer, and
trace context propagation.

Requests through the gateway to the echo path (httpbin `/headers` by default):
1. no trace headers, a crafted `x-request-id` UUID: shows whether the route exists, whether the
   upstream echoes what it received, whether the gateway kept the client's x-request-id or
   generated its own (shared/ENVOY-NOTES.md "Edge behaviour"), and which tracer wrote the trace
   context the upstream saw (`gateway.tracer`: Zipkin adds B3, OpenTelemetry a traceparent;
   loadgen.mesh.tracer.detect_tracer);
2. Zipkin only: a `traceparent` alone: whether the tracer reads it (USE_B3_WITH_W3C_PROPAGATION
   continues its trace id in B3);
3. Zipkin: `X-B3-TraceId`/`X-B3-SpanId` with `X-B3-Sampled: 1` (`gateway.b3`); OpenTelemetry:
   `traceparent ...-01` with `x-client-trace-id` (`gateway.traceparent`: its 01 forces nothing,
   x-client-trace-id does). Shows whether the trace id survives and the gateway took part (a new
   span id upstream). Its trace id is returned in the check data (`forced_trace_id`) so the
   caller can look for the gateway's spans in the backend.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from loadgen.backends.base import Fetched, FetchStatus, TraceBackend, redact_url
from loadgen.doctor.model import Check, CheckStatus, skipped
from loadgen.mesh.echo import parse_echo, same_request_id
from loadgen.mesh.headers import RUN_ID_HEADER
from loadgen.mesh.ids import new_span_id, new_trace_id, random_request_id
from loadgen.mesh.rule import XRID_TRACE_REASON
from loadgen.mesh.tracer import TRACERS, TracerFamily, detect_tracer

__all__ = ["check_gateway", "check_mesh_trace", "same_request_id"]

_UNROUTED_HOST = "loadgen-doctor.invalid"


@dataclass(frozen=True)
class _Answer:
    status: int
    elapsed_ms: float
    headers: httpx.Headers
    echoed: dict[str, str] | None  # the upstream's view of the request headers, if echoed


def _get(client: httpx.Client, url: str, headers: dict[str, str]) -> _Answer:
    start = time.perf_counter()
    resp = client.get(url, headers=headers)
    elapsed_ms = (time.perf_counter() - start) * 1000
    echoed = None
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("headers"), dict):
        echoed = {str(k): str(v) for k, v in body["headers"].items()}
    return _Answer(resp.status_code, elapsed_ms, resp.headers, echoed)


def check_gateway(
    gateway_url: str,
    host: str | None,
    client: httpx.Client | None = None,
    *,
    path: str = "/headers",
    rng: random.Random | None = None,
) -> list[Check]:
    """gateway.reachable, gateway.routing, gateway.echo, gateway.x_request_id, gateway.tracer,
    gateway.b3 (Zipkin) or gateway.traceparent (OpenTelemetry). Never raises: a failed request becomes a failed check with a hint."""
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(5.0))
    try:
        return _check_gateway(http, gateway_url.rstrip("/"), host, path, rng or random.Random())
    finally:
        if own_client:
            http.close()


def _check_gateway(
    client: httpx.Client, base: str, host: str | None, path: str, rng: random.Random
) -> list[Check]:
    url = base + path
    shown = f"GET {redact_url(url)}" + (f" (Host: {host})" if host else "")
    host_headers = {"Host": host} if host else {}
    sent_xrid = random_request_id(rng)
    try:
        first = _get(client, url, {**host_headers, "x-request-id": sent_xrid})
    except httpx.HTTPError as exc:
        unreachable = (
            "gateway.routing",
            "gateway.echo",
            "gateway.x_request_id",
            "gateway.tracer",
            "gateway.b3",
        )
        return [
            Check(
                "gateway.reachable",
                CheckStatus.FAIL,
                f"{shown} failed: {type(exc).__name__}: {exc}".rstrip(": "),
                "check --gateway: the ingress gateway's address and port (kubectl -n istio-system get svc "
                "istio-ingressgateway), or port-forward it: kubectl -n istio-system port-forward "
                "svc/istio-ingressgateway 8080:80 and use --gateway http://127.0.0.1:8080",
            ),
            *(skipped(name, "the gateway is not reachable") for name in unreachable),
        ]
    checks = [
        Check(
            "gateway.reachable",
            CheckStatus.PASS,
            f"{shown} answered HTTP {first.status} in {first.elapsed_ms:.0f} ms",
            data={"status": first.status, "server": first.headers.get("server", "")},
        )
    ]
    checks.append(_routing(client, url, host, first))
    if first.status != 200:
        later = ("gateway.echo", "gateway.x_request_id", "gateway.tracer", "gateway.b3")
        return checks + [skipped(name, f"the route answered HTTP {first.status}") for name in later]
    if first.echoed is None:
        checks.append(
            Check(
                "gateway.echo",
                CheckStatus.WARN,
                f"the upstream at {path} does not echo request headers as httpbin /headers does",
                "route the host to an httpbin-like echo (or pass --path to one): without it per-request "
                "sampling decisions are invisible and only statistical estimates (backend counts) are possible",
            )
        )
        return checks + [
            skipped("gateway.x_request_id", "no header echo"),
            skipped("gateway.tracer", "no header echo"),
            skipped("gateway.b3", "no header echo"),
        ]
    checks.append(
        Check(
            "gateway.echo",
            CheckStatus.PASS,
            f"the upstream echoes request headers at {path}: per-request decisions are visible",
        )
    )
    checks.append(_x_request_id(sent_xrid, first.echoed))
    sent_first = {**host_headers, **dict(client.headers), "x-request-id": sent_xrid}
    tracer_check = _tracer(client, url, host_headers, detect_tracer(sent_first, first.echoed), rng)
    checks.append(tracer_check)
    if tracer_check.data.get("family") == TracerFamily.OPENTELEMETRY.value:
        checks.append(skipped("gateway.b3", "the OpenTelemetry tracer ignores B3 (forwarded untouched)"))
        checks.append(_traceparent(client, url, host_headers, rng))
    else:
        checks.append(_b3(client, url, host_headers, rng))
    return checks


def _tracer(
    client: httpx.Client,
    url: str,
    host_headers: dict[str, str],
    family: TracerFamily | None,
    rng: random.Random,
) -> Check:
    """`gateway.tracer`: the family whose context the upstream saw, and (Zipkin) whether a
    traceparent alone is read: its trace id continued in the B3 Envoy writes."""
    if family is None:
        return Check(
            "gateway.tracer",
            CheckStatus.WARN,
            "the upstream saw no trace context added by the gateway (no B3, no traceparent)",
            "tracing looks off on the gateway: check the Telemetry resource and meshConfig's tracing provider",
        )
    traits = TRACERS[family]
    data: dict[str, Any] = {"family": family.value, "w3c": family is TracerFamily.OPENTELEMETRY}
    details = [f"honours {', '.join(traits.honours)}; the sampled fact: {traits.decision_header}"]
    if family is TracerFamily.ZIPKIN:
        trace_id = new_trace_id(rng)
        try:
            answer = _get(
                client, url, {**host_headers, "traceparent": f"00-{trace_id}-{new_span_id(rng)}-01"}
            )
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.echoed is not None:
            data["w3c"] = parse_echo(answer.echoed).trace_id == trace_id
            details.append(
                "a traceparent alone is read (USE_B3_WITH_W3C_PROPAGATION): its trace id continues in B3"
                if data["w3c"]
                else "a traceparent alone is ignored (USE_B3): Envoy starts a new B3 trace and forwards it stale"
            )
        else:
            data.pop("w3c")
    return Check(
        "gateway.tracer",
        CheckStatus.PASS,
        f"the gateway's tracer is {family.value} ({traits.envoy_name}): the upstream saw "
        + ("the B3 it added" if family is TracerFamily.ZIPKIN else "its traceparent and no B3"),
        details=tuple(details),
        data=data,
    )


def _traceparent(client: httpx.Client, url: str, host_headers: dict[str, str], rng: random.Random) -> Check:
    """`gateway.traceparent` (OpenTelemetry tracer): a forced request whose trace id survives."""
    trace_id, span_id = new_trace_id(rng), new_span_id(rng)
    headers = {
        **host_headers,
        "traceparent": f"00-{trace_id}-{span_id}-01",
        "x-client-trace-id": random_request_id(rng),  # forces the trace (client_sampling 100)
        RUN_ID_HEADER: f"doctor-{trace_id[:8]}",
    }
    try:
        answer = _get(client, url, headers)
    except httpx.HTTPError as exc:
        return Check(
            "gateway.traceparent",
            CheckStatus.FAIL,
            f"the traceparent request failed: {type(exc).__name__}: {exc}",
        )
    if answer.echoed is None:
        return Check(
            "gateway.traceparent",
            CheckStatus.WARN,
            f"the traceparent request answered HTTP {answer.status} without an echo",
        )
    view = parse_echo(answer.echoed, TracerFamily.OPENTELEMETRY)
    data: dict[str, Any] = {"sent_trace_id": trace_id, "sent_span_id": span_id, "seen": view.__dict__}
    problem = _propagation_problem(
        "gateway.traceparent", view.trace_id, view.span_id, (trace_id, span_id), data
    )
    if problem is not None:
        return problem
    if view.flag != "1":
        return Check(
            "gateway.traceparent",
            CheckStatus.WARN,
            f"trace id kept, but x-client-trace-id did not force the trace (flag {view.flag!r} upstream)",
            "Envoy's tracing.client_sampling is below 100: forced traces cannot be looked for",
            data=data,
        )
    data["forced_trace_id"] = trace_id
    return Check(
        "gateway.traceparent",
        CheckStatus.PASS,
        "traceparent trace id kept, forced by x-client-trace-id (flag 01 upstream), parent id replaced "
        "by the gateway's own span",
        data=data,
    )


def _routing(client: httpx.Client, url: str, host: str | None, first: _Answer) -> Check:
    proxied = "x-envoy-upstream-service-time" in first.headers
    if first.status == 200:
        details: tuple[str, ...] = ()
        try:
            other = _get(client, url, {"Host": _UNROUTED_HOST})
            if other.status == 200:
                details = (f"an unknown Host ({_UNROUTED_HOST}) is routed too: the gateway matches '*'",)
        except httpx.HTTPError:
            pass
        return Check(
            "gateway.routing",
            CheckStatus.PASS,
            f"Host {host or '(default)'} is routed to an upstream (HTTP 200)",
            details=details,
        )
    if first.status == 404 and not proxied:
        return Check(
            "gateway.routing",
            CheckStatus.FAIL,
            f"no route for Host {host or '(default)'}: the gateway itself answered 404 (Envoy response flag NR)",
            "check the Gateway's servers[].hosts and the VirtualService's hosts and gateways for this host "
            "(istioctl proxy-config route deploy/istio-ingressgateway -n istio-system), or pass --host",
        )
    if first.status == 404:
        return Check(
            "gateway.routing",
            CheckStatus.FAIL,
            f"Host {host or '(default)'} is routed, but the upstream answered 404 for the echo path",
            "route the host to an httpbin-like upstream that serves /headers, or pass --path",
        )
    hint = {
        503: "the route exists but no upstream answered (Envoy UH/UF): check the service's endpoints and pods",
        502: "the upstream closed or reset the connection: check the application and mTLS settings",
        504: "the upstream timed out: check the application",
    }.get(first.status, "check the route and the upstream application")
    return Check(
        "gateway.routing",
        CheckStatus.FAIL,
        f"Host {host or '(default)'} answered HTTP {first.status}"
        + (" from the upstream" if proxied else " from the gateway"),
        hint,
    )


def _x_request_id(sent: str, echoed: dict[str, str]) -> Check:
    view = parse_echo(echoed)
    got = view.request_id
    if not got:
        return Check(
            "gateway.x_request_id",
            CheckStatus.WARN,
            "the upstream echo shows no x-request-id: Envoy's sampling input is not visible",
            "keep generate_request_id on (Istio's default) and echo all request headers",
        )
    mark = XRID_TRACE_REASON.get(got[14].lower(), "unmarked") if len(got) > 14 else "unmarked"
    decision = f"the gateway's decision for this request: {mark.replace('_', ' ')} (x-request-id char 14)"
    if same_request_id(sent, got):
        return Check(
            "gateway.x_request_id",
            CheckStatus.PASS,
            "the gateway KEEPS a client x-request-id (only its character 14 is rewritten)",
            details=(
                "sampling follows int(xrid[0:8], 16) % 10000 < int(10000 * (percent / 100.0)) on the id the client "
                "sends: decisions can be crafted in advance, and a client can even force tracing",
                decision,
            ),
            data={"x_request_id": "kept", "sent": sent, "echoed": got, "decision": mark},
        )
    return Check(
        "gateway.x_request_id",
        CheckStatus.PASS,
        "the gateway REGENERATES x-request-id (edge: use_remote_address true, "
        "preserve_external_request_id false, as Istio's ingress gateway)",
        details=(
            "client ids cannot steer sampling, but each decision is exactly predictable from the id the "
            "upstream echoes: int(xrid[0:8], 16) % 10000 < int(10000 * (percent / 100.0))",
            decision,
        ),
        data={"x_request_id": "regenerated", "sent": sent, "echoed": got, "decision": mark},
    )


def _propagation_problem(
    name: str, seen_trace: str | None, seen_span: str | None, sent: tuple[str, str], data: dict[str, Any]
) -> Check | None:
    """The client's trace id must reach the upstream with a new span id (the gateway's span)."""
    trace_id, span_id = sent
    if seen_trace != trace_id:
        return Check(
            name,
            CheckStatus.FAIL,
            f"the gateway replaced the client's trace id {trace_id} with {seen_trace}",
            "the trace context is not honoured: check the tracer (Zipkin USE_B3 reads B3, OpenTelemetry "
            "traceparent) and any header-rewriting filters",
            data=data,
        )
    if seen_span == span_id:
        return Check(
            name,
            CheckStatus.WARN,
            "trace id and span id reached the upstream unchanged: the gateway did not create a span",
            "tracing seems off on the gateway (no tracer, or span reporting disabled by Telemetry)",
            data=data,
        )
    return None


def _b3(client: httpx.Client, url: str, host_headers: dict[str, str], rng: random.Random) -> Check:
    trace_id, span_id = new_trace_id(rng), new_span_id(rng)
    headers = {
        **host_headers,
        "X-B3-TraceId": trace_id,
        "X-B3-SpanId": span_id,
        "X-B3-Sampled": "1",
        RUN_ID_HEADER: f"doctor-{trace_id[:8]}",
    }
    try:
        answer = _get(client, url, headers)
    except httpx.HTTPError as exc:
        return Check("gateway.b3", CheckStatus.FAIL, f"the B3 request failed: {type(exc).__name__}: {exc}")
    if answer.echoed is None:
        return Check(
            "gateway.b3", CheckStatus.WARN, f"the B3 request answered HTTP {answer.status} without an echo"
        )
    view = parse_echo(answer.echoed)
    data: dict[str, Any] = {"sent_trace_id": trace_id, "sent_span_id": span_id, "seen": view.__dict__}
    if view.trace_id is None:
        return Check(
            "gateway.b3",
            CheckStatus.FAIL,
            "the upstream saw no X-B3-TraceId although the client sent one",
            "something between client and upstream strips B3 headers (a filter, or a non-B3 tracer)",
            data=data,
        )
    problem = _propagation_problem("gateway.b3", view.trace_id, view.span_id, (trace_id, span_id), data)
    if problem is not None:
        return problem
    data["forced_trace_id"] = trace_id
    flag = "kept" if view.flag in ("1", "d") else f"changed to {view.flag!r}"
    return Check(
        "gateway.b3",
        CheckStatus.PASS if view.flag in ("1", "d") else CheckStatus.WARN,
        f"X-B3-TraceId kept, X-B3-Sampled: 1 {flag}, span id replaced by the gateway's own span",
        "" if view.flag in ("1", "d") else "the gateway does not honour the client's sampled flag",
        data=data,
    )


def check_mesh_trace(
    backend: TraceBackend,
    trace_id: str,
    *,
    timeout_s: float = 15.0,
    settle_s: float = 6.0,
    poll_interval_s: float = 1.0,
) -> Check:
    """The forced-sampled request's trace reached the backend: spans from the mesh's proxies, over
    the proxies' own collector settings. Envoy buffers spans per proxy (flushed every 5 s in Istio),
    so after the first spans arrive this keeps polling until no new span came for `settle_s`
    (bounded by `timeout_s`), to list every proxy that delivers."""
    start = time.monotonic()
    fetched: Fetched | None = None
    last_count, last_change = -1, start
    while True:
        fetched = backend.fetch_many([trace_id]).get(trace_id)
        now = time.monotonic()
        count = len(fetched.spans) if fetched is not None and fetched.status is FetchStatus.FOUND else 0
        if count != last_count:
            last_count, last_change = count, now
        if now - start >= timeout_s or (count and now - last_change >= settle_s):
            break
        time.sleep(poll_interval_s)
    waited = now - start
    if fetched is not None and fetched.status is FetchStatus.FOUND:
        services = sorted(
            {str((s.get("localEndpoint") or {}).get("serviceName", "?")) for s in fetched.spans}
        )
        return Check(
            "mesh.trace",
            CheckStatus.PASS,
            f"trace {trace_id} (forced through the gateway) has {len(fetched.spans)} spans in "
            f"{backend.url} ({waited:.1f} s), from: {', '.join(services)}",
            details=("a proxy missing from this list does not deliver its spans (lint its bootstrap)",),
            data={"trace_id": trace_id, "spans": len(fetched.spans), "services": services},
        )
    if fetched is not None and fetched.status is FetchStatus.ERROR:
        return Check(
            "mesh.trace",
            CheckStatus.FAIL,
            f"could not query {backend.url} for trace {trace_id}: {fetched.error}",
            "fix the backend first (see backend.query)",
        )
    return Check(
        "mesh.trace",
        CheckStatus.FAIL,
        f"the gateway traced a forced-sampled request (trace {trace_id}) but no span reached "
        f"{backend.url} within {timeout_s:.0f} s",
        "the proxies' collector settings are wrong (lint them: --bootstrap), or the backend reads another "
        "store; Envoy counts the loss at most in tracing.zipkin.reports_dropped on its admin /stats (the "
        "OpenTelemetry tracer counts lost spans as spans_sent)",
        data={"trace_id": trace_id},
    )
