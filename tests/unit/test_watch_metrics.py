"""loadgen.watch.metrics: a hand-built snapshot rendered to the text format and read back with
prometheus_client's own parser: the contract's names, types, labels and values; ratios with no
data absent (never 0); the histogram's cumulative buckets."""

from __future__ import annotations

import platform
import re
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from loadgen import __version__
from loadgen.watch.metrics import CONTENT_TYPE, make_registry, render_metrics
from loadgen.watch.model import Histogram, WatchSnapshot

from .watch_fixtures import MESH, sample_snapshot

# The contract table of `loadgen watch` (name -> type), copied as written; the deploy/ rules and
# dashboard are built against these names.
CONTRACT = {
    "loadgen_build_info": "gauge",
    "loadgen_watch_requests_total": "counter",
    "loadgen_watch_traces_total": "counter",
    "loadgen_watch_reference_traces_total": "counter",
    "loadgen_watch_pending_checks": "gauge",
    "loadgen_watch_decision_rate": "gauge",
    "loadgen_watch_decision_rate_lower": "gauge",
    "loadgen_watch_decision_rate_upper": "gauge",
    "loadgen_watch_configured_sampling_ratio": "gauge",
    "loadgen_watch_collection_ratio": "gauge",
    "loadgen_watch_collection_ratio_lower": "gauge",
    "loadgen_watch_collection_ratio_upper": "gauge",
    "loadgen_watch_time_to_queryable_seconds": "histogram",
    "loadgen_watch_last_readback_success_timestamp_seconds": "gauge",
    "loadgen_watch_mesh_profile_info": "gauge",
    "loadgen_watch_errors_total": "counter",
    "loadgen_watch_up": "gauge",
}
LABELS = {
    "loadgen_build_info": {"version", "python"},
    "loadgen_watch_requests_total": {"mode", "status"},
    "loadgen_watch_traces_total": {"source", "mode", "outcome"},
    "loadgen_watch_reference_traces_total": {"state"},
    "loadgen_watch_pending_checks": {"source"},
    "loadgen_watch_decision_rate": {"window"},
    "loadgen_watch_decision_rate_lower": {"window"},
    "loadgen_watch_decision_rate_upper": {"window"},
    "loadgen_watch_configured_sampling_ratio": set(),
    "loadgen_watch_collection_ratio": {"source", "window"},
    "loadgen_watch_collection_ratio_lower": {"source", "window"},
    "loadgen_watch_collection_ratio_upper": {"source", "window"},
    "loadgen_watch_time_to_queryable_seconds": {"source"},
    "loadgen_watch_last_readback_success_timestamp_seconds": set(),
    "loadgen_watch_mesh_profile_info": {"tracer", "spans_per_trace", "edge", "run_id_tag", "source"},
    "loadgen_watch_errors_total": {"component"},
    "loadgen_watch_up": {"run_id"},
}


def scrape(snapshot: WatchSnapshot | None) -> dict[str, list[Sample]]:
    """Sample name -> samples, as the parser reads the rendered text."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(render_metrics(snapshot).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def types(snapshot: WatchSnapshot | None) -> dict[str, str]:
    """The names on the # TYPE lines (counters keep their _total there) -> type."""
    out = {}
    for line in render_metrics(snapshot).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            out[name] = kind
    return out


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    found = [s.value for s in samples.get(name, []) if s.labels == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def test_exactly_the_contract_metrics_with_their_types() -> None:
    assert types(sample_snapshot()) == CONTRACT


def test_every_contract_metric_has_a_sample_with_its_labels() -> None:
    samples = scrape(sample_snapshot())
    for name in CONTRACT:
        sample_name = f"{name}_bucket" if CONTRACT[name] == "histogram" else name
        assert samples.get(sample_name), f"{sample_name} has no sample"
        for sample in samples[sample_name]:
            keys = set(sample.labels) - ({"le"} if sample_name.endswith("_bucket") else set())
            assert keys == LABELS[name], (sample_name, sample.labels)
    # Nothing but the contract: no process_/python_ collectors from the global registry.
    assert {n for n in samples if not n.startswith("loadgen_watch_time_to_queryable_seconds")} == {
        n for n in CONTRACT if CONTRACT[n] != "histogram"
    }


def test_counter_values() -> None:
    samples = scrape(sample_snapshot())
    assert value(samples, "loadgen_watch_requests_total", mode="no-headers", status="200") == 900
    assert value(samples, "loadgen_watch_requests_total", mode="no-headers", status="0") == 3
    assert (
        value(samples, "loadgen_watch_traces_total", source="mesh", mode="no-headers", outcome="missing") == 2
    )
    assert (
        value(samples, "loadgen_watch_traces_total", source="reference", mode="reference", outcome="unknown")
        == 4
    )
    ref = {s.labels["state"]: s.value for s in samples["loadgen_watch_reference_traces_total"]}
    # "dropped" was not in the snapshot: a counter of a fixed state set starts at 0.
    assert ref == {"started": 510, "exported": 505, "failed": 5, "dropped": 0}
    errors = {s.labels["component"]: s.value for s in samples["loadgen_watch_errors_total"]}
    assert errors == {"backend": 2, "gateway": 0, "collector": 0, "emitter": 0, "ledger": 0, "internal": 0}
    assert not any(n.endswith("_created") for n in samples)


def test_gauge_values() -> None:
    samples = scrape(sample_snapshot())
    assert value(samples, "loadgen_watch_decision_rate", window="300s") == pytest.approx(0.1)
    assert value(samples, "loadgen_watch_decision_rate_lower", window="3600s") == pytest.approx(0.0921)
    assert value(samples, "loadgen_watch_decision_rate_upper", window="3600s") == pytest.approx(0.1309)
    assert value(samples, "loadgen_watch_configured_sampling_ratio") == pytest.approx(0.1)
    assert value(samples, "loadgen_watch_collection_ratio", source="mesh", window="300s") == pytest.approx(
        8 / 9
    )
    assert value(
        samples, "loadgen_watch_collection_ratio_upper", source="reference", window="3600s"
    ) == pytest.approx(0.99995)
    assert value(samples, "loadgen_watch_pending_checks", source="mesh") == 7
    assert value(samples, "loadgen_watch_last_readback_success_timestamp_seconds") == 1_759_999_996.0
    assert (
        value(
            samples,
            "loadgen_watch_mesh_profile_info",
            tracer="zipkin",
            spans_per_trace="3",
            edge="gateway",
            run_id_tag="yes",
            source="probe",
        )
        == 1
    )
    assert value(samples, "loadgen_watch_up", run_id="watch-20251009-a1b2") == 1
    assert value(samples, "loadgen_build_info", version="9.9.9", python=platform.python_version()) == 1


def test_ratios_without_data_are_absent_never_zero() -> None:
    samples = scrape(sample_snapshot())
    # The reference source concluded nothing countable in the 300 s window: no series at all.
    for suffix in ("", "_lower", "_upper"):
        series = {
            (s.labels["source"], s.labels["window"])
            for s in samples[f"loadgen_watch_collection_ratio{suffix}"]
        }
        assert series == {("mesh", "300s"), ("mesh", "3600s"), ("reference", "3600s")}
    unknown = replace(sample_snapshot(), configured_ratio=None, last_readback_success=None, profile={})
    samples = scrape(unknown)
    assert "loadgen_watch_configured_sampling_ratio" not in samples
    assert "loadgen_watch_last_readback_success_timestamp_seconds" not in samples
    assert "loadgen_watch_mesh_profile_info" not in samples
    # The families are still declared (HELP/TYPE), so dashboards see the name.
    assert "loadgen_watch_configured_sampling_ratio" in types(unknown)


def test_histogram_buckets_are_cumulative_with_inf_count_and_sum() -> None:
    samples = scrape(sample_snapshot())
    buckets = [(s.labels["le"], s.value) for s in samples["loadgen_watch_time_to_queryable_seconds_bucket"]]
    assert [le for le, _ in buckets] == [
        "0.25", "0.5", "1.0", "2.0", "5.0", "10.0", "20.0", "30.0", "60.0", "120.0", "300.0", "600.0", "+Inf",
    ]  # fmt: skip
    # 4 in (0.25, 0.5], 12 in (0.5, 1], 3 in (1, 2], 1 above 600 s.
    assert [v for _, v in buckets] == [0, 4, 16, 19, 19, 19, 19, 19, 19, 19, 19, 19, 20]
    assert value(samples, "loadgen_watch_time_to_queryable_seconds_count", source="mesh") == 20
    assert value(samples, "loadgen_watch_time_to_queryable_seconds_sum", source="mesh") == 640.5
    # No reference histogram in the snapshot: no reference series.
    assert {s.labels["source"] for s in samples["loadgen_watch_time_to_queryable_seconds_bucket"]} == {"mesh"}


def test_malformed_histogram_is_refused() -> None:
    short = replace(sample_snapshot(), ttq={MESH: Histogram(bucket_counts=(1, 2), sum_s=1.0, count=2)})
    with pytest.raises(ValueError, match="bucket counts"):
        render_metrics(short)
    hist = sample_snapshot().ttq[MESH]
    wrong_count = replace(sample_snapshot(), ttq={MESH: replace(hist, count=hist.count + 1)})
    with pytest.raises(ValueError, match=r"\+Inf"):
        render_metrics(wrong_count)


def test_before_the_first_snapshot_only_build_info() -> None:
    samples = scrape(None)
    assert list(samples) == ["loadgen_build_info"]
    assert samples["loadgen_build_info"][0].labels["version"] == __version__


def test_label_values_are_escaped_and_read_back() -> None:
    odd = 'run "1"\\\nx'
    samples = scrape(replace(sample_snapshot(), run_id=odd))
    assert value(samples, "loadgen_watch_up", run_id=odd) == 1


def test_registry_reads_the_latest_snapshot_at_each_scrape() -> None:
    current: list[WatchSnapshot | None] = [None]
    registry = make_registry(lambda: current[0])
    assert b"loadgen_watch_up" not in generate_latest(registry)
    current[0] = sample_snapshot()
    assert b'loadgen_watch_up{run_id="watch-20251009-a1b2"} 1.0' in generate_latest(registry)
    current[0] = replace(sample_snapshot(), run_id="second")
    assert b'loadgen_watch_up{run_id="second"} 1.0' in generate_latest(registry)
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_docs_metric_table_matches_the_contract() -> None:
    """docs/watch.md's table names the same metrics with the same types (no drift)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "watch.md").read_text()
    documented: dict[str, str] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`loadgen_"):
            continue
        names = re.findall(r"`([a-z_]+)`", cells[0])
        kind = cells[1].split()[0]
        first = names[0]
        documented[first] = kind
        for suffix in names[1:]:  # "`x_lower` / `_upper`"
            documented[first.rsplit("_", 1)[0] + suffix] = kind
    assert documented == CONTRACT


def test_readme_metric_table_names_every_contract_metric() -> None:
    """The README's continuous-mode table: every metric of the contract, and no other."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Continuous mode", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`loadgen_"):
            continue
        names = re.findall(r"`([a-z_]+)`", cells[0])
        base = names[0]
        named.update(base + n if n.startswith("_") else n for n in names)
    assert named == set(CONTRACT)
