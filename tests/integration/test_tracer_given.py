"""`--tracer` on an existing mesh that runs the other tracer (issue 12): the embedded mesh, already
started with Envoy's Zipkin tracer, measured like an existing one with `--tracer opentelemetry`.
The given tracer wins everywhere (the load, the fold, run.json), the profile keeps what the probe
saw, and the run warns, naming the B3 headers Envoy added. Real Envoy, real Locust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.ledger import read_ledger
from loadgen.mesh.tracer import TracerFamily
from loadgen.run import RunOptions, execute_run
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig

pytestmark = pytest.mark.integration


def test_a_given_tracer_overrides_what_the_probe_saw(tmp_path: Path) -> None:
    mesh = EmbeddedMesh(
        tmp_path / "mesh", MeshConfig(tracing=TracingConfig(sampling_percent=100.0), fanout=False)
    ).start()
    try:
        result = execute_run(
            RunOptions(
                run_id="given", output_dir=tmp_path, duration_s=1.0, users=2, spawn_rate=2, seed=3,
                mix="none=1,w3c_sampled=1", reference_rate=0.0, quiet_s=1.0, max_wait_s=5.0,
                gateway=mesh.gateway_url, host=mesh.host_header, collector=mesh.collector_url,
                backend=f"zipkin:{mesh.collector_url}", tracer=TracerFamily.OPENTELEMETRY,
            ),
            lambda _: None,
        )  # fmt: skip
    finally:
        mesh.stop()
    s = result.summary
    profile = s["profile"]
    assert (profile["tracer"], profile["tracer_given"]) == ("zipkin", "opentelemetry")
    assert {"x-b3-sampled", "x-b3-traceid"} <= set(profile["tracer_headers"])
    (warning,) = [n for n in s["notes"] if n.startswith("warning: --tracer opentelemetry overrides")]
    assert "x-b3-sampled" in warning
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["expectation"]["context"]["tracer"] == "opentelemetry"
    records = list(read_ledger(result.run_dir / "ledger.jsonl"))
    none = [r for r in records if r["mode"] == "none" and r["status"] == 200]
    w3c = [r for r in records if r["mode"] == "w3c_sampled" and r["status"] == 200]
    assert none and w3c
    # Read as the given tracer: the Zipkin tracer forwards no traceparent of its own, so a request
    # without one has no sampled fact (B3 Sampled: 1 and char 14 `9` are not read), and the
    # client's traceparent, forwarded untouched, is read for its flag.
    assert all(r["up_flag"] is None and r["up_xrid"][14] == "9" for r in none)
    assert all(r["up_flag"] == "1" for r in w3c)
    # Both modes are Envoy's to decide; only the traceparent ones have a fact (as zipkin: all).
    assert s["sampling"]["decision"]["n"] == len(w3c)
    # The probe read its own requests as the tracer it saw: the shape of a trace is learned.
    assert profile["shape_text"] and profile["traces_found"] == profile["traces_sampled"] > 0
