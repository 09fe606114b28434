"""`--tracer` over the probe, and the run's tracer in every reading of a decision (issue 12).

On an existing mesh the probe learns the tracer family; `--tracer`, where given, overrides it
(`MeshProfile.tracer_given`), with a warning when the probe saw the other one. The tracer chosen
is run.json's `expectation.context.tracer`, and every consumer of a ledger record reads each
request's sampled fact with it: under the OpenTelemetry tracer the forwarded traceparent flag is
the fact and character 14 of x-request-id is not (measured on Envoy 1.40, docs/header-modes.md).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loadgen.analysis.ledgerfold import decision_of
from loadgen.analysis.reconcile import Expectation
from loadgen.backends.base import Fetched, TraceBackend
from loadgen.calibrate.model import CalibrateOptions
from loadgen.calibrate.runner import _PredictionWatch
from loadgen.capacity import LiveMonitor, SafetyBounds, StepWindow, step_metrics
from loadgen.cli import app
from loadgen.ledger import LiveCounts
from loadgen.mesh.expect import ExpectationContext
from loadgen.mesh.profile import (
    MeshProfile,
    expectation_context,
    load_profile,
    profile_facts,
    with_given_tracer,
)
from loadgen.mesh.tracer import TracerFamily, added_context_headers
from loadgen.report.html import render_run_folder
from loadgen.report.tables import ledger_timeseries
from loadgen.run import RunError, RunOptions
from loadgen.run.execute import plan_run
from loadgen.run.target import OpenTarget, learn_profile
from loadgen.runfolder import run_tracer
from tests.unit.test_runfolder import good_run_json, good_summary

ZIPKIN, OTEL = TracerFamily.ZIPKIN, TracerFamily.OPENTELEMETRY
B3_ADDED = ("x-b3-sampled", "x-b3-spanid", "x-b3-traceid")
WARNING = "warning: --tracer opentelemetry overrides the probe, which saw the zipkin tracer"
# Character 14 is `9`: Envoy's "sampled" mark, which the Zipkin tracer reads when no B3 flag is
# forwarded, and which the OpenTelemetry tracer never reads (no traceparent: no fact at all).
XRID_9 = "0000000a-0000-9000-8000-000000000000"


def zipkin_seen(**kw: Any) -> MeshProfile:
    """A probe that saw Envoy's Zipkin tracer add B3 upstream."""
    return MeshProfile(probe_run_id="r-probe", path="/headers", tracer=ZIPKIN, tracer_headers=B3_ADDED, **kw)


def tracer_fact(p: MeshProfile) -> tuple[str, bool, str]:
    fact = next(f for f in profile_facts(p) if f.name == "tracer")
    return fact.value, fact.learned, fact.evidence


# --- precedence (pure) -----------------------------------------------------------------------------


def test_the_added_context_headers_are_the_evidence() -> None:
    sent = {"Host": "h", "X-B3-Sampled": "1"}
    echoed = {
        "host": "h",
        "x-b3-sampled": "1",
        "X-B3-TraceId": "a" * 32,
        "x-b3-spanid": "b" * 16,
        "x-foo": "1",
    }
    assert added_context_headers(sent, echoed) == ("x-b3-spanid", "x-b3-traceid")
    assert added_context_headers({}, {"traceparent": "x", "tracestate": "y"}) == ("traceparent", "tracestate")


def test_a_given_tracer_wins_over_the_probe_with_a_warning_naming_the_headers() -> None:
    given = with_given_tracer(zipkin_seen(), OTEL)
    assert given.tracer is ZIPKIN and given.tracer_given is OTEL  # what was seen is kept
    assert expectation_context(given, 50.0).tracer is OTEL
    (note,) = given.notes
    assert note.startswith(WARNING) and "x-b3-sampled, x-b3-spanid, x-b3-traceid" in note
    assert "traceparent" in note and "drop --tracer" in note
    value, learned, evidence = tracer_fact(given)
    assert (value, learned) == ("opentelemetry", False) and "--tracer" in evidence and "zipkin" in evidence
    assert with_given_tracer(given, OTEL).notes == given.notes  # applied twice: one warning


def test_without_a_given_tracer_the_probe_decides() -> None:
    learned = with_given_tracer(zipkin_seen(), None)
    assert learned.tracer_given is None and learned.notes == ()
    # The base (a declared or embedded tracer) is what the probe overrides.
    assert expectation_context(learned, 50.0, base=ExpectationContext(tracer=OTEL)).tracer is ZIPKIN
    value, is_learned, evidence = tracer_fact(learned)
    assert (value, is_learned) == ("zipkin", True) and "x-b3-traceid" in evidence


def test_a_given_tracer_the_probe_agrees_with_or_could_not_see() -> None:
    agreed = with_given_tracer(zipkin_seen(), ZIPKIN)
    assert agreed.notes == () and tracer_fact(agreed)[:2] == ("zipkin", True)
    blind = with_given_tracer(MeshProfile(probe_run_id="", path="/headers", echo=False), OTEL)
    assert blind.notes == () and expectation_context(blind, 5.0).tracer is OTEL
    assert tracer_fact(blind)[:2] == ("opentelemetry", False)
    nothing = MeshProfile(probe_run_id="", path="/headers")
    assert tracer_fact(nothing)[:2] == ("unknown", False)
    assert expectation_context(nothing, 5.0, base=ExpectationContext(tracer=OTEL)).tracer is OTEL


def test_the_profile_file_keeps_what_was_seen_and_what_was_given(tmp_path: Path) -> None:
    path = tmp_path / "mesh-profile.json"
    path.write_text(json.dumps(with_given_tracer(zipkin_seen(), OTEL).to_dict()))
    doc = json.loads(path.read_text())
    assert (doc["tracer"], doc["tracer_given"], doc["tracer_headers"]) == (
        "zipkin",
        "opentelemetry",
        list(B3_ADDED),
    )
    back = load_profile(path)
    assert (back.tracer, back.tracer_given, back.tracer_headers) == (ZIPKIN, OTEL, B3_ADDED)


# --- plumbing: the run's options reach the probe, the profile and the expectation context -------


class StubBackend(TraceBackend):
    name = "stub"
    url = "stub://"

    def __init__(self) -> None:
        self.route_checks = 0

    def check(self) -> None:
        pass

    def check_trace_route(self) -> None:
        self.route_checks += 1

    def fetch_many(
        self, trace_ids: Sequence[str], on_progress: Callable[..., None] | None = None
    ) -> dict[str, Fetched]:
        return {}

    def search(self, **_: Any) -> list[list[dict[str, Any]]]:
        return []

    def close(self) -> None:
        pass


@pytest.fixture
def probe_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The probe replaced by one that saw the Zipkin tracer (and one trace): its calls' kwargs."""
    calls: list[dict[str, Any]] = []

    def fake_probe(*_args: Any, **kwargs: Any) -> MeshProfile:
        calls.append(kwargs)
        return zipkin_seen(traces_sampled=1, traces_found=1)

    monkeypatch.setattr("loadgen.run.target.probe_mesh", fake_probe)
    return calls


def learn(opts: RunOptions, backend: TraceBackend | None = None) -> MeshProfile:
    return learn_profile(opts, "http://gw", "h", backend or StubBackend(), "r", lambda _: None)


def test_learn_profile_hands_the_given_tracer_to_the_probe(probe_calls: list[dict[str, Any]]) -> None:
    given = learn(RunOptions(run_id="r", tracer=OTEL))
    assert probe_calls[-1]["tracer"] is OTEL
    assert given.tracer_given is OTEL and given.notes[0].startswith(WARNING)
    assert learn(RunOptions(run_id="r")).tracer_given is None and probe_calls[-1]["tracer"] is None


def test_a_saved_profile_and_no_probe_take_this_runs_tracer(tmp_path: Path) -> None:
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(with_given_tracer(zipkin_seen(), OTEL).to_dict()))
    backend = StubBackend()
    reused = learn(RunOptions(run_id="r", profile_path=saved), backend)
    assert reused.tracer_given is None and expectation_context(reused, 5.0).tracer is ZIPKIN
    assert learn(RunOptions(run_id="r", profile_path=saved, tracer=OTEL), backend).tracer_given is OTEL
    flags = learn(RunOptions(run_id="r", probe=False, tracer=OTEL), backend)
    assert flags.source == "flags" and expectation_context(flags, 5.0).tracer is OTEL
    assert backend.route_checks == 3


def opened(kind: str) -> OpenTarget:
    return OpenTarget(kind, "http://gw", "h", "", StubBackend(), "zipkin:stub://", 1.0, None, 20.0)


def test_the_plan_reads_decisions_with_the_given_tracer(
    probe_calls: list[dict[str, Any]], tmp_path: Path
) -> None:
    plan = plan_run(RunOptions(run_id="r", tracer=OTEL), opened("external"), "r", tmp_path, lambda _: None)
    assert plan.expect.mode_context().tracer is OTEL  # the load (LOADGEN_TRACER), fold, live counts
    assert any(n.startswith(WARNING) for n in plan.notes)
    saved = json.loads((tmp_path / "mesh-profile.json").read_text())
    assert (saved["tracer"], saved["tracer_given"]) == ("zipkin", "opentelemetry")
    fact = next(f for f in saved["facts"] if f["name"] == "tracer")
    assert fact["value"] == "opentelemetry" and fact["learned"] is False
    learned = plan_run(RunOptions(run_id="r2"), opened("external"), "r2", tmp_path, lambda _: None)
    assert learned.expect.mode_context().tracer is ZIPKIN and not any("--tracer" in n for n in learned.notes)


def test_an_embedded_mesh_the_probe_cannot_read_keeps_the_tracer_it_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blind = MeshProfile(probe_run_id="r-probe", path="/headers", echo=False, answered=3)
    monkeypatch.setattr("loadgen.run.target.probe_mesh", lambda *_a, **_k: blind)
    opts = RunOptions(run_id="r")
    opts.tracing = replace(opts.tracing, tracer=OTEL)  # built by --tracer... or by a test's TracingConfig
    plan = plan_run(opts, opened("embedded"), "r", tmp_path, lambda _: None)
    assert plan.expect.mode_context().tracer is OTEL


@pytest.mark.parametrize("command", ["run", "capacity", "calibrate"])
def test_every_command_carries_the_given_tracer(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def stop(opts: Any, _status: Any) -> Any:
        seen.append(opts)
        raise RunError("stopped by the test")

    monkeypatch.setattr("loadgen.cli.run.execute_run", stop)
    monkeypatch.setattr("loadgen.cli.capacity.run_capacity", stop)
    monkeypatch.setattr("loadgen.cli.calibrate.run_calibration", stop)
    target = ["--gateway", "http://127.0.0.1:9", "--backend", "zipkin:http://127.0.0.1:9"]
    extra = ["--expect", "10"] if command == "calibrate" else []
    for tracer, want in ((["--tracer", "opentelemetry"], OTEL), ([], None)):
        result = CliRunner().invoke(app, [command, *target, *extra, *tracer])
        assert result.exit_code == 2 and "stopped by the test" in result.output, result.output
        opts = seen[-1]
        run_opts = opts.run if command == "capacity" else opts
        assert isinstance(run_opts, CalibrateOptions if command == "calibrate" else RunOptions)
        assert run_opts.tracer is want


# --- every consumer reads a decision with the run's tracer ---------------------------------------

RECORD = {"ts": 100.0, "mode": "none", "status": 200, "latency_ms": 1.0, "up_trace": "ab" * 16,
          "up_flag": None, "up_xrid": XRID_9}  # fmt: skip


def test_the_two_readings_of_the_record_differ() -> None:
    assert decision_of(200, None, XRID_9, ZIPKIN) is True
    assert decision_of(200, None, XRID_9, OTEL) is None  # no traceparent forwarded: no fact


def context(tracer: TracerFamily) -> Expectation:
    return Expectation(
        2, ("gw", "app"), 100.0, context=ExpectationContext(sampling_percent=100.0, tracer=tracer)
    )


def write_run(run_dir: Path, tracer: TracerFamily) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = good_run_json()
    doc["expectation"]["context"]["tracer"] = tracer.value
    (run_dir / "run.json").write_text(json.dumps(doc))
    (run_dir / "ledger.jsonl").write_text(json.dumps(RECORD) + "\n")
    return run_dir


def test_run_tracer_reads_run_json(tmp_path: Path) -> None:
    assert run_tracer(write_run(tmp_path / "otel", OTEL)) is OTEL
    assert run_tracer(write_run(tmp_path / "zipkin", ZIPKIN)) is ZIPKIN
    older = good_run_json()  # a run.json from before the tracer: zipkin
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps(older))
    assert run_tracer(tmp_path / "old") is ZIPKIN
    assert run_tracer(tmp_path / "none") is None


@pytest.mark.parametrize(("tracer", "decided"), [(ZIPKIN, 1), (OTEL, 0)])
def test_report_time_series(tracer: TracerFamily, decided: int) -> None:
    (window,) = ledger_timeseries([RECORD], tracer=tracer)["windows"]
    assert window["sampled_fraction"]["n"] == decided and window["decision"]["n"] == decided


@pytest.mark.parametrize(("tracer", "decided"), [(ZIPKIN, 1), (OTEL, 0)])
def test_calibration_watch(tracer: TracerFamily, decided: int, tmp_path: Path) -> None:
    watch = _PredictionWatch(percent=100.0, enabled=True)
    watch.follow(write_run(tmp_path, tracer) / "ledger.jsonl")
    assert watch.on_tick(LiveCounts(), 1.0) is None
    assert watch.decisions == decided and watch.mismatches == 0


@pytest.mark.parametrize(("tracer", "decided"), [(ZIPKIN, 1), (OTEL, 0)])
def test_capacity_step_metrics(tracer: TracerFamily, decided: int) -> None:
    step = StepWindow(0, "1 user", "users", 1, 10.0, 99.0, 99.0, 110.0, True)
    (m,) = step_metrics([RECORD], {}, [step], context(tracer))
    assert m.decision.n == decided and m.collection_unknown == decided  # decided sampled, not fetched


@pytest.mark.parametrize(("tracer", "pending"), [(ZIPKIN, 1), (OTEL, 0)])
def test_capacity_live_check(tracer: TracerFamily, pending: int, tmp_path: Path) -> None:
    write_run(tmp_path, tracer)
    safety = SafetyBounds(max_error_rate=None, min_collection=0.5, check_every_s=1)
    mon = LiveMonitor(
        tmp_path, safety, clock=lambda: 100.5, backend=StubBackend(), expect=context(tracer), settle_s=60.0
    )
    assert mon(LiveCounts(), 1.0) is None and mon.notes == []
    assert len(mon._pending) == pending  # sampled requests waiting to be checked


@pytest.mark.parametrize(("tracer", "decided"), [(ZIPKIN, "1"), (OTEL, "0")])
def test_report_folder_reads_the_runs_tracer(tracer: TracerFamily, decided: str, tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, tracer)
    (run_dir / "summary.json").write_text(json.dumps(good_summary()))
    render_run_folder(run_dir)
    (row,) = csv.DictReader(io.StringIO((run_dir / "timeseries.csv").read_text()))
    assert row["sampled_n"] == row["decision_n"] == decided
