"""`loadgen run --web`, the parts without Locust: the state file and the Tracing tab's rows.

In web mode Locust's web UI drives the load. The locustfile (loadgen.traffic.webui, in the Locust
process) writes the state file when a test starts and, after the ledger is flushed and closed,
when it stops; the orchestrating process (loadgen.run.load) reads it to start the side-emitter
and to end the load, then reads the traces back and writes the report into the same run folder,
where the Tracing tab finds the numbers. This module imports nothing from Locust: both processes
use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The environment variable that puts the locustfile in web mode: the state file's path.
WEB_STATE_ENV = "LOADGEN_WEB_STATE"
#: The state file, in the run folder.
WEB_STATE_FILE = "webui.json"
RUNNING = "running"
STOPPED = "stopped"


@dataclass(frozen=True)
class WebState:
    """What the web UI's test is doing: `running` (since `at`) or `stopped` (at `at`, after
    `requests` requests, the ledger closed)."""

    state: str
    at: float
    requests: int = 0


def write_state(path: Path, state: WebState) -> None:
    """The state file, replaced atomically (the other process polls it)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(asdict(state)) + "\n")
    os.replace(tmp, path)


def read_state(path: Path) -> WebState | None:
    """The state file, or None while there is none (no test started yet) or it is unreadable."""
    try:
        data = json.loads(path.read_text())
        return WebState(str(data["state"]), float(data["at"]), int(data.get("requests", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _percent(part: dict[str, Any] | None) -> str:
    """`k of n (r %, 95 % interval a–b %)` of a summary proportion."""
    if not part or not part.get("n"):
        return "none checked"
    k, n, rate = part.get("k", 0), part["n"], part.get("rate")
    text = f"{k:,} of {n:,}"
    if rate is not None:
        ci95: list[float] = list(part.get("ci95") or [])
        ci = f", 95 % interval {ci95[0] * 100:.1f}–{ci95[1] * 100:.1f} %" if len(ci95) == 2 else ""
        text += f" ({rate * 100:.1f} %{ci})"
    return text


def _mode_value(row: dict[str, Any], result: dict[str, Any] | None) -> str:
    text = f"{row['requests']:,} requests, the upstream saw {row['sampled']:,} sampled"
    if row.get("sampled_fraction") is not None:
        text += f" ({row['sampled_fraction'] * 100:.1f} %)"
    if result is not None:
        text += (
            f"; traces found {result.get('found', 0):,}, partial {result.get('partial', 0):,}, "
            f"missing {result.get('missing', 0):,}"
        )
    return text


def _summary_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    mesh = summary.get("mesh") or {}
    reference = summary.get("reference") or {}
    sampling = summary.get("sampling") or {}
    verdicts = summary.get("verdicts") or {}
    return [
        {"what": "mesh collection", "value": _percent(mesh.get("collection"))},
        {
            "what": "mesh partial / unknown",
            "value": f"{mesh.get('partial', 0):,} / {mesh.get('unknown', 0):,}",
        },
        {"what": "reference collection", "value": _percent(reference.get("collection"))},
        {"what": "sampled decisions", "value": _percent(sampling.get("decision"))},
        {"what": "verdicts", "value": ", ".join(f"{k}: {v}" for k, v in verdicts.items()) or "none"},
    ]


def phase_text(state: WebState | None, summary: dict[str, Any] | None, report: bool) -> str:
    """Where the run is, as the Tracing tab says it."""
    if summary is not None and report:
        status = summary.get("status", "complete")
        return f"report written ({status})"
    if state is None:
        return "waiting for a test: start one on the first page"
    if state.state == RUNNING:
        return "load running: stop the test to read the traces back and write the report"
    return "reading the traces back (reload the page to see the result)"


def tracing_rows(
    run_id: str,
    modes: list[dict[str, Any]],
    *,
    web: bool,
    state: WebState | None = None,
    summary: dict[str, Any] | None = None,
    report_url: str | None = None,
) -> list[dict[str, str]]:
    """The Tracing tab: the run id, (web mode) the phase, one row per header mode (requests and
    the sampled fraction the upstream saw; after the read-back also the traces found), then the
    collection numbers and the report's address once the read-back has written them."""
    rows = [{"what": "run id", "value": run_id or "(set when the test starts)"}]
    if web:
        rows.append({"what": "state", "value": phase_text(state, summary, report_url is not None)})
    results = (summary or {}).get("modes") or {}
    for row in modes:
        rows.append({"what": f"mode {row['mode']}", "value": _mode_value(row, results.get(row["mode"]))})
    if summary is not None:
        rows.extend(_summary_rows(summary))
    if report_url is not None:
        rows.append({"what": "report", "value": report_url})
    return rows
