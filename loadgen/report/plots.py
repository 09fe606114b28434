"""Inline SVG charts generated in Python (pure: data in, SVG text out).

The HTML report must open offline, from a CI artifact, years later: no chart library, no CDN, no
JavaScript, no web fonts. Each chart is one self-contained `<svg>` element (valid XML, presentation
attributes only, so it also renders when saved on its own) built from a few primitives: linear
scales with "nice" ticks, axes and grid, lines with gaps, interval bands, horizontal reference
lines, vertical markers, point markers and grouped bars. Hovering a point or bar shows its value
through the SVG `<title>` tooltip, which needs no script.

All text that reaches the SVG (titles, series names, category labels: mode names and run ids are
user or network input) goes through `xml_escape`, which also makes control and invisible
characters visible (`\\x1b`, `\\u202e`) instead of passing them into the document.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loadgen.report.scales import (
    LinearScale,
    LineDomains,
    fmt_num,
    fmt_pct,
    line_domains,
    nice_domain,
    nice_step,
    ticks,
    visible_text,
    wrap_label,
    xml_escape,
)

# Re-exported: the report and tests take the text and scale helpers from here too.
__all__ = [
    "BLUE",
    "GREEN",
    "GRID",
    "INK",
    "MUTED",
    "ORANGE",
    "PALETTE",
    "PURPLE",
    "SKY",
    "VERMILLION",
    "YELLOW",
    "Band",
    "BarGroup",
    "Frame",
    "HLine",
    "LinearScale",
    "Series",
    "VMarker",
    "bar_chart",
    "fmt_num",
    "fmt_pct",
    "line_chart",
    "nice_domain",
    "nice_step",
    "ticks",
    "visible_text",
    "wrap_label",
    "xml_escape",
]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
BLUE = "#0072B2"
ORANGE = "#E69F00"
GREEN = "#009E73"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
SKY = "#56B4E9"
YELLOW = "#F0E442"
INK = "#1f2933"
GRID = "#e4e7eb"
MUTED = "#616e7c"
PALETTE = (BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW, INK)

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

Number = float | int
Formatter = Callable[[float], str]


HALO = ' stroke="#ffffff" stroke-width="3" stroke-linejoin="round" paint-order="stroke"'


def _c(value: float) -> str:
    """A coordinate: two decimals, no trailing zeros (stable for tests, short for the file)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class Series:
    """A line; None in ys breaks it (a window without data is a gap, not a zero)."""

    name: str
    xs: Sequence[Number]
    ys: Sequence[Number | None]
    color: str = BLUE
    width: float = 2.0
    dash: str | None = None
    markers: bool = False  # a dot with a tooltip per point
    step: bool = False  # hold each value until the next x (a step-after curve)


@dataclass(frozen=True)
class Band:
    """A filled interval (e.g. a 95 % confidence interval) between lows and highs."""

    name: str
    xs: Sequence[Number]
    lows: Sequence[Number | None]
    highs: Sequence[Number | None]
    color: str = BLUE
    opacity: float = 0.18


@dataclass(frozen=True)
class HLine:
    """A horizontal reference line across the plot (a configured value, a threshold)."""

    y: float
    label: str
    color: str = INK
    dash: str | None = "6 4"


@dataclass(frozen=True)
class VMarker:
    """A vertical marker line with a label (a knee, t50/t99, an event)."""

    x: float
    label: str
    color: str = VERMILLION
    dash: str | None = "4 3"


@dataclass(frozen=True)
class BarGroup:
    """One coloured bar per category (several groups are drawn side by side)."""

    name: str
    values: Sequence[Number | None]
    color: str = BLUE


@dataclass(frozen=True)
class Frame:
    """Chart size and the plot area inside its margins."""

    width: float = 720.0
    height: float = 300.0
    left: float = 64.0
    right: float = 20.0
    top: float = 52.0
    bottom: float = 46.0

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:  # bottom of the plot area (pixel y grows downwards)
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


@dataclass
class _Svg:
    frame: Frame
    title: str
    chart_id: str
    parts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(
        self,
        x: float,
        y: float,
        content: object,
        *,
        anchor: str = "start",
        size: float = 12,
        color: str = MUTED,
        weight: str = "normal",
        extra: str = "",
    ) -> None:
        self.add(
            f'<text x="{_c(x)}" y="{_c(y)}" text-anchor="{anchor}" font-size="{_c(size)}" '
            f'fill="{color}" font-weight="{weight}"{extra}>{xml_escape(content)}</text>'
        )

    def render(self) -> str:
        f = self.frame
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="{xml_escape(self.chart_id)}" '
            f'viewBox="0 0 {_c(f.width)} {_c(f.height)}" width="{_c(f.width)}" height="{_c(f.height)}" '
            f'role="img" aria-label="{xml_escape(self.title)}" font-family="{xml_escape(FONT)}">'
            f"<title>{xml_escape(self.title)}</title>"
            f'<rect x="0" y="0" width="{_c(f.width)}" height="{_c(f.height)}" fill="#ffffff"/>'
        )
        return head + "".join(self.parts) + "</svg>"


@dataclass(frozen=True)
class _Key:
    name: str
    color: str
    kind: str  # "line" | "band" | "box"
    dash: str | None = None


def _legend(svg: _Svg, entries: Sequence[_Key]) -> None:
    """Swatches in one row under the title."""
    x = svg.frame.x0
    y = 38.0
    for key in entries:
        label = visible_text(key.name)
        if key.kind == "line":
            dash_attr = f' stroke-dasharray="{key.dash}"' if key.dash else ""
            svg.add(
                f'<line x1="{_c(x)}" y1="{_c(y - 4)}" x2="{_c(x + 18)}" y2="{_c(y - 4)}" '
                f'stroke="{key.color}" stroke-width="2.5"{dash_attr}/>'
            )
        else:
            opacity = ' fill-opacity="0.25"' if key.kind == "band" else ""
            svg.add(
                f'<rect x="{_c(x)}" y="{_c(y - 9)}" width="18" height="10" fill="{key.color}"{opacity} stroke="none"/>'
            )
        svg.text(x + 23, y, label, size=11.5, color=INK, extra=' data-role="legend"')
        x += 23 + 6.6 * len(label) + 18


def _axes(
    svg: _Svg,
    xs: LinearScale,
    ys: LinearScale,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    x_format: Formatter,
    y_format: Formatter,
    x_label: str,
    y_label: str,
) -> None:
    f = svg.frame
    for t in y_ticks:
        y = ys(t)
        svg.add(
            f'<line x1="{_c(f.x0)}" y1="{_c(y)}" x2="{_c(f.x1)}" y2="{_c(y)}" stroke="{GRID}" stroke-width="1"/>'
        )
        svg.text(f.x0 - 6, y + 4, y_format(t), anchor="end", size=11, extra=' data-role="ytick"')
    for t in x_ticks:
        x = xs(t)
        svg.add(
            f'<line x1="{_c(x)}" y1="{_c(f.y0)}" x2="{_c(x)}" y2="{_c(f.y0 + 5)}" stroke="{MUTED}" stroke-width="1"/>'
        )
        svg.text(x, f.y0 + 18, x_format(t), anchor="middle", size=11, extra=' data-role="xtick"')
    svg.add(
        f'<line x1="{_c(f.x0)}" y1="{_c(f.y0)}" x2="{_c(f.x1)}" y2="{_c(f.y0)}" stroke="{MUTED}" stroke-width="1"/>'
        f'<line x1="{_c(f.x0)}" y1="{_c(f.y0)}" x2="{_c(f.x0)}" y2="{_c(f.y1)}" stroke="{MUTED}" stroke-width="1"/>'
    )
    if x_label:
        svg.text((f.x0 + f.x1) / 2, f.height - 8, x_label, anchor="middle", size=11.5)
    if y_label:
        cy = (f.y0 + f.y1) / 2
        svg.text(14, cy, y_label, anchor="middle", size=11.5, extra=f' transform="rotate(-90 14 {_c(cy)})"')


def _segments(
    xs: Sequence[Number], ys: Sequence[Number | None], step: bool
) -> list[list[tuple[float, float]]]:
    """Runs of consecutive defined points; a step curve holds each value until the next x."""
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(float(y)):
            if current:
                runs.append(current)
            current = []
            continue
        if step and current:
            current.append((float(x), current[-1][1]))
        current.append((float(x), float(y)))
    if current:
        runs.append(current)
    return runs


def _path(points: Sequence[tuple[float, float]], xs: LinearScale, ys: LinearScale) -> str:
    return "M" + " L".join(f"{_c(xs(x))} {_c(ys(y))}" for x, y in points)


def _finite(values: Sequence[Number | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _heading(svg: _Svg, title: str, note: str) -> None:
    """The chart's title, and a note at the right of the same line."""
    f = svg.frame
    svg.text(f.x0, 20, title, size=14.5, color=INK, weight="600", extra=' data-role="title"')
    if note:
        svg.text(f.x1, 20, note, anchor="end", size=11.5, extra=' data-role="note"')


def _no_data(svg: _Svg) -> str:
    f = svg.frame
    svg.text((f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2, "no data", anchor="middle", size=13)
    return svg.render()


def _rule(
    svg: _Svg, ends: tuple[float, float, float, float], color: str, dash: str | None, role: str, name: str
) -> None:
    """A reference line or marker (x1, y1, x2, y2) across the plot, named for tests and tools."""
    x1, y1, x2, y2 = ends
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    svg.add(
        f'<line x1="{_c(x1)}" y1="{_c(y1)}" x2="{_c(x2)}" y2="{_c(y2)}" stroke="{color}" '
        f'stroke-width="1.5"{dash_attr} data-role="{role}" data-name="{xml_escape(name)}"/>'
    )


def _hline(svg: _Svg, h: HLine, y: float) -> None:
    f = svg.frame
    _rule(svg, (f.x0, y, f.x1, y), h.color, h.dash, "hline", h.label)


def _hline_label(svg: _Svg, h: HLine, y: float) -> None:
    svg.text(svg.frame.x1 - 4, y - 5, h.label, anchor="end", size=11, color=h.color, weight="600", extra=HALO)


def _draw_bands(svg: _Svg, bands: Sequence[Band], xs: LinearScale, ys: LinearScale) -> None:
    for band in bands:
        for triples in _band_runs(band):
            upper = [(x, hi) for x, _, hi in triples]
            lower = [(x, lo) for x, lo, _ in reversed(triples)]
            d = _path(upper + lower, xs, ys) + " Z"
            svg.add(
                f'<path d="{d}" fill="{band.color}" fill-opacity="{band.opacity:g}" stroke="none" '
                f'data-role="band" data-name="{xml_escape(band.name)}"/>'
            )


def _draw_series(
    svg: _Svg, s: Series, xs: LinearScale, ys: LinearScale, x_format: Formatter, y_format: Formatter
) -> None:
    """A series' line runs, and its point markers with their tooltips."""
    dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
    for run in _segments(s.xs, s.ys, s.step):
        svg.add(
            f'<path d="{_path(run, xs, ys)}" fill="none" stroke="{s.color}" stroke-width="{s.width:g}" '
            f'stroke-linejoin="round" stroke-linecap="round"{dash} data-role="series" '
            f'data-name="{xml_escape(s.name)}"/>'
        )
    if not s.markers:
        return
    for px, py in zip(s.xs, s.ys, strict=True):
        if py is None or not math.isfinite(float(py)):
            continue
        svg.add(
            f'<circle cx="{_c(xs(float(px)))}" cy="{_c(ys(float(py)))}" r="3" fill="{s.color}" '
            f'data-role="point"><title>{xml_escape(s.name)}: {xml_escape(x_format(float(px)))} '
            f"&#8594; {xml_escape(y_format(float(py)))}</title></circle>"
        )


def _draw_vmarker(svg: _Svg, m: VMarker, x: float) -> None:
    f = svg.frame
    _rule(svg, (x, f.y0, x, f.y1), m.color, m.dash, "vmarker", m.label)
    anchor = "end" if x > (f.x0 + f.x1) / 2 else "start"
    svg.text(
        x + (-4 if anchor == "end" else 4),
        (f.y0 + f.y1) / 2,
        m.label,
        anchor=anchor,
        size=11,
        color=m.color,
        extra=HALO,
    )


def line_chart(
    *,
    chart_id: str,
    title: str,
    series: Sequence[Series] = (),
    bands: Sequence[Band] = (),
    hlines: Sequence[HLine] = (),
    vmarkers: Sequence[VMarker] = (),
    x_label: str = "",
    y_label: str = "",
    x_domain: tuple[float, float] | None = None,
    y_domain: tuple[float, float] | None = None,
    y_clamp: tuple[float, float] | None = None,
    y_zoom: bool | None = None,
    x_integer: bool = False,
    partial: tuple[float, float, str] | None = None,
    x_format: Formatter = fmt_num,
    y_format: Formatter = fmt_num,
    frame: Frame | None = None,
    note: str = "",
) -> str:
    """Lines, bands, reference lines and markers on linear axes. Domains default to the data
    widened to nice ticks (`scales.line_domains`): y from zero, except on a clamped axis (a rate)
    or with `y_zoom`, where a y axis starting above zero is labelled as zoomed. `x_integer`:
    whole-number x ticks (users). `partial` (x from, x to, label) shades a stretch whose values
    cover less time than the others (a run's last window)."""
    f = frame or Frame()
    svg = _Svg(f, title, chart_id)
    _heading(svg, title, note)
    all_x = [v for s in series for v in _finite(s.xs)] + [v for b in bands for v in _finite(b.xs)]
    all_x += [m.x for m in vmarkers if math.isfinite(m.x)]
    all_y = [v for s in series for v in _finite(s.ys)]
    all_y += [v for b in bands for v in _finite(b.lows) + _finite(b.highs)]
    all_y += [h.y for h in hlines if math.isfinite(h.y)]
    if not all_y or not all_x:
        return _no_data(svg)
    d = line_domains(
        all_x,
        all_y,
        x_domain=x_domain,
        y_domain=y_domain,
        y_clamp=y_clamp,
        y_zoom=y_zoom,
        x_integer=x_integer,
    )
    xs = LinearScale(d.x_lo, d.x_hi, f.x0, f.x1)
    ys = LinearScale(d.y_lo, d.y_hi, f.y0, f.y1)
    _axes(
        svg,
        xs,
        ys,
        ticks(d.x_lo, d.x_hi, d.x_step),
        ticks(d.y_lo, d.y_hi, d.y_step),
        x_format,
        y_format,
        x_label,
        y_label,
    )
    clip = f"{chart_id}-clip"
    svg.add(
        f'<defs><clipPath id="{xml_escape(clip)}"><rect x="{_c(f.x0)}" y="{_c(f.y1 - 2)}" '
        f'width="{_c(f.x1 - f.x0)}" height="{_c(f.y0 - f.y1 + 4)}"/></clipPath></defs>'
        f'<g clip-path="url(#{xml_escape(clip)})">'
    )
    if partial is not None:
        _draw_partial(svg, partial, xs, d)
    _draw_bands(svg, bands, xs, ys)
    shown = [h for h in hlines if d.y_lo <= h.y <= d.y_hi]
    for h in shown:
        _hline(svg, h, ys(h.y))
    for s in series:
        _draw_series(svg, s, xs, ys, x_format, y_format)
    svg.add("</g>")
    # Labels of reference lines and markers go on top, outside the clip.
    for h in shown:
        _hline_label(svg, h, ys(h.y))
    for m in vmarkers:
        if d.x_lo <= m.x <= d.x_hi:
            _draw_vmarker(svg, m, xs(m.x))
    if d.zoomed:
        _zoom_label(svg, y_format(d.y_lo))
    entries = [_Key(s.name, s.color, "line", s.dash) for s in series]
    entries += [_Key(b.name, b.color, "band") for b in bands]
    _legend(svg, entries)
    return svg.render()


def _draw_partial(svg: _Svg, partial: tuple[float, float, str], xs: LinearScale, d: LineDomains) -> None:
    """A shaded stretch (clipped to the x domain), labelled at the bottom right: the top holds
    the reference lines' labels."""
    lo, hi = max(partial[0], d.x_lo), min(partial[1], d.x_hi)
    f = svg.frame
    left, right = xs(lo), xs(hi)
    if right - left < 2.0:  # at the edge of the domain: a visible strip at least
        left = right - 6.0 if right >= f.x1 - 1 else left
        right = left + 6.0
    svg.add(
        f'<rect x="{_c(left)}" y="{_c(f.y1)}" width="{_c(right - left)}" height="{_c(f.y0 - f.y1)}" '
        f'fill="{MUTED}" fill-opacity="0.12" stroke="none" data-role="partial" '
        f'data-name="{xml_escape(partial[2])}"><title>{xml_escape(partial[2])}</title></rect>'
    )
    svg.text(
        right - 3, f.y0 - 6, partial[2], anchor="end", size=10.5, extra=HALO + ' data-role="partial-label"'
    )


def _zoom_label(svg: _Svg, start: str) -> None:
    """The y axis does not start at zero: a break mark on the axis and a label saying where it starts."""
    f = svg.frame
    x, y = f.x0, f.y0 - 10
    svg.add(
        f'<path d="M{_c(x - 5)} {_c(y + 3)} L{_c(x + 5)} {_c(y - 1)} M{_c(x - 5)} {_c(y + 7)} '
        f'L{_c(x + 5)} {_c(y + 3)}" stroke="{INK}" stroke-width="1.2" fill="none" data-role="axis-break"/>'
    )
    svg.text(
        x + 8, f.y0 - 6, f"y axis zoomed: starts at {start}", size=10.5, extra=HALO + ' data-role="zoom"'
    )


def _band_runs(band: Band) -> list[list[tuple[float, float, float]]]:
    runs: list[list[tuple[float, float, float]]] = []
    current: list[tuple[float, float, float]] = []
    for x, lo, hi in zip(band.xs, band.lows, band.highs, strict=True):
        if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            if current:
                runs.append(current)
            current = []
            continue
        current.append((float(x), float(lo), float(hi)))
    if current:
        runs.append(current)
    # A single point has no width: widen it a little so a one-window run still shows its band.
    out = []
    for run in runs:
        if len(run) == 1:
            x, lo, hi = run[0]
            run = [(x - 0.15, lo, hi), (x + 0.15, lo, hi)]
        out.append(run)
    return out


def bar_chart(
    *,
    chart_id: str,
    title: str,
    categories: Sequence[str],
    groups: Sequence[BarGroup],
    y_label: str = "",
    y_format: Formatter = fmt_num,
    hlines: Sequence[HLine] = (),
    frame: Frame | None = None,
    note: str = "",
) -> str:
    """Grouped vertical bars: one slot per category, one bar per group inside it; y from 0."""
    f = frame or Frame()
    svg = _Svg(f, title, chart_id)
    _heading(svg, title, note)
    values = [v for g in groups for v in _finite(g.values)] + [h.y for h in hlines]
    if not categories or not values:
        return _no_data(svg)
    _, y_hi, y_step = nice_domain(0.0, max(max(values), 0.0) or 1.0, 5)
    ys = LinearScale(0.0, y_hi, f.y0, f.y1)
    slot = (f.x1 - f.x0) / len(categories)
    for t in ticks(0.0, y_hi, y_step):
        y = ys(t)
        svg.add(
            f'<line x1="{_c(f.x0)}" y1="{_c(y)}" x2="{_c(f.x1)}" y2="{_c(y)}" stroke="{GRID}" stroke-width="1"/>'
        )
        svg.text(f.x0 - 6, y + 4, y_format(t), anchor="end", size=11, extra=' data-role="ytick"')
    svg.add(
        f'<line x1="{_c(f.x0)}" y1="{_c(f.y0)}" x2="{_c(f.x1)}" y2="{_c(f.y0)}" stroke="{MUTED}" stroke-width="1"/>'
    )
    inner = slot * 0.78
    bar_w = inner / max(1, len(groups))
    for i, cat in enumerate(categories):
        left = f.x0 + i * slot + (slot - inner) / 2
        for j, g in enumerate(groups):
            v = g.values[i] if i < len(g.values) else None
            if v is None or not math.isfinite(float(v)):
                continue
            top = ys(max(0.0, float(v)))
            x = left + j * bar_w
            svg.add(
                f'<rect x="{_c(x + 1)}" y="{_c(top)}" width="{_c(max(1.0, bar_w - 2))}" '
                f'height="{_c(max(0.0, f.y0 - top))}" fill="{g.color}" data-role="bar" '
                f'data-name="{xml_escape(g.name)}"><title>{xml_escape(cat)} {xml_escape(g.name)}: '
                f"{xml_escape(y_format(float(v)))}</title></rect>"
            )
        cx = f.x0 + (i + 0.5) * slot
        lines = wrap_label(visible_text(cat), max(4, int(slot / 6.4)))
        spans = "".join(
            f'<tspan x="{_c(cx)}" dy="{0 if k == 0 else 13}">{html.escape(line, quote=True)}</tspan>'
            for k, line in enumerate(lines)
        )
        svg.add(
            f'<text x="{_c(cx)}" y="{_c(f.y0 + 15)}" text-anchor="middle" font-size="11" fill="{MUTED}" '
            f'data-role="xtick">{spans}</text>'
        )
    for h in hlines:
        _hline(svg, h, ys(h.y))
        _hline_label(svg, h, ys(h.y))
    if y_label:
        cy = (f.y0 + f.y1) / 2
        svg.text(14, cy, y_label, anchor="middle", size=11.5, extra=f' transform="rotate(-90 14 {_c(cy)})"')
    _legend(svg, [_Key(g.name, g.color, "box") for g in groups])
    return svg.render()
