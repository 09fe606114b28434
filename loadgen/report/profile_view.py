""" "What loadgen learned about this mesh": the mesh profile for the terminal and report.md (pure).

Reads the `profile` section of summary.json (or a mesh-profile.json), whose `facts` list holds
one {name, value, learned, evidence} per fact (loadgen.mesh.profile.profile_facts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = ["PROFILE_TITLE", "profile_facts_rows", "profile_markdown", "profile_source_line", "profile_table"]

PROFILE_TITLE = "What loadgen learned about this mesh"


def profile_source_line(profile: Mapping[str, Any]) -> str:
    source = profile.get("source")
    if source == "flags":
        return "The probe was skipped (--no-probe): only flags declared facts."
    if source == "file":
        return "Read from a saved profile (--profile)."
    return (
        f"Probe: {int(profile.get('requests') or 0)} crafted requests (run id "
        f"{profile.get('probe_run_id') or '?'}), {int(profile.get('answered') or 0)} answered; "
        f"{int(profile.get('traces_found') or 0)} of {int(profile.get('traces_sampled') or 0)} "
        "sampled traces read back. These facts, not defaults, set the expectations."
    )


def profile_facts_rows(profile: Mapping[str, Any]) -> list[tuple[str, str, bool, str]]:
    """(name, value, learned, evidence) per fact; tolerant of a hand-edited file."""
    rows = []
    for fact in profile.get("facts") or ():
        if isinstance(fact, Mapping):
            rows.append(
                (
                    str(fact.get("name", "?")),
                    str(fact.get("value", "?")),
                    bool(fact.get("learned")),
                    str(fact.get("evidence", "")),
                )
            )
    return rows


def profile_table(profile: Mapping[str, Any]) -> Table:
    table = Table(title=PROFILE_TITLE, title_justify="left", caption=escape(profile_source_line(profile)))
    table.add_column("fact")
    table.add_column("learned")
    table.add_column("evidence", overflow="fold")
    for name, value, learned, evidence in profile_facts_rows(profile):
        table.add_row(escape(name), Text(value, style="" if learned else "yellow"), escape(evidence))
    return table


def profile_markdown(profile: Mapping[str, Any], escape_md: Any) -> list[str]:
    """Lines of a `## What loadgen learned about this mesh` section; `escape_md` escapes a cell."""
    lines = [f"## {PROFILE_TITLE}", "", escape_md(profile_source_line(profile)), ""]
    lines += ["| fact | learned | evidence |", "|---|---|---|"]
    for name, value, learned, evidence in profile_facts_rows(profile):
        shown = escape_md(value) if learned else f"**{escape_md(value)}** (not learned)"
        lines.append(f"| {escape_md(name)} | {shown} | {escape_md(evidence)} |")
    for note in profile.get("notes") or ():
        lines.append(f"- note: {escape_md(note)}")
    lines.append("")
    return lines
