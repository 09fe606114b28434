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

Exit codes (loadgen.exitcodes, re-exported here): 0 pass, 1 fail, 3 inconclusive, 2 the calibration could not be done,
130 interrupted.
"""

from loadgen.calibrate.document import render_calibration_markdown
from loadgen.calibrate.model import (
    EXIT_FAIL,
    EXIT_PASS,
    CalibrateOptions,
    CalibrationError,
    CalibrationResult,
    calibration_mix,
    crafted_modes,
    run_time_cap_s,
)
from loadgen.calibrate.runner import calibrate
from loadgen.exitcodes import EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED
from loadgen.run import RunError

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
    "crafted_modes",
    "render_calibration_markdown",
    "run_time_cap_s",
]
