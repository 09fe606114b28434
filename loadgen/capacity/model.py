"""What a capacity run is asked to do: the step plan's options, the knee's bounds, the safety
bounds, and the names of the files it writes into the run folder."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadgen.run import RunOptions
from loadgen.traffic.shape import StepPlan

SCHEMA_VERSION = 1
STEPS_LOG = "steps.jsonl"  # written by the shape (LOADGEN_STEPS_LOG)
INGEST_LOG = "ingest.jsonl"  # collector ingest counters, one sample per tick
CAPACITY_JSON = "capacity.json"
CAPACITY_MD = "capacity.md"
STEPS_JSON = "steps.json"  # {"steps": [...], "knee": index|None}: what report/html.py reads

# checked in this order: the absolute bounds, then the two relative to the other steps
REASONS = ("errors", "latency", "collection", "throughput", "scaling", "p99-growth")


@dataclass(frozen=True)
class KneeBounds:
    """When a step counts as past the knee (None turns a bound off). Fractions are in [0, 1]."""

    p99_ms: float | None = None  # latency SLO
    max_error_rate: float | None = 0.01
    min_collection: float | None = 0.99  # mesh collection (found complete / decided sampled)
    min_throughput: float | None = 0.9  # achieved / target req/s (steps with a target rate)
    # achieved req/s must rise by at least this share of the offered increase from the step before
    min_scaling: float | None = 0.5
    max_p99_growth: float | None = 2.0  # p99 at most this multiple of the first step's p99


@dataclass(frozen=True)
class SafetyBounds:
    """Hard limits checked while the load runs; the run stops early when one trips."""

    max_error_rate: float | None = 0.5  # of the requests in the last window_s
    min_collection: float | None = 0.5  # live collection of the sampled traces checked in the window
    window_s: float = 5.0
    min_requests: int = 50  # judge errors only on at least this many requests
    min_sampled: int = 30  # judge collection only on at least this many checked traces
    settle_s: float | None = None  # wait this long after a request before querying its trace
    #                                (default: the run's read-back quiet period + 1 s)
    check_every_s: float = 2.0
    max_ids: int = 200  # trace ids queried per check at most (an even spread of the due ones)


@dataclass
class CapacityOptions:
    steps: str = "users:5,10,20,40"  # users:N,N,... | rate:R,R,...
    step_s: float = 20.0
    ramp_s: float = 3.0
    step_users: int = 32  # rate steps: the fixed user count
    user_rate: float = 0.0  # users steps: each user's req/s (0 = as fast as it goes)
    bounds: KneeBounds = field(default_factory=KneeBounds)
    safety: SafetyBounds = field(default_factory=SafetyBounds)
    # Target, embedded mesh (tracing, faults), mix, reference spans, read-back, output, run id.
    # duration, users, spawn rate, rate, scenario (unless given), extra_env and on_tick are set here.
    run: RunOptions = field(default_factory=RunOptions)

    def plan(self) -> StepPlan:
        return StepPlan.parse(
            self.steps,
            step_s=self.step_s,
            ramp_s=self.ramp_s,
            users=self.step_users,
            user_rate=self.user_rate,
        )
