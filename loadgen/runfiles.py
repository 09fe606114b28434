"""The run folder's plain files, written and read in one place.

- `write_json`: every JSON file a command writes (summary.json, run.json, calibration.json,
  steps.json, ...): redacted, then replaced atomically, so a crash never leaves half a file and
  no credential reaches the disk.
- `write_fetched` / `load_fetched`: fetched.jsonl, one row per queried trace id
  (trace, status, spans, services, run_tagged, error, complete_at).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.analysis.reconcile import TraceObservation
from loadgen.ledger import read_ledger
from loadgen.mesh.ids import normalize_trace_id
from loadgen.redact import redact_data


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON through a temporary file and an atomic rename. Every string
    is redacted first: whatever a field or a note quotes, no credential reaches the file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(redact_data(obj), indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_fetched(
    path: Path, observations: Mapping[str, TraceObservation], complete_at: Mapping[str, float]
) -> None:
    """fetched.jsonl: the read-back's observation of every queried trace id."""
    with open(path, "w", encoding="utf-8") as fh:
        for tid, obs in observations.items():
            row = {"trace": tid, **obs.to_dict(), "complete_at": complete_at.get(tid)}
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")


def load_fetched(path: Path) -> dict[str, TraceObservation]:
    """fetched.jsonl as observations keyed by normalized trace id. A missing file is empty;
    unparsable rows (torn, not UTF-8, wrong shape) are skipped."""
    out: dict[str, TraceObservation] = {}
    if not path.exists():
        return out
    for row in read_ledger(path):  # any JSONL of objects: bad lines skipped
        try:
            out[normalize_trace_id(str(row["trace"]))] = TraceObservation.from_dict(row)
        except (ValueError, KeyError, TypeError):
            continue
    return out
