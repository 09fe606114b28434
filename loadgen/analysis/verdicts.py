"""Verdicts of a run, how much evidence each rests on, why it is not a pass, and the exit code
they map to (pure).

Every verdict records how many items it checked (`VerdictDetail.checked`) and the fewest it needs
(`minimum`): with fewer — zero included — it is inconclusive, never pass. A fail or an
inconclusive carries its most likely cause (`cause`, from `analysis.causes`). Verdicts are judged
on the typed summary (`loadgen.summary.Summary`): `summary.verdicts` is
`{name: "pass"|"fail"|"inconclusive"}`, `summary.verdict_details` the `VerdictDetail`s as JSON.

One verdict is the exception to "zero is inconclusive": `load_delivered` fails when no request
was made (a run that sent nothing did not do its job), and when more than `max_error_rate` of the
requests failed; its cause names the commonest error (`summary["requests"]["top_errors"]`).

Collection (mesh and reference) is judged on its 95 % Wilson interval, as sampling is; unknown
traces widen it (counted missing for the low end, found for the high end). Facts the mesh probe
could not learn (`summary["expectation_gaps"]`: {verdict: reason}) make the verdicts that need
them inconclusive with that reason.

Exit codes (documented in docs/commands.md and `loadgen run --help`):
    0  every verdict passed
    1  at least one verdict failed
    2  the run could not be done (bad configuration, unreachable gateway/collector/backend)
    3  no verdict failed, but at least one was inconclusive (not enough evidence to judge)
    130 interrupted (Ctrl-C / SIGTERM): a partial report was written
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from loadgen.analysis.causes import (
    collection_verdict,
    decision_cause,
    describe_error,
    error_hint,
    header_modes_cause,
    leak_cause,
    leak_inconclusive_cause,
    mesh_collection_cause,
    mesh_of,
    prediction_cause,
    prediction_of,
    reference_cause,
    reference_of,
    sampling_of,
    unknown_cause,
)
from loadgen.analysis.planner import MAX_PLANNED_REQUESTS, detectable_sample_size
from loadgen.analysis.stats import FAIL_ALPHA, Verdict, wilson_interval
from loadgen.exitcodes import EXIT_INCONCLUSIVE, EXIT_INTERRUPTED, EXIT_OK, EXIT_VERDICT_FAILED
from loadgen.summary.io import as_summary
from loadgen.summary.model import Summary, TopError, VerdictDetailDoc

#: `VerdictDetail.basis`: how a verdict decides.
BASIS_EXACT = "exact"  # every checked item against a definite rule: one counter-example fails
BASIS_STATISTICAL = "statistical"  # sampling: Wilson 95 % interval + exact binomial test
BASIS_INTERVAL = "wilson95"  # collection: the Wilson 95 % interval against the minimum
BASIS_ERROR_SHARE = "error_share"  # load delivered: errors / requests against --max-error-rate

#: `--max-error-rate`: the largest share of failed requests (status other than 200) a run may have.
DEFAULT_MAX_ERROR_RATE = 0.05


@dataclass(frozen=True)
class VerdictDetail:
    """One verdict with its evidence: `checked` items judged, at least `minimum` needed, the rule
    (`basis`) and, unless it passed, the most likely `cause`."""

    verdict: Verdict
    checked: int
    minimum: int
    basis: str
    cause: str | None = None

    def __post_init__(self) -> None:
        if self.verdict is Verdict.PASS and self.checked < max(1, self.minimum):
            raise ValueError(f"a pass needs evidence: {self.checked} checked, minimum {self.minimum}")
        if (self.verdict is Verdict.PASS) != (self.cause is None):
            raise ValueError("a cause is given exactly when the verdict is not a pass")

    def to_doc(self) -> VerdictDetailDoc:
        return VerdictDetailDoc(
            verdict=self.verdict.value, checked=self.checked, minimum=self.minimum, basis=self.basis,
            cause=self.cause,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return self.to_doc().to_dict()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | VerdictDetailDoc) -> VerdictDetail:
        doc = d if isinstance(d, VerdictDetailDoc) else msgspec.convert(dict(d), VerdictDetailDoc)
        return cls(Verdict(doc.verdict), doc.checked, doc.minimum, doc.basis, doc.cause)


def settle(
    verdict: Verdict, checked: int, minimum: int, basis: str, cause: Callable[[], str], *, too_few: str = ""
) -> VerdictDetail:
    """A verdict with its evidence: inconclusive when fewer than `minimum` (at least 1) items were
    checked (`too_few` says why, else a generic sentence); `cause()` is asked only when it is
    not a pass."""
    minimum = max(1, minimum)
    if checked < minimum:
        why = too_few or cause()
        if checked and not too_few:
            why = f"only {checked:,} checked, at least {minimum:,} needed: {why}"
        return VerdictDetail(Verdict.INCONCLUSIVE, checked, minimum, basis, why)
    if verdict is Verdict.PASS:
        return VerdictDetail(verdict, checked, minimum, basis)
    return VerdictDetail(verdict, checked, minimum, basis, cause())


def load_delivered_detail(summary: Summary, max_error_rate: float) -> VerdictDetail:
    """Was the load delivered? Fails when no request was made (a run that sent nothing measured
    nothing: a fail, not an inconclusive, since the run's own job was to send), or when more
    than `max_error_rate` of the requests failed; the cause names the commonest error."""
    requests = summary.requests
    if requests is None:
        return VerdictDetail(
            Verdict.FAIL, 0, 1, BASIS_ERROR_SHARE,
            "the summary records no requests (no requests.total): nothing shows that load was delivered",
        )  # fmt: skip
    total, errors = requests.total, requests.errors
    if total <= 0:
        return VerdictDetail(
            Verdict.FAIL, 0, 1, BASIS_ERROR_SHARE,
            "no request was made: the ledger holds no record (the load generator's users failed before "
            "sending? see the run's notes and locust.log)",
        )  # fmt: skip
    share = errors / total
    if share <= max_error_rate:
        return VerdictDetail(Verdict.PASS, total, 1, BASIS_ERROR_SHARE)
    cause = f"{errors:,} of {total:,} requests failed ({share:.1%}, above the maximum {max_error_rate:.1%})"
    if requests.top_errors:
        first: TopError = requests.top_errors[0]
        cause += (
            f"; most common: {describe_error(first)}, {first.count:,} of {total:,} requests — "
            + error_hint(first.status)
        )
    else:
        cause += " (the summary has no error breakdown: see the ledger's status and error fields)"
    return VerdictDetail(Verdict.FAIL, total, 1, BASIS_ERROR_SHARE, cause)


# --- the verdicts ------------------------------------------------------------------------------------


def _sampling_cause(summary: Summary, raw: Verdict, basis: str, expected: float | None) -> str:
    sampling = sampling_of(summary)
    k, n = sampling.decision.k, sampling.decision.n
    if expected is None:
        return "the configured sampling percentage is unknown: give --expect (or --expect-from) to judge it"
    if n == 0:
        proxy = {m: v for m, v in summary.modes.items() if v.expected_decision == "proxy"}
        if not proxy and summary.modes:
            return "the mix has no decision-free mode (none, *_no_flag): nothing for the proxy to decide"
        return "no decision-free request showed a decision: " + decision_cause(summary, proxy or None)
    if basis == BASIS_EXACT:
        return prediction_cause(summary)
    low, high = wilson_interval(k, n)
    observed = (
        f"observed {100 * k / n:.2f}% [{100 * low:.2f}%, {100 * high:.2f}%] (k={k:,}, n={n:,}) "
        f"vs configured {100 * expected:g}%"
    )
    if raw is Verdict.FAIL:
        p_value = sampling.p_value
        pv = f" (p = {p_value:.2g})" if p_value is not None else ""
        if k / n < expected:
            return (
                observed
                + pv
                + ": the proxy samples less than configured (overall_sampling below 100, a runtime override?)"
            )
        return observed + pv + ": the proxy samples more than configured (another setting takes precedence?)"
    return (
        observed
        + ": outside the interval, but the exact test is not conclusive; send more decision-free requests"
    )


def sampling_detail(summary: Summary) -> VerdictDetail:
    """The sampling verdict the reconciler reached, with the evidence it needs: exact (every
    decision checked against Envoy's rule) needs one decision; statistical needs enough decisions
    that a proxy at another rate could fail it at all (`planner.detectable_sample_size`)."""
    sampling = sampling_of(summary)
    n = sampling.decision.n
    basis = sampling.verdict_basis or BASIS_STATISTICAL
    try:
        raw = Verdict(str(sampling.verdict))
    except ValueError:
        raw = Verdict.INCONCLUSIVE
    pct = sampling.configured_percent
    expected = pct / 100.0 if pct is not None and 0.0 <= pct <= 100.0 else None
    minimum = 1
    if expected is not None and basis != BASIS_EXACT:
        try:
            minimum = detectable_sample_size(expected, FAIL_ALPHA)
        except ValueError:  # a percentage so small no plannable run could ever fail it
            minimum = MAX_PLANNED_REQUESTS
    too_few = ""
    if n and n < minimum and expected is not None:
        too_few = (
            f"{n:,} decisions; at least {minimum:,} are needed before a proxy at another rate than "
            f"{100 * expected:g}% could fail the statistical verdict"
        )
    return settle(
        raw, n, minimum, basis, lambda: _sampling_cause(summary, raw, basis, expected), too_few=too_few
    )


def _count_detail(
    bad: int, checked: int, cause: Callable[[], str], too_few: Callable[[], str]
) -> VerdictDetail:
    verdict = Verdict.FAIL if bad else Verdict.PASS
    return settle(verdict, checked, 1, BASIS_EXACT, cause, too_few=too_few() if checked < 1 else "")


def _collection_detail(
    k: int, n: int, unknown: int, threshold: float, cause: Callable[[], str]
) -> VerdictDetail:
    return settle(collection_verdict(k, n, unknown, threshold), n, 1, BASIS_INTERVAL, cause)


def _no_leaks_detail(summary: Summary) -> VerdictDetail:
    mesh = mesh_of(summary)
    if mesh.leak_checked is not None:
        leak_checked = mesh.leak_checked
    else:  # a summary from before leak_checked: the decided-not-sampled requests judged
        leak_checked = sum(m.leaked + m.not_sampled for m in summary.modes.values())
    return _count_detail(
        mesh.leaked or 0, leak_checked,
        lambda: leak_cause(summary, leak_checked), lambda: leak_inconclusive_cause(summary),
    )  # fmt: skip


def _integrity_detail(summary: Summary) -> VerdictDetail | None:
    """Propagation through the hops: fragmented traces, broken/flattened parent links..."""
    integrity = summary.integrity
    if integrity is None:
        return None
    counted = {k: d.count for k, d in integrity.defects.items() if d.count is not None}
    if not (integrity.traces and counted):
        return None

    def integrity_cause() -> str:
        name = max(counted, key=lambda k: (counted[k], k))
        explanation = integrity.defects[name].explanation
        return f"{sum(counted.values()):,} defects, most {name} ({counted[name]:,})" + (
            f": {explanation}" if explanation else ""
        )

    return _count_detail(sum(counted.values()), integrity.traces, integrity_cause, str)


def _header_modes_detail(summary: Summary) -> VerdictDetail | None:
    modes = summary.modes
    definite = {m: v for m, v in modes.items() if v.expectation_definite}
    answered = sum(v.requests - v.errors for v in definite.values())
    if not answered:
        return None
    return _count_detail(
        sum(v.expectation_violations for v in modes.values()),
        sum(v.expectation_checked or 0 for v in modes.values()),
        lambda: header_modes_cause(summary),
        lambda: (
            f"none of the {answered:,} answered requests of modes with a definite expectation could be "
            "checked (" + decision_cause(summary, definite) + ")"
        ),
    )


def _apply_gaps(summary: Summary, out: dict[str, VerdictDetail]) -> None:
    """Facts the probe could not learn: the verdicts this run judges that need them are
    inconclusive, whatever the numbers say (a verdict the run does not judge is not invented)."""
    for name, reason in summary.expectation_gaps.items():
        detail = out.get(name)
        if detail is None:
            continue
        why = reason or "a fact this verdict needs was not learned"
        if (
            name == "mesh_collection"
            and detail.verdict is Verdict.FAIL
            and mesh_of(summary).expected_shape is None
        ):
            # With the shape unknown every trace holding any span counted as complete: an upper
            # bound on collection. A failure on it holds whatever the shape turns out to be.
            out[name] = replace(detail, cause=f"even counting every trace with any span as complete ({why})")
            continue
        out[name] = replace(detail, verdict=Verdict.INCONCLUSIVE, cause=why)


def judge_run(
    summary: Summary | Mapping[str, Any],
    min_collection: float,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
) -> dict[str, VerdictDetail]:
    """Every verdict of a reconciled summary with its evidence and cause (pure)."""
    s = as_summary(summary)
    mesh = mesh_of(s)
    out: dict[str, VerdictDetail] = {
        "load_delivered": load_delivered_detail(s, max_error_rate),
        "sampling": sampling_detail(s),
        "mesh_collection": _collection_detail(
            mesh.collection.k,
            mesh.collection.n,
            mesh.unknown,
            min_collection,
            lambda: mesh_collection_cause(s, min_collection),
        ),  # fmt: skip
        "no_leaks": _no_leaks_detail(s),
    }
    pred = prediction_of(s)
    if pred.checked:
        out["sampling_prediction"] = _count_detail(
            pred.mismatches or 0, pred.checked, lambda: prediction_cause(s), str
        )
    integrity = _integrity_detail(s)
    if integrity is not None:
        out["propagation_integrity"] = integrity
    ref = reference_of(s)
    if ref.started:
        out["reference_collection"] = _collection_detail(
            ref.collection.k, ref.collection.n, ref.unknown, min_collection,
            lambda: reference_cause(s, min_collection),
        )  # fmt: skip
    header_modes = _header_modes_detail(s)
    if header_modes is not None:
        out["header_modes"] = header_modes
    _apply_gaps(s, out)
    return out


def judged(
    summary: Summary, min_collection: float, max_error_rate: float = DEFAULT_MAX_ERROR_RATE
) -> Summary:
    """The summary with its verdicts, their details and the error share load_delivered was judged
    with (`max_error_rate`): every place that judges a run records the evidence with them."""
    details = judge_run(summary, min_collection, max_error_rate)
    return msgspec.structs.replace(
        summary,
        verdict_details={name: d.to_doc() for name, d in details.items()},
        max_error_rate=max_error_rate,
        verdicts={name: d.verdict.value for name, d in details.items()},
    )


def run_verdicts(
    summary: dict[str, Any], min_collection: float, max_error_rate: float = DEFAULT_MAX_ERROR_RATE
) -> dict[str, str]:
    """For summary data held as a dict: `{name: "pass"|"fail"|"inconclusive"}`, also (re)writing
    summary["verdict_details"] and summary["max_error_rate"] (what `judged` does to a `Summary`)."""
    details = judge_run(summary, min_collection, max_error_rate)
    summary["verdict_details"] = {name: d.to_dict() for name, d in details.items()}
    summary["max_error_rate"] = max_error_rate
    return {name: d.verdict.value for name, d in details.items()}


def exit_code_for(verdicts: Mapping[str, str], *, partial: bool = False) -> int:
    """130 for a partial run; else 1 when a verdict failed, 3 when none failed but one was not a
    pass (inconclusive: not enough evidence), 0 when every verdict passed."""
    if partial:
        return EXIT_INTERRUPTED
    values = {str(v) for v in verdicts.values()}
    if Verdict.FAIL.value in values:
        return EXIT_VERDICT_FAILED
    if values - {Verdict.PASS.value}:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


__all__ = [
    "BASIS_ERROR_SHARE",
    "BASIS_EXACT",
    "BASIS_INTERVAL",
    "BASIS_STATISTICAL",
    "DEFAULT_MAX_ERROR_RATE",
    "VerdictDetail",
    "collection_verdict",
    "describe_error",
    "exit_code_for",
    "judge_run",
    "judged",
    "load_delivered_detail",
    "run_verdicts",
    "sampling_detail",
    "settle",
    "unknown_cause",
]
