"""What the charts are measured and labelled with (pure): untrusted text made visible and
escaped for XML, category labels wrapped, tick labels, linear scales and "nice" ticks."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass


def visible_text(value: object) -> str:
    """str(value) with every non-printable character (controls, line breaks, bidi overrides,
    zero-width characters) replaced by a visible escape; the result is valid XML character data
    once `html.escape`d (XML 1.0 forbids most control characters even as references)."""
    out: list[str] = []
    for ch in str(value):
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def xml_escape(value: object) -> str:
    """Untrusted text for XML/HTML text and (double- or single-quoted) attribute values."""
    return html.escape(visible_text(value), quote=True)


def wrap_label(text: str, width: int, max_lines: int = 2) -> list[str]:
    """Split a category label into at most max_lines lines of about `width` characters, at
    `_ - . / space` boundaries where possible; the last line is cut with an ellipsis."""
    if len(text) <= width:
        return [text]
    pieces: list[str] = []
    current = ""
    for ch in text:
        current += ch
        if ch in "_-./ ":
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    lines: list[str] = []
    line = ""
    for piece in pieces:
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
        while len(line) > width:
            lines.append(line[:width])
            line = line[width:]
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(1, width - 1)] + "\u2026"
    return lines


def fmt_num(value: float) -> str:
    """Compact tick label: 0, 0.5, 12, 1.5k, 2M."""
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 1e6:
        return f"{value / 1e6:g}M"
    if mag >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:.6g}"


def fmt_pct(value: float) -> str:
    """Tick label for a fraction in [0, 1]: 0.995 -> 99.5%."""
    return f"{value * 100:.6g}%"


@dataclass(frozen=True)
class LinearScale:
    """Maps the data interval [d0, d1] onto the pixel interval [r0, r1] (r1 < r0 for y)."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2.0
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)


def nice_step(span: float, target: int = 5) -> float:
    """A 1/2/5 x 10^k step giving about `target` intervals over span."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, target)
    power = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= mult * power * (1 + 1e-9):
            return mult * power
    return 10.0 * power


def nice_domain(lo: float, hi: float, target: int = 5) -> tuple[float, float, float]:
    """(lo', hi', step): the interval widened to whole steps; a degenerate one gets some room."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (0.0, 1.0, 0.2)
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target)
    return (math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step, step)


def ticks(lo: float, hi: float, step: float) -> list[float]:
    """Multiples of step within [lo, hi] (float noise rounded away)."""
    if step <= 0:
        return [lo]
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    if last - first > 1000:
        return [lo, hi]
    digits = max(0, -math.floor(math.log10(step)) + 2)
    return [round(i * step, digits) for i in range(first, last + 1)]


def integer_step(span: float, target: int = 5) -> float:
    """A tick step for counts (users): 1, 2, 5, 10, 20, 25, 50, ... never a fraction."""
    step = nice_step(span, target)
    if step < 1.0:
        return 1.0
    return 2.0 if step == 2.5 else step


@dataclass(frozen=True)
class LineDomains:
    """A line chart's data intervals and tick steps; `zoomed`: the y axis starts above zero
    while every value is at or above zero (the chart must say so)."""

    x_lo: float
    x_hi: float
    x_step: float
    y_lo: float
    y_hi: float
    y_step: float
    zoomed: bool = False


def _y_domain(
    all_y: list[float], y_clamp: tuple[float, float] | None, zoom: bool
) -> tuple[float, float, float]:
    lo, hi = min(all_y), max(all_y)
    if not zoom:  # quantities: the axis includes zero, so heights compare honestly
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    y_lo, y_hi, y_step = nice_domain(lo, hi, 5)
    if y_clamp is not None:
        y_lo, y_hi = max(y_lo, y_clamp[0]), min(y_hi, y_clamp[1])
        if y_hi <= y_lo:
            y_lo, y_hi = y_clamp
        y_step = nice_step(y_hi - y_lo, 5)
    return y_lo, y_hi, y_step


def line_domains(
    all_x: list[float],
    all_y: list[float],
    *,
    x_domain: tuple[float, float] | None = None,
    y_domain: tuple[float, float] | None = None,
    y_clamp: tuple[float, float] | None = None,
    y_zoom: bool | None = None,
    x_integer: bool = False,
) -> LineDomains:
    """The axes of a line chart (pure). The x axis spans the data exactly (a time axis starts at
    the first window, not at a rounded-down tick); its ticks are the nice multiples inside it
    (whole numbers with `x_integer`). The automatic y axis starts at zero unless zooming is
    allowed: `y_zoom`, by default only on a clamped axis (a rate near 100 %), which then fits the
    data and is marked `zoomed` when it starts above zero."""
    x_lo, x_hi = x_domain if x_domain is not None else (min(all_x), max(all_x))
    if x_lo == x_hi:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    x_step = integer_step(x_hi - x_lo, 8) if x_integer else nice_step(x_hi - x_lo, 8)
    if y_domain is not None:
        y_lo, y_hi = y_domain
        y_step = nice_step(y_hi - y_lo, 5)
    else:
        zoom = y_clamp is not None if y_zoom is None else y_zoom
        y_lo, y_hi, y_step = _y_domain(all_y, y_clamp, zoom)
    zoomed = y_lo > 0 and min(all_y) >= 0
    return LineDomains(x_lo, x_hi, x_step, y_lo, y_hi, y_step, zoomed)
