"""Distributed generation on Locust's own engine: the master writes one ledger from the records
its workers relay over Locust's message channel; nothing is lost when workers stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.ledger import read_ledger
from loadgen.run import RunOptions, RunResult, execute_run
from loadgen.stack.mesh import EmbeddedMesh

from .conftest import leftover_processes

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_complete_ledger(result: RunResult, workers: int) -> None:
    s = result.summary
    ledger = list(read_ledger(result.run_dir / "ledger.jsonl"))
    assert s["locust"] is not None
    assert len(ledger) == s["requests"]["total"] == s["locust"]["requests"] > 100
    assert len({r["rid"] for r in ledger}) == len(ledger)
    assert len({r["worker"] for r in ledger}) == workers
    # Per worker, the relayed sequence has no gaps: nothing was lost in transit.
    for worker in {r["worker"] for r in ledger}:
        seqs = sorted(r["wseq"] for r in ledger if r["worker"] == worker)
        assert seqs == list(range(len(seqs)))


def test_processes_flag_gives_one_ledger_with_the_single_process_shape(tmp_path: Path) -> None:
    multi = execute_run(
        RunOptions(run_id="multi", output_dir=tmp_path, duration_s=3, users=4, processes=2, reference_rate=0),
        lambda _m: None,
    )
    assert_complete_ledger(multi, workers=2)
    single = json.loads(json.dumps(multi.summary))  # shape reference: same keys as a 1-process run
    one = execute_run(
        RunOptions(run_id="single", output_dir=tmp_path, duration_s=2, users=2, reference_rate=0),
        lambda _m: None,
    )

    def keys(obj: object, prefix: str = "") -> set[str]:
        if not isinstance(obj, dict):
            return {prefix}
        return {k for key, value in obj.items() if key != "modes" for k in keys(value, f"{prefix}.{key}")}

    assert keys(single) - {".readback.polls", ".queryable.curve"} == keys(one.summary) - {
        ".readback.polls",
        ".queryable.curve",
    }
    assert multi.summary["mesh"]["collection"]["k"] == multi.summary["mesh"]["collection"]["n"] > 0
    assert leftover_processes(str(tmp_path)) == []


RATE = 300.0  # req/s over the whole run


def test_master_with_two_loadgen_workers_on_loopback(mesh100: EmbeddedMesh, tmp_path: Path) -> None:
    port = free_port()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadgen.cli",
                "worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        result = execute_run(
            RunOptions(
                run_id="dist", output_dir=tmp_path, duration_s=3, users=4, spawn_rate=4, reference_rate=0,
                rate=RATE,
                gateway=mesh100.gateway_url, host=mesh100.host_header, collector=mesh100.collector_url,
                backend=f"zipkin:{mesh100.collector_url}", expect_percent=100.0,
                expect_workers=2, master_bind_host="127.0.0.1", master_bind_port=port,
            ),
            lambda _m: None,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(w.poll() is not None for w in workers), "workers must end with the master's run"
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert_complete_ledger(result, workers=2)
    # --rate is the run's total, shared by both workers' users (each worker paced to the whole
    # rate sent about twice as much: --rate 20 gave 36 req/s). At most 3 s at RATE, with slack.
    total = result.summary["requests"]["total"]
    assert RATE * 3 * 0.3 <= total <= RATE * 3 * 1.25, total
    assert result.summary["mesh"]["collection"]["k"] == result.summary["mesh"]["collection"]["n"] > 0
    assert result.exit_code == 0
