"""`loadgen verify RUN`: read an earlier run's traces back again and rebuild its summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec

from loadgen.analysis.reconcile import Expectation
from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE, exit_code_for
from loadgen.backends.base import BackendError, TraceBackend, redact_url
from loadgen.backends.factory import parse_backend_spec
from loadgen.redact import redact_text
from loadgen.run.options import RunError, RunResult, Status
from loadgen.run.outputs import write_report_files
from loadgen.run.readback import read_back_run
from loadgen.runfolder import (
    RunMeta,
    keep_previous,
    read_previous_summary,
    read_run_json,
    rebuilt_fields,
)
from loadgen.stack.procs import ManagedProcess, python_module_argv
from loadgen.summary.build import KEPT_BY_VERIFY, RunFacts, build_summary
from loadgen.summary.model import Summary, Target

#: What `loadgen verify` reports as changed: (measure, its value in a summary).
VERIFY_MEASURES: tuple[tuple[str, Callable[[Summary], int | None]], ...] = (
    ("mesh collection", lambda s: s.mesh.collection.k if s.mesh else None),
    ("mesh unknown", lambda s: s.mesh.unknown if s.mesh else None),
    ("mesh leaked", lambda s: s.mesh.leaked if s.mesh else None),
    ("reference collection", lambda s: s.reference.collection.k if s.reference else None),
    ("reference unknown", lambda s: s.reference.unknown if s.reference else None),
)


def _verify_collector(run_dir: Path) -> tuple[ManagedProcess, str]:
    """A collector on an embedded run's span store (its own is gone): the process and its backend spec."""
    collector = ManagedProcess(
        "collector",
        python_module_argv(
            "loadgen.stack.collector", "--port", "0", "--data-dir", str(run_dir / "collector")
        ),
        run_dir / "stack" / "verify-collector.log",
    )
    collector.start(stdout_pipe=True)
    return collector, "zipkin:" + str(collector.read_ready_line(15.0)["url"])


def _verify_facts(
    run_dir: Path, checked: RunMeta, previous: Summary | None, backend: TraceBackend, backend_spec: str
) -> tuple[RunFacts, list[str], list[str]]:
    """What a verified summary keeps of the run: its facts (from the previous summary, or rebuilt
    from the folder: partial, `recovered` naming what only the live run knew), its notes without
    the previous read-back's, and those stale read-back notes."""
    if previous is not None:
        facts, notes, stale = RunFacts.of(previous), previous.notes, previous.readback_notes
    else:  # the run was killed, crashed or ran out of disk: rebuild it, marked partial
        rebuilt = rebuilt_fields(run_dir, checked)
        fields = {k: v for k, v in rebuilt.items() if k in KEPT_BY_VERIFY}
        facts, notes, stale = msgspec.convert(fields, RunFacts), rebuilt["notes"], rebuilt["readback_notes"]
    if backend_spec:
        # Verified elsewhere: say where, so the summary does not name the old backend.
        target = msgspec.structs.replace(
            facts.target or Target(),
            backend=backend.url,
            backend_spec=redact_url(backend_spec),
            reader=backend.name,
        )
        facts = msgspec.structs.replace(facts, target=target)
    return facts, list(notes), list(stale)


def _asked_sample(previous: Summary | None) -> tuple[int | None, float | None]:
    """The --readback-sample/--readback-fraction the run was given (None, None: it was given
    neither; an automatic sample is chosen again by the same rule). The draw is seeded by the
    run id, so the same rule queries the same traces."""
    sample = previous.readback.sample if previous is not None and previous.readback else None
    if sample is None or sample.automatic:
        return None, None
    return sample.count, sample.fraction


def verify_run(
    run_dir: Path,
    status: Status,
    *,
    backend_spec: str = "",
    max_wait_s: float = 30.0,
    poll_interval_s: float = 1.0,
    readback_sample: int | None = None,
    readback_fraction: float | None = None,
) -> tuple[RunResult, list[tuple[str, Any, Any]]]:
    """`loadgen verify RUN`: query the backend again for every trace of an earlier run (late spans,
    a backend that was down), re-reconcile, and rewrite summary.json/report.md. The summary it
    replaces is kept (runfolder.keep_previous: summary.previous.json is the run's own, never
    overwritten). A run that never wrote summary.json gets one rebuilt from its folder
    (runfolder.rebuilt_fields). Returns the result and (measure, before, after), no changes for
    a rebuild. RunFolderError when run.json or summary.json is unusable.

    An embedded run's collector is gone, but its span store is in the run folder: a collector is
    started on it for the duration of the check."""
    checked = read_run_json(run_dir)
    previous = read_previous_summary(run_dir)
    keep_spans = (run_dir / "fetched.jsonl").exists()  # as the run chose (--keep-spans)
    if readback_sample is None and readback_fraction is None:  # the run's own sample rule
        readback_sample, readback_fraction = _asked_sample(previous)
    collector: ManagedProcess | None = None
    try:
        if backend_spec:
            spec = backend_spec
        elif checked.kind == "embedded":
            collector, spec = _verify_collector(run_dir)
        else:
            spec = checked.backend_spec
        try:
            backend = parse_backend_spec(spec)
            backend.check()
        except (ValueError, BackendError) as exc:
            raise RunError(
                f"cannot verify against backend {redact_url(spec)!r}: {redact_text(str(exc))}"
            ) from exc
        expect = Expectation.from_run_json(checked.doc.get("expectation") or {})
        try:
            outcome = read_back_run(
                run_dir, checked.run_id, backend, expect,
                quiet_s=0.0, poll_interval_s=poll_interval_s, max_wait_s=max_wait_s,
                run_id_tag=checked.run_id_tag, load_end=time.time(), status=status,
                search_service=checked.search_service, hops=checked.hops, keep_spans=keep_spans,
                readback_sample=readback_sample, readback_fraction=readback_fraction,
            )  # fmt: skip
        finally:
            backend.close()
    finally:
        if collector is not None:
            collector.stop()
    facts, kept_notes, stale = _verify_facts(run_dir, checked, previous, backend, backend_spec)
    if outcome.interrupted:
        facts = msgspec.structs.replace(
            facts, status="partial", status_reason="verify interrupted during read-back"
        )
    measured = outcome.measured
    if not isinstance(facts.recovered, msgspec.UnsetType):
        measured = replace(measured, queryable=None)  # timed from the end of the load: unknown here
    # The load's notes stay; the previous read-back's are replaced by this one's (not duplicated).
    notes = list(dict.fromkeys([*(n for n in kept_notes if n not in set(stale)), *outcome.notes]))
    summary = build_summary(
        run_id=checked.run_id, measured=measured, min_collection=checked.min_collection,
        max_error_rate=DEFAULT_MAX_ERROR_RATE if checked.max_error_rate is None else checked.max_error_rate,
        gaps=checked.gaps, notes=notes, readback_notes=outcome.notes,
        facts=msgspec.structs.replace(facts, verified_at=time.time()),
    )  # fmt: skip
    if previous is not None:
        keep_previous(run_dir)
    write_report_files(run_dir, summary, outcome.observations)
    changes = [(name, get(previous), get(summary)) for name, get in VERIFY_MEASURES] if previous else []
    # The verdicts decide, on what this read-back saw: a run that ended partial (a crash, a
    # Ctrl-C) is not an interrupt of this verify; only a Ctrl-C here is 130.
    code = exit_code_for(summary.verdicts, partial=outcome.interrupted)
    return RunResult(summary.to_dict(), run_dir, code), changes
