"""A component of the run fails (issue 10, findings 7 and 8): the run stops, writes a partial
report, and exits 4 with the component's last log lines, never 130 (the user's interrupt) and
never a run that goes on for its full duration.

Real parts: the embedded mesh (real Envoy), real Locust, a real full filesystem (tmpfs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LOADGEN = [sys.executable, "-m", "loadgen.cli"]

# A locustfile whose Locust process dies by SIGKILL (as from the OOM killer) after ~2 s of load.
KILLED_LOCUST = """
import os, signal, threading
from loadgen.traffic.default_scenario import MeshUser

threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
__all__ = ["MeshUser"]
"""


def test_locust_killed_mid_run_exits_4_with_a_partial_report(tmp_path: Path) -> None:
    scenario = tmp_path / "killed.py"
    scenario.write_text(KILLED_LOCUST)
    started = time.monotonic()
    proc = subprocess.run(
        [*LOADGEN, "run", "--duration", "60", "--users", "2", "--run-id", "k", "--output", str(tmp_path),
         "--scenario", str(scenario), "--no-probe", "--reference-rate", "0", "--quiet", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.returncode == 4, proc.stderr
    assert "Locust was killed by SIGKILL" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 45  # not the full 60 s duration
    summary = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert summary["status"] == "partial"
    assert summary["component_failure"]["component"] == "locust"
    assert summary["requests"]["total"] > 0  # what was sent before the kill is reported
    # Finding 8: verify on the partial run answers with its verdicts, not the run's old 130.
    again = subprocess.run(
        [*LOADGEN, "verify", str(tmp_path / "k"), "--max-wait", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    verdicts = json.loads((tmp_path / "k" / "summary.json").read_text())["verdicts"].values()
    expected = 1 if "fail" in verdicts else 3 if set(verdicts) - {"pass"} else 0
    assert again.returncode == expected, again.stderr


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 160 MiB tmpfs, unmounted afterwards. Needs root (as on this project's machines and CI)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill_leaving(folder: Path, leave_bytes: int) -> None:
    """Write one filler file until `leave_bytes` are left free, as another process would."""
    chunk = b"\0" * (1024 * 1024)
    with (folder / "filler").open("ab") as f:
        try:
            while shutil.disk_usage(folder).free > leave_bytes:
                f.write(chunk[: max(4096, min(len(chunk), shutil.disk_usage(folder).free - leave_bytes))])
                f.flush()
        except OSError:  # full to the last block
            pass


def test_disk_filling_during_load_stops_the_run_with_exit_4(small_fs: Path) -> None:
    run_dir = small_fs / "d"
    ledger = run_dir / "ledger.jsonl"

    def filler() -> None:
        deadline = time.monotonic() + 60
        while not (ledger.exists() and ledger.stat().st_size > 2000) and time.monotonic() < deadline:
            time.sleep(0.1)
        _fill_leaving(small_fs, 8 * 1024 * 1024)  # below the run's 32 MiB floor, room for a report

    thread = threading.Thread(target=filler, daemon=True)
    thread.start()
    started = time.monotonic()
    proc = subprocess.run(
        [*LOADGEN, "run", "--duration", "90", "--users", "2", "--run-id", "d", "--output", str(small_fs),
         "--no-probe", "--reference-rate", "0", "--quiet", "1"],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    took = time.monotonic() - started
    thread.join(timeout=5)
    assert proc.returncode == 4, proc.stderr
    assert "no space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 60  # stopped early, not after the full 90 s
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["component_failure"]["component"] == "disk"
    assert (run_dir / "report.md").exists()
    # Nothing written was lost: the ledger's requests are all in the partial report.
    assert summary["requests"]["total"] == sum(1 for _ in ledger.open("rb"))
    assert os.path.getsize(ledger) > 2000

    # Finding 4: the disk is full when verify reads back: one line naming the file, exit 2.
    # (Rewriting a file in place frees its old blocks first, so remove what verify writes.)
    for name in ("summary.json", "fetched.jsonl", "report.md", "report.html"):
        (run_dir / name).unlink(missing_ok=True)
    _fill_leaving(small_fs, 0)
    collector = subprocess.Popen(
        [sys.executable, "-m", "loadgen.stack.collector", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert collector.stdout is not None
        url = json.loads(collector.stdout.readline())["url"]
        verify = subprocess.run(
            [*LOADGEN, "verify", str(run_dir), "--backend", f"zipkin:{url}", "--max-wait", "1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        collector.terminate()
        collector.wait(timeout=10)
    assert verify.returncode == 2, verify.stderr
    assert "Traceback" not in verify.stderr
    lines = [line for line in verify.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "No space left on device" in lines[-1]
