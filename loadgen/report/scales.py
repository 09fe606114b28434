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
