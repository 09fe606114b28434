"""`loadgen watch` end to end: real Envoy, real Locust, the side-emitter, the collector, read back
continuously; the metrics scraped from /metrics and parsed with prometheus_client's parser.

One embedded mesh shaped like the default (50 % sampling) and one probed profile serve most of
the module; each test runs `loadgen watch` as its own process against it (an existing mesh to
watch: --gateway, --collector, --backend), at 20 req/s with second-long windows and a short
deadline, except the restart test, which lets watch start its own embedded mesh twice on one
state folder. One test watches a second mesh, unlike the default one (test_run_otel's
UNLIKE_DEFAULT, with the OpenTelemetry tracer and 30 % sampling), whose profile watch's own probe
learns. Every wait is bounded and every process is stopped by the test.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binomtest

from loadgen.backends.factory import parse_backend_spec
from loadgen.mesh.tracer import OtlpProtocol, TracerFamily
from loadgen.probe import probe_mesh
from loadgen.runfiles import write_json
from loadgen.stack.collector.control import CONTROL_PATH
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig
from loadgen.watch.state import STATE_DB
from tests.integration.backend_proxy import BackendProxy
from tests.integration.test_run_otel import UNLIKE_DEFAULT

LOADGEN = [sys.executable, "-m", "loadgen.cli"]
SAMPLING = 50.0
RATE = "20"
DEADLINE_S = 1.5
GIVE_UP_S = 4.0
SEGMENT_S = 0.5
_METRICS_LINE = re.compile(r"metrics at (http://\S+)/metrics")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Watch:
    """A running `loadgen watch` process: its stdout and stderr collected by threads (nothing
    reads its pipes in the test's thread, so no wait is longer than its timeout), its metrics URL."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    out: list[str] = field(default_factory=list)
    url: str = ""
    readers: list[threading.Thread] = field(default_factory=list)

    def scrape(self) -> Samples:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self, sig: int | None = signal.SIGTERM, timeout_s: float = 60) -> tuple[int, str]:
        """Signal it (None: let it end on its own) and wait: (exit code, stdout). Killed after
        `timeout_s`, and the test fails."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"watch did not stop within {timeout_s:g} s:\n" + "".join(self.lines[-20:]))
        for reader in self.readers:  # the pipes end with the process: the last lines are read
            reader.join(timeout=10)
        return self.proc.returncode, "".join(self.out)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def gauge(samples: Samples, name: str, **labels: str) -> float | None:
    """One gauge's value, None when the series is absent (a ratio without data)."""
    for (n, ls), v in samples.items():
        if n == name and set(labels.items()) == set(ls):
            return v
    return None


def start_watch(args: list[str], state: Path) -> Watch:
    proc = subprocess.Popen(
        [*LOADGEN, "watch", "--state", str(state), "--metrics-port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    watch = Watch(proc)
    found = threading.Event()

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            watch.lines.append(line)
            match = _METRICS_LINE.search(line)
            if match and not watch.url:
                watch.url = match.group(1)
                found.set()

    def read_out() -> None:
        assert proc.stdout is not None
        watch.out.extend(proc.stdout)

    watch.readers = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
    for reader in watch.readers:
        reader.start()
    if not found.wait(60):
        watch.stop(signal.SIGKILL)
        pytest.fail("watch did not announce its metrics URL:\n" + "".join(watch.lines))
    return watch


def wait_for(watch: Watch, condition: Callable[[Samples], bool], timeout_s: float, what: str) -> Samples:
    """Scrape every 0.25 s until `condition` holds; fails after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    samples: Samples = {}
    while time.monotonic() < deadline:
        assert watch.proc.poll() is None, "watch exited:\n" + "".join(watch.lines)
        samples = watch.scrape()
        if condition(samples):
            return samples
        time.sleep(0.25)
    pytest.fail(f"not within {timeout_s:g} s: {what}\n{_digest(samples)}\n" + "".join(watch.lines[-20:]))


def _digest(samples: Samples) -> str:
    """The counters a failed wait shows: requests, and checks by source and outcome."""
    traces: dict[str, float] = {}
    for (name, labels), v in samples.items():
        if name == "loadgen_watch_traces_total" and v:
            key = "{source}/{outcome}".format(**dict(labels))
            traces[key] = traces.get(key, 0) + v
    return f"last scrape: requests {value(samples, 'loadgen_watch_requests_total'):g}, traces {traces}"


@dataclass(frozen=True)
class Target:
    """A running embedded mesh to watch as an existing one; `profile` None: watch's own probe
    learns it; `mix` empty: watch's default header mix."""

    mesh: EmbeddedMesh
    profile: Path | None
    sampling: float = SAMPLING
    mix: str = ""

    def args(self, backend: str | None = None) -> list[str]:
        m = self.mesh
        profile = ["--profile", str(self.profile)] if self.profile is not None else []
        mix = ["--mix", self.mix] if self.mix else []
        return [
            "--gateway", m.gateway_url, "--host", m.host_header, "--collector", m.collector_url,
            "--backend", backend or f"zipkin:{m.collector_url}", "--expect", f"{self.sampling:g}",
            *profile, *mix, "--rate", RATE, "--reference-rate", "5",
            "--segment", f"{SEGMENT_S:g}", "--deadline", f"{DEADLINE_S:g}", "--give-up", f"{GIVE_UP_S:g}",
        ]  # fmt: skip


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    workdir = tmp_path_factory.mktemp("watch-mesh")
    mesh = EmbeddedMesh(workdir, MeshConfig(tracing=TracingConfig(sampling_percent=SAMPLING))).start()
    try:
        backend = parse_backend_spec(f"zipkin:{mesh.collector_url}")
        try:
            profile = probe_mesh(mesh.gateway_url, mesh.host_header, backend, "watch-test-probe")
        finally:
            backend.close()
        path = workdir / "mesh-profile.json"
        write_json(path, profile.to_dict())
        yield Target(mesh, path)
    finally:
        mesh.stop()


def _faults(mesh: EmbeddedMesh, **knobs: float) -> None:
    resp = httpx.post(f"{mesh.collector_url}{CONTROL_PATH}", json=knobs, timeout=5)
    assert resp.status_code == 200 and resp.json()[next(iter(knobs))] == next(iter(knobs.values()))


def _last_window(stdout: str, label: str) -> tuple[int, int]:
    """(k, n) of the decision rate `watch` printed for the window `label` when it stopped."""
    match = re.search(rf"window {label}: decision rate \S+ \[\S+, \S+\] \((\d+)/(\d+)\)", stdout)
    assert match, stdout
    return int(match.group(1)), int(match.group(2))


def _check_decision_rate(stdout: str, label: str, percent: float, min_n: int) -> tuple[int, int]:
    """The decision rate over the window `label` when watch stopped: the Wilson interval it
    printed is the one for its k/n, and `percent` is within 4.5 standard errors of the observed
    rate (the 95 % interval itself misses the truth one time in twenty: too often for a test)."""
    k, n = _last_window(stdout, label)
    assert n >= min_n, (k, n)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert f"[{ci.low:.4f}, {ci.high:.4f}] ({k}/{n})" in stdout
    p = percent / 100
    assert abs(k / n - p) <= 4.5 * math.sqrt(p * (1 - p) / n), (k, n)
    return k, n


def test_metrics_show_found_traces_the_sampling_and_follow_loss_on_and_off(
    target: Target, tmp_path: Path
) -> None:
    """Found traces and a decision rate consistent with the configured 50 %; then the collector
    drops everything (switched on at run time) and the shortest window's mesh collection ratio
    falls to 0, and comes back once the loss is switched off, each within the expected time."""
    short, long_ = 3.0, 12.0
    watch = start_watch([*target.args(), "--window", f"{short:g}s,{long_:g}s"], tmp_path / "state")
    mesh_short = {"source": "mesh", "window": f"{short:g}s"}
    try:
        samples = wait_for(
            watch,
            lambda s: value(s, "loadgen_watch_traces_total", source="mesh", outcome="found") >= 20
            and value(s, "loadgen_watch_traces_total", source="reference", outcome="found") >= 5
            and (gauge(s, "loadgen_watch_collection_ratio", **mesh_short) or 0) >= 0.9,
            20, "found mesh and reference traces, mesh collection >= 0.9",
        )  # fmt: skip
        assert gauge(samples, "loadgen_watch_configured_sampling_ratio") == SAMPLING / 100
        assert value(samples, "loadgen_watch_traces_total", outcome="missing") == 0
        assert value(samples, "loadgen_watch_reference_traces_total", state="exported") >= 5
        assert value(samples, "loadgen_watch_time_to_queryable_seconds_count", source="reference") >= 5
        assert value(samples, "loadgen_watch_up") == 1
        # Loss on: every span dropped (202 and thrown away). A sampled request sent from now on
        # is missing at its give-up time; once those fill the short window, its ratio is 0.
        _faults(target.mesh, drop_probability=1.0)
        on = time.monotonic()
        bound = GIVE_UP_S + 2 * short + 2 * SEGMENT_S + 3.0
        samples = wait_for(
            watch,
            # 0, and on enough checks that even the interval's upper end is below one half
            lambda s: gauge(s, "loadgen_watch_collection_ratio", **mesh_short) == 0.0
            and (gauge(s, "loadgen_watch_collection_ratio_upper", **mesh_short) or 1.0) < 0.5,
            bound, f"mesh collection of the {short:g}s window at 0 with the collector dropping everything",
        )  # fmt: skip
        fell_after = time.monotonic() - on
        assert value(samples, "loadgen_watch_traces_total", source="mesh", outcome="missing") > 0
        _faults(target.mesh, drop_probability=0.0)
        off = time.monotonic()
        samples = wait_for(
            watch,
            lambda s: (gauge(s, "loadgen_watch_collection_ratio", **mesh_short) or 0) >= 0.9,
            bound, f"mesh collection of the {short:g}s window back to >= 0.9 with the loss off",
        )  # fmt: skip
        rose_after = time.monotonic() - off
    finally:
        _faults(target.mesh, drop_probability=0.0)
        code, stdout = watch.stop(signal.SIGTERM)
    assert code == 0, "".join(watch.lines)
    print(
        f"loss on -> ratio 0 after {fell_after:.1f} s, off -> >= 0.9 after {rose_after:.1f} s (bound {bound:g} s)"
    )
    _check_decision_rate(stdout, f"{long_:g}s", SAMPLING, min_n=50)


def test_unknown_rises_and_missing_stays_put_while_the_backend_is_away(
    target: Target, tmp_path: Path
) -> None:
    with BackendProxy(target.mesh.collector_url) as proxy:
        watch = start_watch(
            [*target.args(backend=f"zipkin:{proxy.url}"), "--window", "3s,9s"], tmp_path / "state"
        )
        try:
            before = wait_for(
                watch,
                lambda s: value(s, "loadgen_watch_traces_total", source="mesh", outcome="found") >= 10,
                20, "found mesh traces through the proxy",
            )  # fmt: skip
            proxy.set_mode("down")
            down_at = time.time()
            missing_seen = []
            unknown_0 = value(before, "loadgen_watch_traces_total", outcome="unknown")

            def unknown_risen(s: Samples) -> bool:
                missing_seen.append(value(s, "loadgen_watch_traces_total", outcome="missing"))
                return value(s, "loadgen_watch_traces_total", outcome="unknown") >= unknown_0 + 20

            during = wait_for(watch, unknown_risen, GIVE_UP_S + 10, "unknown rising with the backend down")
            time.sleep(GIVE_UP_S)  # every check open at the outage's start is past its give-up
            after = watch.scrape()
        finally:
            code, _ = watch.stop(signal.SIGTERM)
    assert code == 0, "".join(watch.lines)
    missing_before = value(before, "loadgen_watch_traces_total", outcome="missing")
    # Not one of the requests sent or checked during the outage was called missing.
    assert max(missing_seen) == missing_before
    assert value(after, "loadgen_watch_traces_total", outcome="missing") == missing_before
    assert value(after, "loadgen_watch_traces_total", outcome="unknown") > value(
        during, "loadgen_watch_traces_total", outcome="unknown"
    )
    assert value(after, "loadgen_watch_errors_total", component="backend") > 0
    last_ok = gauge(after, "loadgen_watch_last_readback_success_timestamp_seconds")
    assert last_ok is not None and last_ok < down_at + 1.0  # nothing answered since


def _state_counts(state: Path) -> tuple[int, int, int]:
    """(mesh requests ingested, mesh checks concluded, mesh checks pending), read from the state."""
    db = sqlite3.connect(state / STATE_DB)
    try:
        requests = db.execute(
            "SELECT COALESCE(SUM(value), 0) FROM counters WHERE name = 'requests'"
        ).fetchone()[0]
        concluded = db.execute(
            "SELECT COALESCE(SUM(value), 0) FROM counters WHERE name = 'traces' AND labels LIKE 'mesh%'"
        ).fetchone()[0]
        pending = db.execute("SELECT COUNT(*) FROM pending WHERE source = 'mesh'").fetchone()[0]
    finally:
        db.close()
    return int(requests), int(concluded), int(pending)


def _run_id(samples: Samples) -> str:
    [labels] = [dict(ls) for (n, ls) in samples if n == "loadgen_watch_up"]
    return labels["run_id"]


def test_killed_and_restarted_on_its_state_it_carries_on(target: Target, tmp_path: Path) -> None:
    """Its own embedded mesh this time: SIGKILL mid-run (no cleanup at all), then a new watch on
    the same state folder: the same run id, counters that continue, nothing counted twice."""
    state = tmp_path / "state"
    args = [
        "--sampling", f"{SAMPLING:g}", "--profile", str(target.profile), "--rate", RATE,
        "--segment", f"{SEGMENT_S:g}", "--deadline", f"{DEADLINE_S:g}", "--give-up", f"{GIVE_UP_S:g}",
        "--window", "3s,9s", "--reference-rate", "5",
    ]  # fmt: skip
    first = start_watch(args, state)
    try:
        before = wait_for(
            first,
            lambda s: value(s, "loadgen_watch_traces_total", source="mesh", outcome="found") >= 10
            and value(s, "loadgen_watch_pending_checks", source="mesh") > 0,
            30, "found traces and checks pending",
        )  # fmt: skip
    finally:
        first.stop(signal.SIGKILL)
    second = start_watch([*args, "--duration", "5"], state)
    try:
        resumed = wait_for(
            second,
            lambda s: value(s, "loadgen_watch_requests_total") > value(before, "loadgen_watch_requests_total"),
            30, "requests counted on after the restart",
        )  # fmt: skip
        assert _run_id(resumed) == _run_id(before)
        for name, labels in (
            ("loadgen_watch_traces_total", {"outcome": "found"}),
            ("loadgen_watch_reference_traces_total", {"state": "started"}),
        ):
            assert value(resumed, name, **labels) >= value(before, name, **labels), name
    finally:
        code, _ = second.stop(None, timeout_s=90)  # --duration ends it
    assert code == 0, "".join(second.lines)
    requests, concluded, pending = _state_counts(state)
    # Every request ingested is concluded once or still pending: a segment read twice would count
    # its requests twice but could not add their checks again.
    assert concluded + pending == requests
    assert requests > value(before, "loadgen_watch_requests_total")
    assert not (state / "locust.pid").exists()  # the second Locust was stopped in order


#: The unlike mesh's sampling (not the default's 100 %, nor the other tests' 50 %).
UNLIKE_SAMPLING = 30.0
#: Under the OpenTelemetry tracer off the edge, Envoy's coin decides none, b3_multi_sampled (B3
#: is ignored), w3c_sampled and xrid_random (sampled on our kept x-request-id): the decision
#: rate's modes. xrid_forced is always traced (its forced mark is kept: not an edge), and
#: w3c_not_sampled never. A watch assuming an edge would count xrid_forced in the decision rate
#: too: (5 x 30 % + 2) / 7 = 50 % sampled, which the decision-rate check tells from 30 %.
UNLIKE_MIX = "none=2,b3_multi_sampled=1,w3c_sampled=1,w3c_not_sampled=1,xrid_forced=2,xrid_random=1"


@pytest.fixture(scope="module")
def unlike_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """test_run_otel's mesh unlike the default (the gateway alone: 1-span traces, no sidecar; not
    at the edge: client x-request-ids kept; no run-id tag on spans), with the OpenTelemetry
    tracer (OTLP/HTTP) at 30 %. No profile: watch's own probe learns it."""
    tracing = TracingConfig(
        sampling_percent=UNLIKE_SAMPLING, tracer=TracerFamily.OPENTELEMETRY, otlp_protocol=OtlpProtocol.HTTP,
        **UNLIKE_DEFAULT,  # type: ignore[arg-type]
    )  # fmt: skip
    mesh = EmbeddedMesh(tmp_path_factory.mktemp("watch-unlike-mesh"), MeshConfig(tracing=tracing)).start()
    try:
        yield Target(mesh, None, sampling=UNLIKE_SAMPLING, mix=UNLIKE_MIX)
    finally:
        mesh.stop()


def _outcomes(samples: Samples, **labels: str) -> dict[str, float]:
    """Mesh checks concluded, by outcome, of the checks whose labels include `labels`."""
    outcomes = ("found", "partial", "missing", "leaked", "not_sampled", "unknown")
    return {
        o: value(samples, "loadgen_watch_traces_total", source="mesh", outcome=o, **labels) for o in outcomes
    }


def test_a_mesh_unlike_the_default_is_measured_by_what_watch_learned_of_it(
    unlike_target: Target, tmp_path: Path
) -> None:
    """Every figure comes from the mesh watched, not from the default one: the profile its probe
    learned (1 span, not an edge, no run-id tag, the OpenTelemetry tracer), 1-span traces found
    whole (3 spans assumed: every one partial), every decision read where this mesh's tracer
    writes it (none unknown), the decision rate at 30 % (an edge assumed: about 50 %), nothing
    lost or missing. Each of those three assumptions, forced on watch (--expected-spans 3, an
    edge context, --tracer zipkin), fails this test."""
    short, long_ = 5.0, 60.0  # the long window holds every request of the ~20 s watched
    watch = start_watch([*unlike_target.args(), "--window", f"{short:g}s,{long_:g}s"], tmp_path / "state")
    mesh_long = {"source": "mesh", "window": f"{long_:g}s"}
    try:
        samples = wait_for(
            watch,
            lambda s: value(s, "loadgen_watch_requests_total") >= 400
            and value(s, "loadgen_watch_traces_total", source="mesh", mode="w3c_not_sampled") >= 5
            and value(s, "loadgen_watch_traces_total", source="reference", outcome="found") >= 20,
            90, "20 s of requests, not-sampled checks concluded and reference traces found",
        )  # fmt: skip
    finally:
        code, stdout = watch.stop(signal.SIGTERM)
    assert code == 0, "".join(watch.lines)
    profile = {
        "tracer": "opentelemetry", "spans_per_trace": "1", "edge": "kept_honoured", "run_id_tag": "none",
        "source": "probe",
    }  # fmt: skip
    assert gauge(samples, "loadgen_watch_mesh_profile_info", **profile) == 1.0, [
        dict(ls) for (n, ls) in samples if n == "loadgen_watch_mesh_profile_info"
    ]
    assert gauge(samples, "loadgen_watch_configured_sampling_ratio") == UNLIKE_SAMPLING / 100
    # 1-span traces found whole; nothing partial, missing, leaked or unknown (the backend is up).
    mesh = _outcomes(samples)
    assert mesh["found"] >= 20 and mesh["not_sampled"] > 0, mesh
    assert mesh["partial"] == mesh["missing"] == mesh["leaked"] == mesh["unknown"] == 0, mesh
    assert gauge(samples, "loadgen_watch_collection_ratio", **mesh_long) == 1.0
    assert gauge(samples, "loadgen_watch_collection_ratio", source="reference", window=f"{long_:g}s") == 1.0
    assert value(samples, "loadgen_watch_time_to_queryable_seconds_count", source="mesh") == mesh["found"]
    # The forced mark of a kept x-request-id traces every such request (off the edge); the W3C
    # sampled flag 0 vetoes every one.
    forced, vetoed = _outcomes(samples, mode="xrid_forced"), _outcomes(samples, mode="w3c_not_sampled")
    assert forced["found"] == sum(forced.values()) > 0, forced
    assert vetoed["not_sampled"] == sum(vetoed.values()) > 0, vetoed
    # The decision rate: Envoy's coin at 30 %, on the decision-free modes only (n >= 150: a
    # 50 % rate is then more than 4.5 standard errors of 30 % away).
    _check_decision_rate(stdout, f"{long_:g}s", UNLIKE_SAMPLING, min_n=150)


def test_without_a_header_echo_watch_assumes_no_decision(unlike_target: Target, tmp_path: Path) -> None:
    """The same mesh on a path whose answer echoes nothing (/status/200): the probe learns there
    is no echo, and no mesh request's decision is known. Each is concluded unknown (none found,
    missing or not sampled), no decision rate or mesh collection ratio is exported (absent, never
    0), reference traces are still checked, and the status page's notes say why."""
    args = [*unlike_target.args(), "--path", "/status/200", "--window", "5s,60s"]
    watch = start_watch(args, tmp_path / "state")
    try:
        samples = wait_for(
            watch,
            lambda s: value(s, "loadgen_watch_traces_total", source="mesh", outcome="unknown") >= 50
            and value(s, "loadgen_watch_traces_total", source="reference", outcome="found") >= 10,
            90, "mesh requests concluded unknown and reference traces found",
        )  # fmt: skip
        page = httpx.get(f"{watch.url}/", timeout=5).text
    finally:
        code, _ = watch.stop(signal.SIGTERM)
    assert code == 0, "".join(watch.lines)
    mesh = _outcomes(samples)
    # Concluded at once when ingested: every request counted is a check concluded unknown.
    assert mesh["unknown"] == value(samples, "loadgen_watch_requests_total", status="200") > 0, mesh
    assert sum(mesh.values()) == mesh["unknown"], mesh
    assert value(samples, "loadgen_watch_pending_checks", source="mesh") == 0
    for window in ("5s", "60s"):
        assert gauge(samples, "loadgen_watch_decision_rate", window=window) is None
        assert gauge(samples, "loadgen_watch_collection_ratio", source="mesh", window=window) is None
    assert gauge(samples, "loadgen_watch_collection_ratio", source="reference", window="60s") == 1.0
    assert "does not echo request headers (probed)" in page
