"""Reconciliation: the ledger's fold + reference log + what the backend returned -> outcomes and rates (pure).

Outcomes per mesh request (`Outcome`):
    found        decided sampled, and the backend holds every expected span
    partial      decided sampled, the backend holds some but not all expected spans
    missing      decided sampled, the backend answered and holds none
    leaked       decided NOT sampled, yet the backend holds spans
    not_sampled  decided not sampled and absent, as it should be
    unknown      never successfully queried, or the decision is not known: never counted missing
    not_queried  outside a sampled read-back's sample (`NOT_QUERIED`): in no rate, never unknown

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

import numpy as np
import numpy.typing as npt

from loadgen.analysis.ledgerfold import (
    EXAMPLES_KEPT,
    TRI,
    LedgerFold,
    RequestFacts,
    as_fold,
    decision_of,
    error_key,
    trace_id_of,
    unique_inverse,
)
from loadgen.analysis.observation import TraceObservation as TraceObservation  # re-exported
from loadgen.analysis.stats import Proportion, Tally, Verdict, percentile, sampling_verdict
from loadgen.backends.base import FetchStatus
from loadgen.ledger import LedgerRow
from loadgen.mesh.expect import Decision, ExpectationContext, Expected
from loadgen.mesh.ids import normalize_trace_id
from loadgen.mesh.modes import mode_spec
from loadgen.mesh.profile import SpanShape, shape_covered
from loadgen.mesh.tracer import TracerFamily


class Outcome(StrEnum):
    FOUND = "found"
    PARTIAL = "partial"
    MISSING = "missing"
    LEAKED = "leaked"
    NOT_SAMPLED = "not_sampled"
    UNKNOWN = "unknown"
    NOT_QUERIED = "not_queried"


#: The observation of a trace a sampled read-back did not ask for (`loadgen.analysis.subsample`),
#: told apart by identity. Its status is ERROR so that whatever does not know it (a window's
#: tally, the integrity fold) takes it for "not answered": never for missing.
NOT_QUERIED = TraceObservation(FetchStatus.ERROR, error="not queried: outside the read-back sample")


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
    """The trace id a request ended up in (`ledgerfold.trace_id_of` on a record dict)."""
    return trace_id_of(record.get("up_trace"), record.get("inj_trace"))


def upstream_decision(record: Mapping[str, Any], tracer: TracerFamily = TracerFamily.ZIPKIN) -> bool | None:
    """The decision the upstream saw (`ledgerfold.decision_of` on a record dict)."""
    return decision_of(record.get("status"), record.get("up_flag"), record.get("up_xrid"), tracer)


OUTCOMES = tuple(Outcome)
_INDEX = {o: i for i, o in enumerate(OUTCOMES)}
#: A request's class (`request_class`): its outcome's index in OUTCOMES times 8, plus these bits.
FOUND_BIT, QUERIED_BIT, PRESENT_BIT = 4, 2, 1  # answered FOUND; answered (not ERROR); holds spans
_UNKNOWN_CLASS = _INDEX[Outcome.UNKNOWN] * 8
_NOT_QUERIED_CLASS = _INDEX[Outcome.NOT_QUERIED] * 8


def request_class(decided: bool | None, obs: TraceObservation | None, expect: Expectation) -> int:
    """A request's outcome (see the module doc) and what the backend answered for its trace."""
    if obs is NOT_QUERIED:
        return _NOT_QUERIED_CLASS
    if obs is None or obs.status is FetchStatus.ERROR:
        return _UNKNOWN_CLASS
    found = obs.status is FetchStatus.FOUND
    present = found and obs.span_count > 0
    bits = (FOUND_BIT if found else 0) | QUERIED_BIT | (PRESENT_BIT if present else 0)
    if decided is None:
        outcome = Outcome.UNKNOWN
    elif not decided:
        outcome = Outcome.LEAKED if present else Outcome.NOT_SAMPLED
    elif not present:
        outcome = Outcome.MISSING
    elif obs.partial:  # the backend says it cut the trace: partial, whatever spans came back
        outcome = Outcome.PARTIAL
    elif expect.shape is not None and obs.shape is not None:
        # Complete means every span of the shape, not merely "at least N spans": a 4-span mesh
        # trace missing its sidecar CLIENT span is partial even if a stray span makes up the count.
        outcome = Outcome.FOUND if shape_covered(expect.shape, obs.shape.spans) else Outcome.PARTIAL
    else:
        complete = obs.span_count >= expect.spans_per_trace and set(expect.services) <= set(obs.services)
        outcome = Outcome.FOUND if complete else Outcome.PARTIAL
    return _INDEX[outcome] * 8 | bits


def classify(decided: bool | None, obs: TraceObservation | None, expect: Expectation) -> Outcome:
    return OUTCOMES[request_class(decided, obs, expect) >> 3]


VIOLATION_KINDS = ("decision", "trace_id", "request_id", "leak")

#: How many distinct errors `requests.top_errors` keeps.
TOP_ERRORS = 5


def _top(counts: Counter[tuple[int, str]], limit: int) -> list[dict[str, Any]]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"status": status, "error": text or None, "count": n} for (status, text), n in ranked]


def top_errors(records: Iterable[Mapping[str, Any]], limit: int = TOP_ERRORS) -> list[dict[str, Any]]:
    """The commonest failures of a ledger, most first: `[{status, error, count}, ...]` (pure)."""
    keys = (error_key(rec.get("status"), rec.get("error")) for rec in records)
    return _top(Counter(key for key in keys if key is not None), limit)


def _definite(exp: Expected | None) -> bool:
    """Whether a mode's expectation says anything checkable (the decision it forces, its trace
    id or x-request-id kept or replaced, no spans at all); `none` at a default gateway does not."""
    if exp is None:
        return False
    forced = exp.decision is not Decision.PROXY and exp.upstream_sampled is not None
    return forced or exp.keeps_trace_id is not None or exp.request_id_kept is not None or exp.spans is False


def _checkable(f: RequestFacts, exp: Expected, queried: bool) -> bool:
    """Whether the answer to one request lets at least one definite expectation be checked (the
    same conditions under which the reconciler could count a violation)."""
    if exp.decision is not Decision.PROXY and exp.upstream_sampled is not None and f.decided is not None:
        return True
    if exp.keeps_trace_id is not None and f.injected_hex and f.upstream_trace:
        return True
    if exp.request_id_kept is not None and f.request_id_kept is not None:
        return True
    return exp.spans is False and queried


def _violations(f: RequestFacts, exp: Expected | None, present: bool) -> list[str]:
    """The expectations one request breaks (`VIOLATION_KINDS`)."""
    if exp is None:
        return []
    out: list[str] = []
    forced = exp.decision is not Decision.PROXY and exp.upstream_sampled is not None
    if forced and f.decided is not None and f.decided != exp.upstream_sampled:
        out.append("decision")
    if not f.answered:
        return out
    if (
        exp.keeps_trace_id is not None
        and f.injected_hex
        and f.upstream_trace
        and f.trace_kept != exp.keeps_trace_id
    ):
        out.append("trace_id")
    if (
        exp.request_id_kept is not None
        and f.request_id_kept is not None
        and f.request_id_kept != exp.request_id_kept
    ):
        out.append("request_id")
    if exp.spans is False and present:
        out.append("leak")
    return out


# --- the join: each request's outcome -----------------------------------------------------------


@dataclass
class Observed:
    """The fold's requests against one read-back's observations (`observe`)."""

    observations: Mapping[str, TraceObservation]
    size: int  # len(observations) when classified
    expect: Expectation
    classes: npt.NDArray[np.uint8]  # `request_class` per request, in ledger order
    spans_per_trace: Counter[int] = field(default_factory=Counter)  # over found/partial traces
    run_tagged: int = 0  # spans of found/partial traces carrying the run tag
    spans: int = 0  # ... of all their spans
    missing: list[str] = field(default_factory=list)  # the first EXAMPLES_KEPT (examples)
    leaked: list[str] = field(default_factory=list)


def observe(fold: LedgerFold, observations: Mapping[str, TraceObservation], expect: Expectation) -> Observed:
    """Classify every request of the fold against what the backend holds for its trace: once per
    read-back (the fold keeps the last classification, for the same observations object of the
    same size and the same expectation: the observations of a finished read-back).

    A request's class depends on its decision and its trace's observation only, so it is worked
    out once per distinct (observation, decision) and spread to the requests with numpy."""
    last = fold.derived.get("observed")
    if (
        isinstance(last, Observed)
        and last.observations is observations
        and last.size == len(observations)
        and last.expect == expect
    ):
        return last
    seen = fold.observation_index(observations)
    decided = np.array([TRI.index(f.decided) for f in fold.facts], dtype=np.int64)
    pairs, index = unique_inverse(seen.index * 3 + decided[fold.codes])
    counts = np.bincount(index, minlength=len(pairs))
    table = np.zeros(len(pairs), dtype=np.uint8)
    out = Observed(observations, len(observations), expect, table)
    traced_outcomes = (_INDEX[Outcome.FOUND], _INDEX[Outcome.PARTIAL])
    for j, (pair, n) in enumerate(zip(pairs.tolist(), counts.tolist(), strict=True)):
        obs = seen.distinct[pair // 3]
        table[j] = cls = request_class(TRI[pair % 3], obs, expect)
        if obs is not None and cls >> 3 in traced_outcomes:
            out.spans_per_trace[obs.span_count] += n
            out.run_tagged += obs.run_tagged * n
            out.spans += obs.span_count * n
    out.classes = table[index]
    out.missing = _examples(fold, out.classes, Outcome.MISSING)
    out.leaked = _examples(fold, out.classes, Outcome.LEAKED)
    fold.derived["observed"] = out
    return out


def _examples(fold: LedgerFold, classes: npt.NDArray[np.uint8], outcome: Outcome) -> list[str]:
    """The trace ids of the first `EXAMPLES_KEPT` requests of an outcome, in ledger order."""
    rows = np.flatnonzero((classes >> 3 == _INDEX[outcome]) & fold.traced)[:EXAMPLES_KEPT]
    return [str(fold.trace_ids[i]) for i in rows.tolist()]


# --- tallies ------------------------------------------------------------------------------------


@dataclass
class _ModeTally:
    requests: int = 0
    errors: int = 0
    decided_sampled: int = 0
    decided_not_sampled: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    expectation_violations: int = 0
    violations: Counter[str] = field(default_factory=Counter)
    expectation_checked: int = 0  # answered requests at least one definite expectation was checked on
    prediction: Tally = field(default_factory=Tally)  # k: mispredicted decisions, of n checked

    def add(
        self, f: RequestFacts, exp: Expected | None, outcome: Outcome, queried: bool, present: bool, n: int
    ) -> None:
        self.requests += n
        self.errors += 0 if f.answered else n
        self.outcomes[outcome.value] += n
        if f.decided is not None:
            if f.decided:
                self.decided_sampled += n
            else:
                self.decided_not_sampled += n
        if (
            exp is not None
            and exp.decision is Decision.PROXY
            and f.decided is not None
            and f.predicted is not None
        ):
            self.prediction.add(f.predicted != f.decided, n)
        if exp is not None and f.answered and _checkable(f, exp, queried):
            self.expectation_checked += n
        broken = _violations(f, exp, present)
        if broken:
            self.expectation_violations += n
            for kind in broken:
                self.violations[kind] += n

    def to_dict(self, exp: Expected | None) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "decided_sampled": self.decided_sampled,
            "decided_not_sampled": self.decided_not_sampled,
            **{o.value: self.outcomes.get(o.value, 0) for o in Outcome},
            "expected_decision": exp.decision.value if exp else None,
            "expected_trace_id_kept": exp.keeps_trace_id if exp else None,
            "expectation_definite": _definite(exp),
            "expectation_checked": self.expectation_checked,
            "expectation_violations": self.expectation_violations,
            "violations": {k: self.violations.get(k, 0) for k in VIOLATION_KINDS},
        }


@dataclass
class _MeshTally:
    decision: Tally = field(default_factory=Tally)  # sampled, of the decisions of decision-free modes
    prediction: Tally = field(default_factory=Tally)  # mispredicted, of those checked by Envoy's rule
    prediction_sources: Counter[str] = field(default_factory=Counter)
    sent_id_replaced: int = 0
    collection: Tally = field(default_factory=Tally)  # found complete, of decided-sampled queried
    partial: int = 0
    unknown: int = 0  # decided sampled, outcome unknown
    not_queried: int = 0  # decided sampled, outside a sampled read-back's sample
    leaked: int = 0
    leak_checked: int = 0  # decided-not-sampled requests whose trace was queried
    propagation: Tally = field(default_factory=Tally)  # injected trace id seen upstream
    propagation_backend: Tally = field(default_factory=Tally)  # ... and its trace found under it

    def add(self, f: RequestFacts, exp: Expected | None, outcome: Outcome, n: int) -> None:
        self.sent_id_replaced += n if f.request_id_replaced else 0
        if f.decided is not None and exp is not None and exp.decision is Decision.PROXY:
            self.decision.add(f.decided, n)
            if f.predicted is not None:
                self.prediction.add(f.predicted != f.decided, n)
                self.prediction_sources[f.prediction_source] += n
        traced = outcome is Outcome.FOUND or outcome is Outcome.PARTIAL
        if f.decided:
            if outcome is Outcome.UNKNOWN:
                self.unknown += n
            elif outcome is Outcome.NOT_QUERIED:
                self.not_queried += n
            else:
                self.collection.add(outcome is Outcome.FOUND, n)
                self.partial += n if outcome is Outcome.PARTIAL else 0
        self.leak_checked += n if outcome in (Outcome.LEAKED, Outcome.NOT_SAMPLED) else 0
        self.leaked += n if outcome is Outcome.LEAKED else 0
        # Propagation counts the modes whose trace id should survive (all B3 ones; W3C ones only
        # under W3C propagation); modes unknown to this version count as before.
        if f.injected and f.answered and (exp is None or exp.keeps_trace_id):
            self.propagation.add(f.trace_kept, n)
            if f.decided and outcome not in (Outcome.UNKNOWN, Outcome.NOT_QUERIED):
                # The backend holds the trace under the injected id (lookups use that id).
                self.propagation_backend.add(f.trace_kept and traced, n)


def _sampling_verdict(mesh: _MeshTally, percent: float | None) -> tuple[Verdict, float | None, str]:
    """(verdict, p-value, basis) of the decision-free modes' decisions against the percentage."""
    decision, predicted = mesh.decision, mesh.prediction
    if percent is None:
        return Verdict.INCONCLUSIVE, None, "statistical"
    verdict, tested = sampling_verdict(decision.k, decision.n, percent / 100.0)
    # No decision, no test: a p-value of 1 would be a measurement never made.
    pvalue = tested if decision.n else None
    if decision.n and predicted.n == decision.n:
        # Every decision was checked against Envoy's x-request-id rule at the configured
        # percentage: that is exact evidence, stronger than any interval. (The observed
        # fraction still wobbles around the configured one because the ids are random.)
        return (Verdict.PASS if predicted.k == 0 else Verdict.FAIL), pvalue, "exact"
    return verdict, pvalue, "statistical"


def _mismatch_examples(fold: LedgerFold, expected_of: Mapping[str, Expected | None], limit: int) -> list[str]:
    """The rids of the first mispredicted requests of decision-free modes, in ledger order (the
    fold keeps `EXAMPLES_KEPT` per mode, so at most that many)."""
    out: list[str] = []
    for index in sorted(fold.mispredicted_rids):
        exp = expected_of.get(fold.facts[fold.codes[index]].mode)
        if exp is not None and exp.decision is Decision.PROXY and len(out) < limit:
            out.append(fold.mispredicted_rids[index])
    return out


def _sampling_section(
    mesh: _MeshTally, modes: Mapping[str, _ModeTally], examples: list[str], percent: float | None
) -> dict[str, Any]:
    verdict, pvalue, basis = _sampling_verdict(mesh, percent)
    predicted, sources = mesh.prediction, mesh.prediction_sources
    return {
        "configured_percent": percent,
        "decision": mesh.decision.proportion().to_dict(),
        "verdict": verdict.value,
        "verdict_basis": basis,
        "p_value": pvalue,
        "prediction": {
            "checked": predicted.n,
            "mismatches": predicted.k,
            "examples": examples,
            # Statistics only: "crafted" when any prediction came from the x-request-id we
            # sent (the gateway kept it: decisions known before sending), else "echoed"
            # (from the id the gateway generated), "none" when nothing was checked.
            "mode": "crafted" if sources["crafted"] else "echoed" if predicted.n else "none",
            "by_source": {k: sources[k] for k in ("crafted", "echoed")},
            "sent_id_replaced": mesh.sent_id_replaced,
            "by_mode": {
                mode: {"checked": t.prediction.n, "mismatches": t.prediction.k}
                for mode, t in sorted(modes.items())
                if t.prediction.n
            },
        },
    }


def _mesh_section(mesh: _MeshTally, observed: Observed, expect: Expectation, limit: int) -> dict[str, Any]:
    return {
        "expected_spans_per_trace": expect.spans_per_trace,
        "expected_services": list(expect.services),
        "expected_shape": expect.shape.to_json() if expect.shape is not None else None,
        "collection": mesh.collection.proportion().to_dict(),
        "partial": mesh.partial,
        "unknown": mesh.unknown,
        "not_queried": mesh.not_queried,
        "leaked": mesh.leaked,
        "leak_checked": mesh.leak_checked,
        "leaked_examples": observed.leaked[:limit],
        "missing_examples": observed.missing[:limit],
        "spans_per_found_trace": {str(k): v for k, v in sorted(observed.spans_per_trace.items())},
        "run_tag": {"k": observed.run_tagged, "n": observed.spans},
    }


def _expectations(fold: LedgerFold, expect: Expectation) -> dict[str, Expected | None]:
    """Each mode's expected behaviour in the mesh's configuration (None: a mode this version
    does not know)."""
    context = expect.mode_context()
    out: dict[str, Expected | None] = {}
    for f in fold.facts:
        if f.mode not in out:
            spec = mode_spec(f.mode)
            out[f.mode] = spec.expected(context) if spec is not None else None
    return out


def reconcile_mesh(
    ledger: LedgerFold | Iterable[LedgerRow | Mapping[str, Any]],
    observations: Mapping[str, TraceObservation],
    expect: Expectation,
    *,
    example_limit: int = 5,
) -> dict[str, Any]:
    """Fold the ledger (its `LedgerFold`, or its records) against the backend observations into
    the `requests`, `modes`, `sampling`, `mesh`, `propagation` and `latency_ms` sections of
    summary.json. Examples: the first `example_limit` (at most `EXAMPLES_KEPT`) of each kind."""
    fold = as_fold(ledger, percent=expect.configured_percent, tracer=expect.mode_context().tracer)
    if fold.percent != expect.configured_percent:
        raise ValueError(
            f"the ledger was folded predicting at {fold.percent} %, reconciled at {expect.configured_percent} %"
        )
    observed = observe(fold, observations, expect)
    expected_of = _expectations(fold, expect)
    tallies: dict[str, _ModeTally] = {}
    mesh = _MeshTally()
    # Requests by (facts code, class): the tallies run once per distinct pair.
    pairs, index = unique_inverse(fold.codes.astype(np.int64) * 256 + observed.classes)
    for pair, n in zip(pairs.tolist(), np.bincount(index, minlength=len(pairs)).tolist(), strict=True):
        code, cls = divmod(pair, 256)
        f, outcome = fold.facts[code], OUTCOMES[cls >> 3]
        exp = expected_of[f.mode]
        tallies.setdefault(f.mode, _ModeTally()).add(
            f, exp, outcome, bool(cls & QUERIED_BIT), bool(cls & PRESENT_BIT), n
        )
        mesh.add(f, exp, outcome, n)
    modes = dict(sorted(tallies.items()))
    latencies: dict[str, Any] = {}
    for mode in modes:
        lat = np.sort(fold.latencies_ms.get(mode, np.zeros(0))).tolist()
        latencies[mode] = {"n": len(lat), **{f"p{q}": percentile(lat, q) for q in (50, 95, 99)}}
    total = len(fold)
    return {
        "requests": {
            "total": total,
            "errors": sum(t.errors for t in modes.values()),
            "first_ts": fold.first_ts if total else None,
            "last_ts": fold.last_ts or None,
            "top_errors": _top(fold.errors, TOP_ERRORS),
        },
        "sampling": _sampling_section(
            mesh, modes, _mismatch_examples(fold, expected_of, example_limit), expect.configured_percent
        ),
        "mesh": _mesh_section(mesh, observed, expect, example_limit),
        "propagation": {
            **mesh.propagation.proportion().to_dict(),
            "backend": mesh.propagation_backend.proportion().to_dict(),
        },
        "modes": {mode: t.to_dict(expected_of.get(mode)) for mode, t in modes.items()},
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
