"""The capacity section of the report: per-step throughput, latency and collection/error charts
of a capacity run (loadgen.capacity's steps.json rows), each with a marker at the knee step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.report import plots
from loadgen.report.html.charts import CHART, figure
from loadgen.report.html.common import as_dict, as_list, as_num, esc, proportion
from loadgen.report.plots import BLUE, GREEN, MUTED, VERMILLION, Band, Series, VMarker, fmt_pct

Rate = tuple[float | None, float | None, float | None]  # rate, low, high


def steps_of(doc: object) -> tuple[list[Mapping[str, Any]], int | None]:
    """(steps, knee index) from `{"steps": [...], "knee": index|None}` (steps.json's shape)."""
    d = as_dict(doc)
    k = as_num(d.get("knee"))
    return [s for s in as_list(d.get("steps")) if isinstance(s, Mapping)], (int(k) if k is not None else None)


@dataclass(frozen=True)
class _Axis:
    """The steps drawn (those with an x value), their x values, and the knee marker."""

    use_rate: bool  # x is the offered req/s (a rate plan), else the users
    xs: list[float]
    steps: list[Mapping[str, Any]]
    vmarkers: list[VMarker]

    @property
    def x_label(self) -> str:
        return "offered load (req/s)" if self.use_rate else "users"

    def values(self, key: str) -> list[float | None]:
        return [as_num(s.get(key)) for s in self.steps]


def _knee_step(
    steps: Sequence[Mapping[str, Any]], knee: int | None
) -> tuple[Mapping[str, Any] | None, int | None]:
    """The knee step and its index: the step at index `knee`, else the one with `knee: true`."""
    if knee is None:
        knee = next((i for i, s in enumerate(steps) if s.get("knee") is True), None)
    return (steps[knee] if knee is not None and 0 <= knee < len(steps) else None), knee


def _axis(steps: Sequence[Mapping[str, Any]], knee_step: Mapping[str, Any] | None) -> _Axis | None:
    """The x values and the markers: the knee, and a step cut short (an abort, an interrupt:
    its numbers cover less than a full step), named as such."""
    use_rate = all(as_num(s.get("target_rps")) is not None for s in steps)
    key = "target_rps" if use_rate else "users"
    pts = [(x, s) for s in steps if (x := as_num(s.get(key))) is not None]
    if not pts:
        return None
    vmarkers = []
    for x, s in pts:
        cut = s.get("complete") is False
        label = s.get("label") or f"{x:g}"
        if s is knee_step:
            vmarkers.append(VMarker(x, f"knee: {label}" + (" (cut short)" if cut else ""), VERMILLION))
        elif cut:
            vmarkers.append(VMarker(x, f"cut short: {label}", MUTED, dash="2 3"))
    return _Axis(use_rate, [x for x, _ in pts], [s for _, s in pts], vmarkers)


def report_label(steps: Sequence[Mapping[str, Any]] | None) -> str:
    """What the report is: a capacity run's report says so in its title and heading."""
    return "loadgen capacity report" if steps else "loadgen run"


def _throughput_chart(axis: _Axis) -> str:
    offered = [Series("offered", axis.xs, axis.xs, MUTED, width=1.0, dash="3 3")] if axis.use_rate else []
    return plots.line_chart(
        chart_id="chart-capacity-throughput",
        title="Capacity: throughput",
        series=[Series("achieved req/s", axis.xs, axis.values("achieved_rps"), BLUE, markers=True), *offered],
        vmarkers=axis.vmarkers,
        x_label=axis.x_label,
        x_integer=not axis.use_rate,
        y_label="requests per second",
        frame=CHART,
    )


def _latency_chart(axis: _Axis) -> str:
    return plots.line_chart(
        chart_id="chart-capacity-latency",
        title="Capacity: latency",
        series=[
            Series("p50", axis.xs, axis.values("p50_ms"), GREEN, markers=True),
            Series("p99", axis.xs, axis.values("p99_ms"), VERMILLION, markers=True),
        ],
        vmarkers=axis.vmarkers,
        x_label=axis.x_label,
        x_integer=not axis.use_rate,
        y_label="milliseconds",
        frame=CHART,
    )


def _rate_of(value: object) -> Rate:
    """A step's rate: a `{k, n, rate, ci95}` dict with its interval, or a bare number."""
    if isinstance(value, Mapping):
        rate, low, high, _, _ = proportion(value)
        return rate, low, high
    return as_num(value), None, None


def _rates_chart(axis: _Axis) -> str:
    coll = [_rate_of(s.get("collection")) for s in axis.steps]
    errs = [
        _rate_of(s.get("errors")) if isinstance(s.get("errors"), Mapping) else (None, None, None)
        for s in axis.steps
    ]
    return plots.line_chart(
        chart_id="chart-capacity-rates",
        title="Capacity: collection and errors",
        series=[
            Series("mesh collection", axis.xs, [c[0] for c in coll], GREEN, markers=True),
            Series("error rate", axis.xs, [e[0] for e in errs], VERMILLION, markers=True),
        ],
        bands=[Band("collection 95 % CI", axis.xs, [c[1] for c in coll], [c[2] for c in coll], GREEN)],
        vmarkers=axis.vmarkers,
        x_label=axis.x_label,
        x_integer=not axis.use_rate,
        y_label="rate",
        y_clamp=(0.0, 1.0),
        y_format=fmt_pct,
        frame=CHART,
    )


def no_knee_text(steps: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(head, rest) for a run without a knee: within the bounds only where a step could be
    judged (its `judged` list not empty); plain text, escaped by the caller."""
    unjudged = [s for s in steps if s.get("judged") == []]
    if not unjudged:
        return "No knee", "every step stayed within the bounds."
    if len(unjudged) == len(steps):
        return "No knee verdict", "no step had data for any bound, so none was judged."
    labels = ", ".join(str(s.get("label", "?")) for s in unjudged)
    return (
        "No knee",
        f"among the {len(steps) - len(unjudged)} steps judged; not judged (no data for any bound): {labels}.",
    )


def _knee_text(
    steps: Sequence[Mapping[str, Any]], knee_step: Mapping[str, Any] | None, knee: int | None
) -> str:
    if knee_step is None:
        head, rest = no_knee_text(steps)
        return esc(f"{head}: {rest}")
    breaches = ", ".join(str(b) for b in as_list(knee_step.get("breaches")))
    return f"Knee at step {esc(knee_step.get('label') or knee)}" + (
        f" ({esc(breaches)})." if breaches else "."
    )


def capacity_section(steps: Sequence[Mapping[str, Any]], knee: int | None) -> str:
    """Capacity steps (loadgen.capacity's steps.json rows): achieved vs offered throughput, p99,
    and collection/error rates per step, each with a marker at the knee step.

    x is the step's `target_rps` when every step has one (a rate plan), else its `users`. The
    knee is the step at index `knee`, else the step carrying `knee: true`."""
    knee_step, knee = _knee_step(steps, knee)
    axis = _axis(steps, knee_step)
    if axis is None:
        return ""
    return (
        f'<section id="capacity"><h2>Capacity</h2><p class="hint" id="knee">{_knee_text(steps, knee_step, knee)}</p>'
        '<div class="charts">'
        + figure(
            _throughput_chart(axis),
            "Achieved throughput per step; past the knee it stops following the offered load.",
            "capacity-throughput",
        )
        + figure(_latency_chart(axis), "Latency percentiles per step.", "capacity-latency")
        + figure(
            _rates_chart(axis),
            "Mesh collection rate (Wilson 95 % interval) and error rate per step.",
            "capacity-rates",
        )
        + "</div></section>"
    )
