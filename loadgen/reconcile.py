"""Reconciliation: ledger + reference log + what the backend returned -> outcomes and rates (pure).

Outcomes per mesh request (`Outcome`):
    found        decided sampled, and the backend holds every expected span
    partial      decided sampled, the backend holds some but not all expected spans
    missing      decided sampled, the backend answered and holds none
    leaked       decided NOT sampled, yet the backend holds spans
    not_sampled  decided not sampled and absent, as it should be
    unknown      never successfully queried, or the decision is not known: never counted missing

"Decided" is what the upstream saw (echoed `X-B3-Sampled` / `b3` flag, else Envoy's mark in the
echoed x-request-id), so it is a fact per request, not a guess.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loadgen.backends.base import Fetched, FetchStatus
from loadgen.propagation import (
    Decision,
    UpstreamView,
    envoy_random_sampled,
    mode_spec,
    normalize_trace_id,
)
from loadgen.stats import Proportion, Verdict, percentile, sampling_verdict


class Outcome(StrEnum):
    FOUND = "found"
    PARTIAL = "partial"
    MISSING = "missing"
    LEAKED = "leaked"
    NOT_SAMPLED = "not_sampled"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class TraceObservation:
    """What the backend holds for one trace id, reduced to what reconciliation needs (small
    enough to store per trace in the run folder for `loadgen verify`/`report` later)."""

    status: FetchStatus
    span_count: int = 0
    services: tuple[str, ...] = ()
    run_tagged: int = 0  # spans carrying the run-id tag with this run's id
    error: str | None = None

    @classmethod
    def from_fetched(cls, fetched: Fetched, run_id_tag: str = "", run_id: str = "") -> TraceObservation:
        services = sorted(
            {str((s.get("localEndpoint") or {}).get("serviceName") or "") for s in fetched.spans} - {""}
        )
        tagged = sum(1 for s in fetched.spans if run_id and (s.get("tags") or {}).get(run_id_tag) == run_id)
        return cls(fetched.status, len(fetched.spans), tuple(services), tagged, fetched.error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "spans": self.span_count,
            "services": list(self.services),
            "run_tagged": self.run_tagged,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TraceObservation:
        return cls(
            FetchStatus(d["status"]),
            int(d.get("spans", 0)),
            tuple(d.get("services", ())),
            int(d.get("run_tagged", 0)),
            d.get("error"),
        )


@dataclass(frozen=True)
class Expectation:
    """What a complete sampled mesh trace looks like, derived from the proxy configuration."""

    spans_per_trace: int
    services: tuple[str, ...]
    configured_percent: float | None  # None: unknown (e.g. a real cluster with no --expect)


def ledger_trace_id(record: Mapping[str, Any]) -> str | None:
    """The trace id a request ended up in: what the upstream saw, else what we injected."""
    tid = record.get("up_trace") or record.get("inj_trace")
    return normalize_trace_id(tid) if tid else None


def upstream_decision(record: Mapping[str, Any]) -> bool | None:
    if record.get("status") != 200:
        return None
    return UpstreamView(
        record.get("up_trace"), record.get("up_span"), record.get("up_flag"), record.get("up_xrid")
    ).sampled


def classify(decided: bool | None, obs: TraceObservation | None, expect: Expectation) -> Outcome:
    if obs is None or obs.status is FetchStatus.ERROR:
        return Outcome.UNKNOWN
    present = obs.status is FetchStatus.FOUND and obs.span_count > 0
    if decided is None:
        return Outcome.UNKNOWN
    if not decided:
        return Outcome.LEAKED if present else Outcome.NOT_SAMPLED
    if not present:
        return Outcome.MISSING
    complete = obs.span_count >= expect.spans_per_trace and set(expect.services) <= set(obs.services)
    return Outcome.FOUND if complete else Outcome.PARTIAL


@dataclass
class _ModeTally:
    requests: int = 0
    errors: int = 0
    decided_sampled: int = 0
    decided_not_sampled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    expectation_violations: int = 0


def reconcile_mesh(
    ledger: Iterable[Mapping[str, Any]],
    observations: Mapping[str, TraceObservation],
    expect: Expectation,
    *,
    example_limit: int = 5,
) -> dict[str, Any]:
    """Fold the ledger against the backend observations into the `modes`, `sampling`, `mesh`,
    `propagation` and `latency` sections of summary.json."""
    tallies: dict[str, _ModeTally] = {}
    decision = [0, 0]  # k sampled, n decided, over requests that carried no decision
    predicted = [0, 0]  # mismatches, checked (Envoy's x-request-id rule vs what happened)
    mismatch_examples: list[str] = []
    collection = [0, 0]
    leaked, partial, unknown_sampled = 0, 0, 0
    leaked_examples: list[str] = []
    missing_examples: list[str] = []
    spans_hist: Counter[int] = Counter()
    run_tagged = [0, 0]
    prop_upstream = [0, 0]
    prop_backend = [0, 0]
    first_ts, last_ts = float("inf"), 0.0
    total = 0

    for rec in ledger:
        total += 1
        mode = str(rec.get("mode"))
        tally = tallies.setdefault(mode, _ModeTally())
        tally.requests += 1
        ts = float(rec.get("ts") or 0.0)
        latency = rec.get("latency_ms")
        if ts:
            first_ts = min(first_ts, ts)
            last_ts = max(last_ts, ts + (float(latency or 0.0) / 1000.0))
        if rec.get("status") != 200:
            tally.errors += 1
        elif latency is not None:
            tally.latencies_ms.append(float(latency))
        decided = upstream_decision(rec)
        tid = ledger_trace_id(rec)
        obs = observations.get(tid) if tid else None
        outcome = classify(decided, obs, expect)
        tally.outcomes[outcome.value] += 1

        spec = mode_spec(mode)
        if decided is not None:
            if decided:
                tally.decided_sampled += 1
            else:
                tally.decided_not_sampled += 1
            if spec is not None:
                if spec.decision is Decision.PROXY:
                    decision[1] += 1
                    decision[0] += int(decided)
                    xrid = rec.get("up_xrid")
                    if expect.configured_percent is not None and xrid:
                        want = envoy_random_sampled(str(xrid), expect.configured_percent)
                        if want is not None:
                            predicted[1] += 1
                            if want != decided:
                                predicted[0] += 1
                                if len(mismatch_examples) < example_limit:
                                    mismatch_examples.append(str(rec.get("rid")))
                elif decided != (spec.decision is Decision.FORCED_SAMPLED):
                    tally.expectation_violations += 1

        if decided:
            if outcome is Outcome.UNKNOWN:
                unknown_sampled += 1
            else:
                collection[1] += 1
                collection[0] += int(outcome is Outcome.FOUND)
                partial += int(outcome is Outcome.PARTIAL)
                if outcome is Outcome.MISSING and len(missing_examples) < example_limit and tid:
                    missing_examples.append(tid)
        if outcome is Outcome.LEAKED:
            leaked += 1
            if len(leaked_examples) < example_limit and tid:
                leaked_examples.append(tid)
        if outcome in (Outcome.FOUND, Outcome.PARTIAL) and obs is not None:
            spans_hist[obs.span_count] += 1
            run_tagged[0] += obs.run_tagged
            run_tagged[1] += obs.span_count

        inj = rec.get("inj_trace")
        if inj and rec.get("status") == 200:
            prop_upstream[1] += 1
            kept = bool(rec.get("up_trace")) and normalize_trace_id(
                str(rec["up_trace"])
            ) == normalize_trace_id(inj)
            prop_upstream[0] += int(kept)
            if decided and outcome is not Outcome.UNKNOWN:
                prop_backend[1] += 1
                # The backend holds the trace under the injected id (lookups use that id).
                prop_backend[0] += int(kept and outcome in (Outcome.FOUND, Outcome.PARTIAL))

    decision_p = Proportion(decision[0], decision[1])
    expected_fraction = None if expect.configured_percent is None else expect.configured_percent / 100.0
    basis = "statistical"
    if expected_fraction is None:
        verdict, pvalue = Verdict.INCONCLUSIVE, None
    else:
        verdict, pvalue = sampling_verdict(decision[0], decision[1], expected_fraction)
        if decision[1] and predicted[1] == decision[1]:
            # Every decision was checked against Envoy's x-request-id rule at the configured
            # percentage: that is exact evidence, stronger than any interval. (The observed
            # fraction still wobbles around the configured one because the ids are random.)
            basis = "exact"
            verdict = Verdict.PASS if predicted[0] == 0 else Verdict.FAIL

    modes: dict[str, Any] = {}
    latencies: dict[str, Any] = {}
    for mode, t in sorted(tallies.items()):
        modes[mode] = {
            "requests": t.requests,
            "errors": t.errors,
            "decided_sampled": t.decided_sampled,
            "decided_not_sampled": t.decided_not_sampled,
            **{o.value: t.outcomes.get(o.value, 0) for o in Outcome},
            "expected_decision": spec.decision.value if (spec := mode_spec(mode)) else None,
            "expectation_violations": t.expectation_violations,
        }
        lat = sorted(t.latencies_ms)
        latencies[mode] = {"n": len(lat), **{f"p{q}": percentile(lat, q) for q in (50, 95, 99)}}

    return {
        "requests": {
            "total": total,
            "errors": sum(t.errors for t in tallies.values()),
            "first_ts": first_ts if total and first_ts != float("inf") else None,
            "last_ts": last_ts or None,
        },
        "sampling": {
            "configured_percent": expect.configured_percent,
            "decision": decision_p.to_dict(),
            "verdict": verdict.value,
            "verdict_basis": basis,
            "p_value": pvalue,
            "prediction": {
                "checked": predicted[1],
                "mismatches": predicted[0],
                "examples": mismatch_examples,
            },
        },
        "mesh": {
            "expected_spans_per_trace": expect.spans_per_trace,
            "expected_services": list(expect.services),
            "collection": Proportion(collection[0], collection[1]).to_dict(),
            "partial": partial,
            "unknown": unknown_sampled,
            "leaked": leaked,
            "leaked_examples": leaked_examples,
            "missing_examples": missing_examples,
            "spans_per_found_trace": {str(k): v for k, v in sorted(spans_hist.items())},
            "run_tag": {"k": run_tagged[0], "n": run_tagged[1]},
        },
        "propagation": {
            **Proportion(prop_upstream[0], prop_upstream[1]).to_dict(),
            "backend": Proportion(prop_backend[0], prop_backend[1]).to_dict(),
        },
        "modes": modes,
        "latency_ms": latencies,
    }


def reconcile_reference(
    traces: Iterable[tuple[str, str, int]],
    observations: Mapping[str, TraceObservation],
    counters: Mapping[str, int],
) -> dict[str, Any]:
    """Reference traces: (trace id, emitter state, spans expected) against the backend.

    Collection rate = reference traces found complete / traces exported successfully. Traces
    whose export failed or that were dropped are reported, not counted as backend loss."""
    found, n, partial, unknown, found_unexported = 0, 0, 0, 0, 0
    states: Counter[str] = Counter()
    missing_examples: list[str] = []
    for trace_id, state, spans in traces:
        states[state] += 1
        obs = observations.get(normalize_trace_id(trace_id))
        present = obs is not None and obs.status is FetchStatus.FOUND and obs.span_count > 0
        if state != "exported":
            found_unexported += int(present)
            continue
        if obs is None or obs.status is FetchStatus.ERROR:
            unknown += 1
            continue
        n += 1
        assert obs is not None
        if present and obs.span_count >= spans:
            found += 1
        elif present:
            partial += 1
        elif len(missing_examples) < 5:
            missing_examples.append(trace_id)
    return {
        "started": sum(states.values()),
        "exported": states.get("exported", 0),
        "failed": states.get("failed", 0),
        "dropped": sum(v for k, v in states.items() if k not in ("exported", "failed")),
        "collection": Proportion(found, n).to_dict(),
        "partial": partial,
        "unknown": unknown,
        "found_despite_failed_export": found_unexported,
        "missing_examples": missing_examples,
        "emitter_counters": dict(counters),
    }
