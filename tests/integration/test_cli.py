"""The `loadgen` command in a subprocess, as a user runs it: exit codes, summary.json schema,
Ctrl-C / SIGTERM mid-run, and `loadgen stack up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadgen.ledger import count_lines, read_ledger
from loadgen.stack.mesh import EmbeddedMesh

from .conftest import leftover_processes

pytestmark = pytest.mark.integration

LOADGEN = [sys.executable, "-m", "loadgen.cli"]

# The paths the issue requires in summary.json (docs/outputs.md documents the whole schema).
REQUIRED_PATHS = [
    "run_id",
    "sampling.configured_percent",
    "sampling.decision.k", "sampling.decision.n", "sampling.decision.rate", "sampling.decision.ci95",
    "sampling.verdict",
    "mesh.collection.k", "mesh.collection.n", "mesh.collection.rate", "mesh.collection.ci95",
    "mesh.leaked",
    "reference.started", "reference.exported", "reference.failed", "reference.dropped",
    "reference.collection.k", "reference.collection.n", "reference.collection.rate", "reference.collection.ci95",
    "propagation.k", "propagation.n",
]  # fmt: skip


def lookup(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def test_run_json_has_the_documented_schema(tmp_path: Path) -> None:
    # 2 s at 250 reference traces/s: >= 381, the fewest whose Wilson low end (all found) reaches
    # the 0.99 minimum, so a healthy run can pass reference collection (exit 0, not 3). The same
    # holds for mesh collection: the old --sampling 100 and --rate 0 (as fast as they go), as 2 s
    # at the demo's 10 % and 500 req/s sample too few traces to judge it.
    proc = subprocess.run(
        [*LOADGEN, "run", "--duration", "2", "--users", "2", "--run-id", "cli", "--output", str(tmp_path), "--json",
         "--reference-rate", "250", "--sampling", "100", "--rate", "0"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    summary = json.loads(proc.stdout)
    for path in REQUIRED_PATHS:
        lookup(summary, path)  # KeyError names the missing path
    # every verdict with its evidence: {verdict, checked, minimum, basis, cause}
    assert set(summary["verdict_details"]) == set(summary["verdicts"])
    for name, detail in summary["verdict_details"].items():
        assert detail["verdict"] == summary["verdicts"][name] == "pass"
        assert detail["checked"] >= detail["minimum"] >= 1 and detail["cause"] is None
    assert summary["verdict_details"]["no_leaks"]["checked"] == summary["mesh"]["leak_checked"] > 0
    for rate_path in ("sampling.decision", "mesh.collection", "reference.collection"):
        p = lookup(summary, rate_path)
        assert 0.0 <= p["rate"] <= 1.0
        low, high = p["ci95"]
        assert 0.0 <= low <= p["rate"] <= high <= 1.0
    for mode in summary["modes"].values():
        assert {"requests", "errors", "found", "missing", "unknown"} <= set(mode)
    assert json.loads((tmp_path / "cli" / "summary.json").read_text()) == summary
    assert leftover_processes(str(tmp_path)) == []
    html = (tmp_path / "cli" / "report.html").read_text()
    assert "cli" in html and "<svg" in html and "<script" not in html
    # fetched.jsonl is opt-in (--keep-spans); the report drew its collection chart from memory
    assert not (tmp_path / "cli" / "fetched.jsonl").exists() and 'id="chart-collection"' in html

    # CI gates on the finished run: exit code and JUnit follow the thresholds.
    run_dir = str(tmp_path / "cli")
    rerender = subprocess.run(
        [*LOADGEN, "report", run_dir, "--baseline", run_dir], capture_output=True, text=True, timeout=60
    )
    assert rerender.returncode == 0, rerender.stderr
    assert "No verdict changed." in (tmp_path / "cli" / "comparison.md").read_text()
    ok = subprocess.run(
        [*LOADGEN, "gate", run_dir, "--max-leaked", "0"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    junit = tmp_path / "gates.xml"
    bad = subprocess.run(
        [*LOADGEN, "gate", run_dir, "--max-p99-ms", "0.0001", "--junit", str(junit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "FAIL" in bad.stdout
    suite = ET.parse(junit).getroot()
    failures = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failures and all("p99" in (name or "") for name in failures)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mix", "bogus=1"], "unknown header mode"),
        (["--sampling", "150"], "--sampling"),
        (["--gateway", "http://127.0.0.1:9", "--backend", "zipkin:http://127.0.0.1:9"], "unreachable"),
        (["--gateway", "http://127.0.0.1:9"], "--backend"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = subprocess.run(
        [*LOADGEN, "run", "--duration", "2", "--output", str(tmp_path), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_run_whose_every_request_fails_exits_1_on_load_delivered(tmp_path: Path) -> None:
    # The embedded upstream answers 503 to everything (no probe: it would learn nothing). Before,
    # such a run judged nothing it could fail and exited 0 (or 3) on 100 % errors.
    proc = subprocess.run(
        [*LOADGEN, "run", "--no-probe", "--upstream-error-rate", "1", "--duration", "1", "--users", "2",
         "--reference-rate", "0", "--quiet", "0", "--max-wait", "2", "--run-id", "errs",
         "--output", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["verdicts"]["load_delivered"] == "fail"
    detail = summary["verdict_details"]["load_delivered"]
    total = summary["requests"]["total"]
    assert detail["checked"] == total == summary["requests"]["errors"] > 0
    assert f"{total:,} of {total:,} requests failed" in detail["cause"], detail["cause"]
    assert "most common: HTTP 503" in detail["cause"], detail["cause"]
    # the threshold it was judged with is kept where `verify` re-judges from
    assert summary["max_error_rate"] == 0.05
    run_json = json.loads((tmp_path / "errs" / "run.json").read_text())
    assert run_json["expectation"]["max_error_rate"] == 0.05
    # the error gate is on by default and agrees
    gate = subprocess.run(
        [*LOADGEN, "gate", str(tmp_path / "errs"), "--no-sampling-gate"], capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert gate.returncode == 1 and "FAIL  max_error_rate" in gate.stdout, gate.stdout + gate.stderr
    assert "most common: HTTP 503" in gate.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_run_writes_a_partial_report_and_keeps_the_ledger(
    tmp_path: Path, sig: signal.Signals
) -> None:
    run_dir = tmp_path / "sig"
    proc = subprocess.Popen(
        [*LOADGEN, "run", "--duration", "120", "--users", "2", "--run-id", "sig", "--output", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while count_lines(run_dir / "ledger.jsonl") < 200:
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.2)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "partial"
    assert "interrupted" in summary["status_reason"]
    ledger = list(read_ledger(run_dir / "ledger.jsonl"))
    assert len(ledger) == summary["requests"]["total"] >= 200
    # Locust's own count agrees with the ledger: nothing was lost in the stop.
    assert summary["locust"] is not None and summary["locust"]["requests"] == len(ledger)
    assert "Partial run" in (run_dir / "report.md").read_text()
    assert leftover_processes(str(run_dir)) == []


def test_stack_up_serves_until_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "stack"
    proc = subprocess.Popen(
        [*LOADGEN, "stack", "up", "--workdir", str(workdir), "--sampling", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        urls: dict[str, str] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("gateway", "collector") and parts[1].startswith("http"):
                urls[parts[0]] = parts[1]
            if "Ctrl-C" in line:
                break
        assert set(urls) == {"gateway", "collector"}
        resp = httpx.get(
            f"{urls['gateway']}/headers", headers={"Host": "httpbin.istioinaction.io"}, timeout=5
        )
        assert resp.status_code == 200
        assert "X-B3-Traceid" in resp.json()["headers"]
        assert httpx.get(f"{urls['collector']}/api/v2/services", timeout=5).status_code == 200
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert leftover_processes(str(workdir)) == []


def test_children_die_with_a_killed_cli(tmp_path: Path) -> None:
    """Even SIGKILL (no cleanup possible) leaves no Envoy/collector/echo behind (PR_SET_PDEATHSIG)."""
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(
        [*LOADGEN, "stack", "up", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "Ctrl-C" in line:
                break
        assert len(leftover_processes(str(workdir))) >= 4  # collector, echo, 2 Envoys
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while leftover_processes(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftover_processes(str(workdir)) == []


def test_doctor_passes_on_the_embedded_mesh_and_names_the_fix_for_a_broken_path(
    mesh100: EmbeddedMesh,
) -> None:
    base = [
        *LOADGEN,
        "doctor",
        "--gateway",
        mesh100.gateway_url,
        "--backend",
        f"zipkin:{mesh100.collector_url}",
    ]
    good = subprocess.run(
        [*base, "--collector", mesh100.collector_url], capture_output=True, text=True, timeout=120
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 failed" in good.stdout and "gateway.x_request_id" in good.stdout
    broken = subprocess.run(
        [*base, "--collector", f"{mesh100.collector_url}/zipkin/api/v1/spans"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 1
    assert "FAIL  collector.endpoint" in broken.stdout
    assert "use collectorEndpoint /api/v2/spans" in broken.stdout


def test_expect_from_istio_yaml_sets_the_expected_sampling(mesh100: EmbeddedMesh, tmp_path: Path) -> None:
    seed = Path(__file__).parent.parent / "fixtures" / "doctor" / "seed-istiooperator-tracing.yaml"
    proc = subprocess.run(
        [
            *LOADGEN, "run", "--duration", "2", "--users", "2", "--run-id", "expfrom", "--output", str(tmp_path),
            "--gateway", mesh100.gateway_url, "--collector", mesh100.collector_url,
            # auto: detects the Zipkin API; the extra header must not break anything
            "--backend", f"auto:{mesh100.collector_url}", "--backend-header", "X-Scope-OrgID: loadgen",
            "--expect-from", str(seed), "--json",
            "--reference-rate", "250",  # >= 381 reference traces in 2 s: enough to pass at 0.99
        ],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "expected sampling 100 %" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["sampling"]["configured_percent"] == 100.0
    assert summary["sampling"]["verdict"] == "pass"
    assert summary["target"]["backend_spec"].startswith("auto:")
    assert summary["mesh"]["collection"]["k"] == summary["mesh"]["collection"]["n"] > 0


def test_plan_prints_the_closed_form_numbers() -> None:
    proc = subprocess.run(
        [*LOADGEN, "plan", "--expect", "1", "--precision", "0.1", "--actual", "2", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    # Wald: z^2 p (1-p) / E^2 with z = 1.959964 -> 38,031 (38,032 with z rounded to 1.96)
    assert doc["sample"]["wald"] == 38031
    assert doc["sample"]["clopper_pearson"] >= doc["sample"]["wilson"] >= doc["sample"]["wald"]
    # 1 % vs 2 %: thresholds 100 vs 200 of 10000, so q = 0.01 and ceil(log(0.05)/log(0.99)) = 299
    assert doc["detection"]["exact_n"] == 299
    assert doc["detection"]["statistical_n"] > 10 * doc["detection"]["exact_n"]


def test_calibrate_catches_a_gateway_sampling_less_than_expected(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*LOADGEN, "calibrate", "--expect", "20", "--sampling", "10", "--users", "4", "--max-requests", "3000",
         "--calibration-id", "cal", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert doc["verdict"] == "fail"
    assert leftover_processes(str(tmp_path)) == []
