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

Each mode's expected behaviour comes from `ModeSpec.expected(context)` for the mesh's
configuration (`Expectation.context`); a request that contradicts it counts once in the mode's
`expectation_violations`, by kind in `violations`:
    decision    the upstream saw a decision other than the one the headers force
    trace_id    our trace id kept where it should be replaced, or replaced where it should be kept
    request_id  our x-request-id kept where the gateway should replace it, or the reverse
    leak        spans exist for a request that must never produce any
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loadgen.analysis.integrity import TraceShape
from loadgen.analysis.stats import Proportion, Verdict, percentile, sampling_verdict
from loadgen.backends.base import Fetched, FetchStatus
from loadgen.mesh.echo import UpstreamView, same_request_id
from loadgen.mesh.expect import Decision, ExpectationContext, Expected
from loadgen.mesh.ids import is_hex_id, normalize_trace_id
from loadgen.mesh.modes import mode_spec
from loadgen.mesh.profile import SpanShape, shape_covered
from loadgen.mesh.rule import envoy_random_sampled


class Outcome(StrEnum):
    FOUND = "found"
    PARTIAL = "partial"
    MISSING = "missing"
    LEAKED = "leaked"
    NOT_SAMPLED = "not_sampled"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TraceObservation:
    """What the backend holds for one trace id, reduced to what reconciliation needs (small
    enough to keep for every trace of a read-back, and to store per trace in the run folder for
    `loadgen verify`/`report` later). No span is kept: `loadgen.readback` makes it from each
    trace's spans as soon as they are decoded."""

    status: FetchStatus
    span_count: int = 0
    services: tuple[str, ...] = ()
    run_tagged: int = 0  # spans carrying the run-id tag with this run's id
    error: str | None = None
    # The trace's tree reduced for the integrity fold (loadgen.analysis.integrity); None when not found.
    shape: TraceShape | None = None

    @classmethod
    def from_fetched(cls, fetched: Fetched, run_id_tag: str = "", run_id: str = "") -> TraceObservation:
        if not fetched.spans:
            return cls(fetched.status, 0, (), 0, fetched.error, None)
        tagged = sum(1 for s in fetched.spans if run_id and (s.get("tags") or {}).get(run_id_tag) == run_id)
        shape = TraceShape.from_spans(fetched.spans)  # its services are the spans' local services
        return cls(fetched.status, len(fetched.spans), shape.services(), tagged, fetched.error, shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "spans": self.span_count,
            "services": list(self.services),
            "run_tagged": self.run_tagged,
            "error": self.error,
            "shape": self.shape.to_dict() if self.shape is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TraceObservation:
        shape = d.get("shape")
        return cls(
            FetchStatus(d["status"]),
            int(d.get("spans", 0)),
            tuple(d.get("services", ())),
            int(d.get("run_tagged", 0)),
            d.get("error"),
            TraceShape.from_dict(shape) if shape else None,
        )


@dataclass(frozen=True)
class Expectation:
    """What a complete sampled mesh trace looks like, derived from the proxy configuration."""

    spans_per_trace: int
    services: tuple[str, ...]
    configured_percent: float | None  # None: unknown (e.g. a real cluster with no --expect)
    #: The mesh configuration the header modes' expectations depend on (None: Istio's gateway
    #: defaults; a run passes the probed profile's `loadgen.mesh.profile.expectation_context`).
    context: ExpectationContext | None = None
    #: Every (service, kind) span a complete trace holds, learned by the probe. None: only
    #: `spans_per_trace` and `services` are known (a declared count), judged by total.
    shape: SpanShape | None = None

    @classmethod
    def from_run_json(cls, exp: Mapping[str, Any]) -> Expectation:
        """From run.json's `expectation` (what `loadgen verify` and capacity re-reconcile with)."""
        return cls(
            int(exp.get("spans_per_trace") or 0),
            tuple(str(s) for s in exp.get("services") or ()),
            exp.get("configured_percent"),
            context=ExpectationContext(**exp["context"]) if exp.get("context") else None,
            shape=SpanShape.from_json(exp["shape"]) if exp.get("shape") else None,
        )

    def mode_context(self) -> ExpectationContext:
        if self.context is not None:
            return self.context
        return ExpectationContext(sampling_percent=self.configured_percent)


def ledger_trace_id(record: Mapping[str, Any]) -> str | None:
    """The trace id a request ended up in: what the upstream saw, else what we injected. None
    for ids that are not 16/32 hex digits (a mode sends unparsable ids on purpose; no backend
    can be asked for them)."""
    for key in ("up_trace", "inj_trace"):
        tid = record.get(key)
        if tid:
            norm = normalize_trace_id(str(tid))
            return norm if is_hex_id(norm) else None
    return None


def _prediction(record: Mapping[str, Any], percent: float) -> tuple[bool | None, str]:
    """Envoy's random-sampling answer for a request and where it came from: "crafted" when the
    upstream saw the x-request-id we sent (ignoring char 14), so the decision was known before
    sending; "echoed" when the gateway made its own id (predicted from the echo)."""
    sent, echoed = record.get("xrid_sent"), record.get("up_xrid")
    if sent and same_request_id(str(sent), str(echoed) if echoed else None):
        return envoy_random_sampled(str(sent), percent), "crafted"
    if echoed:
        return envoy_random_sampled(str(echoed), percent), "echoed"
    return None, ""


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
    if expect.shape is not None and obs.shape is not None:
        # Complete means every span of the shape, not merely "at least N spans": a 4-span mesh
        # trace missing its sidecar CLIENT span is partial even if a stray span makes up the count.
        complete = shape_covered(expect.shape, obs.shape.spans)
    else:
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
    violations: Counter[str] = field(default_factory=Counter)
    expectation_checked: int = 0  # answered requests at least one definite expectation was checked on
    predicted: int = 0  # decisions checked against Envoy's x-request-id rule
    mispredicted: int = 0


VIOLATION_KINDS = ("decision", "trace_id", "request_id", "leak")

#: How many distinct errors `requests.top_errors` keeps, and how much of each error's text.
TOP_ERRORS = 5
ERROR_TEXT_LIMIT = 200


def error_key(rec: Mapping[str, Any]) -> tuple[int, str] | None:
    """(HTTP status, error text) of a failed request, None for an answered one. Failed means a
    status other than 200 (as `requests.errors` counts); status 0 is "no response"."""
    status = rec.get("status")
    if status == 200:
        return None
    code = status if isinstance(status, int) and not isinstance(status, bool) else 0
    return code, str(rec.get("error") or "")[:ERROR_TEXT_LIMIT]


def _top(counts: Counter[tuple[int, str]], limit: int) -> list[dict[str, Any]]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"status": status, "error": text or None, "count": n} for (status, text), n in ranked]


def top_errors(records: Iterable[Mapping[str, Any]], limit: int = TOP_ERRORS) -> list[dict[str, Any]]:
    """The commonest failures of a ledger, most first: `[{status, error, count}, ...]` (pure)."""
    return _top(Counter(key for rec in records if (key := error_key(rec)) is not None), limit)


def _definite(exp: Expected | None) -> bool:
    """Whether a mode's expectation says anything checkable (the decision it forces, its trace
    id or x-request-id kept or replaced, no spans at all); `none` at a default gateway does not."""
    if exp is None:
        return False
    forced = exp.decision is not Decision.PROXY and exp.upstream_sampled is not None
    return forced or exp.keeps_trace_id is not None or exp.request_id_kept is not None or exp.spans is False


def _checkable(
    rec: Mapping[str, Any], exp: Expected, decided: bool | None, obs: TraceObservation | None
) -> bool:
    """Whether the answer to one request lets at least one definite expectation be checked (the
    same conditions under which the reconciler could count a violation)."""
    if exp.decision is not Decision.PROXY and exp.upstream_sampled is not None and decided is not None:
        return True
    inj, up = rec.get("inj_trace"), rec.get("up_trace")
    if exp.keeps_trace_id is not None and inj and up and is_hex_id(normalize_trace_id(str(inj))):
        return True
    if exp.request_id_kept is not None and rec.get("xrid_sent") and rec.get("up_xrid"):
        return True
    return exp.spans is False and obs is not None and obs.status is not FetchStatus.ERROR


def _integrity_violations(rec: Mapping[str, Any], exp: Expected, obs: TraceObservation | None) -> list[str]:
    """The trace-id, request-id and leak expectations one answered request breaks."""
    out: list[str] = []
    inj, up = rec.get("inj_trace"), rec.get("up_trace")
    if exp.keeps_trace_id is not None and inj and up and is_hex_id(normalize_trace_id(str(inj))):
        kept = normalize_trace_id(str(up)) == normalize_trace_id(str(inj))
        if kept != exp.keeps_trace_id:
            out.append("trace_id")
    sent, echoed = rec.get("xrid_sent"), rec.get("up_xrid")
    kept_id = same_request_id(str(sent), str(echoed)) if sent and echoed else None
    if exp.request_id_kept is not None and kept_id is not None and kept_id != exp.request_id_kept:
        out.append("request_id")
    present = obs is not None and obs.status is FetchStatus.FOUND and obs.span_count > 0
    if exp.spans is False and present:
        out.append("leak")
    return out


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
    leak_checked = 0  # decided-not-sampled requests whose trace was queried (leaked or not_sampled)
    leaked_examples: list[str] = []
    missing_examples: list[str] = []
    spans_hist: Counter[int] = Counter()
    run_tagged = [0, 0]
    prop_upstream = [0, 0]
    prop_backend = [0, 0]
    first_ts, last_ts = float("inf"), 0.0
    total = 0
    context = expect.mode_context()
    expected_of: dict[str, Expected | None] = {}
    prediction_sources: Counter[str] = Counter()
    sent_replaced = 0
    errors: Counter[tuple[int, str]] = Counter()

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
        if (failure := error_key(rec)) is not None:
            tally.errors += 1
            errors[failure] += 1
        elif latency is not None:
            tally.latencies_ms.append(float(latency))
        decided = upstream_decision(rec)
        tid = ledger_trace_id(rec)
        obs = observations.get(tid) if tid else None
        outcome = classify(decided, obs, expect)
        tally.outcomes[outcome.value] += 1

        if mode not in expected_of:
            spec = mode_spec(mode)
            expected_of[mode] = spec.expected(context) if spec is not None else None
        exp = expected_of[mode]
        broken: list[str] = []
        sent_id, echoed_id = rec.get("xrid_sent"), rec.get("up_xrid")
        if sent_id and echoed_id and not same_request_id(str(sent_id), str(echoed_id)):
            sent_replaced += 1
        if decided is not None:
            if decided:
                tally.decided_sampled += 1
            else:
                tally.decided_not_sampled += 1
            if exp is not None:
                if exp.decision is Decision.PROXY:
                    decision[1] += 1
                    decision[0] += int(decided)
                    if expect.configured_percent is not None:
                        want, source = _prediction(rec, expect.configured_percent)
                        if want is not None:
                            predicted[1] += 1
                            tally.predicted += 1
                            prediction_sources[source] += 1
                            if want != decided:
                                predicted[0] += 1
                                tally.mispredicted += 1
                                if len(mismatch_examples) < example_limit:
                                    mismatch_examples.append(str(rec.get("rid")))
                elif exp.upstream_sampled is not None and decided != exp.upstream_sampled:
                    broken.append("decision")
        if exp is not None and rec.get("status") == 200:
            broken.extend(_integrity_violations(rec, exp, obs))
            tally.expectation_checked += int(_checkable(rec, exp, decided, obs))
        if broken:
            tally.expectation_violations += 1
            tally.violations.update(broken)

        if decided:
            if outcome is Outcome.UNKNOWN:
                unknown_sampled += 1
            else:
                collection[1] += 1
                collection[0] += int(outcome is Outcome.FOUND)
                partial += int(outcome is Outcome.PARTIAL)
                if outcome is Outcome.MISSING and len(missing_examples) < example_limit and tid:
                    missing_examples.append(tid)
        leak_checked += int(outcome in (Outcome.LEAKED, Outcome.NOT_SAMPLED))
        if outcome is Outcome.LEAKED:
            leaked += 1
            if len(leaked_examples) < example_limit and tid:
                leaked_examples.append(tid)
        if outcome in (Outcome.FOUND, Outcome.PARTIAL) and obs is not None:
            spans_hist[obs.span_count] += 1
            run_tagged[0] += obs.run_tagged
            run_tagged[1] += obs.span_count

        inj = rec.get("inj_trace")
        # Propagation counts the modes whose trace id should survive (all B3 ones; W3C ones only
        # under W3C propagation); modes unknown to this version count as before.
        if inj and rec.get("status") == 200 and (exp is None or exp.keeps_trace_id):
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
        if not decision[1]:
            pvalue = None  # no decision, no test: a p-value of 1 would be a measurement never made
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
            "expected_decision": exp.decision.value if (exp := expected_of.get(mode)) else None,
            "expected_trace_id_kept": exp.keeps_trace_id if exp else None,
            "expectation_definite": _definite(expected_of.get(mode)),
            "expectation_checked": t.expectation_checked,
            "expectation_violations": t.expectation_violations,
            "violations": {k: t.violations.get(k, 0) for k in VIOLATION_KINDS},
        }
        lat = sorted(t.latencies_ms)
        latencies[mode] = {"n": len(lat), **{f"p{q}": percentile(lat, q) for q in (50, 95, 99)}}

    return {
        "requests": {
            "total": total,
            "errors": sum(t.errors for t in tallies.values()),
            "first_ts": first_ts if total and first_ts != float("inf") else None,
            "last_ts": last_ts or None,
            "top_errors": _top(errors, TOP_ERRORS),
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
                # Statistics only: "crafted" when any prediction came from the x-request-id we
                # sent (the gateway kept it: decisions known before sending), else "echoed"
                # (from the id the gateway generated), "none" when nothing was checked.
                "mode": "crafted" if prediction_sources["crafted"] else "echoed" if predicted[1] else "none",
                "by_source": {k: prediction_sources[k] for k in ("crafted", "echoed")},
                "sent_id_replaced": sent_replaced,
                "by_mode": {
                    mode: {"checked": t.predicted, "mismatches": t.mispredicted}
                    for mode, t in sorted(tallies.items())
                    if t.predicted
                },
            },
        },
        "mesh": {
            "expected_spans_per_trace": expect.spans_per_trace,
            "expected_services": list(expect.services),
            "expected_shape": expect.shape.to_json() if expect.shape is not None else None,
            "collection": Proportion(collection[0], collection[1]).to_dict(),
            "partial": partial,
            "unknown": unknown_sampled,
            "leaked": leaked,
            "leak_checked": leak_checked,
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
