"""The embedded mesh's knobs change what the real mesh does (real Envoy 1.40, loopback only).

Each knob makes the mesh look like one loadgen did not build: no sidecar (one span per trace
when the gateway spawns no upstream span), no run-id custom tag, an upstream that does not echo
headers, and a gateway with `tracing.overall_sampling` below 100, whose measured rules
`expect()` must follow. Also: the stand-in proxy in front of the backend (each mode), the CLI
flags on every command that starts the mesh, and SIGINT reaching a backgrounded `loadgen`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from loadgen.cli import app
from loadgen.mesh.echo import parse_echo
from loadgen.mesh.encode import encode
from loadgen.mesh.expect import Decision
from loadgen.mesh.headers import DEFAULT_RUN_ID_TAG, RUN_ID_HEADER
from loadgen.mesh.ids import normalize_trace_id, random_request_id
from loadgen.mesh.modes import MODE_SPECS, HeaderMode
from loadgen.mesh.rule import envoy_random_sampled
from loadgen.stack.envoy import TracingConfig, render_bootstrap
from loadgen.stack.mesh import GATEWAY_SERVICE, SIDECAR_SERVICE, EmbeddedMesh, MeshConfig
from loadgen.stack.procs import StackError

from .backend_proxy import GO_404_BODY, BackendProxy
from .conftest import leftover_processes, wait_for_trace

pytestmark = pytest.mark.integration

LOADGEN = [sys.executable, "-m", "loadgen.cli"]
M = HeaderMode
# Request kinds by label: the header mode to inject (None: none) and extra headers.
Kinds = dict[str, tuple[HeaderMode | None, dict[str, str]]]


def send(mesh: EmbeddedMesh, headers: dict[str, str], path: str = "/headers") -> httpx.Response:
    return httpx.get(f"{mesh.gateway_url}{path}", headers={"Host": mesh.host_header, **headers}, timeout=10.0)


def sampled_b3(rng: random.Random, tag: str) -> tuple[str, dict[str, str]]:
    inj = encode(M.B3_MULTI_SAMPLED, rng)
    assert inj.trace_id is not None
    return inj.trace_id, {**inj.headers, RUN_ID_HEADER: tag}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMesh]:
    """No sidecar, no gateway upstream span; the run-id tag and the echo as by default."""
    tracing = TracingConfig(sampling_percent=100.0, sidecar=False, gateway_spawn_upstream_span=False)
    mesh = EmbeddedMesh(tmp_path_factory.mktemp("bare"), MeshConfig(tracing=tracing)).start()
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMesh]:
    """The default shape (gateway SERVER + CLIENT, sidecar SERVER), no run-id tag, no echo."""
    tracing = TracingConfig(sampling_percent=100.0, run_id_tag="", echo_headers=False)
    mesh = EmbeddedMesh(tmp_path_factory.mktemp("quiet"), MeshConfig(tracing=tracing, fanout=False)).start()
    try:
        yield mesh
    finally:
        mesh.stop()


# --- no sidecar ----------------------------------------------------------------------------------


def test_no_sidecar_config_expects_the_gateway_alone() -> None:
    config = MeshConfig(tracing=TracingConfig(sidecar=False, gateway_spawn_upstream_span=False))
    assert [(h.service, h.spans) for h in config.hops()] == [(GATEWAY_SERVICE, 1)]
    assert config.expected_spans_per_trace() == 1
    assert config.tracing.expected_spans() == {"gateway": 1}
    spawn = MeshConfig(tracing=TracingConfig(sidecar=False))
    assert [(h.service, h.spans) for h in spawn.traced_hops("/headers?x=1")] == [(GATEWAY_SERVICE, 2)]
    assert not spawn.runs_fanout
    for path in ("/fanout", "/fanout-nopropagate?keep=x-request-id"):
        with pytest.raises(StackError, match="unavailable without the sidecar"):
            spawn.hops(path)
        with pytest.raises(StackError):
            spawn.expected_spans_per_trace(path)


def test_no_sidecar_without_gateway_upstream_span_reads_back_one_gateway_span(bare: EmbeddedMesh) -> None:
    assert bare.sidecar is None and bare.backend_sidecar is None and bare.backend_echo is None
    assert not (bare.workdir / "stack" / "envoy-sidecar.json").exists()
    rng = random.Random(1)
    trace_id, headers = sampled_b3(rng, "bare-1")
    resp = send(bare, headers)
    assert resp.status_code == 200
    # The echo answered directly: what it saw came from the gateway, with the gateway's span id.
    assert normalize_trace_id(parse_echo(resp.json()["headers"]).trace_id or "") == normalize_trace_id(
        trace_id
    )
    spans = wait_for_trace(bare, trace_id, 1)
    # A later sampled request's span arriving means the gateway flushed everything before it.
    later_id, later = sampled_b3(rng, "bare-2")
    assert send(bare, later).status_code == 200
    assert wait_for_trace(bare, later_id, 1)
    spans = httpx.get(f"{bare.collector_url}/api/v2/trace/{trace_id}", timeout=5.0).json()
    assert len(spans) == 1
    (span,) = spans
    assert span["localEndpoint"]["serviceName"] == GATEWAY_SERVICE and span["kind"] == "SERVER"
    assert (span.get("tags") or {}).get(DEFAULT_RUN_ID_TAG) == "bare-1"  # the tag knob is still on
    services = httpx.get(f"{bare.collector_url}/api/v2/services", timeout=5.0).json()
    assert SIDECAR_SERVICE not in services


def test_no_sidecar_fanout_is_answered_503_by_the_app(bare: EmbeddedMesh) -> None:
    resp = send(bare, {}, "/fanout")
    assert resp.status_code == 503 and "no outbound listener" in resp.json()["error"]


# --- no run-id tag, no echo ----------------------------------------------------------------------


def test_empty_run_id_tag_renders_no_custom_tag() -> None:
    from loadgen.stack.envoy import ProxySpec

    spec = ProxySpec("gateway", GATEWAY_SERVICE, "up", 1, 2, overall_sampling_percent=40.0)
    tagged = render_bootstrap(spec, TracingConfig())
    untagged = render_bootstrap(spec, TracingConfig(run_id_tag=""))

    def tracing_of(boot: dict[str, Any]) -> dict[str, Any]:
        hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return dict(hcm["tracing"])

    assert [t["tag"] for t in tracing_of(tagged)["custom_tags"]] == ["loadgen.run_id"]
    assert tracing_of(untagged)["custom_tags"] == []
    assert tracing_of(tagged)["overall_sampling"] == {"value": 40.0}


def test_no_run_id_tag_spans_carry_no_run_id(quiet: EmbeddedMesh) -> None:
    trace_id, headers = sampled_b3(random.Random(2), "quiet-run-7f3a")
    assert send(quiet, headers).status_code == 200
    spans = wait_for_trace(quiet, trace_id, 3)
    assert len(spans) == 3  # gateway SERVER + CLIENT, sidecar SERVER: still traced
    assert all(DEFAULT_RUN_ID_TAG not in (s.get("tags") or {}) for s in spans)
    assert all("quiet-run-7f3a" not in json.dumps(s.get("tags") or {}) for s in spans)


def test_no_echo_upstream_answers_without_headers(quiet: EmbeddedMesh, bare: EmbeddedMesh) -> None:
    trace_id, headers = sampled_b3(random.Random(3), "quiet-echo")
    resp = send(quiet, headers)
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    assert trace_id not in resp.text and "quiet-echo" not in resp.text.lower()
    assert wait_for_trace(quiet, trace_id, 3)  # the request was still traced end to end
    # The knob is what differs: the echoing mesh shows the headers it received.
    echoed = send(bare, {"x-probe": "seen"})
    assert echoed.json()["headers"]["X-Probe"] == "seen"


# --- overall_sampling ----------------------------------------------------------------------------


@dataclass
class Shot:
    label: str
    mode: HeaderMode | None  # None: headers outside MODE_SPECS
    sent_xrid: str | None
    sampled: bool | None  # what the upstream saw (X-B3-Sampled)
    char14: str
    echoed_xrid: str
    spans: int = 0


def shoot(mesh: EmbeddedMesh, kinds: Kinds, n: int, seed: int) -> list[Shot]:
    """Send n requests of each kind (headers made fresh per request), flush, count spans per request."""
    rng = random.Random(seed)
    shots: list[tuple[Shot, str]] = []
    with httpx.Client(timeout=10.0) as client:
        for i in range(n):
            for label, (mode, extra) in kinds.items():
                headers = dict(extra)
                if mode is not None:
                    headers.update(encode(mode, rng).headers)
                if headers.get("x-request-id") == "fresh":
                    headers["x-request-id"] = random_request_id(rng)
                tag = f"{label}-{i}"
                resp = client.get(
                    f"{mesh.gateway_url}/headers",
                    headers={"Host": mesh.host_header, RUN_ID_HEADER: tag, **headers},
                )
                assert resp.status_code == 200
                view = parse_echo(resp.json()["headers"])
                rid = view.request_id or ""
                shot = Shot(label, mode, headers.get("x-request-id"), view.sampled, rid[14:15], rid)
                shots.append((shot, tag))
        # A sampled sentinel last: once its spans are in, both proxies flushed every earlier one.
        sentinel_id, sentinel = sampled_b3(rng, "sentinel")
        assert client.get(
            f"{mesh.gateway_url}/headers", headers={"Host": mesh.host_header, **sentinel}
        ).is_success
    assert wait_for_trace(mesh, sentinel_id, mesh.config.expected_spans_per_trace(), timeout_s=15.0)
    traces = httpx.get(f"{mesh.collector_url}/api/v2/traces", params={"limit": 100000}, timeout=10.0).json()
    per_tag = Counter((s.get("tags") or {}).get(DEFAULT_RUN_ID_TAG) for t in traces for s in t)
    for shot, tag in shots:
        shot.spans = per_tag[tag]
    return [shot for shot, _ in shots]


def by_label(shots: list[Shot]) -> dict[str, list[Shot]]:
    out: dict[str, list[Shot]] = {}
    for shot in shots:
        out.setdefault(shot.label, []).append(shot)
    return out


def overall_mesh(tmp: Path, **tracing: Any) -> EmbeddedMesh:
    return EmbeddedMesh(tmp, MeshConfig(tracing=TracingConfig(**tracing), fanout=False)).start()


def test_overall_sampling_at_an_edge(tmp_path: Path) -> None:
    """random 100, overall 50, Envoy makes the x-request-id: random and x-client-trace-id
    decisions both become `hash(echoed id) < 50 %`; char 14 keeps the pre-veto mark; sampled
    flags are untouched."""
    mesh = overall_mesh(tmp_path, sampling_percent=100.0, overall_sampling_percent=50.0)
    try:
        kinds: Kinds = {
            "none": (M.NONE, {}),
            "client": (M.CLIENT_TRACE_ID, {}),
            "b3": (M.B3_MULTI_SAMPLED, {}),
            "b3_0": (M.B3_MULTI_NOT_SAMPLED, {}),
        }
        groups = by_label(shoot(mesh, kinds, 60, seed=50))
    finally:
        mesh.stop()
    for label in ("none", "client"):
        shots = groups[label]
        assert {s.sampled for s in shots} == {True, False}, label  # a coin, both sides seen
        assert all(s.sampled is envoy_random_sampled(s.echoed_xrid, 50.0) for s in shots), label
        assert all((s.spans > 0) is s.sampled for s in shots), label
    # The veto leaves char 14 alone: '9' / 'b' even on requests that were not traced.
    assert {s.char14 for s in groups["none"]} == {"9"}
    assert {s.char14 for s in groups["client"]} == {"b"}
    assert all(s.sampled and s.spans == 3 for s in groups["b3"])
    assert all(s.sampled is False and s.spans == 0 for s in groups["b3_0"])
    ctx = mesh.config.tracing.expectation_context()
    assert ctx.overall_sampling_percent == 50.0
    assert MODE_SPECS[M.CLIENT_TRACE_ID].expected(ctx).decision is Decision.UNPREDICTABLE
    none = MODE_SPECS[M.NONE].expected(ctx)
    assert none.decision is Decision.PROXY and none.proxy_percent == 50.0
    assert MODE_SPECS[M.B3_MULTI_SAMPLED].expected(ctx).decision is Decision.FORCED_SAMPLED


def test_overall_sampling_with_an_internal_client(tmp_path: Path) -> None:
    """random 30, overall 60, the client is internal (its x-request-id is kept and honoured):
    random sampling decides at min(30, 60) on our id; a forced decision at 60 on the id the
    gateway ends up with; a vetoed x-envoy-force-trace has char 14 reset to '4'."""
    mesh = overall_mesh(
        tmp_path,
        sampling_percent=30.0,
        overall_sampling_percent=60.0,
        gateway_internal_cidrs=("127.0.0.1/32",),
    )
    try:
        kinds = {
            "xrid": (M.XRID_RANDOM, {}),
            "xrid_forced": (M.XRID_FORCED, {}),
            "force": (M.FORCE_TRACE, {}),
            "force_kept": (None, {"x-envoy-force-trace": "true", "x-request-id": "fresh"}),
        }
        groups = by_label(shoot(mesh, kinds, 80, seed=60))
    finally:
        mesh.stop()
    ctx = mesh.config.tracing.expectation_context()

    # Random sampling on our kept id: min(random, overall), not either alone.
    xrid = groups["xrid"]
    assert all(s.sampled is envoy_random_sampled(str(s.sent_xrid), 30.0) for s in xrid)
    between = [s for s in xrid if envoy_random_sampled(str(s.sent_xrid), 60.0)]
    assert any(not s.sampled for s in between)  # overall alone would have traced these
    exp = MODE_SPECS[M.XRID_RANDOM].expected(ctx)
    assert exp.decision is Decision.PROXY and exp.predictable_before_send and exp.proxy_percent == 30.0

    # Forced on our kept id: known before sending, at overall.
    for label in ("xrid_forced", "force_kept"):
        shots = groups[label]
        assert {s.sampled for s in shots} == {True, False}, label
        assert all(s.sampled is envoy_random_sampled(str(s.sent_xrid), 60.0) for s in shots), label
    exp = MODE_SPECS[M.XRID_FORCED].expected(ctx)
    assert exp.decision is Decision.PROXY and exp.predictable_before_send and exp.proxy_percent == 60.0

    # Forced on Envoy's id: a coin the client cannot see before sending (visible in the echo).
    force = groups["force"]
    assert {s.sampled for s in force} == {True, False}
    assert all(s.sampled is envoy_random_sampled(s.echoed_xrid, 60.0) for s in force)
    assert {s.char14 for s in force if s.sampled} == {"a"}
    assert {s.char14 for s in force if not s.sampled} == {"4"}
    assert MODE_SPECS[M.FORCE_TRACE].expected(ctx).decision is Decision.UNPREDICTABLE
    for shots in groups.values():
        assert all((s.spans > 0) is s.sampled for s in shots)


def test_overall_sampling_zero_traces_only_client_flags(tmp_path: Path) -> None:
    mesh = overall_mesh(tmp_path, sampling_percent=100.0, overall_sampling_percent=0.0)
    try:
        kinds: Kinds = {
            "none": (M.NONE, {}),
            "client": (M.CLIENT_TRACE_ID, {}),
            "b3": (M.B3_SINGLE_DEBUG, {}),
        }
        groups = by_label(shoot(mesh, kinds, 20, seed=0))
    finally:
        mesh.stop()
    assert all(s.sampled is False and s.spans == 0 for s in groups["none"] + groups["client"])
    assert all(s.sampled and s.spans == 3 for s in groups["b3"])
    ctx = mesh.config.tracing.expectation_context()
    assert MODE_SPECS[M.CLIENT_TRACE_ID].expected(ctx).spans is False
    assert MODE_SPECS[M.NONE].expected(ctx).proxy_percent == 0.0
    assert MODE_SPECS[M.B3_SINGLE_DEBUG].expected(ctx).spans is True


# --- the stand-in proxy in front of the backend -------------------------------------------------


def test_backend_proxy_modes(bare: EmbeddedMesh) -> None:
    trace_id = f"{random.Random(5).getrandbits(128):032x}"
    span = {
        "traceId": trace_id, "id": trace_id[16:], "name": "ref", "kind": "SERVER",
        "timestamp": int(time.time() * 1e6), "duration": 10, "localEndpoint": {"serviceName": "proxy-test"},
    }  # fmt: skip
    assert httpx.post(f"{bare.collector_url}/api/v2/spans", json=[span], timeout=5.0).status_code == 202
    trace_path = f"/api/v2/trace/{trace_id}"
    with BackendProxy(bare.collector_url) as proxy, httpx.Client(timeout=1.0) as client:
        assert proxy.url.startswith("http://127.0.0.1:")

        def get(path: str, **params: Any) -> httpx.Response:
            return client.get(f"{proxy.url}{path}", params=params)

        ok = get(trace_path)
        assert ok.status_code == 200 and [s["id"] for s in ok.json()] == [span["id"]]
        both = f"{trace_id},{'f' * 32}"  # Zipkin's traceMany wants two ids or more
        many = get("/api/v2/traceMany", traceIds=both)
        assert many.status_code == 200 and len(many.json()) == 1

        proxy.set_mode("foreign404")
        resp = get(trace_path)
        assert resp.status_code == 404 and resp.text == GO_404_BODY
        assert resp.headers["content-type"].startswith("text/plain")
        assert get("/api/v2/traceMany", traceIds=both).status_code == 404
        # Services and the search route still pass through.
        assert "proxy-test" in get("/api/v2/services").json()
        assert get("/api/v2/traces", serviceName="proxy-test", limit=10).status_code == 200

        proxy.set_mode("html404")
        resp = get(trace_path)
        assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")
        assert "<html>" in resp.text

        proxy.set_mode("500")
        assert get(trace_path).status_code == 500

        proxy.set_mode("hang")
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            get(trace_path)
        assert time.monotonic() - started < 3.0
        assert get("/api/v2/services").status_code == 200

        # Down mid-conversation: the kept-alive connection is closed, new ones are refused.
        proxy.set_mode("down")
        with pytest.raises(httpx.TransportError):
            get("/api/v2/services")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{proxy.url}/api/v2/services", timeout=1.0)

        proxy.set_mode("pass")  # back on the same port
        assert httpx.get(f"{proxy.url}{trace_path}", timeout=2.0).status_code == 200
        assert proxy.hits["trace"] >= 6 and proxy.hits["services"] >= 3
        with pytest.raises(ValueError):
            proxy.set_mode("teapot")


# --- the CLI ------------------------------------------------------------------------------------


def test_every_mesh_command_has_the_knob_flags() -> None:
    group = typer.main.get_command(app)
    commands = {
        "run": group.commands["run"],  # type: ignore[attr-defined]
        "capacity": group.commands["capacity"],  # type: ignore[attr-defined]
        "calibrate": group.commands["calibrate"],  # type: ignore[attr-defined]
        "stack up": group.commands["stack"].commands["up"],  # type: ignore[attr-defined]
    }
    wanted = {"--no-sidecar", "--no-run-id-tag", "--no-echo", "--overall-sampling"}
    for name, command in commands.items():
        flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
        assert wanted <= flags, (name, wanted - flags)
        panels = {getattr(p, "rich_help_panel", None) for p in command.params if set(p.opts) & wanted}
        assert panels == {"Embedded mesh"}, name


def test_run_refuses_fanout_without_a_sidecar(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*LOADGEN, "run", "--no-sidecar", "--path", "/fanout", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "needs the sidecar" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # refused before anything started


def _background(argv: list[str]) -> subprocess.Popen[str]:
    """Start argv the way a non-interactive shell starts a background job: SIGINT ignored
    (POSIX), kept across exec. The PID is loadgen's own (exec)."""
    return subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def _signal_ignored(pid: int, sig: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    raise AssertionError("no SigIgn line")


def test_background_start_really_ignores_sigint() -> None:
    """The premise of the two tests below: what `_background` starts has SIGINT ignored."""
    proc = _background(["sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert _signal_ignored(proc.pid, signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)  # ignored: still running
    finally:
        proc.kill()
        proc.wait()


def test_backgrounded_stack_up_with_knobs_stops_on_sigint(tmp_path: Path) -> None:
    workdir = tmp_path / "stack"
    proc = _background([
        *LOADGEN, "stack", "up", "--workdir", str(workdir), "--no-sidecar", "--no-echo", "--no-run-id-tag",
        "--overall-sampling", "25", "--no-gateway-upstream-span",
    ])  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any(line.startswith("gateway ") for line in lines), lines
        assert not any("sidecar admin" in line for line in lines)
        gateway = next(line.split()[1] for line in lines if line.startswith("gateway "))
        resp = httpx.get(f"{gateway}/headers", headers={"Host": "httpbin.istioinaction.io"}, timeout=5)
        assert resp.json() == {"ok": True}
        boot = json.loads((workdir / "stack" / "envoy-gateway.json").read_text())
        hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        assert hcm["tracing"]["overall_sampling"] == {"value": 25.0}
        assert hcm["tracing"]["custom_tags"] == [] and hcm["tracing"]["spawn_upstream_span"] is False
        assert not (workdir / "stack" / "envoy-sidecar.json").exists()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0  # stack up's contract: Ctrl-C is how it is stopped
    assert leftover_processes(str(workdir)) == []


def test_backgrounded_run_stops_on_sigint_with_130(tmp_path: Path) -> None:
    run_dir = tmp_path / "bg"
    proc = _background([
        *LOADGEN, "run", "--duration", "120", "--users", "2", "--run-id", "bg", "--output", str(tmp_path),
        "--reference-rate", "0",
    ])  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        ledger = run_dir / "ledger.jsonl"
        while not (ledger.exists() and ledger.stat().st_size > 2000):
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert took < 60
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "partial"
    assert leftover_processes(str(run_dir)) == []
