"""capacity.json, steps.json and capacity.md (pure): the document of a capacity run from its
plan, bounds, per-step metrics and knee, and its terminal/Markdown table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from loadgen.capacity.knee import Knee, breaches_by_step, judged_by_step
from loadgen.capacity.metrics import StepMetrics
from loadgen.capacity.model import SCHEMA_VERSION, KneeBounds, SafetyBounds
from loadgen.report.html.capacity import no_knee_text
from loadgen.traffic.shape import StepPlan


def capacity_document(
    *,
    run_id: str,
    plan: StepPlan,
    bounds: KneeBounds,
    safety: SafetyBounds,
    metrics: Sequence[StepMetrics],
    knee: Knee | None,
    status: str,
    abort: Mapping[str, Any] | None,
    notes: Sequence[str] = (),
    live_checks: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    judged = judged_by_step(metrics, bounds)
    rows = [
        m.to_row(knee=knee is not None and knee.index == pos, breaches=[r for r, _ in broken], judged=on)
        for pos, (m, broken, on) in enumerate(
            zip(metrics, breaches_by_step(metrics, bounds), judged, strict=True)
        )
    ]
    # The last step judged within every bound: a step nothing could be judged on is no evidence.
    before_knee = len(rows) if knee is None else knee.index
    last_good = next((pos for pos in range(before_knee - 1, -1, -1) if judged[pos]), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": status,  # complete | aborted | partial
        "plan": plan.to_dict(),
        "bounds": asdict(bounds),
        "safety": asdict(safety),
        "steps": rows,
        "knee": None if knee is None else knee.to_dict() | {"label": rows[knee.index]["label"]},
        "last_good": last_good,
        "abort": dict(abort) if abort else None,
        "live_checks": list(live_checks),
        "notes": list(notes),
    }


def report_steps(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The summary-compatible form for the HTML report: {"steps": [...], "knee": index|None}
    (the knee step also carries `knee: true`)."""
    knee = doc.get("knee")
    return {
        "steps": list(doc.get("steps") or []),
        "knee": knee.get("index") if isinstance(knee, Mapping) else None,
    }


def _num(v: object, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def _prop(p: object, ci: bool = False) -> str:
    if not isinstance(p, Mapping) or not p.get("n"):
        return "-"
    text = f"{p['rate']:.1%} ({p['k']}/{p['n']})"
    if ci:
        low, high = p["ci95"]
        text = f"{p['rate']:.1%} [{low:.1%}, {high:.1%}] ({p['k']}/{p['n']})"
    return text


CAPACITY_COLUMNS = (
    "step",
    "load",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "decision",
    "collection",
    "reference",
    "ingest spans/s",
    "bounds",
)


def capacity_rows(doc: Mapping[str, Any], *, ci: bool = False) -> list[list[str]]:
    """The steps table (header first) for a terminal or Markdown; the knee row says so."""
    rows = [list(CAPACITY_COLUMNS)]
    for s in doc.get("steps") or []:
        load = str(s.get("label", "?"))
        if s.get("target_rps") is not None and s.get("kind") == "users":
            load += f" ({s['target_rps']:g} req/s)"
        if not s.get("complete", True):
            load += " (cut short)"
        breaches = ", ".join(s.get("breaches") or []) or ("not judged" if s.get("judged") == [] else "ok")
        if s.get("knee"):
            breaches = f"KNEE: {breaches}"
        rows.append(
            [
                str(s.get("index")),
                load,
                _num(s.get("achieved_rps")),
                _num(s.get("p50_ms")),
                _num(s.get("p95_ms")),
                _num(s.get("p99_ms")),
                _prop(s.get("errors")),
                _prop(s.get("decision"), ci),
                _prop(s.get("collection"), ci),
                _prop(s.get("reference_collection"), ci),
                _num(s.get("ingest_spans_per_s"), "{:.0f}"),
                breaches,
            ]
        )
    return rows


def _bounds_text(bounds: Mapping[str, Any]) -> str:
    parts = []
    if bounds.get("p99_ms") is not None:
        parts.append(f"p99 <= {bounds['p99_ms']:g} ms")
    if bounds.get("max_error_rate") is not None:
        parts.append(f"errors <= {bounds['max_error_rate']:.2%}")
    if bounds.get("min_collection") is not None:
        parts.append(f"collection >= {bounds['min_collection']:.2%}")
    if bounds.get("min_throughput") is not None:
        parts.append(f"throughput >= {bounds['min_throughput']:.0%} of the target")
    if bounds.get("min_scaling") is not None:
        parts.append(f"req/s rise >= {bounds['min_scaling']:.0%} of the offered increase")
    if bounds.get("max_p99_growth") is not None:
        parts.append(f"p99 <= {bounds['max_p99_growth']:g}x the first step's")
    return ", ".join(parts) or "none"


def render_capacity_markdown(doc: Mapping[str, Any]) -> str:
    """capacity.md from capacity.json's content (pure)."""
    plan = doc.get("plan") or {}
    lines = [
        f"# loadgen capacity `{doc.get('run_id', '?')}`",
        "",
        f"Steps `{plan.get('spec', '?')}`, {plan.get('step_s', 0):g} s each "
        f"({plan.get('ramp_s', 0):g} s ramp left out of the numbers). Status: **{doc.get('status', '?')}**.",
        "",
        f"Bounds: {_bounds_text(doc.get('bounds') or {})}.",
        "",
    ]
    knee = doc.get("knee")
    if isinstance(knee, Mapping):
        lines.append(f"**Knee: step {knee.get('index')} ({knee.get('label')})**: {knee.get('detail')}.")
        last_good = doc.get("last_good")
        steps = doc.get("steps") or []
        if isinstance(last_good, int) and 0 <= last_good < len(steps):
            lines.append(f"The last step within every bound: {steps[last_good].get('label')}.")
        else:
            lines.append("No step was within every bound.")
    elif doc.get("steps"):
        head, rest = no_knee_text(doc.get("steps") or [])
        lines.append(f"**{head}**: {rest}")
    else:
        lines.append("No step produced data.")
    abort = doc.get("abort")
    if isinstance(abort, Mapping):
        lines += ["", f"**Aborted** after {_num(abort.get('elapsed_s'))} s: {abort.get('reason')}."]
    rows = capacity_rows(doc, ci=True)
    lines += ["", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    lines += [
        "",
        "req/s: requests started in the step's window after the ramp, per second. Rates are k/n "
        "with a Wilson 95 % interval: decision = upstream saw sampled / requests the proxy decided; "
        "collection = traces found complete / decided sampled; reference = reference traces found "
        "complete / exported. Ingest: spans/s the collector stored (embedded collector only).",
    ]
    notes = doc.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
