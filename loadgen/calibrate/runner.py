"""The calibration as a job: plan, start the embedded mesh or target an existing one, take the
looks run by run (aborting a run at the first decision that contradicts Envoy's rule), and write
calibration.json and calibration.md."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadgen.analysis.planner import (
    SamplePlan,
    SequentialPlan,
    default_precision,
    envoy_threshold,
    exact_prediction_requests,
    plan_sample_size,
    sequential_plan,
)
from loadgen.analysis.reconcile import upstream_decision
from loadgen.analysis.stats import Verdict
from loadgen.calibrate.document import calibration_document, points, render_calibration_markdown
from loadgen.calibrate.model import (
    EXIT_CODES,
    MAX_RUNS_PER_LOOK,
    CalibrateOptions,
    CalibrationError,
    CalibrationResult,
    RunFn,
    Status,
    Totals,
    calibration_mix,
    crafted_env,
    run_time_cap_s,
)
from loadgen.calibrate.rules import evaluate_look, final_verdict
from loadgen.exitcodes import EXIT_COMPONENT_FAILED, EXIT_INTERRUPTED
from loadgen.ledger import LedgerTail, LiveCounts
from loadgen.mesh.expect import Decision
from loadgen.mesh.modes import mode_spec
from loadgen.mesh.profile import PROFILE_FILE
from loadgen.mesh.rule import envoy_random_sampled
from loadgen.mesh.tracer import TracerFamily
from loadgen.redact import redact_data, redact_url
from loadgen.run import RunOptions, RunResult, execute_run
from loadgen.runfiles import write_json
from loadgen.runfolder import run_tracer
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig
from loadgen.stack.procs import StackError

__all__ = ["calibrate"]


class _PredictionWatch:
    """Folds the ledgers in request order: decision-free decisions, checks against Envoy's rule,
    and the position of the first mismatch. Polled from `RunOptions.on_tick` to abort a run at
    the first mismatch (conclusive whenever it happens), and once more after each run."""

    def __init__(self, percent: float, enabled: bool) -> None:
        self.percent = percent
        self.enabled = enabled
        self.decisions = 0
        self.checked = 0
        self.mismatches = 0
        self.first_mismatch_at: int | None = None  # 1-based position among decision-free requests
        self.aborted = False
        self._tail: LedgerTail | None = None
        self._ledger: Path | None = None
        self._tracer = TracerFamily.ZIPKIN  # the run's (run.json): where each sampled fact is read

    def _fold(self, rec: dict[str, Any]) -> bool | None:
        decided = upstream_decision(rec, self._tracer)
        spec = mode_spec(rec.get("mode"))
        if decided is None or spec is None or spec.decision is not Decision.PROXY:
            return decided
        self.decisions += 1
        xrid = rec.get("up_xrid")
        want = envoy_random_sampled(str(xrid), self.percent) if xrid else None
        if want is not None:
            self.checked += 1
            if want != decided:
                self.mismatches += 1
                if self.first_mismatch_at is None:
                    self.first_mismatch_at = self.decisions
        return decided

    def follow(self, ledger: Path) -> None:
        """Fold this run's ledger from its first poll, read as the run's tracer (run.json:
        --tracer, else the probe's)."""
        self._ledger, self._tail = ledger, None

    def poll(self) -> None:
        if self._tail is None and self._ledger is not None:
            # The first poll is a tick of the load, which starts after the run wrote run.json.
            self._tracer = run_tracer(self._ledger.parent) or TracerFamily.ZIPKIN
            self._tail = LedgerTail(self._ledger, self._fold)
        if self._tail is not None:
            self._tail.poll()

    def on_tick(self, _live: LiveCounts, _elapsed_s: float) -> str | None:
        self.poll()
        if self.enabled and self.mismatches:
            self.aborted = True
            return (
                f"calibration: decision #{self.first_mismatch_at} differs from Envoy's rule at "
                f"{self.percent:g} % (exact prediction)"
            )
        return None


def _prefixed(status: Status, prefix: str) -> Status:
    def say(msg: str) -> None:
        status(prefix + msg)

    return say


@dataclass(frozen=True)
class _Planned:
    """What is fixed before any data is seen: the mix, Envoy's threshold, the sample and the looks."""

    mix: str
    threshold: int
    p: float  # the rate Envoy's rule gives: threshold / 10000
    precision: float
    plan: SamplePlan
    seq: SequentialPlan
    exact_needed: int


def _plan(opts: CalibrateOptions) -> _Planned:
    if not 0.0 <= opts.expected_percent <= 100.0:
        raise CalibrationError(f"the expected percentage must be in [0, 100], got {opts.expected_percent}")
    mix = calibration_mix(opts.crafted_ids)
    threshold = envoy_threshold(opts.expected_percent)
    p = threshold / 10000.0
    precision = opts.precision if opts.precision is not None else default_precision(p)
    try:
        plan = plan_sample_size(p, precision, opts.confidence)
        n_max = opts.max_requests or plan.n
        seq = sequential_plan(
            plan.n, precision, opts.confidence,
            looks=opts.looks if opts.sequential else 1, alpha=opts.alpha, rho=opts.rho, n_max=n_max,
        )  # fmt: skip
        exact_needed = exact_prediction_requests(precision, opts.confidence)
    except ValueError as exc:
        raise CalibrationError(str(exc)) from exc
    return _Planned(mix, threshold, p, precision, plan, seq, exact_needed)


def _new_calibration_dir(cal_dir: Path) -> Path:
    if cal_dir.exists() and any(cal_dir.iterdir()):
        raise CalibrationError(
            f"calibration folder {cal_dir} already exists and is not empty; choose another id"
        )
    cal_dir.mkdir(parents=True, exist_ok=True)
    return cal_dir


def _common_options(opts: CalibrateOptions, cal_dir: Path, mix: str, watch: _PredictionWatch) -> RunOptions:
    """The options every run of the calibration shares (the target is filled in by `_connect`)."""
    return RunOptions(
        output_dir=cal_dir,
        users=opts.users,
        spawn_rate=opts.spawn_rate,
        rate=opts.rate,
        mix=mix,
        expect_percent=opts.expected_percent,
        reference_rate=0.0,  # calibration is about decisions, not collection
        probe=opts.probe,
        profile_path=opts.profile_path,
        tracer=opts.tracer,
        max_wait_s=opts.max_wait_s,
        quiet_s=opts.quiet_s,
        on_tick=watch.on_tick,
        extra_env=crafted_env(opts.expected_percent) if opts.crafted_ids else {},
    )


@dataclass
class _Session:
    """The state of one calibration while its looks are taken."""

    opts: CalibrateOptions
    cal_dir: Path
    status: Status
    run: RunFn
    watch: _PredictionWatch
    notes: list[str]
    common: RunOptions | None = None
    totals: Totals = field(default_factory=Totals)
    looks: list[dict[str, Any]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    interrupted: str = ""
    component_failed: bool = False  # a look's run ended on a failed Locust, Envoy or disk, not Ctrl-C
    mesh: EmbeddedMesh | None = None
    stop: tuple[Verdict, str, str] | None = None  # verdict, basis, reason
    target: dict[str, Any] = field(default_factory=dict)

    def connect(self, common: RunOptions) -> RunOptions:
        """Point the runs at the existing mesh, or start the embedded mesh (stopped by the caller)."""
        opts = self.opts
        if opts.gateway:
            self.target = {"kind": "external", "gateway": redact_url(opts.gateway), "host": opts.host}
            return replace(
                common, gateway=opts.gateway, host=opts.host, collector=opts.collector, backend=opts.backend,
                backend_flags=dict(opts.backend_flags), search_service=opts.search_service,
                expected_spans=opts.expected_spans, tracing=opts.tracing or common.tracing,
            )  # fmt: skip
        tracing = opts.tracing or TracingConfig(sampling_percent=opts.expected_percent)
        self.status(f"starting the embedded mesh (sampling {tracing.sampling_percent:g} %)")
        mesh = self.mesh = EmbeddedMesh(self.cal_dir / "mesh", MeshConfig(tracing=tracing))
        try:
            mesh.start()
        except StackError as exc:
            raise CalibrationError(f"the embedded mesh did not start: {exc}") from exc
        self.target = {
            "kind": "embedded", "gateway": mesh.gateway_url, "host": mesh.host_header,
            "sampling_percent": tracing.sampling_percent,
        }  # fmt: skip
        # Every run targets the one mesh like an existing one (no start-up per look).
        return replace(
            common, gateway=mesh.gateway_url, host=mesh.host_header, collector=mesh.collector_url,
            backend=f"zipkin:{mesh.collector_url}", tracing=tracing,
            quiet_s=opts.quiet_s if opts.quiet_s is not None else tracing.flush_interval_ms / 1000.0 + 1.0,
        )  # fmt: skip

    def take_looks(self, planned: _Planned) -> None:
        """Each look in turn until a stopping rule (or an interruption) ends the calibration."""
        seq, totals = planned.seq, self.totals
        for index, look_n in enumerate(seq.looks):
            runs_before = len(self.runs)
            attempts = self._reach_look(index, look_n, len(seq.looks))
            if self.interrupted and not self.watch.aborted:
                break
            if totals.n < look_n and not self.watch.aborted:
                self.notes.append(
                    f"look {index + 1}: {totals.n:,} of {look_n:,} planned decisions after {attempts} run(s) "
                    f"({totals.errors:,} errors so far); the look was taken there"
                )
            look = evaluate_look(index, look_n, seq, planned.p, totals, self.opts, planned.exact_needed)
            look["runs"] = self.runs[runs_before:]
            self.looks.append(look)
            self.status(
                f"look {index + 1}/{len(seq.looks)}: {totals.k} sampled of {totals.n} "
                f"({totals.k / max(totals.n, 1):.3%}), {totals.mismatches} mismatch(es) in "
                f"{totals.checked} checked -> {look['decision']}"
            )
            self.stop = look.pop("_stop")
            if self.stop is not None:
                break

    def _reach_look(self, index: int, look_n: int, n_looks: int) -> int:
        """Runs until the look's cumulative decision count (at most MAX_RUNS_PER_LOOK); returns how
        many were made."""
        attempt = 0
        while self.totals.n < look_n and attempt < MAX_RUNS_PER_LOOK and not self.interrupted:
            run_id = f"look{index + 1:02d}" + (f"-{attempt + 1}" if attempt else "")
            result = self._run_chunk(run_id, look_n - self.totals.n, f"look {index + 1}/{n_looks}: ")
            attempt += 1
            before = self.totals.n
            self.totals.add(result.summary)
            if result.summary.get("status") == "partial" and not self.watch.aborted:
                self.interrupted = str(result.summary.get("status_reason") or "interrupted")
                self.component_failed = self.component_failed or bool(result.summary.get("component_failure"))
            if self.watch.aborted:
                break
            if self.totals.n == before and not self.interrupted:
                raise _no_decision_error(run_id, result)
        return attempt

    def _run_chunk(self, run_id: str, needed: int, prefix: str) -> RunResult:
        """One ordinary run of `needed` decision-free requests, followed by the prediction watch."""
        common = self.common
        assert common is not None
        opts = self.opts
        self.watch.follow(self.cal_dir / run_id / "ledger.jsonl")
        result = self.run(
            replace(
                common,
                run_id=run_id,
                duration_s=run_time_cap_s(needed, opts.rate),
                # A new seed per run: the same seed would repeat the injected trace ids.
                seed=None if opts.seed is None else opts.seed + len(self.runs),
                max_requests=needed,
            ),
            _prefixed(self.status, prefix),
        )
        self.watch.poll()  # the rest of the ledger, closed now
        self.runs.append(run_id)
        learned = result.run_dir / PROFILE_FILE
        if common.profile_path is None and common.probe and learned.exists():
            # One mesh, one probe: later looks reuse what the first run learned.
            self.common = replace(common, profile_path=learned)
        return result


def _no_decision_error(run_id: str, result: RunResult) -> CalibrationError:
    return CalibrationError(
        f"run {run_id} saw no sampling decision in {result.summary['requests']['total']} "
        f"request(s) ({result.summary['requests']['errors']} errors): the upstream must echo "
        "request headers (httpbin /headers) and answer 200; see "
        f"{result.run_dir / 'report.md'}"
    )


def calibrate(opts: CalibrateOptions, status: Status, *, run: RunFn = execute_run) -> CalibrationResult:
    """Plan, send decision-free requests look by look, stop by the rules, write the calibration
    folder. Raises CalibrationError / RunError for what cannot be done (exit code 2)."""
    planned = _plan(opts)
    cal_id = opts.resolved_id()
    cal_dir = _new_calibration_dir(opts.output_dir / cal_id)
    notes: list[str] = []
    if abs(planned.p - opts.expected_percent / 100.0) > 1e-12:
        notes.append(
            f"Envoy truncates {opts.expected_percent:g} % to {planned.threshold}/10000 = {planned.p:.4%}: "
            "that is the rate the proxy should show, and the one tested"
        )
    plan = planned.plan
    status(
        f"plan: {plan.n:,} decision-free requests for {points(planned.precision)} at {opts.confidence:.0%} "
        f"(Wald {plan.wald:,}, Wilson {plan.wilson:,}); {len(planned.seq.looks)} look(s)"
    )
    watch = _PredictionWatch(opts.expected_percent, enabled=opts.use_prediction and opts.sequential)
    session = _Session(opts, cal_dir, status, run, watch, notes)
    try:
        session.common = session.connect(_common_options(opts, cal_dir, planned.mix, watch))
        session.take_looks(planned)
    except KeyboardInterrupt:
        session.interrupted = "interrupted"
    finally:
        if session.mesh is not None:
            status("stopping the embedded mesh")
            session.mesh.stop()
    return _write_result(session, planned, cal_id)


def _write_result(s: _Session, planned: _Planned, cal_id: str) -> CalibrationResult:
    """The verdict, calibration.json and calibration.md, and the exit code."""
    opts, totals = s.opts, s.totals
    verdict, basis, reason = final_verdict(
        s.stop, totals, s.interrupted, opts, planned.exact_needed, planned.plan.n
    )
    doc = calibration_document(
        cal_id=cal_id, opts=opts, target=s.target, plan=planned.plan, seq=planned.seq,
        precision=planned.precision, threshold=planned.threshold, exact_needed=planned.exact_needed,
        totals=totals, first_mismatch_at=s.watch.first_mismatch_at, looks=s.looks, runs=s.runs,
        verdict=verdict, basis=basis, reason=reason, interrupted=s.interrupted, notes=s.notes,
    )  # fmt: skip
    if s.component_failed:
        exit_code = EXIT_COMPONENT_FAILED
    else:
        exit_code = EXIT_INTERRUPTED if s.interrupted else EXIT_CODES[verdict]
    doc["exit_code"] = exit_code
    write_json(s.cal_dir / "calibration.json", doc)
    (s.cal_dir / "calibration.md").write_text(render_calibration_markdown(redact_data(doc)))
    return CalibrationResult(doc, s.cal_dir, exit_code)
