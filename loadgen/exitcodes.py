"""loadgen's exit codes: one meaning each, the same for every command (`gate` uses 0/1/2 only).

The table is data so that docs/commands.md (Exit codes), `--help` and the tests read the same text.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_VERDICT_FAILED = 1
EXIT_ERROR = 2
EXIT_INCONCLUSIVE = 3
EXIT_COMPONENT_FAILED = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130

EXIT_CODE_TABLE: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "every verdict passed"),
    (EXIT_VERDICT_FAILED, "a verdict failed"),
    (EXIT_ERROR, "an expected error: bad option, unreachable target, unreadable file, full disk"),
    (EXIT_INCONCLUSIVE, "no verdict failed, at least one is inconclusive"),
    (
        EXIT_COMPONENT_FAILED,
        "a component of the run failed (Locust, Envoy, collector, disk): a partial report was "
        "written, and the message carries the component's last log lines",
    ),
    (EXIT_INTERNAL, "internal error: a bug in loadgen; the traceback is saved to a file"),
    (EXIT_INTERRUPTED, "interrupted by the user (SIGINT, SIGTERM or SIGHUP)"),
)
