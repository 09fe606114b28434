"""`loadgen run` and `loadgen verify`: one load run, end to end (plain I/O; the CLI prints and exits).

    options    RunOptions, RunResult, the run id and path checks
    target     the mesh measured: the embedded one started, or an existing one preflighted;
               its profile learned (`loadgen probe` is this step alone)
    load       Locust in its own process and the side-emitter, watched, stopped in order
    readback   every trace id queried until quiet, reconciled into the measured sections
    execute    execute_run: target -> profile and expectations -> run.json -> load -> read-back
               -> summary (loadgen.summary.build) -> report files
    verify     verify_run: an earlier run read back again, its summary rebuilt
    outputs    summary.json, report.md and report.html written from the summary

Locust runs in its own process (it monkey-patches with gevent); this process never imports it.
"""

from loadgen.mesh.headers import RUN_ID_HEADER
from loadgen.run.execute import execute_run
from loadgen.run.load import default_scenario_path, no_requests_note
from loadgen.run.options import (
    RunError,
    RunOptions,
    RunResult,
    Status,
    _options_dict,
    check_path,
    check_run_id,
    options_dict,
)
from loadgen.run.readback import ReadBackOutcome, read_back_and_reconcile, read_back_run
from loadgen.run.target import OpenTarget, learn_profile, open_target, preflight, probe_only
from loadgen.run.verify import verify_run

__all__ = [
    "RUN_ID_HEADER",
    "OpenTarget",
    "ReadBackOutcome",
    "RunError",
    "RunOptions",
    "RunResult",
    "Status",
    "_options_dict",
    "check_path",
    "check_run_id",
    "default_scenario_path",
    "execute_run",
    "learn_profile",
    "no_requests_note",
    "open_target",
    "options_dict",
    "preflight",
    "probe_only",
    "read_back_and_reconcile",
    "read_back_run",
    "verify_run",
]
