"""The live view in Locust's web UI: per-mode counters and the sampled fraction seen so far."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from loadgen.run import default_scenario_path
from loadgen.stack.mesh import EmbeddedMesh

pytestmark = pytest.mark.integration


def test_web_ui_shows_tracing_tab_data(mesh100: EmbeddedMesh, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "LOADGEN_RUN_ID": "webui",
        "LOADGEN_LEDGER": str(tmp_path / "ledger.jsonl"),
        "LOADGEN_HOST_HEADER": mesh100.host_header,
        "LOADGEN_MIX": "none=1,b3_multi_not_sampled=1",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "locust", "-f", default_scenario_path(), "--host", mesh100.gateway_url,
            "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "--autoquit", "2",
            "-u", "2", "-r", "2", "-t", "20s",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        rows: list[dict] = []
        while time.monotonic() < deadline:
            try:
                live = httpx.get(f"{base}/loadgen", timeout=2).json()
                rows = live["modes"]
                if sum(r["requests"] for r in rows) > 50:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        by_mode = {r["mode"]: r for r in rows}
        # sampling 100: header-less requests are all sampled, X-B3-Sampled: 0 never
        assert by_mode["none"]["sampled_fraction"] == 1.0
        assert by_mode["b3_multi_not_sampled"]["sampled_fraction"] == 0.0
        index = httpx.get(base + "/", timeout=5).text
        assert "Tracing (loadgen)" in index
        stats = httpx.get(f"{base}/stats/requests", timeout=5).json()
        extended = {e["key"]: e["data"] for e in stats["extended_stats"]}
        tab = {r["what"]: r["value"] for r in extended["loadgen"]}
        assert set(tab) == {"run id", "mode none", "mode b3_multi_not_sampled"}, tab
        assert tab["run id"] == "webui"
        assert tab["mode b3_multi_not_sampled"].endswith("the upstream saw 0 sampled (0.0 %)")
        assert "(100.0 %)" in tab["mode none"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
