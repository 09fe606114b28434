"""`loadgen run`: the orchestration of one load run (plain I/O; the CLI prints and exits).

    preflight -> [embedded mesh up] -> mesh profile -> expectations, run.json
              -> side-emitter + Locust -> stop -> read-back (poll until quiet) -> reconcile
              -> summary.json, report.md, report.html, fetched.jsonl -> [mesh down]

Locust runs in its own process (it monkey-patches with gevent); this process never imports it.
Ctrl-C / SIGTERM stops the load cleanly: Locust flushes the ledger, the emitter accounts for
every trace, and a partial report is written that says it is partial.
"""

from __future__ import annotations

import errno
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec

from loadgen import __version__
from loadgen.analysis.reconcile import Expectation
from loadgen.analysis.verdicts import exit_code_for
from loadgen.backends.base import redact_url
from loadgen.exitcodes import EXIT_COMPONENT_FAILED, EXIT_VERDICT_FAILED
from loadgen.mesh.expect import ExpectationContext
from loadgen.mesh.modes import parse_mix
from loadgen.mesh.profile import (
    PROFILE_FILE,
    RUN_ID_TAG_ADVICE,
    MeshProfile,
    declaration_warnings,
    expectation_context,
    expectation_gaps,
    profile_line,
    resolved_shape,
    suggested_quiet_s,
)
from loadgen.run.load import LoadOutcome, no_requests_note, run_load
from loadgen.run.options import (
    RunError,
    RunOptions,
    RunResult,
    Status,
    check_path,
    check_reference,
    check_run_id,
    options_dict,
)
from loadgen.run.outputs import write_report_files
from loadgen.run.readback import read_back_run
from loadgen.run.target import OpenTarget, learn_profile, open_target
from loadgen.runfiles import write_json
from loadgen.runfolder import discard_empty, locust_totals, new_dirs
from loadgen.summary.build import RunFacts, build_summary


@dataclass
class Plan:
    """What the run expects of the mesh, learned before the load (the profile, not the knobs or
    a default): the shape of a complete trace, the header-mode context, the run-id tag, the
    read-back's quiet period, the verdicts the profile cannot support, and notes."""

    profile: MeshProfile
    expect: Expectation
    quiet_s: float
    run_id_tag: str
    gaps: dict[str, str]
    notes: list[str] = field(default_factory=list)


def plan_run(opts: RunOptions, opened: OpenTarget, run_id: str, run_dir: Path, status: Status) -> Plan:
    """Learn the mesh profile (written to mesh-profile.json) and what it makes the run expect."""
    profile = learn_profile(opts, opened.gateway, opened.host, opened.backend, run_id, status)
    write_json(run_dir / PROFILE_FILE, profile.to_dict())
    status(f"mesh profile: {profile_line(profile)}")
    shape, shape_notes = resolved_shape(profile, opts.expected_spans)
    # An existing mesh's gateway flags are the user's declaration, the fallback for what the
    # probe cannot learn; the embedded mesh's knobs only build it, so its fallback is Istio's
    # ingress gateway, as for a mesh nobody declared anything about, with the tracer it runs.
    external = opened.kind == "external"
    declared = (
        opts.tracing.expectation_context() if external else ExpectationContext(tracer=opts.tracing.tracer)
    )
    context = expectation_context(profile, opened.configured, base=declared)
    if external:
        shape_notes += declaration_warnings(declared, context)
    notes = [*profile.notes, *shape_notes]
    learned_quiet_s = suggested_quiet_s(profile)
    if opts.quiet_s is not None:
        quiet_s = opts.quiet_s
    else:
        quiet_s = learned_quiet_s if learned_quiet_s is not None else opened.fallback_quiet_s
    run_id_tag = profile.run_id_tag if profile.source != "flags" else opts.tracing.run_id_tag
    gaps = expectation_gaps(replace(profile, shape=shape))  # a declared --expected-spans fills the shape
    if not run_id_tag:
        notes.append(
            "no span carries the run id (the probe found no run-id tag): the run-tag search is "
            "skipped and its estimates are null; " + RUN_ID_TAG_ADVICE
        )
    expect = Expectation(
        shape.total if shape else 0,
        tuple(svc for svc in (shape.services if shape else ()) if svc != "*"),
        opened.configured,
        context=context,
        shape=shape,
    )
    return Plan(profile, expect, quiet_s, run_id_tag or "", gaps, notes)


def target_doc(opened: OpenTarget) -> dict[str, Any]:
    """The target as stored and shown (run.json, summary.json): never the credentials."""
    return {
        "kind": opened.kind,
        "gateway": redact_url(opened.gateway),
        "host": opened.host,
        "collector": redact_url(opened.collector),
        "backend": opened.backend.url,
        "backend_spec": redact_url(opened.backend_spec),
        "reader": opened.backend.name,  # what `auto:` chose
    }


def write_run_json(run_dir: Path, run_id: str, opts: RunOptions, opened: OpenTarget, plan: Plan) -> None:
    """run.json: the options, the target and everything `loadgen verify` needs to re-reconcile later."""
    expect, hops = plan.expect, opened.hops
    write_json(
        run_dir / "run.json",
        {
            "run_id": run_id,
            "version": __version__,
            "options": options_dict(opts),
            "target": target_doc(opened),
            "expectation": {
                "spans_per_trace": expect.spans_per_trace,
                "services": list(expect.services),
                "configured_percent": expect.configured_percent,
                "run_id_tag": plan.run_id_tag,
                "shape": expect.shape.to_json() if expect.shape else None,
                "gaps": plan.gaps,
                "quiet_s": plan.quiet_s,
                "min_collection": opts.min_collection,
                "max_error_rate": opts.max_error_rate,
                "search_service": opts.search_service,
                "context": asdict(expect.context) if expect.context is not None else None,
                "hops": [[h.service, h.spans] for h in hops] if hops else None,
            },
        },
    )


def finish_run(
    opts: RunOptions, run_dir: Path, run_id: str, opened: OpenTarget, plan: Plan, load: LoadOutcome,
    started_at: float, status: Status,
) -> RunResult:  # fmt: skip
    """Read the traces back, build the summary (loadgen.summary.build), write the reports, and
    the exit code."""
    partial_reason = load.partial_reason
    outcome = read_back_run(
        run_dir, run_id, opened.backend, plan.expect,
        quiet_s=0.0 if partial_reason else plan.quiet_s, poll_interval_s=opts.poll_interval_s,
        max_wait_s=opts.max_wait_s, run_id_tag=plan.run_id_tag, load_end=time.time(), status=status,
        search_service=opts.search_service, hops=opened.hops, keep_spans=opts.keep_spans,
        readback_sample=opts.readback_sample, readback_fraction=opts.readback_fraction,
    )  # fmt: skip
    if outcome.interrupted:
        partial_reason = partial_reason or "interrupted during read-back"
    notes = [*opened.notes, *plan.notes, *load.notes]
    if not outcome.requests_total:
        notes.append(no_requests_note(run_dir / "locust.log", opts.duration_s))
    facts = {
        "status": "partial" if partial_reason else "complete",
        **({"status_reason": partial_reason} if partial_reason else {}),
        **({"component_failure": load.failure.to_dict()} if load.failure is not None else {}),
        "target": target_doc(opened),
        "profile": plan.profile.to_dict(),
        "started_at": started_at,
        "locust": locust_totals(run_dir),
    }
    summary = build_summary(
        run_id=run_id, measured=outcome.measured, min_collection=opts.min_collection,
        max_error_rate=opts.max_error_rate, gaps=plan.gaps, notes=[*notes, *outcome.notes],
        readback_notes=outcome.notes, facts=msgspec.convert(facts, RunFacts),
    )  # fmt: skip
    write_report_files(run_dir, summary, outcome.observations)
    if load.failure is not None:
        code = EXIT_COMPONENT_FAILED
    elif partial_reason.startswith("aborted"):
        code = EXIT_VERDICT_FAILED
    else:
        code = exit_code_for(summary.verdicts, partial=bool(partial_reason))
    return RunResult(summary.to_dict(), run_dir, code)


def _new_run_dir(opts: RunOptions, run_id: str) -> tuple[Path, list[Path]]:
    run_dir = opts.output_dir / run_id
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"run folder {run_dir} already exists and is not empty; choose another --run-id")
    fresh = new_dirs(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, fresh


def execute_run(opts: RunOptions, status: Status) -> RunResult:
    """Run everything; KeyboardInterrupt during load or read-back yields a partial report."""
    run_id = opts.resolved_run_id()
    check_run_id(run_id)
    check_path(opts.path)
    check_reference(opts.reference_protocol, opts.reference_grpc_endpoint)
    parse_mix(opts.mix)  # fail before anything starts
    run_dir, fresh = _new_run_dir(opts, run_id)
    opened: OpenTarget | None = None
    started_at = time.time()
    try:
        opened = open_target(opts, run_dir, status)
        plan = plan_run(opts, opened, run_id, run_dir, status)
        write_run_json(run_dir, run_id, opts, opened, plan)
        # The load reads each request's sampled fact where the mesh's tracer writes it (probed).
        traced_as = replace(opts, tracing=replace(opts.tracing, tracer=plan.expect.mode_context().tracer))
        load = run_load(traced_as, run_dir, run_id, opened, opened.configured, started_at, status)
        try:
            result = finish_run(opts, run_dir, run_id, opened, plan, load, started_at, status)
        except BaseException:
            if load.web is not None:
                load.web.close()
            raise
        result.web = load.web  # --web: Locust's UI stays up (its Tracing tab shows the result)
        return result
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise RunError(
            f"no space left on device writing {exc.filename or run_dir}; what was written is intact: "
            f"free some space, then `loadgen verify {run_dir}` reads the traces back and reports"
        ) from exc
    finally:
        if opened is not None:
            opened.backend.close()
            if opened.mesh is not None:
                status("stopping the embedded mesh")
                opened.mesh.stop()
        discard_empty(fresh)  # a run that wrote nothing (a failed preflight) leaves no empty folder


__all__ = ["Plan", "execute_run", "finish_run", "plan_run", "target_doc", "write_run_json"]
