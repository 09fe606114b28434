"""Step load for capacity runs: a Locust `LoadTestShape` driven by LOADGEN_* variables.

    LOADGEN_STEPS       `users:10,20,40,80` (closed-loop users per step) or `rate:200,400,800`
                        (target req/s per step; the users stay fixed and their pacing follows)
    LOADGEN_STEP_S      seconds per step, ramp included (default 30)
    LOADGEN_RAMP_S      seconds at the start of each step spent reaching it (default 5): users
                        spawn over it, a rate moves linearly from the previous step's; capacity
                        metrics leave it out
    LOADGEN_STEP_USERS  users for rate steps (default 32)
    LOADGEN_USER_RATE   users steps: each user's req/s (0 = as fast as it goes, the default)
    LOADGEN_STEPS_LOG   JSON lines written as the shape goes: `{"ev":"step","index":i,"t":epoch,...}`
                        when a step begins, `{"ev":"end","t":epoch}` when the last one is over

A shape cannot change Locust's options mid-run, so the pacing of the current step is put where
`TracedUser.wait_time` reads it: the module-level value behind `step_interval()` (seconds between
one user's request starts; 0 = no pacing; None = no step shape runs in this process and the
user's own `--loadgen-rate` applies). The shape and the users share it only in one process:
rate steps and per-user rates need a single Locust process (no --processes/workers).

This module does not import Locust at import time (the orchestrating process must never import
it: it monkey-patches with gevent). `StepShape` is built on first access, which a locustfile's
`from loadgen.traffic.shape import StepShape` does.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

StepKind = Literal["users", "rate"]

DEFAULT_STEP_S = 30.0
DEFAULT_RAMP_S = 5.0
DEFAULT_STEP_USERS = 32


def parse_steps(spec: str) -> tuple[StepKind, tuple[float, ...]]:
    """`users:10,20,40` / `rate:200,400` -> (kind, targets); ValueError with the reason otherwise."""
    kind, sep, values = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ("users", "rate"):
        raise ValueError(f"steps must look like users:10,20,40 or rate:200,400,800, got {spec!r}")
    targets: list[float] = []
    for raw in values.split(","):
        raw = raw.strip()
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"steps: {raw!r} is not a number (in {spec!r})") from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"steps: every target must be > 0, got {raw!r}")
        if kind == "users" and value != int(value):
            raise ValueError(f"steps: users must be whole numbers, got {raw!r}")
        targets.append(value)
    return ("users" if kind == "users" else "rate"), tuple(targets)


def format_steps(kind: StepKind, targets: tuple[float, ...]) -> str:
    return f"{kind}:" + ",".join(f"{t:g}" for t in targets)


@dataclass(frozen=True)
class StepPlan:
    """The step schedule (pure): what the shape does at run time t (seconds since it started)."""

    kind: StepKind
    targets: tuple[float, ...]
    step_s: float = DEFAULT_STEP_S
    ramp_s: float = DEFAULT_RAMP_S
    users: int = DEFAULT_STEP_USERS  # rate steps: the fixed user count
    user_rate: float = 0.0  # users steps: each user's req/s (0 = closed loop)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("steps: at least one step is needed")
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise ValueError(f"step length must be > 0 s, got {self.step_s}")
        if not 0 <= self.ramp_s < self.step_s:
            raise ValueError(
                f"ramp must be >= 0 and shorter than a step ({self.step_s:g} s), got {self.ramp_s}"
            )
        if self.kind == "rate" and self.users < 1:
            raise ValueError(f"rate steps need at least one user, got {self.users}")
        if not (math.isfinite(self.user_rate) and self.user_rate >= 0):
            raise ValueError(f"per-user rate must be >= 0, got {self.user_rate}")

    @classmethod
    def parse(cls, spec: str, **kwargs: Any) -> StepPlan:
        kind, targets = parse_steps(spec)
        return cls(kind, targets, **kwargs)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StepPlan:
        spec = env.get("LOADGEN_STEPS", "")
        if not spec:
            raise ValueError("LOADGEN_STEPS is not set (e.g. users:10,20,40 or rate:200,400,800)")
        return cls.parse(
            spec,
            step_s=float(env.get("LOADGEN_STEP_S") or DEFAULT_STEP_S),
            ramp_s=float(env.get("LOADGEN_RAMP_S") or DEFAULT_RAMP_S),
            users=int(env.get("LOADGEN_STEP_USERS") or DEFAULT_STEP_USERS),
            user_rate=float(env.get("LOADGEN_USER_RATE") or 0.0),
        )

    def to_env(self) -> dict[str, str]:
        return {
            "LOADGEN_STEPS": format_steps(self.kind, self.targets),
            "LOADGEN_STEP_S": f"{self.step_s:g}",
            "LOADGEN_RAMP_S": f"{self.ramp_s:g}",
            "LOADGEN_STEP_USERS": str(self.users),
            "LOADGEN_USER_RATE": f"{self.user_rate:g}",
        }

    @property
    def duration_s(self) -> float:
        return len(self.targets) * self.step_s

    @property
    def max_users(self) -> int:
        return max(self.users_for(i) for i in range(len(self.targets)))

    @property
    def paced(self) -> bool:
        """Whether users are paced (rate steps, or users steps with a per-user rate)."""
        return self.kind == "rate" or self.user_rate > 0

    def index_at(self, t: float) -> int | None:
        """The step running at t, None before the start or after the last step."""
        if t < 0 or t >= self.duration_s:
            return None
        return min(int(t // self.step_s), len(self.targets) - 1)

    def users_for(self, index: int) -> int:
        return int(self.targets[index]) if self.kind == "users" else self.users

    def spawn_rate_for(self, index: int) -> float:
        """Users per second that reach the step's user count within the ramp."""
        previous = self.users_for(index - 1) if index > 0 else 0
        delta = abs(self.users_for(index) - previous)
        return max(1.0, delta / max(self.ramp_s, 0.1))

    def offered_rps(self, index: int) -> float | None:
        """The step's target req/s; None for closed-loop users (they offer what they manage)."""
        if self.kind == "rate":
            return self.targets[index]
        return self.users_for(index) * self.user_rate if self.user_rate > 0 else None

    def label(self, index: int) -> str:
        if self.kind == "rate":
            return f"{self.targets[index]:g} req/s"
        return f"{self.users_for(index)} users"

    def rate_at(self, t: float) -> float | None:
        """Offered req/s at t: during a rate step's ramp it moves linearly from the previous
        step's target (the first step starts at its target; its users are still spawning)."""
        i = self.index_at(t)
        if i is None:
            return None
        if self.kind == "users":
            return self.offered_rps(i)
        target = self.targets[i]
        into = t - i * self.step_s
        if i == 0 or self.ramp_s <= 0 or into >= self.ramp_s:
            return target
        previous = self.targets[i - 1]
        return previous + (target - previous) * into / self.ramp_s

    def interval_at(self, t: float) -> float | None:
        """Seconds between one user's request starts at t (0 = no pacing), None outside the plan."""
        i = self.index_at(t)
        if i is None:
            return None
        if self.kind == "users":
            return 1.0 / self.user_rate if self.user_rate > 0 else 0.0
        rate = self.rate_at(t)
        assert rate is not None and rate > 0
        return self.users / rate

    def tick_at(self, t: float) -> tuple[int, float] | None:
        """What the shape returns to Locust at t: (users, spawn rate), or None to stop."""
        i = self.index_at(t)
        return None if i is None else (self.users_for(i), self.spawn_rate_for(i))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "targets": list(self.targets),
            "step_s": self.step_s,
            "ramp_s": self.ramp_s,
            "users": self.users,
            "user_rate": self.user_rate,
            "spec": format_steps(self.kind, self.targets),
        }


# --- the pacing shared with TracedUser.wait_time ----------------------------------------------------

_step_interval: float | None = None


def step_interval() -> float | None:
    """The current step's per-user interval (s; 0 = unpaced), or None when no step shape runs."""
    return _step_interval


def set_step_interval(interval: float | None) -> None:
    global _step_interval
    _step_interval = interval


# --- the Locust shape (built on first access; see the module docstring) ------------------------------


class _StepLog:
    """Appends step events to LOADGEN_STEPS_LOG (one flushed line each); a no-op without a path."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def write(self, event: dict[str, Any]) -> None:
        if not self.path:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")


def _make_shape_class() -> type:
    from locust import LoadTestShape

    class StepShape(LoadTestShape):
        """Steps of users or of target rate from LOADGEN_STEPS (see loadgen.traffic.shape)."""

        def __init__(self) -> None:
            super().__init__()
            self.plan = StepPlan.from_env(os.environ)
            self.log = _StepLog(os.environ.get("LOADGEN_STEPS_LOG") or None)
            self._current: int | None = None
            self._ended = False

        def tick(self) -> tuple[int, float] | None:
            t = self.get_run_time()
            plan = self.plan
            i = plan.index_at(t)
            if i is None:
                set_step_interval(None)
                if not self._ended:
                    self._ended = True
                    self.log.write({"ev": "end", "t": time.time(), "run_time": round(t, 3)})
                return None
            set_step_interval(plan.interval_at(t))
            if i != self._current:
                if self._current is None:
                    self.log.write({"ev": "plan", "t": time.time(), **plan.to_dict()})
                self._current = i
                self.log.write(
                    {
                        "ev": "step",
                        "index": i,
                        "t": time.time(),
                        "run_time": round(t, 3),
                        "users": plan.users_for(i),
                        "target": plan.targets[i],
                        "offered_rps": plan.offered_rps(i),
                    }
                )
            return plan.tick_at(t)

    StepShape.__module__ = __name__
    return StepShape


def __getattr__(name: str) -> Any:
    if name == "StepShape":
        cls = _make_shape_class()
        globals()["StepShape"] = cls  # built once: Locust must see one class
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
