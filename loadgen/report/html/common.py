"""What every part of the report page shares: escaping, verdict titles and badges, and the small
readers and formatters of summary values.

The readers (`as_num`, `as_int`, `as_dict`, `as_list`, `proportion`) take whatever a summary
holds, so a hand-edited or older summary.json renders instead of crashing: a missing or
mistyped value reads as absent (None, 0, empty)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from loadgen.report.plots import xml_escape

esc = xml_escape

VERDICT_TITLES = {
    "load_delivered": "Load delivered",
    "sampling": "Sampling decision rate",
    "sampling_prediction": "x-request-id rule",
    "mesh_collection": "Mesh collection rate",
    "no_leaks": "No leaked traces",
    "reference_collection": "Reference collection rate",
    "propagation_integrity": "Propagation integrity",
    "header_modes": "Header modes behave as the profile predicts",
}


# --- small formatting helpers (robust against a hand-edited summary) ------------------------------


def as_num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def as_int(value: object) -> int:
    f = as_num(value)
    return int(f) if f is not None else 0


def pct_text(value: object, digits: int = 2) -> str:
    f = as_num(value)
    if f is None:
        return "n/a"
    text = f"{f * 100:.{digits}f}"
    return f"{text} %"


def ms_text(value: object) -> str:
    f = as_num(value)
    return "–" if f is None else (f"{f:.1f}" if f >= 10 else f"{f:.2f}")


def seconds_text(value: object) -> str:
    f = as_num(value)
    return "n/a" if f is None else f"{f:.2f} s"


def as_dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def proportion(p: object) -> tuple[float | None, float | None, float | None, int, int]:
    """(rate, low, high, k, n) of a `{k, n, rate, ci95}` dict; Nones when nothing was measured."""
    d = as_dict(p)
    k, n = as_int(d.get("k")), as_int(d.get("n"))
    ci = as_list(d.get("ci95"))
    low = as_num(ci[0]) if len(ci) == 2 else None
    high = as_num(ci[1]) if len(ci) == 2 else None
    if not n:
        return (None, None, None, k, n)
    return (as_num(d.get("rate")), low, high, k, n)


def ci_text(p: object) -> str:
    rate, low, high, k, n = proportion(p)
    if rate is None:
        return "nothing measured (n = 0)"
    return f"95 % CI {pct_text(low)} – {pct_text(high)} · k = {k:,} of n = {n:,}"


def ci_short(p: object) -> str:
    """`95 % CI 18.26 – 20.92 %` (or why there is none)."""
    rate, low, high, _, _ = proportion(p)
    if rate is None or low is None or high is None:
        return "nothing measured (n = 0)"
    return f"95 % CI {low * 100:.2f} – {high * 100:.2f} %"


def k_of_n(p: object, what: str) -> str:
    _, _, _, k, n = proportion(p)
    return f"{k:,} of {n:,} {esc(what)}"


def utc_text(epoch: object) -> str:
    f = as_num(epoch)
    if f is None:
        return "unknown time"
    try:
        return datetime.fromtimestamp(f, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "unknown time"


def verdict_class(verdict: object) -> str:
    return {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive"}.get(str(verdict), "info")


def badge(verdict: object) -> str:
    return f'<span class="badge {verdict_class(verdict)}">{esc(verdict)}</span>'
