"""Locust's web UI with loadgen (issue 13, item 3).

- Plain Locust on the packaged mesh locustfile, its page opened in headless Chromium: loadgen's
  options are inputs of the start form (Locust lists only options marked `include_in_web_ui`,
  which an argparse group's add_argument never marked, so the page used to say
  `"extra_options": {}`).
- `loadgen run --web` on the embedded mesh, driven through the UI's HTTP API as its page does:
  POST /swarm starts the test, POST /stop stops it; the stop makes loadgen read the traces back
  and write the report, which the Tracing tab's endpoint then shows with the collection numbers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadgen.ledger import read_ledger
from loadgen.run import default_scenario_path
from loadgen.run.webui import free_port

from .conftest import leftover_processes, sigint_default
from .test_html_chromium import Browser, Cdp, console_errors, evaluate, open_page
from .test_html_chromium import chromium as chromium  # the fixture (skips without a browser)

pytestmark = pytest.mark.integration

LOADGEN = [sys.executable, "-m", "loadgen.cli"]
MIX = "none=3,b3_multi_not_sampled=1"
FORM_INPUTS = """
JSON.stringify(Object.fromEntries(Array.from(document.querySelectorAll('input[name],select[name]'))
  .filter(e => e.offsetParent !== null).map(e => [e.name, e.value])))
"""


def _until(what: str, check: Callable[[], Any], timeout_s: float, proc: subprocess.Popen[Any]) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode} while waiting for {what}"
        try:
            found = check()
        except (httpx.HTTPError, ValueError, OSError):
            found = None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout_s} s")


def test_locust_web_ui_shows_loadgen_options_as_inputs(chromium: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "LOADGEN_MIX": MIX, "LOADGEN_LEDGER": str(tmp_path / "ledger.jsonl")}
    log = open(tmp_path / "locust.log", "wb")  # noqa: SIM115
    locust = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", default_scenario_path(),
         "--web-host", "127.0.0.1", "--web-port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=sigint_default,
    )  # fmt: skip
    browser = Browser(chromium, tmp_path / "browser")
    try:
        base = f"http://127.0.0.1:{port}/"
        _until("web UI", lambda: httpx.get(base, timeout=2).status_code == 200, 30, locust)
        cdp = Cdp(browser.devtools_url())
        session = open_page(cdp, base)
        inputs = _until("the start form", lambda: json.loads(evaluate(cdp, session, FORM_INPUTS)), 20, locust)
        # The form's own fields, then loadgen's (the page names them in camelCase), each with its
        # value from the LOADGEN_* variable or its default.
        assert {"userCount", "spawnRate", "host"} <= set(inputs), inputs
        assert inputs["loadgenMix"] == MIX
        assert inputs["loadgenRate"] == "0"
        assert inputs["loadgenHostHeader"] == "httpbin.istioinaction.io"
        assert inputs["loadgenIdStyle"] == "random"  # a select of its choices
        assert {"loadgenRunId", "loadgenSeed", "loadgenTracer", "loadgenXridPercent"} <= set(inputs)
        text = evaluate(cdp, session, "document.body.innerText")
        assert "Custom parameters" in text and "Header-mode weights" in text
        assert console_errors(cdp.events, session) == []
        cdp.close()
    finally:
        browser.stop()
        locust.terminate()
        locust.wait(timeout=20)
        log.close()


def _tracing(base: str) -> dict[str, str]:
    rows = httpx.get(base + "loadgen", timeout=5).json()["tracing"]
    return {row["what"]: row["value"] for row in rows}


def test_run_web_reads_back_when_the_test_stops_in_the_ui(tmp_path: Path) -> None:
    run_dir = tmp_path / "web"
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err, open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen(
            [*LOADGEN, "run", "--web", "--web-port", "0", "--run-id", "web", "--output", str(tmp_path),
             "--users", "2", "--rate", "60", "--mix", MIX, "--reference-rate", "10", "--quiet", "1",
             "--seed", "7"],
            stdout=out, stderr=err, text=True, env={**os.environ, "COLUMNS": "200"},
            preexec_fn=sigint_default,
        )  # fmt: skip
    try:
        url = _until(
            "web UI line", lambda: re.search(r"web UI: (http://\S+/)", err_path.read_text()), 20, proc
        )
        base = url.group(1)
        page = _until("web UI", lambda: httpx.get(base, timeout=2).text, 60, proc)
        # Under `loadgen run --web` the options the read-back relies on are fixed by the run.
        assert '"loadgen_mix"' in page and '"loadgen_run_id"' not in page and '"loadgen_ledger"' not in page
        assert _tracing(base)["state"].startswith("waiting for a test")
        started = httpx.post(base + "swarm", data={"user_count": "2", "spawn_rate": "2"}, timeout=10).json()
        assert started["success"], started
        _until(
            "60 requests",
            lambda: sum(r["requests"] for r in httpx.get(base + "loadgen").json()["modes"]) >= 60,
            30,
            proc,
        )
        assert httpx.post(base + "stop", timeout=10).json()["success"]
        tab = _until(
            "the report in the Tracing tab", lambda: "report" in _tracing(base) and _tracing(base), 60, proc
        )

        summary = json.loads((run_dir / "summary.json").read_text())
        ledger = list(read_ledger(run_dir / "ledger.jsonl"))
        state = json.loads((run_dir / "webui.json").read_text())
        assert state["state"] == "stopped" and state["requests"] == len(ledger) >= 60
        assert summary["requests"]["total"] == len(ledger)
        assert summary["locust"]["requests"] == len(ledger)  # locust.json, written at the stop
        mesh = summary["mesh"]["collection"]
        assert mesh["n"] > 0
        assert tab["mesh collection"].startswith(f"{mesh['k']:,} of {mesh['n']:,} (")
        ref = summary["reference"]["collection"]
        assert ref["n"] > 0 and tab["reference collection"].startswith(f"{ref['k']:,} of {ref['n']:,}")
        none_mode = summary["modes"]["none"]
        assert f"traces found {none_mode['found']:,}" in tab["mode none"]
        assert tab["state"].startswith("report written")
        assert tab["report"] == base + "loadgen/report"
        report = httpx.get(tab["report"], timeout=10)
        assert report.status_code == 200 and report.content == (run_dir / "report.html").read_bytes()
        # One test per run: another start is refused, the UI stays up until Ctrl-C.
        again = httpx.post(base + "swarm", data={"user_count": "1", "spawn_rate": "1"}, timeout=10).json()
        assert not again["success"] and "has ended" in again["message"]
        _until("the Ctrl-C line", lambda: "Ctrl-C closes it" in err_path.read_text(), 60, proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Ctrl-C only closed the UI: the run ended complete, with its verdicts' exit code (not 130).
    assert summary["status"] == "complete"
    assert proc.returncode in (0, 1, 3), err_path.read_text()
    port = base.rstrip("/").rsplit(":", 1)[1]
    assert leftover_processes(str(run_dir)) == [] and leftover_processes(f"--web-port {port}") == []
