"""The one function that builds a run's summary (issue 11): what the analyses measured, what only
the command knows (status, target, profile, ...), and the verdicts, judged once on all of it.

`loadgen run`, `loadgen verify` (and `report --rebuild`) all build their summary here; before,
it was assembled piecemeal as nested dicts and judged twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType

from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE, judged
from loadgen.summary.model import (
    ComponentFailureDoc,
    LocustTotals,
    Recovered,
    Summary,
    Target,
)


@dataclass(frozen=True)
class Measured:
    """What reconciling a run folder and reading its traces back measured, as the analyses
    return their sections (JSON data): `reconciled` is `reconcile_mesh`'s (requests, sampling,
    mesh, propagation, modes, latency_ms), the others one section each (None: not measured)."""

    reconciled: Mapping[str, Any]
    reference: Mapping[str, Any]
    windows: Mapping[str, Any] | None = None
    readback: Mapping[str, Any] | None = None
    queryable: Mapping[str, Any] | None = None
    tag_search: Mapping[str, Any] | None = None
    integrity: Mapping[str, Any] | None = None


class RunFacts(Struct, kw_only=True):
    """What only the command that ran (or verified) the load knows. Absent (`UNSET`) fields stay
    out of summary.json, as before."""

    status: str = "complete"
    status_reason: str | None | UnsetType = UNSET
    component_failure: ComponentFailureDoc | UnsetType = UNSET
    target: Target | None = None
    profile: dict[str, Any] | None = None
    started_at: float | None = None
    locust: LocustTotals | None = None
    recovered: Recovered | UnsetType = UNSET
    verified_at: float | UnsetType = UNSET

    @classmethod
    def of(cls, summary: Summary) -> RunFacts:
        """The facts an earlier summary of the same run recorded that a verify keeps (not its
        component failure: that described the load, not this read-back)."""
        return cls(**{f: getattr(summary, f) for f in KEPT_BY_VERIFY})


#: The run facts `loadgen verify` carries over from the summary it replaces (or rebuilds).
KEPT_BY_VERIFY = ("status", "status_reason", "target", "profile", "started_at", "locust", "recovered")


def build_summary(
    *,
    run_id: str,
    measured: Measured,
    min_collection: float,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    gaps: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    readback_notes: Sequence[str] = (),
    facts: RunFacts | None = None,
) -> Summary:
    """The run's summary, its verdicts judged once on everything measured. `gaps`: verdicts the
    mesh profile cannot support ({name: the fact not learned}); `notes`: every note of the run,
    `readback_notes` the read-back's own among them (a later verify replaces those)."""
    data: dict[str, Any] = {
        "run_id": run_id,
        "expectation_gaps": dict(gaps or {}),
        **measured.reconciled,
        "reference": measured.reference,
        "min_collection": min_collection,
        "windows": measured.windows,
        "readback": measured.readback,
        "queryable": measured.queryable,
        "tag_search": measured.tag_search,
        "integrity": measured.integrity,
        "notes": list(notes),
        "readback_notes": list(readback_notes),
    }
    # Judged on what was measured, before the run's facts: as the verdicts always were (a
    # partial status does not change a cause).
    summary = judged(msgspec.convert(data, Summary), min_collection, max_error_rate)
    if facts is not None:
        summary = msgspec.structs.replace(summary, **msgspec.structs.asdict(facts))
    return summary


__all__ = ["Measured", "RunFacts", "build_summary"]
