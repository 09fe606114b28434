"""The doctor's result model and its renderers (pure: no I/O).

A `Check` is one finding: a dotted name (`gateway.reachable`, `collector.endpoint`,
`bootstrap.collector_endpoint`…), a status, a one-line summary, a fix hint that says what to do, and
optional detail lines and machine-readable data. A `DoctorReport` is the ordered list of checks;
its exit code is 1 when any check failed, 3 (inconclusive) when no check examined anything (every
check skipped, or none ran), else 0 (warnings do not fail a doctor run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loadgen.exitcodes import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_VERDICT_FAILED
from loadgen.redact import redact_data, redact_text

__all__ = ["Check", "CheckStatus", "DoctorReport"]


class CheckStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One finding. `fix_hint` is empty when there is nothing to fix."""

    name: str
    status: CheckStatus
    summary: str
    fix_hint: str = ""
    details: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every finding is shown (terminal, --json, CI logs): no credential from a URL it quotes,
        # whichever check built it (an httpx error names the URL it failed on).
        object.__setattr__(self, "summary", redact_text(self.summary))
        object.__setattr__(self, "fix_hint", redact_text(self.fix_hint))
        object.__setattr__(self, "details", tuple(redact_text(line) for line in self.details))
        object.__setattr__(self, "data", redact_data(dict(self.data)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "summary": self.summary,
            "fix_hint": self.fix_hint,
            "details": list(self.details),
            "data": dict(self.data),
        }


def skipped(name: str, reason: str) -> Check:
    return Check(name, CheckStatus.SKIP, reason)


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    def __init__(self, checks: Sequence[Check]) -> None:
        object.__setattr__(self, "checks", tuple(checks))

    @property
    def exit_code(self) -> int:
        if any(c.status is CheckStatus.FAIL for c in self.checks):
            return EXIT_VERDICT_FAILED
        # A doctor run that examined nothing is no clean bill of health.
        if all(c.status is CheckStatus.SKIP for c in self.checks):
            return EXIT_INCONCLUSIVE
        return EXIT_OK

    def counts(self) -> dict[str, int]:
        return {s.value: sum(c.status is s for c in self.checks) for s in CheckStatus}

    def get(self, name: str) -> Check | None:
        """The first check with this name (None when the doctor did not run it)."""
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape: checks in order, counts, exit code."""
        return {
            "checks": [c.to_dict() for c in self.checks],
            "counts": self.counts(),
            "exit_code": self.exit_code,
        }

    def render_text(self) -> list[str]:
        """Plain text lines (no colour, no markup) for a terminal or a log."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = ["loadgen doctor"]
        for check in self.checks:
            lines.append(f"  {check.status.value.upper():4}  {check.name:<{width}}  {check.summary}")
            indent = " " * (10 + width)  # aligned with the summary column
            lines.extend(f"{indent}{detail}" for detail in check.details)
            if check.fix_hint:
                lines.append(f"{indent}fix: {check.fix_hint}")
        counts = self.counts()
        lines.append(
            f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed, "
            f"{counts['skip']} skipped (exit {self.exit_code})"
        )
        if self.exit_code == EXIT_INCONCLUSIVE:
            lines.append("inconclusive: no check examined anything (see the skip reasons above)")
        return lines
