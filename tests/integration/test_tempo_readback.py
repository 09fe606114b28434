"""A real run on the embedded mesh read back through `tempo:` gives the numbers `zipkin:` gives
(issue 12): the run's span store served by the collector on both its Zipkin API and its
Tempo-shaped query port (a stand-in for Grafana Tempo), each re-read by `loadgen verify`. The
Envoys run the OpenTelemetry tracer (OTLP/gRPC into the collector), the path Tempo users take;
the reader itself does not depend on how the spans arrived (its contract suite is in
tests/unit/test_backend_tempo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.mesh.tracer import TracerFamily
from loadgen.run import RunOptions, execute_run, verify_run
from loadgen.stack.envoy import TracingConfig
from tests.unit.tempo_fake import InProcessCollector

pytestmark = pytest.mark.integration

# Everything a read-back measures; `target` (which backend) and the notes naming it differ.
MEASURED = ("requests", "sampling", "mesh", "reference", "modes", "tag_search", "propagation", "verdicts")


def quiet(_: str) -> None:
    pass


def test_tempo_reads_back_the_same_numbers_as_zipkin(tmp_path: Path) -> None:
    # /fanout: two hops, so the fragment search (search_hop_traces) goes through the reader too.
    # 50 % sampling: found, not sampled and leak checks all have requests to count.
    result = execute_run(
        RunOptions(
            run_id="tempo", output_dir=tmp_path, duration_s=2, users=2, spawn_rate=2, path="/fanout",
            tracing=TracingConfig(sampling_percent=50.0, tracer=TracerFamily.OPENTELEMETRY), reference_rate=20.0, seed=12,
        ),
        quiet,
    )  # fmt: skip
    live = result.summary
    assert live["profile"]["tracer"] == "opentelemetry"  # the spans came in by OTLP
    collector = InProcessCollector(result.run_dir / "collector").start()
    try:
        summaries = {
            kind: verify_run(
                result.run_dir, quiet, backend_spec=f"{kind}:{url}", max_wait_s=5, poll_interval_s=0.2
            )[0].summary
            for kind, url in (("zipkin", collector.zipkin_url), ("tempo", collector.tempo_url))
        }
    finally:
        collector.stop()
    zipkin, tempo = summaries["zipkin"], summaries["tempo"]
    assert tempo["target"]["reader"] == "tempo" and zipkin["target"]["reader"] == "zipkin"
    for key in MEASURED:
        assert tempo[key] == zipkin[key], key
    # Not vacuous: traces were found, some requests were not sampled, the tag search found the
    # sampled ones, and the live run (read through the collector's Zipkin API) agrees.
    mesh = tempo["mesh"]
    assert mesh["collection"]["k"] == mesh["collection"]["n"] > 0 and mesh["partial"] == mesh["unknown"] == 0
    assert sum(m["not_sampled"] for m in tempo["modes"].values()) > 0
    assert tempo["tag_search"]["tagged_mesh"] == mesh["collection"]["k"]
    assert tempo["reference"]["collection"]["k"] == tempo["reference"]["exported"] > 0
    assert mesh["collection"] == live["mesh"]["collection"] and tempo["verdicts"] == live["verdicts"]
