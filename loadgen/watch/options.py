"""The options of `loadgen watch` that are not `run`'s, with their defaults and checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loadgen.watch.windows import parse_windows

__all__ = [
    "DEFAULT_WINDOWS",
    "GIVE_UP_FACTOR",
    "WatchError",
    "WatchOptions",
    "give_up_for",
]

DEFAULT_WINDOWS = "5m,1h"
#: Without --give-up, a check is concluded this many deadlines after its request.
GIVE_UP_FACTOR = 4.0


class WatchError(RuntimeError):
    """The watch cannot start (a bad option, a state folder in use); the message says why."""


def give_up_for(deadline_s: float, given_s: float | None) -> float:
    """--give-up, else GIVE_UP_FACTOR deadlines."""
    return given_s if given_s is not None else GIVE_UP_FACTOR * deadline_s


@dataclass(frozen=True)
class WatchOptions:
    """`state_dir`: the state folder. `windows`: (label, seconds) as `parse_windows` gives.
    `deadline_s`/`give_up_s`: None = learned / GIVE_UP_FACTOR deadlines. `duration_s`: None =
    until stopped."""

    state_dir: Path
    windows: tuple[tuple[str, float], ...]
    deadline_s: float | None = None
    give_up_s: float | None = None
    retention_s: float = 3600.0
    segment_s: float = 2.0
    reference_rate: float = 1.0
    duration_s: float | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    tick_s: float = 0.5
    progress_s: float = 5.0
    batch_limit: int = 500

    @classmethod
    def from_flags(
        cls, state_dir: Path, window: str, *, deadline_s: float | None, give_up_s: float | None,
        retention_s: float, segment_s: float, reference_rate: float, duration_s: float | None,
        metrics_host: str, metrics_port: int,
    ) -> WatchOptions:  # fmt: skip
        """Checked: WatchError names the flag that is wrong."""
        try:
            windows = parse_windows(window)
        except ValueError as exc:
            raise WatchError(f"--window: {exc}") from exc
        if segment_s <= 0:
            raise WatchError("--segment must be longer than 0 s")
        if retention_s < segment_s:
            raise WatchError(f"--retention ({retention_s:g} s) must be at least --segment ({segment_s:g} s)")
        if deadline_s is not None and give_up_s is not None and give_up_s < deadline_s:
            raise WatchError(f"--give-up ({give_up_s:g} s) must be at least --deadline ({deadline_s:g} s)")
        if not metrics_host:
            raise WatchError("--metrics-host must not be empty (127.0.0.1, or 0.0.0.0 in a pod)")
        return cls(
            state_dir=state_dir, windows=windows, deadline_s=deadline_s, give_up_s=give_up_s,
            retention_s=retention_s, segment_s=segment_s, reference_rate=reference_rate,
            duration_s=duration_s or None, metrics_host=metrics_host, metrics_port=metrics_port,
        )  # fmt: skip

    @property
    def segments_dir(self) -> Path:
        return self.state_dir / "segments"
