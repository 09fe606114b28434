"""The reading side of the segmented ledger (loadgen.ledger_segments) for `loadgen watch`: which
segments are closed, reading one whole, adopting the open segments a dead Locust left, and
removing segments past the retention.

Only closed segments (`.jsonl`) are read; a `.part` is its writer's until that writer is dead.
The watch state (loadgen.watch.state) records every segment it ingested, so a segment is read
once whatever happens between its reading and its removal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.ledger import LedgerStats, read_ledger
from loadgen.ledger_segments import CLOSED_SUFFIX, OPEN_SUFFIX, closed_name, is_segment_name

__all__ = ["SegmentRead", "adopt_orphans", "closed_segments", "expire_segments", "read_segment"]


@dataclass(frozen=True)
class SegmentRead:
    """One closed segment's records, and the lines skipped (torn or not a JSON object)."""

    name: str
    records: list[dict[str, Any]]
    torn: int


def closed_segments(directory: Path) -> list[Path]:
    """The closed segments in `directory`, oldest first (their names start with the open time)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(directory / n for n in names if n.endswith(CLOSED_SUFFIX) and is_segment_name(n))


def adopt_orphans(directory: Path) -> list[str]:
    """Close the open segments left by a writer that is gone (call it only when no writer runs:
    before Locust starts, after it exited): each `.part` is renamed to its closed name as it is,
    a torn last line included (the reader skips it). The closed names, oldest first."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    adopted: list[str] = []
    for name in names:
        if name.endswith(OPEN_SUFFIX) and is_segment_name(name):
            target = closed_name(name)
            os.replace(directory / name, directory / target)
            adopted.append(target)
    return adopted


def read_segment(path: Path) -> SegmentRead:
    """A closed segment's records (a segment holds `segment_s` seconds of requests: read whole)."""
    stats = LedgerStats()
    records = list(read_ledger(path, stats))
    return SegmentRead(path.name, records, stats.truncated)


def expire_segments(
    directory: Path, now: float, retention_s: float, ingested: Callable[[str], bool]
) -> list[str]:
    """Remove the closed segments last written more than `retention_s` ago that were ingested
    (an unread one is kept, whatever its age); the names removed."""
    removed: list[str] = []
    for path in closed_segments(directory):
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > retention_s and ingested(path.name):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
