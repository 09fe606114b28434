"""The calibration's options, result, request mix and running totals (no I/O)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.analysis.planner import DEFAULT_CONFIDENCE, DEFAULT_LOOKS, envoy_threshold
from loadgen.analysis.stats import FAIL_ALPHA, Verdict
from loadgen.exitcodes import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_VERDICT_FAILED
from loadgen.mesh.modes import HeaderMode, format_mix
from loadgen.mesh.tracer import TracerFamily
from loadgen.run import RunOptions, RunResult
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import GATEWAY_HOST

__all__ = [
    "CAP_SLACK_S",
    "CONSERVATIVE_RATE",
    "DECISION_FREE_MODES",
    "EXIT_CODES",
    "EXIT_FAIL",
    "EXIT_PASS",
    "MAX_RUNS_PER_LOOK",
    "CalibrateOptions",
    "CalibrationError",
    "CalibrationResult",
    "RunFn",
    "Status",
    "Totals",
    "calibration_mix",
    "crafted_env",
    "crafted_modes",
    "run_time_cap_s",
]

EXIT_PASS = EXIT_OK
EXIT_FAIL = EXIT_VERDICT_FAILED

EXIT_CODES = {Verdict.PASS: EXIT_PASS, Verdict.FAIL: EXIT_FAIL, Verdict.INCONCLUSIVE: EXIT_INCONCLUSIVE}

# The decision-free modes: Envoy decides each of these by its x-request-id rule.
DECISION_FREE_MODES = (HeaderMode.NONE, HeaderMode.B3_MULTI_NO_FLAG, HeaderMode.B3_SINGLE_NO_FLAG)
# A run's time cap assumes at least this many requests per second (the request count stops it).
CONSERVATIVE_RATE = 20.0
CAP_SLACK_S = 60.0
# Runs per look before giving up on reaching its decision count (errors, a stalled gateway).
MAX_RUNS_PER_LOOK = 3

Status = Callable[[str], None]
RunFn = Callable[[RunOptions, Status], RunResult]


class CalibrationError(RuntimeError):
    """The calibration cannot be done (bad option, no visible decisions); the message says why."""


@dataclass
class CalibrateOptions:
    expected_percent: float  # the configured sampling percentage (Telemetry randomSamplingPercentage)
    precision: float | None = None  # ±fraction (0.001 = ±0.1 points); None: planner.default_precision
    confidence: float = DEFAULT_CONFIDENCE
    max_requests: int = 0  # cap on decision-free requests (0 = the plan's n)
    sequential: bool = True  # looks with early stopping; False: one run of the planned size
    looks: int = DEFAULT_LOOKS
    alpha: float = FAIL_ALPHA  # overall false-fail probability of the statistical rule
    rho: float = 1.0  # alpha spending alpha * t^rho (1: Pocock-like, 3: O'Brien-Fleming-like)
    use_prediction: bool = True  # let Envoy's x-request-id rule decide when every decision is checked
    crafted_ids: bool = False  # use crafted client x-request-id modes (when this version has them)
    calibration_id: str = ""
    output_dir: Path = Path("reports")
    users: int = 10
    spawn_rate: float = 10.0
    rate: float = 0.0  # target req/s over all users (0 = as fast as the users go)
    seed: int | None = None
    # an existing mesh (the embedded mesh when gateway is empty)
    gateway: str = ""
    host: str = GATEWAY_HOST
    collector: str = ""
    backend: str = ""
    backend_flags: dict[str, Any] = field(default_factory=dict)
    search_service: str | None = None
    expected_spans: int | None = None
    probe: bool = True  # learn the mesh once (the first run), then reuse its mesh-profile.json
    profile_path: Path | None = None
    quiet_s: float | None = None
    max_wait_s: float = 60.0
    # the embedded mesh: None = Istio-like defaults sampling at expected_percent
    tracing: TracingConfig | None = None
    tracer: TracerFamily | None = None  # --tracer as given: overrides the probe's (RunOptions.tracer)

    def resolved_id(self) -> str:
        if not self.calibration_id:
            self.calibration_id = time.strftime("cal-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        return self.calibration_id


@dataclass
class CalibrationResult:
    calibration: dict[str, Any]  # what calibration.json holds
    cal_dir: Path
    exit_code: int

    @property
    def verdict(self) -> str:
        return str(self.calibration["verdict"])


def crafted_modes() -> list[HeaderMode]:
    """Header modes that send a client x-request-id crafted for a sampling percentage."""
    return [m for m in HeaderMode if ("XRID" in m.name or "REQUEST_ID" in m.name) and "CRAFTED" in m.name]


def calibration_mix(crafted_ids: bool = False) -> str:
    """The mix a calibration sends: decision-free modes only, in equal parts; with `crafted_ids`
    the crafted client x-request-id mode alone."""
    if crafted_ids:
        modes = crafted_modes()
        if not modes:
            raise CalibrationError(
                "this version of loadgen has no crafted x-request-id header mode; calibrate without --crafted-ids"
            )
    else:
        modes = list(DECISION_FREE_MODES)
    return format_mix({m: 1 for m in modes})


def crafted_env(expected_percent: float) -> dict[str, str]:
    """Generator settings for crafted x-request-ids: crafted for the expected percentage, and
    meant to be sampled in the share Envoy's rule gives (T / 10000). Then the ids' residues mod
    10000 are uniform, exactly like random ids: a correct proxy still samples a Bernoulli(T/10000)
    share, so the statistics stay valid, and when the gateway keeps the client's id every
    decision is predicted before the request is sent (prediction source "crafted"). (A
    50 % share would catch thresholds below the expected one faster, but the sampled fraction
    would then be the client's choice, not a measurement of the proxy.)"""
    return {
        "LOADGEN_XRID_PERCENT": repr(float(expected_percent)),
        "LOADGEN_XRID_SAMPLED_FRACTION": repr(envoy_threshold(expected_percent) / 10000.0),
    }


def run_time_cap_s(requests: int, rate: float) -> float:
    """A generous duration for a run that the request count is meant to stop: assume half the
    target rate, or CONSERVATIVE_RATE req/s without one, plus a minute."""
    per_s = 0.5 * rate if rate > 0 else CONSERVATIVE_RATE
    return math.ceil(requests / per_s + CAP_SLACK_S)


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    k: int = 0
    n: int = 0
    checked: int = 0
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=lambda: {"crafted": 0, "echoed": 0})

    def add(self, summary: dict[str, Any]) -> None:
        self.requests += int(summary["requests"]["total"])
        self.errors += int(summary["requests"]["errors"])
        decision = summary["sampling"]["decision"]
        self.k += int(decision["k"])
        self.n += int(decision["n"])
        pred = summary["sampling"].get("prediction") or {}
        self.checked += int(pred.get("checked", 0))
        self.mismatches += int(pred.get("mismatches", 0))
        self.examples += [str(e) for e in pred.get("examples", [])][: max(0, 5 - len(self.examples))]
        # Where predictions came from: the id we sent (kept by the gateway) or the gateway's own.
        for source, count in (pred.get("by_source") or {}).items():
            self.sources[str(source)] = self.sources.get(str(source), 0) + int(count)
