"""Every benchmark in bench/ runs end to end in --quick mode and prints a numeric ratio line.

The figures of a --quick run mean nothing; this only keeps the scripts runnable (they start the
collector or the whole embedded mesh on 127.0.0.1 and must stop what they started).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = [
    "generator.py",
    "collector_ingest.py",
    "collector_soak.py",
    "reconcile.py",
    "emitter.py",
    "ledger_analysis.py",
    "generator_rss.py",
    "master_intake.py",
    "watch_soak.py",  # its --quick: 12 s watched, plus the mesh start and the probe
    "readback_adaptive.py",
]
RATIO_LINE = re.compile(r"^ratio \S.* = -?[0-9]+\.[0-9]+\b", re.MULTILINE)
# The OTLP protocols ride along where that is cheap (measured on the 2-core box): collector_ingest
# measures Zipkin JSON and both OTLP protocols at one batch size (+1.2 s over its plain --quick);
# emitter gets one extra run over OTLP/gRPC (~1.1 s). Each must print its protocol's ratio line.
OTLP_INGEST = ["--protocol", "otlp-http,otlp-grpc", "--batch-sizes", "100"]
INGEST_LINES = [
    f"ratio {p} / zipkin JSON spans per collector CPU-second @ 100 " for p in ("otlp-http", "otlp-grpc")
]
RUNS: list[tuple[str, list[str], list[str]]] = [
    *((s, [], []) for s in SCRIPTS if s != "collector_ingest.py"),
    ("collector_ingest.py", OTLP_INGEST, INGEST_LINES),
    (
        "emitter.py",
        ["--protocol", "otlp-grpc"],
        ["ratio loadgen emitter / plain OTel SDK spans/s over otlp-grpc "],
    ),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("script", "extra", "lines"), RUNS, ids=[" ".join([s, *a]) for s, a, _ in RUNS])
def test_bench_script_quick(script: str, extra: list[str], lines: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *extra],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,  # nothing may depend on (or litter) the current directory
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert RATIO_LINE.search(proc.stdout), f"{script} printed no numeric ratio line:\n{proc.stdout}"
    for start in lines:
        numeric = re.compile(f"^{re.escape(start)}.* = [0-9]+\\.[0-9]+\\b", re.MULTILINE)
        assert numeric.search(proc.stdout), f"{script}: no numeric line {start!r}:\n{proc.stdout}"


def test_every_bench_script_is_smoke_tested() -> None:
    found = sorted(
        p.name for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "bare_locustfile.py"
    )
    assert found == sorted(SCRIPTS)
