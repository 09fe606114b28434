"""`loadgen calibrate`: measure a gateway's effective sampling rate to a planned precision.

    plan n (loadgen.analysis.planner) -> [embedded mesh up] -> looks: run chunks of decision-free requests
      until the look's decision count, then apply the stopping rules -> estimate, verdict
      -> calibration.json, calibration.md -> [mesh down]

Only decision-free requests are sent (modes where Envoy decides: `none`, `b3_multi_no_flag`,
`b3_single_no_flag`; or, with `crafted_ids`, `xrid_crafted`: client x-request-ids crafted for the
expected percentage, see `crafted_env`), so every request is one Bernoulli trial of the proxy's
sampling.

Two kinds of evidence, as in `loadgen run`:

- **Exact prediction.** Envoy's decision is a function of the x-request-id the upstream echoes,
  so each decision is checked against the rule at the expected percentage. One mismatch proves
  the proxy applies something else (fail, at any moment: a running chunk is aborted through
  `RunOptions.on_tick`). Zero mismatches in m >= `exact_prediction_requests(E, C)` checks, with
  every decision checked, bound |effective rate - rule rate| < E with confidence C (pass).
- **Statistics** (no echo of the x-request-id, or `use_prediction=False`): the group-sequential
  rule of `loadgen.analysis.planner.sequential_decision` at pre-planned looks; the exact binomial test
  rejects the expected rate at a spent alpha (fail), or the planned precision is reached with the
  expected rate inside the Clopper-Pearson interval (pass), else inconclusive.

Each look is reached by one or more ordinary runs (`loadgen.run.execute_run`), each with its own
run folder under the calibration folder (`<output>/<calibration-id>/look01/`, ...), so every run
keeps its ledger, summary and report. Looks are fixed before any data is seen (cumulative decision
counts), which is what keeps the sequential test valid; a run is topped up when errors leave it
short of the look. With `sequential=False` there is one look: one run of the planned size. On the
embedded mesh the mesh is started once and every run targets it like an existing mesh.

Exit codes (constants below): 0 pass, 1 fail, 3 inconclusive, 2 the calibration could not be done,
130 interrupted.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadgen.analysis.planner import (
    DEFAULT_CONFIDENCE,
    DEFAULT_LOOKS,
    SamplePlan,
    SequentialDecision,
    SequentialPlan,
    default_precision,
    envoy_threshold,
    exact_prediction_requests,
    half_width,
    max_disagreement,
    plan_sample_size,
    sequential_decision,
    sequential_plan,
)
from loadgen.analysis.reconcile import upstream_decision
from loadgen.analysis.stats import (
    FAIL_ALPHA,
    Verdict,
    binom_test_two_sided,
    clopper_pearson_interval,
    wilson_interval,
)
from loadgen.exitcodes import (
    EXIT_COMPONENT_FAILED,
    EXIT_ERROR,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_VERDICT_FAILED,
)
from loadgen.ledger import LedgerTail, LiveCounts
from loadgen.mesh.profile import PROFILE_FILE
from loadgen.mesh.propagation import Decision, HeaderMode, envoy_random_sampled, format_mix, mode_spec
from loadgen.redact import redact_data, redact_url
from loadgen.run import RunError, RunOptions, RunResult, execute_run
from loadgen.runfiles import write_json
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import GATEWAY_HOST, EmbeddedMesh, MeshConfig
from loadgen.stack.procs import StackError

EXIT_PASS = EXIT_OK
EXIT_FAIL = EXIT_VERDICT_FAILED

EXIT_CODES = {Verdict.PASS: EXIT_PASS, Verdict.FAIL: EXIT_FAIL, Verdict.INCONCLUSIVE: EXIT_INCONCLUSIVE}

# The decision-free modes: Envoy decides each of these by its x-request-id rule.
DECISION_FREE_MODES = (HeaderMode.NONE, HeaderMode.B3_MULTI_NO_FLAG, HeaderMode.B3_SINGLE_NO_FLAG)
# A run's time cap assumes at least this many requests per second (the request count stops it).
CONSERVATIVE_RATE = 20.0
CAP_SLACK_S = 60.0
# Runs per look before giving up on reaching its decision count (errors, a stalled gateway).
MAX_RUNS_PER_LOOK = 3

Status = Callable[[str], None]
RunFn = Callable[[RunOptions, Status], RunResult]


class CalibrationError(RuntimeError):
    """The calibration cannot be done (bad option, no visible decisions); the message says why."""


@dataclass
class CalibrateOptions:
    expected_percent: float  # the configured sampling percentage (Telemetry randomSamplingPercentage)
    precision: float | None = None  # ±fraction (0.001 = ±0.1 points); None: planner.default_precision
    confidence: float = DEFAULT_CONFIDENCE
    max_requests: int = 0  # cap on decision-free requests (0 = the plan's n)
    sequential: bool = True  # looks with early stopping; False: one run of the planned size
    looks: int = DEFAULT_LOOKS
    alpha: float = FAIL_ALPHA  # overall false-fail probability of the statistical rule
    rho: float = 1.0  # alpha spending alpha * t^rho (1: Pocock-like, 3: O'Brien-Fleming-like)
    use_prediction: bool = True  # let Envoy's x-request-id rule decide when every decision is checked
    crafted_ids: bool = False  # use crafted client x-request-id modes (when this version has them)
    calibration_id: str = ""
    output_dir: Path = Path("reports")
    users: int = 10
    spawn_rate: float = 10.0
    rate: float = 0.0  # target req/s over all users (0 = as fast as the users go)
    seed: int | None = None
    # an existing mesh (the embedded mesh when gateway is empty)
    gateway: str = ""
    host: str = GATEWAY_HOST
    collector: str = ""
    backend: str = ""
    backend_flags: dict[str, Any] = field(default_factory=dict)
    search_service: str | None = None
    expected_spans: int | None = None
    probe: bool = True  # learn the mesh once (the first run), then reuse its mesh-profile.json
    profile_path: Path | None = None
    quiet_s: float | None = None
    max_wait_s: float = 60.0
    # the embedded mesh: None = Istio-like defaults sampling at expected_percent
    tracing: TracingConfig | None = None

    def resolved_id(self) -> str:
        if not self.calibration_id:
            self.calibration_id = time.strftime("cal-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        return self.calibration_id


@dataclass
class CalibrationResult:
    calibration: dict[str, Any]  # what calibration.json holds
    cal_dir: Path
    exit_code: int

    @property
    def verdict(self) -> str:
        return str(self.calibration["verdict"])


def crafted_modes() -> list[HeaderMode]:
    """Header modes that send a client x-request-id crafted for a sampling percentage."""
    return [m for m in HeaderMode if ("XRID" in m.name or "REQUEST_ID" in m.name) and "CRAFTED" in m.name]


def calibration_mix(crafted_ids: bool = False) -> str:
    """The mix a calibration sends: decision-free modes only, in equal parts; with `crafted_ids`
    the crafted client x-request-id mode alone."""
    if crafted_ids:
        modes = crafted_modes()
        if not modes:
            raise CalibrationError(
                "this version of loadgen has no crafted x-request-id header mode; calibrate without --crafted-ids"
            )
    else:
        modes = list(DECISION_FREE_MODES)
    return format_mix({m: 1 for m in modes})


def crafted_env(expected_percent: float) -> dict[str, str]:
    """Generator settings for crafted x-request-ids: crafted for the expected percentage, and
    meant to be sampled in the share Envoy's rule gives (T / 10000). Then the ids' residues mod
    10000 are uniform, exactly like random ids: a correct proxy still samples a Bernoulli(T/10000)
    share, so the statistics stay valid, and when the gateway keeps the client's id every
    decision is predicted before the request is sent (prediction source "crafted"). (A
    50 % share would catch thresholds below the expected one faster, but the sampled fraction
    would then be the client's choice, not a measurement of the proxy.)"""
    return {
        "LOADGEN_XRID_PERCENT": repr(float(expected_percent)),
        "LOADGEN_XRID_SAMPLED_FRACTION": repr(envoy_threshold(expected_percent) / 10000.0),
    }


def run_time_cap_s(requests: int, rate: float) -> float:
    """A generous duration for a run that the request count is meant to stop: assume half the
    target rate, or CONSERVATIVE_RATE req/s without one, plus a minute."""
    per_s = 0.5 * rate if rate > 0 else CONSERVATIVE_RATE
    return math.ceil(requests / per_s + CAP_SLACK_S)


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

    def _fold(self, rec: dict[str, Any]) -> bool | None:
        decided = upstream_decision(rec)
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
        self._tail = LedgerTail(ledger, self._fold)

    def poll(self) -> None:
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


@dataclass
class _Totals:
    requests: int = 0
    errors: int = 0
    k: int = 0
    n: int = 0
    checked: int = 0
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=lambda: {"crafted": 0, "echoed": 0})

    def add(self, summary: dict[str, Any]) -> None:
        self.requests += int(summary["requests"]["total"])
        self.errors += int(summary["requests"]["errors"])
        decision = summary["sampling"]["decision"]
        self.k += int(decision["k"])
        self.n += int(decision["n"])
        pred = summary["sampling"].get("prediction") or {}
        self.checked += int(pred.get("checked", 0))
        self.mismatches += int(pred.get("mismatches", 0))
        self.examples += [str(e) for e in pred.get("examples", [])][: max(0, 5 - len(self.examples))]
        # Where predictions came from: the id we sent (kept by the gateway) or the gateway's own.
        for source, count in (pred.get("by_source") or {}).items():
            self.sources[str(source)] = self.sources.get(str(source), 0) + int(count)


def calibrate(opts: CalibrateOptions, status: Status, *, run: RunFn = execute_run) -> CalibrationResult:
    """Plan, send decision-free requests look by look, stop by the rules, write the calibration
    folder. Raises CalibrationError / RunError for what cannot be done (exit code 2)."""
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
    cal_id = opts.resolved_id()
    cal_dir = opts.output_dir / cal_id
    if cal_dir.exists() and any(cal_dir.iterdir()):
        raise CalibrationError(
            f"calibration folder {cal_dir} already exists and is not empty; choose another id"
        )
    cal_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if abs(p - opts.expected_percent / 100.0) > 1e-12:
        notes.append(
            f"Envoy truncates {opts.expected_percent:g} % to {threshold}/10000 = {p:.4%}: "
            "that is the rate the proxy should show, and the one tested"
        )
    status(
        f"plan: {plan.n:,} decision-free requests for {_points(precision)} at {opts.confidence:.0%} "
        f"(Wald {plan.wald:,}, Wilson {plan.wilson:,}); {len(seq.looks)} look(s)"
    )

    watch = _PredictionWatch(opts.expected_percent, enabled=opts.use_prediction and opts.sequential)
    totals = _Totals()
    looks: list[dict[str, Any]] = []
    runs: list[str] = []
    interrupted = ""
    component_failed = False  # a look's run ended on a failed Locust, Envoy or disk, not Ctrl-C
    mesh: EmbeddedMesh | None = None
    stop: tuple[Verdict, str, str] | None = None  # verdict, basis, reason
    target: dict[str, Any] = {}
    try:
        common = RunOptions(
            output_dir=cal_dir,
            users=opts.users,
            spawn_rate=opts.spawn_rate,
            rate=opts.rate,
            mix=mix,
            expect_percent=opts.expected_percent,
            reference_rate=0.0,  # calibration is about decisions, not collection
            probe=opts.probe,
            profile_path=opts.profile_path,
            max_wait_s=opts.max_wait_s,
            quiet_s=opts.quiet_s,
            on_tick=watch.on_tick,
            extra_env=crafted_env(opts.expected_percent) if opts.crafted_ids else {},
        )
        if opts.gateway:
            target = {"kind": "external", "gateway": redact_url(opts.gateway), "host": opts.host}
            common = replace(
                common, gateway=opts.gateway, host=opts.host, collector=opts.collector, backend=opts.backend,
                backend_flags=dict(opts.backend_flags), search_service=opts.search_service,
                expected_spans=opts.expected_spans, tracing=opts.tracing or common.tracing,
            )  # fmt: skip
        else:
            tracing = opts.tracing or TracingConfig(sampling_percent=opts.expected_percent)
            status(f"starting the embedded mesh (sampling {tracing.sampling_percent:g} %)")
            mesh = EmbeddedMesh(cal_dir / "mesh", MeshConfig(tracing=tracing))
            try:
                mesh.start()
            except StackError as exc:
                raise CalibrationError(f"the embedded mesh did not start: {exc}") from exc
            target = {
                "kind": "embedded", "gateway": mesh.gateway_url, "host": mesh.host_header,
                "sampling_percent": tracing.sampling_percent,
            }  # fmt: skip
            # Every run targets the one mesh like an existing one (no start-up per look).
            common = replace(
                common, gateway=mesh.gateway_url, host=mesh.host_header, collector=mesh.collector_url,
                backend=f"zipkin:{mesh.collector_url}", tracing=tracing,
                quiet_s=opts.quiet_s if opts.quiet_s is not None else tracing.flush_interval_ms / 1000.0 + 1.0,
            )  # fmt: skip

        for index, look_n in enumerate(seq.looks):
            runs_before = len(runs)
            attempt = 0
            while totals.n < look_n and attempt < MAX_RUNS_PER_LOOK and not interrupted:
                needed = look_n - totals.n
                run_id = f"look{index + 1:02d}" + (f"-{attempt + 1}" if attempt else "")
                watch.follow(cal_dir / run_id / "ledger.jsonl")
                result = run(
                    replace(
                        common,
                        run_id=run_id,
                        duration_s=run_time_cap_s(needed, opts.rate),
                        # A new seed per run: the same seed would repeat the injected trace ids.
                        seed=None if opts.seed is None else opts.seed + len(runs),
                        max_requests=needed,
                    ),
                    _prefixed(status, f"look {index + 1}/{len(seq.looks)}: "),
                )
                watch.poll()  # the rest of the ledger, closed now
                runs.append(run_id)
                learned = result.run_dir / PROFILE_FILE
                if common.profile_path is None and common.probe and learned.exists():
                    # One mesh, one probe: later looks reuse what the first run learned.
                    common = replace(common, profile_path=learned)
                attempt += 1
                before = totals.n
                totals.add(result.summary)
                if result.summary.get("status") == "partial" and not watch.aborted:
                    interrupted = str(result.summary.get("status_reason") or "interrupted")
                    component_failed = component_failed or bool(result.summary.get("component_failure"))
                if watch.aborted:
                    break
                if totals.n == before and not interrupted:
                    raise CalibrationError(
                        f"run {run_id} saw no sampling decision in {result.summary['requests']['total']} "
                        f"request(s) ({result.summary['requests']['errors']} errors): the upstream must echo "
                        "request headers (httpbin /headers) and answer 200; see "
                        f"{result.run_dir / 'report.md'}"
                    )
            if interrupted and not watch.aborted:
                break
            if totals.n < look_n and not watch.aborted:
                notes.append(
                    f"look {index + 1}: {totals.n:,} of {look_n:,} planned decisions after {attempt} run(s) "
                    f"({totals.errors:,} errors so far); the look was taken there"
                )
            look = _evaluate_look(index, look_n, seq, p, totals, opts, exact_needed)
            look["runs"] = runs[runs_before:]
            looks.append(look)
            status(
                f"look {index + 1}/{len(seq.looks)}: {totals.k} sampled of {totals.n} "
                f"({totals.k / max(totals.n, 1):.3%}), {totals.mismatches} mismatch(es) in "
                f"{totals.checked} checked -> {look['decision']}"
            )
            stop = look.pop("_stop")
            if stop is not None:
                break
    except KeyboardInterrupt:
        interrupted = "interrupted"
    finally:
        if mesh is not None:
            status("stopping the embedded mesh")
            mesh.stop()

    verdict, basis, reason = _final_verdict(stop, totals, interrupted, opts, exact_needed, plan.n)
    doc = calibration_document(
        cal_id=cal_id, opts=opts, target=target, plan=plan, seq=seq,
        precision=precision, threshold=threshold, exact_needed=exact_needed, totals=totals,
        first_mismatch_at=watch.first_mismatch_at, looks=looks, runs=runs, verdict=verdict, basis=basis,
        reason=reason, interrupted=interrupted, notes=notes,
    )  # fmt: skip
    if component_failed:
        exit_code = EXIT_COMPONENT_FAILED
    else:
        exit_code = EXIT_INTERRUPTED if interrupted else EXIT_CODES[verdict]
    doc["exit_code"] = exit_code
    write_json(cal_dir / "calibration.json", doc)
    (cal_dir / "calibration.md").write_text(render_calibration_markdown(redact_data(doc)))
    return CalibrationResult(doc, cal_dir, exit_code)


def _evaluate_look(
    index: int,
    look_n: int,
    seq: SequentialPlan,
    p: float,
    totals: _Totals,
    opts: CalibrateOptions,
    exact_needed: int,
) -> dict[str, Any]:
    """The look's record and, under "_stop", (verdict, basis, reason) when the calibration stops."""
    last = index == len(seq.looks) - 1
    look: dict[str, Any] = {
        "look": index + 1,
        "planned": look_n,
        "requests": totals.requests,
        "decisions": {"k": totals.k, "n": totals.n},
        "prediction": {"checked": totals.checked, "mismatches": totals.mismatches},
        "alpha": seq.alphas[index],
        "p_value": binom_test_two_sided(totals.k, totals.n, p) if totals.n else None,
    }
    stat = sequential_decision(totals.k, totals.n, p, seq, index)
    look["statistical"] = stat.value
    stop: tuple[Verdict, str, str] | None = None
    exact = opts.use_prediction and totals.n > 0 and totals.checked == totals.n
    if opts.use_prediction and totals.mismatches:
        stop = (Verdict.FAIL, "exact", "mismatch")
    elif exact and totals.checked >= exact_needed:
        stop = (Verdict.PASS, "exact", "agreement")
    elif exact and not last:
        pass  # every decision is being checked: the exact evidence decides, statistics only inform
    elif stat is SequentialDecision.STOP_FAIL:
        stop = (Verdict.FAIL, "statistical", "rejected")
    elif stat is SequentialDecision.STOP_PASS:
        stop = (Verdict.PASS, "statistical", "consistent")
    elif last:
        stop = (Verdict.INCONCLUSIVE, "statistical", "exhausted")
    look["decision"] = "continue" if stop is None else f"stop_{stop[0].value}"
    look["_stop"] = stop
    return look


def _final_verdict(
    stop: tuple[Verdict, str, str] | None,
    totals: _Totals,
    interrupted: str,
    opts: CalibrateOptions,
    exact_needed: int,
    planned: int,
) -> tuple[Verdict, str, str]:
    """(verdict, basis, reason in words). Exact evidence is conclusive at any moment, so it is
    also honoured for an interrupted calibration; a statistical verdict needs a completed look."""
    pct = f"{opts.expected_percent:g} %"
    if opts.use_prediction and totals.mismatches:
        return (
            Verdict.FAIL,
            "exact",
            f"{totals.mismatches} of {totals.checked} checked decisions differ from Envoy's rule at {pct}: "
            "the proxy applies another percentage or rule (runtime override, Telemetry, another proxy)",
        )
    if opts.use_prediction and totals.n and totals.checked == totals.n and totals.checked >= exact_needed:
        return (
            Verdict.PASS,
            "exact",
            f"all {totals.checked} decisions match Envoy's rule at {pct} (>= {exact_needed} needed): the "
            f"effective rate is within {_points(max_disagreement(totals.checked, opts.confidence))} of the "
            f"rule's with {opts.confidence:.0%} confidence",
        )
    if stop is None:
        return (
            Verdict.INCONCLUSIVE,
            "statistical",
            f"stopped before a conclusion ({interrupted or 'no look'})",
        )
    verdict, basis, why = stop
    if why == "rejected":
        return verdict, basis, f"the exact binomial test rejects {pct} at the look's spent alpha"
    if why == "consistent":
        return (
            verdict,
            basis,
            f"the planned precision is reached and {pct} is inside the Clopper-Pearson interval",
        )
    if totals.n < planned:
        return (
            verdict,
            basis,
            f"the planned precision needs {planned:,} decisions; only {totals.n:,} were made "
            "(request cap or errors), and the exact binomial test does not reject",
        )
    return verdict, basis, f"{pct} is outside the interval but not rejected at the spent alpha"


def _prefixed(status: Status, prefix: str) -> Status:
    def say(msg: str) -> None:
        status(prefix + msg)

    return say


def calibration_document(
    *,
    cal_id: str,
    opts: CalibrateOptions,
    target: dict[str, Any],
    plan: SamplePlan,
    seq: SequentialPlan,
    precision: float,
    threshold: int,
    exact_needed: int,
    totals: _Totals,
    first_mismatch_at: int | None,
    looks: list[dict[str, Any]],
    runs: list[str],
    verdict: Verdict,
    basis: str,
    reason: str,
    interrupted: str,
    notes: list[str],
) -> dict[str, Any]:
    """calibration.json (schema_version 1): everything the verdict rests on."""
    k, n = totals.k, totals.n
    conf = opts.confidence
    wilson = list(wilson_interval(k, n, conf))
    cp = clopper_pearson_interval(k, n, conf)
    p = threshold / 10000.0
    return {
        "schema_version": 1,
        "calibration_id": cal_id,
        "status": "partial" if interrupted else "complete",
        "status_reason": interrupted or None,
        "target": target,
        "expected_percent": opts.expected_percent,
        "rule": {"threshold": threshold, "fraction": p},
        "precision": precision,
        "confidence": conf,
        "mix": calibration_mix(opts.crafted_ids),
        "plan": plan.to_dict(),
        "sequential": {"enabled": opts.sequential, **seq.to_dict()},
        "exact_prediction_needed": exact_needed,
        "requests": {"total": totals.requests, "errors": totals.errors},
        "decisions": {
            "k": k,
            "n": n,
            "rate": k / n if n else None,
            "wilson": wilson,
            "clopper_pearson": list(cp),
            "half_width": half_width(k, n, cp) if n else None,
        },
        "p_value": binom_test_two_sided(k, n, p) if n else None,
        "prediction": {
            "used": opts.use_prediction,
            "checked": totals.checked,
            "mismatches": totals.mismatches,
            "examples": totals.examples,
            "first_mismatch_at": first_mismatch_at,
            "sources": dict(totals.sources),
            "all_checked": n > 0 and totals.checked == n,
            "max_disagreement": max_disagreement(totals.checked, conf) if totals.mismatches == 0 else None,
        },
        "looks": looks,
        "stopped_early": bool(looks) and looks[-1]["look"] < len(seq.looks) and not interrupted,
        "verdict": verdict.value,
        "basis": basis,
        "reason": reason,
        "runs": runs,
        "notes": notes,
    }


def _pct(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{100.0 * x:.{digits}f} %"


def _points(x: float | None) -> str:
    """A precision in percentage points: 0.001 -> "±0.1 points"."""
    return "–" if x is None else f"±{100.0 * x:.4g} points"


def render_calibration_markdown(doc: dict[str, Any]) -> str:
    """calibration.md from calibration.json (pure)."""
    d = doc["decisions"]
    pred = doc["prediction"]
    plan = doc["plan"]
    seq = doc["sequential"]
    conf = f"{doc['confidence']:.0%}"
    lines = [
        f"# Sampling calibration `{doc['calibration_id']}`",
        "",
        f"**{doc['verdict'].upper()}** ({doc['basis']}): {doc['reason']}.",
        "",
    ]
    if doc["status"] == "partial":
        lines += [f"Partial: {doc['status_reason']}.", ""]
    target = doc.get("target") or {}
    lines += [
        "| | |",
        "|---|---|",
        f"| target | {target.get('kind', '?')} {target.get('gateway', '')} (Host {target.get('host', '')}) |",
        f"| expected | {doc['expected_percent']:g} % (Envoy's rule: {doc['rule']['threshold']}/10000) |",
        f"| precision | {_points(doc['precision'])} at {conf} |",
        f"| planned decisions | {plan['n']:,} (Clopper-Pearson); Wilson {plan['wilson']:,}; Wald {plan['wald']:,} |",
        f"| requests | {doc['requests']['total']:,} (errors {doc['requests']['errors']}) |",
        f"| decisions | {d['k']:,} sampled of {d['n']:,}: {_pct(d['rate'])} |",
        f"| Wilson {conf} | [{_pct(d['wilson'][0])}, {_pct(d['wilson'][1])}] |",
        f"| Clopper-Pearson {conf} | [{_pct(d['clopper_pearson'][0])}, {_pct(d['clopper_pearson'][1])}] "
        f"(reaches {_points(d['half_width'])}) |",
        f"| exact binomial test vs {doc['rule']['fraction']:.2%} | "
        + (
            "–"
            if doc["p_value"] is None
            else f"p = {doc['p_value']:.3g} (fixed-sample, not adjusted for looks)"
        )
        + " |",
        "| exact prediction | "
        + (
            f"{pred['checked']:,} checked, {pred['mismatches']:,} mismatch(es)"
            + (f", first at decision #{pred['first_mismatch_at']}" if pred["first_mismatch_at"] else "")
            + (
                f" ({pred['sources']['crafted']:,} predicted before sending from our x-request-id)"
                if (pred.get("sources") or {}).get("crafted")
                else ""
            )
            + f"; {doc['exact_prediction_needed']:,} agreeing needed for {_points(doc['precision'])}"
            if pred["used"]
            else "not used"
        )
        + " |",
        f"| stopping rule | {len(seq['looks'])} look(s), alpha {seq['alpha']:g} spent as alpha·t^{seq['rho']:g}"
        + (", stopped early" if doc["stopped_early"] else "")
        + " |",
        "",
        "## Looks",
        "",
        "| look | planned | decisions | sampled | p-value | alpha | statistics | decision | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for look in doc["looks"]:
        pv = look["p_value"]
        lines.append(
            f"| {look['look']} | {look['planned']:,} | {look['decisions']['n']:,} | {look['decisions']['k']:,} "
            f"| {'–' if pv is None else f'{pv:.3g}'} | {look['alpha']:.3g} | {look['statistical']} "
            f"| {look['decision']} | {', '.join(look.get('runs', []))} |"
        )
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in doc["notes"]]
    lines += [
        "",
        "Each run folder (`look01/`, ...) holds its own ledger, summary.json and report.md.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_INTERRUPTED",
    "EXIT_PASS",
    "CalibrateOptions",
    "CalibrationError",
    "CalibrationResult",
    "RunError",
    "calibrate",
    "calibration_mix",
    "render_calibration_markdown",
]
