"""A component of a run that failed (Locust, an Envoy, the collector, the disk): what failed, why,
and the last lines of its log, so the user reads the cause where the run ends (exit 4) instead
of hunting for a log file that may be empty.

Plain I/O at the edges (a log's tail, the free space of a folder); the record itself is data.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.redact import redact_text

__all__ = [
    "MIN_FREE_BYTES",
    "ComponentFailure",
    "disk_problem",
    "locust_failure",
    "log_tail",
    "mentions_disk_full",
]

#: Below this much free space on the run folder's filesystem, the load stops: what is left is
#: for the ledger's last lines, the read-back and the partial report. The embedded mesh writes
#: its logs and span store there too.
MIN_FREE_BYTES = 32 * 1024 * 1024

_TAIL_BYTES = 64 * 1024  # a log's tail is read from its last bytes: a huge log costs nothing
_DISK_FULL_MARKERS = ("No space left on device", "ENOSPC", "Disk quota exceeded")


@dataclass(frozen=True)
class ComponentFailure:
    component: str  # "locust", "gateway envoy", "collector", ..., "disk"
    reason: str
    log_path: str | None = None
    log_tail: tuple[str, ...] = ()

    def headline(self) -> str:
        where = f" (log: {self.log_path})" if self.log_path else ""
        return f"{self.component} failed: {self.reason}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "reason": self.reason,
            "log_path": self.log_path,
            "log_tail": list(self.log_tail),
        }


def log_tail(path: Path, lines: int = 10) -> tuple[str, ...]:
    """The last `lines` non-blank lines of a log (credentials redacted); () when it is missing
    or empty."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read()
    except OSError:
        return ()
    text = redact_text(data.decode("utf-8", errors="replace"))
    return tuple(line for line in text.splitlines() if line.strip())[-lines:]


def mentions_disk_full(lines: tuple[str, ...]) -> bool:
    return any(marker in line for line in lines for marker in _DISK_FULL_MARKERS)


def locust_failure(returncode: int, log_path: Path) -> ComponentFailure:
    """Locust ended with `returncode` != 0: killed by a signal (negative code, e.g. the OOM
    killer's SIGKILL) or failed, with its log's last lines, or a word that the log is empty."""
    tail = log_tail(log_path)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        reason = f"Locust was killed by {name}"
        if name == "SIGKILL":
            reason += " (the kernel's out-of-memory killer sends it too: see `dmesg`)"
    else:
        reason = f"Locust exited with code {returncode}"
    if mentions_disk_full(tail):
        return ComponentFailure("disk", f"no space left on device ({reason})", str(log_path), tail)
    if not tail:
        reason += "; its log is empty"
    return ComponentFailure("locust", reason, str(log_path), tail)


def disk_problem(folder: Path, min_free_bytes: int = MIN_FREE_BYTES) -> str | None:
    """Why the run cannot go on writing to `folder`'s filesystem, or None."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"cannot check free space on {folder}: {exc.strerror or exc}"
    if free < min_free_bytes:
        mib = 1024 * 1024
        return (
            f"no space left on device: {free / mib:.1f} MiB free on the filesystem of {folder} "
            f"(the load stops below {min_free_bytes // mib} MiB, keeping room for the report)"
        )
    return None
