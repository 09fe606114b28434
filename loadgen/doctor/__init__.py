"""`loadgen doctor`: is this mesh measurable, and if not, what exactly to fix.

Pure checks (bootstrap lint, Istio sampling precedence, the report model and renderers) and thin
I/O checks (gateway, collector probe, backend query, end-to-end trace), orchestrated by
`run_doctor`. Every check becomes a `Check`; nothing raises out of `run_doctor`.
"""

from loadgen.doctor.bootstrap import collector_path_problem, find_zipkin_tracers, lint_bootstrap, load_json
from loadgen.doctor.collector import check_backend, check_collector
from loadgen.doctor.gateway import check_gateway, check_mesh_trace
from loadgen.doctor.model import Check, CheckStatus, DoctorReport
from loadgen.doctor.run import check_istio_sampling, run_doctor

__all__ = [
    "Check",
    "CheckStatus",
    "DoctorReport",
    "check_backend",
    "check_collector",
    "check_gateway",
    "check_istio_sampling",
    "check_mesh_trace",
    "collector_path_problem",
    "find_zipkin_tracers",
    "lint_bootstrap",
    "load_json",
    "run_doctor",
]
