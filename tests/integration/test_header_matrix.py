"""The full header matrix against the real Envoy 1.40 gateway + sidecar of the embedded mesh.

For every header mode and several mesh configurations (sampling 100 % and 0 %, W3C propagation on
and off, a gateway that keeps the client's x-request-id, an internal client, a gateway that is not
an edge, client_sampling 0; and Envoy's OpenTelemetry tracer at 100 %, 0 % and 50 %, exporting
OTLP/gRPC or OTLP/HTTP to a receiver of the test's own, tests/integration/otlp_receiver.py), each
request is checked against `ModeSpec.expected(context)`: the
decision the upstream saw, whether our trace id / x-request-id survived, the B3 format and the
`traceparent` the upstream got, the parent link of the gateway span, and — after the proxies
flushed — whether spans exist in the collector. Then the same requests are reconciled as a ledger:
zero expectation violations with the right context, violations with a wrong one.

The crafted x-request-id tests send 2,000 requests per sampling percentage through a gateway that
keeps client ids and require every decision to equal the prediction made before sending.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadgen.analysis.reconcile import Expectation, TraceObservation, ledger_trace_id, reconcile_mesh
from loadgen.backends.base import FetchStatus
from loadgen.ledger import read_ledger
from loadgen.mesh.echo import UpstreamView, parse_echo, parse_traceparent, same_request_id
from loadgen.mesh.encode import EncodeOptions, Injection, encode
from loadgen.mesh.expect import Decision, ExpectationContext, Expected
from loadgen.mesh.headers import RUN_ID_HEADER
from loadgen.mesh.ids import IdStyle, craft_request_id, k6_trace_time_ns, normalize_trace_id
from loadgen.mesh.modes import MODE_SPECS, HeaderMode
from loadgen.mesh.rule import envoy_random_sampled, sampling_threshold
from loadgen.mesh.tracer import OtlpProtocol, TracerFamily
from loadgen.run import RunOptions, execute_run
from loadgen.stack.envoy import TraceContextOption, TracingConfig
from loadgen.stack.mesh import GATEWAY_SERVICE, SIDECAR_SERVICE, EmbeddedMesh, MeshConfig
from tests.integration.otlp_receiver import OtlpReceiver, OtlpSpan

pytestmark = pytest.mark.integration

W3C = TraceContextOption.USE_B3_WITH_W3C_PROPAGATION
OTEL, GRPC, HTTP = TracerFamily.OPENTELEMETRY, OtlpProtocol.GRPC, OtlpProtocol.HTTP
CONTEXTS: dict[str, TracingConfig] = {
    "istio_100": TracingConfig(sampling_percent=100.0),
    "istio_0": TracingConfig(sampling_percent=0.0),
    "w3c_100": TracingConfig(sampling_percent=100.0, trace_context_option=W3C),
    "w3c_0": TracingConfig(sampling_percent=0.0, trace_context_option=W3C),
    "preserve_100": TracingConfig(sampling_percent=100.0, gateway_preserve_external_request_id=True),
    "preserve_0": TracingConfig(sampling_percent=0.0, gateway_preserve_external_request_id=True),
    "internal_0": TracingConfig(sampling_percent=0.0, gateway_internal_cidrs=("127.0.0.1/32",)),
    "no_edge_0": TracingConfig(sampling_percent=0.0, gateway_use_remote_address=False),
    "client_sampling_0": TracingConfig(sampling_percent=0.0, client_sampling_percent=0.0),
    # Envoy's OpenTelemetry tracer (Istio's `opentelemetry` provider), both OTLP protocols. At
    # 100 % and 0 % every decision is exact; at 50 % each random one is checked against the rule
    # on the echoed x-request-id (exact per request, no statistics).
    "otel_100": TracingConfig(sampling_percent=100.0, tracer=OTEL, otlp_protocol=GRPC),
    "otel_0": TracingConfig(sampling_percent=0.0, tracer=OTEL, otlp_protocol=HTTP),
    "otel_50": TracingConfig(sampling_percent=50.0, tracer=OTEL, otlp_protocol=GRPC),
}
PER_MODE = 3
B3_HEADERS = ("b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags")
SPANS = TracingConfig().expected_spans_per_trace()  # gateway SERVER + CLIENT, sidecar SERVER


@dataclass
class Sent:
    mode: HeaderMode
    tag: str  # the request's own x-loadgen-run-id: its spans carry it as loadgen.run_id
    injection: Injection
    status: int
    echo: dict[str, str]
    spans: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Observed:
    tracing: TracingConfig
    sent: list[Sent]
    traces: dict[str, list[dict[str, Any]]]  # every trace the collector holds, by trace id


def send(client: httpx.Client, mesh: EmbeddedMesh, tag: str, headers: dict[str, str]) -> httpx.Response:
    return client.get(
        f"{mesh.gateway_url}/headers",
        headers={"Host": mesh.host_header, RUN_ID_HEADER: tag, **headers},
        timeout=10.0,
    )


def lower_echo(resp: httpx.Response) -> dict[str, str]:
    return (
        {str(k).lower(): str(v) for k, v in resp.json()["headers"].items()} if resp.status_code == 200 else {}
    )


def all_traces(mesh: EmbeddedMesh) -> dict[str, list[dict[str, Any]]]:
    resp = httpx.get(f"{mesh.collector_url}/api/v2/traces", params={"limit": 1_000_000}, timeout=10.0)
    resp.raise_for_status()
    return {normalize_trace_id(trace[0]["traceId"]): trace for trace in resp.json() if trace}


def zipkin_shape(span: OtlpSpan) -> dict[str, Any]:
    """An OTLP span as the Zipkin v2 fields these tests read."""
    out: dict[str, Any] = {
        "traceId": span.trace_id, "id": span.span_id, "kind": span.kind, "name": span.name,
        "localEndpoint": {"serviceName": span.service}, "tags": span.attributes,
    }  # fmt: skip
    if span.parent_id:
        out["parentId"] = span.parent_id
    return out


def receiver_traces(receiver: OtlpReceiver) -> dict[str, list[dict[str, Any]]]:
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in receiver.snapshot():
        traces.setdefault(span.trace_id, []).append(zipkin_shape(span))
    return traces


def flush(mesh: EmbeddedMesh, client: httpx.Client, receiver: OtlpReceiver | None) -> None:
    """Send a sampled sentinel last and wait for all its spans: both proxies (one worker each)
    flush in order, so every earlier span has reached the collector by then. Under the
    OpenTelemetry tracer the sentinel is forced by x-client-trace-id (B3 means nothing there)."""
    mode = HeaderMode.CLIENT_TRACE_ID if receiver else HeaderMode.B3_MULTI_SAMPLED
    sentinel = encode(mode, random.Random())
    resp = send(client, mesh, "sentinel", sentinel.headers)
    assert resp.status_code == 200
    tracer = OTEL if receiver else TracerFamily.ZIPKIN
    trace_id = parse_echo(lower_echo(resp), tracer).trace_id
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if receiver is not None:
            if len(receiver_traces(receiver).get(str(trace_id), [])) >= SPANS:
                return
        else:
            resp = httpx.get(f"{mesh.collector_url}/api/v2/trace/{trace_id}", timeout=2.0)
            if resp.status_code == 200 and len(resp.json()) >= SPANS:
                return
        time.sleep(0.1)
    raise AssertionError("the sentinel's spans never reached the collector")


_OBSERVED: dict[str, Observed] = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("header-matrix")
    _OBSERVED.clear()


def observe(name: str, workdir: Path) -> Observed:
    """Start the mesh of one context, send every mode PER_MODE times, flush, read the collector,
    stop the mesh (once per module: the per-mode tests below only read the result)."""
    if name in _OBSERVED:
        return _OBSERVED[name]
    tracing = CONTEXTS[name]
    rng = random.Random(name)
    options = EncodeOptions(crafted_percent=tracing.sampling_percent, tracer=tracing.tracer)
    sent: list[Sent] = []
    otel = tracing.tracer is OTEL
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(OtlpReceiver()) if otel else None
        sink = (receiver.port, receiver.grpc_port) if receiver else (0, 0)
        mesh = stack.enter_context(EmbeddedMesh(workdir / name, MeshConfig(tracing=tracing, otlp_sink=sink)))
        client = stack.enter_context(httpx.Client())
        for mode in HeaderMode:
            for i in range(PER_MODE):
                tag = f"hm-{name}-{mode.value}-{i}"
                inj = encode(mode, rng, options)
                resp = send(client, mesh, tag, inj.headers)
                sent.append(Sent(mode, tag, inj, resp.status_code, lower_echo(resp)))
        flush(mesh, client, receiver)
        traces = receiver_traces(receiver) if receiver else all_traces(mesh)
        if receiver:  # every span came by the protocol configured, and only by it
            assert {k for k, n in receiver.exports.items() if n} == {tracing.otlp_protocol.value}
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for trace in traces.values():
        for span in trace:
            by_tag.setdefault(str((span.get("tags") or {}).get(tracing.run_id_tag)), []).append(span)
    for s in sent:
        s.spans = by_tag.get(s.tag, [])
    _OBSERVED[name] = Observed(tracing, sent, traces)
    return _OBSERVED[name]


def problems(tracing: TracingConfig, s: Sent) -> list[str]:
    """Every way one request's real behaviour differs from the mode's expectation."""
    exp = MODE_SPECS[s.mode].expected(tracing.expectation_context())
    if s.status != 200:
        return [f"HTTP {s.status}"]
    view = parse_echo(s.echo, tracing.tracer)
    out: list[str] = []
    want = _decision_problems(tracing, s, exp, view, out)
    _span_problems(s, exp, view, want, out)
    _trace_id_problems(s, exp, view, sent_ids(s, tracing.tracer)[0], out)
    _header_problems(s, exp, view, out)
    _parent_problems(s, exp, sent_ids(s, tracing.tracer)[1], out)
    return out


def sent_ids(s: Sent, tracer: TracerFamily) -> tuple[str | None, str | None]:
    """The (trace, span) ids the tracer would continue: the OpenTelemetry tracer reads only the
    traceparent (when valid), Zipkin the ids `encode` reports (B3 first)."""
    if tracer is OTEL:
        parsed = parse_traceparent(s.injection.headers.get("traceparent", ""))
        if parsed is not None:
            return parsed[0], parsed[1]
    return s.injection.trace_id, s.injection.span_id


def _decision_problems(
    tracing: TracingConfig, s: Sent, exp: Expected, view: UpstreamView, out: list[str]
) -> bool | None:
    """The decision the upstream saw; returns the expected one (None: not predictable)."""
    want: bool | None
    if exp.upstream_sampled is not None:
        want = exp.upstream_sampled
    elif exp.decision is Decision.PROXY:
        basis = s.injection.request_id if exp.predictable_before_send else view.request_id
        want = envoy_random_sampled(str(basis), tracing.sampling_percent)
        if want is None:
            out.append(f"a random-sampling decision was expected, but {basis!r} is no id Envoy samples on")
    else:
        want = None
    if want is not None and view.sampled is not want:
        out.append(f"upstream saw sampled={view.sampled}, expected {want} ({exp.decision.value})")
    return want


def _span_problems(s: Sent, exp: Expected, view: UpstreamView, want: bool | None, out: list[str]) -> None:
    """Spans in the collector, in the trace the upstream saw."""
    want_spans = exp.spans if exp.spans is not None else want
    if want_spans and len(s.spans) != SPANS:
        out.append(f"{len(s.spans)} spans, expected {SPANS}")
    if want_spans is False and s.spans:
        out.append(f"{len(s.spans)} spans leaked, expected none ({exp.decision.value})")
    if (
        s.spans
        and view.trace_id
        and {normalize_trace_id(sp["traceId"]) for sp in s.spans} != {normalize_trace_id(view.trace_id)}
    ):
        out.append("spans are not in the trace the upstream saw")


def _trace_id_problems(s: Sent, exp: Expected, view: UpstreamView, sent: str | None, out: list[str]) -> None:
    """Trace id kept or not; 64-bit ids stay 64-bit; our x-request-id kept or replaced."""
    inj = s.injection
    sent_trace = normalize_trace_id(sent) if sent else None
    seen_trace = normalize_trace_id(view.trace_id) if view.trace_id else None
    if exp.keeps_trace_id is True and seen_trace != sent_trace:
        out.append(f"trace id {view.trace_id} upstream, expected ours {sent}")
    if (
        exp.keeps_trace_id is True
        and MODE_SPECS[s.mode].sends.trace_bits == 64
        and len(view.trace_id or "") != 16
    ):
        out.append(f"64-bit trace id became {view.trace_id}")
    if exp.keeps_trace_id is False and seen_trace == sent_trace:
        out.append("our trace id was kept, expected a new one")
    invalid = MODE_SPECS[s.mode].sends.b3_invalid_trace
    if invalid and s.echo.get("x-b3-traceid") != inj.headers["X-B3-TraceId"]:
        out.append("the unparsable trace id was not forwarded untouched")
    if exp.request_id_kept is not None:
        kept = same_request_id(inj.request_id, view.request_id)
        if kept != exp.request_id_kept:
            out.append(f"x-request-id kept={kept}, expected {exp.request_id_kept}")


def _parent_problems(s: Sent, exp: Expected, sent_span: str | None, out: list[str]) -> None:
    """Our span is the parent of the gateway's SERVER span (a sent parent id is dropped)."""
    if exp.client_span_is_parent and s.spans:
        server = [
            sp
            for sp in s.spans
            if sp["localEndpoint"]["serviceName"] == GATEWAY_SERVICE and sp["kind"] == "SERVER"
        ]
        if len(server) != 1 or server[0].get("parentId") != sent_span:
            out.append(f"gateway SERVER parent {[sp.get('parentId') for sp in server]}, expected {sent_span}")


def _header_problems(s: Sent, exp: Expected, view: UpstreamView, out: list[str]) -> None:
    """The B3 format Envoy answers in; traceparent rewritten by Envoy (same trace, same decision),
    our stale one, or none; tracestate and X-B3-Flags forwarded."""
    inj, echo = s.injection, s.echo
    if exp.upstream_b3 == "single" and ("b3" not in echo or "x-b3-traceid" in echo):
        out.append("expected only a b3 header upstream")
    if exp.upstream_b3 == "multi" and ("b3" in echo or "x-b3-traceid" not in echo):
        out.append("expected X-B3-* headers upstream")
    sent_b3 = {k.lower(): v for k, v in inj.headers.items() if k.lower() in B3_HEADERS}
    seen_b3 = {k: v for k, v in echo.items() if k in B3_HEADERS}
    if exp.upstream_b3 == "forwarded" and (not sent_b3 or seen_b3 != sent_b3):
        out.append(f"B3 upstream {seen_b3}, expected ours forwarded untouched {sent_b3}")
    if exp.upstream_b3 == "absent" and seen_b3:
        out.append(f"unexpected B3 upstream {seen_b3}")
    tp, sent_tp = echo.get("traceparent"), inj.headers.get("traceparent")
    if exp.traceparent == "absent" and tp is not None:
        out.append(f"unexpected traceparent {tp}")
    if exp.traceparent == "stale" and tp != sent_tp:
        out.append(f"traceparent {tp}, expected ours forwarded unchanged")
    if exp.traceparent == "rewritten":
        parsed = parse_traceparent(tp or "")
        if parsed is None or tp == sent_tp:
            out.append(f"traceparent {tp}, expected Envoy's")
        elif parsed[0] != (view.trace_id or "").rjust(32, "0") or (parsed[2] == "1") is not view.sampled:
            out.append(f"traceparent {tp} disagrees with B3 ({view.trace_id}, sampled={view.sampled})")
    if "tracestate" in inj.headers and echo.get("tracestate") != inj.headers["tracestate"]:
        out.append("tracestate not forwarded")
    if "X-B3-Flags" in inj.headers and echo.get("x-b3-flags") != "1":
        out.append("X-B3-Flags not forwarded")


@pytest.mark.parametrize("mode", list(HeaderMode))
@pytest.mark.parametrize("context", list(CONTEXTS))
def test_mode_behaves_as_expected(context: str, mode: HeaderMode, workdir: Path) -> None:
    observed = observe(context, workdir)
    found = {s.tag: p for s in observed.sent if s.mode is mode and (p := problems(observed.tracing, s))}
    exp = MODE_SPECS[mode].expected(observed.tracing.expectation_context())
    assert not found, f"{mode.value} in {context} (expected {exp}):\n" + "\n".join(
        f"  {tag}: {p}" for tag, p in found.items()
    )


def ledger_of(observed: Observed) -> tuple[list[dict[str, Any]], dict[str, TraceObservation]]:
    """The requests as user.py would have written them, and what the collector holds for them."""
    ledger: list[dict[str, Any]] = []
    obs: dict[str, TraceObservation] = {}
    for s in observed.sent:
        view = parse_echo(s.echo, observed.tracing.tracer)
        rec: dict[str, Any] = {
            "rid": s.tag, "mode": s.mode.value, "status": s.status, "ts": 1.0, "latency_ms": 1.0,
            "inj_trace": s.injection.trace_id, "inj_span": s.injection.span_id, "inj_flag": s.injection.flag,
            "up_trace": view.trace_id, "up_span": view.span_id, "up_flag": view.flag, "up_xrid": view.request_id,
        }  # fmt: skip
        if s.injection.request_id is not None:
            rec.update(xrid_sent=s.injection.request_id, predicted=s.injection.predicted)
        ledger.append(rec)
        tid = ledger_trace_id(rec)
        if tid:
            spans = observed.traces.get(tid, [])
            services = tuple(sorted({sp["localEndpoint"]["serviceName"] for sp in spans}))
            status = FetchStatus.FOUND if spans else FetchStatus.MISSING
            obs[tid] = TraceObservation(status, len(spans), services)
    return ledger, obs


def reconcile(observed: Observed, ctx: ExpectationContext) -> dict[str, Any]:
    ledger, obs = ledger_of(observed)
    expect = Expectation(SPANS, (GATEWAY_SERVICE, SIDECAR_SERVICE), observed.tracing.sampling_percent, ctx)
    return reconcile_mesh(ledger, obs, expect)


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_reconcile_finds_no_violation_with_the_right_context(context: str, workdir: Path) -> None:
    observed = observe(context, workdir)
    out = reconcile(observed, observed.tracing.expectation_context())
    bad = {m: v["violations"] for m, v in out["modes"].items() if v["expectation_violations"]}
    assert not bad
    assert out["mesh"]["leaked"] == 0
    assert out["sampling"]["prediction"]["mismatches"] == 0
    for mode in HeaderMode:
        assert out["modes"][mode.value]["requests"] == PER_MODE
        assert (
            out["modes"][mode.value]["expected_decision"]
            == MODE_SPECS[mode].expected(observed.tracing.expectation_context()).decision.value
        )
    # Debug and forcing modes produce spans, "0" modes never do: counted per mode.
    forced, denied = FORCED_AND_DENIED[observed.tracing.tracer]
    for mode in forced:
        assert out["modes"][mode.value]["found"] == PER_MODE, mode
    for mode in denied:
        assert out["modes"][mode.value]["not_sampled"] == PER_MODE, mode


M = HeaderMode
#: Per tracer: modes always traced, and modes never traced, in every context of that tracer.
FORCED_AND_DENIED = {
    TracerFamily.ZIPKIN: (
        (M.B3_SINGLE_DEBUG, M.B3_SINGLE_DEBUG_ONLY, M.B3_SAMPLED_ONLY),
        (M.B3_MULTI_NOT_SAMPLED, M.B3_SINGLE_DENY, M.FORCE_TRACE_NOT_SAMPLED),
    ),
    # The B3 "0" modes are Envoy's coin here (B3 ignored), the traceparent 00 ones never traced,
    # even with x-client-trace-id, which forces a trace otherwise (and keeps traceparent's id).
    OTEL: (
        (M.CLIENT_TRACE_ID, M.CLIENT_TRACE_ID_NOT_SAMPLED, M.W3C_SAMPLED_CLIENT_TRACE_ID),
        (M.W3C_NOT_SAMPLED, M.W3C_NOT_SAMPLED_B3_SAMPLED, M.W3C_NOT_SAMPLED_CLIENT_TRACE_ID),
    ),
}


@pytest.mark.parametrize(
    ("context", "wrong", "modes", "kind"),
    [
        # Told "W3C off" for a W3C mesh: traceparent ids were kept, not replaced.
        ("w3c_0", {"w3c": False}, (HeaderMode.W3C_SAMPLED, HeaderMode.W3C_NOT_SAMPLED), "trace_id"),
        # Told "W3C on" for a B3-only mesh: traceparent 01 did not force anything.
        ("istio_0", {"w3c": True}, (HeaderMode.W3C_SAMPLED,), "decision"),
        # Told "the gateway keeps client ids" for an Istio edge: it replaced them.
        ("istio_0", {"preserve_external_request_id": True}, (HeaderMode.XRID_RANDOM,), "request_id"),
        # Told "internal client" for an external one: x-envoy-force-trace was stripped.
        ("istio_0", {"client_internal": True}, (HeaderMode.FORCE_TRACE,), "decision"),
        # Told "client_sampling 100" where it is 0: x-client-trace-id forced nothing.
        ("client_sampling_0", {"client_sampling_percent": 100.0}, (HeaderMode.CLIENT_TRACE_ID,), "decision"),
        # Told "Zipkin" for an OpenTelemetry-tracer mesh: B3 sampled flags forced nothing.
        (
            "otel_0",
            {"tracer": TracerFamily.ZIPKIN},
            (HeaderMode.B3_MULTI_SAMPLED, HeaderMode.B3_SAMPLED_ONLY),
            "decision",
        ),
        # Told "OpenTelemetry" for a Zipkin mesh: traceparent ids were not kept, B3 ids were.
        (
            "istio_0",
            {"tracer": OTEL},
            (HeaderMode.W3C_SAMPLED_CLIENT_TRACE_ID, HeaderMode.B3_MULTI_NO_FLAG),
            "trace_id",
        ),
    ],
)
def test_reconcile_counts_violations_with_a_wrong_context(
    context: str, wrong: dict[str, Any], modes: tuple[HeaderMode, ...], kind: str, workdir: Path
) -> None:
    observed = observe(context, workdir)
    out = reconcile(observed, replace(observed.tracing.expectation_context(), **wrong))
    for mode in modes:
        m = out["modes"][mode.value]
        assert m["expectation_violations"] == PER_MODE and m["violations"][kind] == PER_MODE, (mode, m)


# --- exact prediction with crafted x-request-ids -----------------------------------------------


def send_many(mesh: EmbeddedMesh, injections: list[Injection]) -> list[dict[str, str]]:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(8) as pool:

        def one(inj: Injection) -> dict[str, str]:
            resp = send(client, mesh, "crafted", inj.headers)
            assert resp.status_code == 200, resp.text
            return lower_echo(resp)

        return list(pool.map(one, injections))


@pytest.mark.parametrize("percent", [10.0, 33.33])
def test_crafted_request_ids_predict_every_decision(
    percent: float, tmp_path_factory: pytest.TempPathFactory
) -> None:
    n = 2000
    tracing = TracingConfig(sampling_percent=percent, gateway_preserve_external_request_id=True)
    rng = random.Random(f"crafted-{percent}")
    injections = [
        encode(HeaderMode.XRID_CRAFTED, rng, EncodeOptions(crafted_percent=percent)) for _ in range(n)
    ]
    # The boundary of Envoy's truncated threshold (33.33 % -> 3333/10000): residues threshold-1
    # (sampled) and threshold (not sampled), plus the extremes 0 and 9999.
    threshold = sampling_threshold(percent)
    for residue in (threshold - 1, threshold, 0, 9999):
        head = 10000 * rng.randrange(1, 400_000) + residue
        rid = f"{head:08x}" + craft_request_id(rng, percent, True)[8:]
        injections.append(Injection({"x-request-id": rid}, request_id=rid, predicted=residue < threshold))
    with EmbeddedMesh(tmp_path_factory.mktemp(f"crafted{percent}"), MeshConfig(tracing=tracing)) as mesh:
        echoes = send_many(mesh, injections)
    predicted = Counter(inj.predicted for inj in injections)
    assert min(predicted[True], predicted[False]) > 0.4 * n  # half and half, as crafted
    wrong = []
    for inj, echo in zip(injections, echoes, strict=True):
        view = parse_echo(echo)
        mark = "9" if inj.predicted else "4"  # Envoy's char-14 decision mark in the kept id
        if not (same_request_id(inj.request_id, view.request_id) and view.sampled is inj.predicted):
            wrong.append((inj.request_id, view.request_id, view.flag))
        elif (view.request_id or "")[14] != mark:
            wrong.append((inj.request_id, view.request_id, "char 14"))
    assert wrong == []

    # The same requests as a ledger: every decision checked from the id we sent.
    ledger = [
        {"rid": str(i), "mode": "xrid_crafted", "status": 200, "up_flag": parse_echo(e).flag,
         "up_xrid": parse_echo(e).request_id, "up_trace": parse_echo(e).trace_id,
         "xrid_sent": inj.request_id, "predicted": inj.predicted}
        for i, (inj, e) in enumerate(zip(injections, echoes, strict=True))
    ]  # fmt: skip
    out = reconcile_mesh(ledger, {}, Expectation(SPANS, (), percent, tracing.expectation_context()))
    prediction = out["sampling"]["prediction"]
    assert prediction["mode"] == "crafted" and prediction["by_source"]["crafted"] == len(injections)
    assert prediction["checked"] == len(injections) and prediction["mismatches"] == 0
    assert out["sampling"]["verdict_basis"] == "exact" and out["sampling"]["verdict"] == "pass"


def test_an_istio_edge_replaces_crafted_ids_and_the_echo_predicts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    n, percent = 600, 10.0
    tracing = TracingConfig(sampling_percent=percent)  # Istio: the client's id is replaced
    rng = random.Random("echoed")
    injections = [
        encode(HeaderMode.XRID_CRAFTED, rng, EncodeOptions(crafted_percent=percent)) for _ in range(n)
    ]
    with EmbeddedMesh(tmp_path_factory.mktemp("echoed"), MeshConfig(tracing=tracing)) as mesh:
        echoes = send_many(mesh, injections)
    views = [parse_echo(e) for e in echoes]
    assert not any(
        same_request_id(i.request_id, v.request_id) for i, v in zip(injections, views, strict=True)
    )
    # The echoed id predicts every decision; the crafted one only by chance.
    assert all(envoy_random_sampled(str(v.request_id), percent) is v.sampled for v in views)
    assert sum(i.predicted is not v.sampled for i, v in zip(injections, views, strict=True)) > n // 4
    ledger = [
        {"rid": str(k), "mode": "xrid_crafted", "status": 200, "up_flag": v.flag, "up_xrid": v.request_id,
         "up_trace": v.trace_id, "xrid_sent": i.request_id, "predicted": i.predicted}
        for k, (i, v) in enumerate(zip(injections, views, strict=True))
    ]  # fmt: skip
    out = reconcile_mesh(ledger, {}, Expectation(SPANS, (), percent, tracing.expectation_context()))
    prediction = out["sampling"]["prediction"]
    assert prediction["mode"] == "echoed" and prediction["sent_id_replaced"] == n
    assert prediction["checked"] == n and prediction["mismatches"] == 0
    assert out["modes"]["xrid_crafted"]["expectation_violations"] == 0


def test_k6_style_trace_ids_survive_the_mesh(mesh100: EmbeddedMesh) -> None:
    options = EncodeOptions(id_style=IdStyle.K6)
    rng = random.Random(6)
    before = time.time_ns()
    with httpx.Client() as client:
        for mode in (
            HeaderMode.B3_MULTI_SAMPLED,
            HeaderMode.B3_SINGLE_NO_FLAG,
            HeaderMode.B3_MULTI_SAMPLED_64,
        ):
            inj = encode(mode, rng, options)
            view = parse_echo(lower_echo(send(client, mesh100, "k6", inj.headers)))
            assert view.trace_id == inj.trace_id and view.sampled is True
            if MODE_SPECS[mode].sends.trace_bits == 128:
                assert inj.trace_id is not None and inj.trace_id.startswith("dc0742")
                assert before <= (k6_trace_time_ns(inj.trace_id) or 0) <= time.time_ns()
            else:
                assert k6_trace_time_ns(str(inj.trace_id)) is None  # k6 has no 64-bit form


def test_locust_run_writes_crafted_ids_and_k6_trace_ids_to_the_ledger(tmp_path: Path) -> None:
    """The real generator (Locust + loadgen.traffic.user) with LOADGEN_ID_STYLE=k6 and
    LOADGEN_XRID_PERCENT: every crafted request's ledger line holds the id sent and the decision
    predicted before sending, and that prediction is what the upstream saw."""
    percent = 33.33
    result = execute_run(
        RunOptions(
            run_id="crafted", output_dir=tmp_path, duration_s=3, users=2, spawn_rate=2,
            mix="xrid_crafted=3,b3_multi_sampled=1", reference_rate=0.0, seed=3,
            tracing=TracingConfig(sampling_percent=percent, gateway_preserve_external_request_id=True),
            extra_env={"LOADGEN_ID_STYLE": "k6", "LOADGEN_XRID_PERCENT": str(percent)},
        ),
        lambda _: None,
    )  # fmt: skip
    records = list(read_ledger(result.run_dir / "ledger.jsonl"))
    crafted = [r for r in records if r["mode"] == "xrid_crafted" and r["status"] == 200]
    b3 = [r for r in records if r["mode"] == "b3_multi_sampled" and r["status"] == 200]
    assert len(crafted) > 200 and b3
    for r in crafted:
        assert same_request_id(r["xrid_sent"], r["up_xrid"])
        assert r["predicted"] is envoy_random_sampled(r["xrid_sent"], percent)
        assert (r["up_flag"] == "1") is r["predicted"]
    assert 0.3 < sum(r["predicted"] for r in crafted) / len(crafted) < 0.7
    for r in b3:
        assert r["inj_trace"].startswith("dc0742") and r["up_trace"] == r["inj_trace"]
        assert r["ts"] - 60 < (k6_trace_time_ns(r["inj_trace"]) or 0) / 1e9 < r["ts"] + 60
        assert "xrid_sent" not in r
    prediction = result.summary["sampling"]["prediction"]
    assert prediction["mode"] == "crafted" and prediction["mismatches"] == 0
    assert prediction["by_source"]["crafted"] == len(crafted)
