"""Verdicts of a run, how much evidence each rests on, why it is not a pass, and the exit code
they map to (pure).

Every verdict records how many items it checked (`VerdictDetail.checked`) and the fewest it needs
(`minimum`): with fewer — zero included — it is inconclusive, never pass. A fail or an
inconclusive carries its most likely cause (`cause`), found from the summary's own numbers:
the span-count histogram against the expected shape, which header modes the violations and
mismatches sit in, whether reference spans arrive when mesh spans do not, what the read-back
polls saw. `summary["verdicts"]` stays `{name: "pass"|"fail"|"inconclusive"}`;
`summary["verdict_details"]` holds the `VerdictDetail`s as JSON.

One verdict is the exception to "zero is inconclusive": `load_delivered` fails when no request
was made (a run that sent nothing did not do its job), and when more than `max_error_rate` of the
requests failed; its cause names the commonest error (`summary["requests"]["top_errors"]`).

Collection (mesh and reference) is judged on its 95 % Wilson interval, as sampling is; unknown
traces widen it (counted missing for the low end, found for the high end). Facts the mesh probe
could not learn (`summary["expectation_gaps"]`: {verdict: reason}) make the verdicts that need
them inconclusive with that reason.

Exit codes (documented in the README and `loadgen run --help`):
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

from loadgen.analysis.planner import MAX_PLANNED_REQUESTS, all_found_sample_size, detectable_sample_size
from loadgen.analysis.stats import FAIL_ALPHA, Verdict, wilson_interval
from loadgen.exitcodes import EXIT_INCONCLUSIVE, EXIT_INTERRUPTED, EXIT_OK, EXIT_VERDICT_FAILED
from loadgen.mesh.propagation import mode_spec

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "checked": self.checked,
            "minimum": self.minimum,
            "basis": self.basis,
            "cause": self.cause,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VerdictDetail:
        return cls(
            Verdict(d["verdict"]), int(d["checked"]), int(d["minimum"]), str(d["basis"]), d.get("cause")
        )


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


def collection_verdict(k: int, n: int, unknown: int, minimum: float, confidence: float = 0.95) -> Verdict:
    """Judge a collection rate on its Wilson interval, widened by the unknowns (they can only add
    uncertainty): pass when the low end with every unknown counted missing, Wilson(k, n + u),
    reaches `minimum`; fail when the high end with every unknown counted found,
    Wilson(k + u, n + u), stays below it; inconclusive otherwise and when nothing was checked
    (n == 0: unknowns alone are no evidence)."""
    if n == 0:
        return Verdict.INCONCLUSIVE
    worst_low = wilson_interval(k, n + unknown, confidence)[0]
    best_high = wilson_interval(k + unknown, n + unknown, confidence)[1]
    if worst_low >= minimum:
        return Verdict.PASS
    if best_high < minimum:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


# --- causes: small readers of the summary -------------------------------------------------------------


def _d(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _i(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _modes(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(k): _d(v) for k, v in _d(summary.get("modes")).items()}


def _sends_xrid(mode: str) -> bool:
    spec = mode_spec(mode)
    return spec is not None and spec.sends.xrid is not None


def _all_polls_failed(summary: Mapping[str, Any]) -> int:
    """How many read-back polls there were when every one of them failed every query; else 0."""
    polls = [_d(p) for p in (_d(summary.get("readback")).get("polls") or [])]
    if polls and all(_i(p.get("queried")) > 0 and _i(p.get("errors")) >= _i(p.get("queried")) for p in polls):
        return len(polls)
    return 0


def unknown_cause(summary: Mapping[str, Any], unknown: int, what: str) -> str:
    """Why `unknown` traces (`what`) were never judged: every poll failed, an interrupted
    read-back, query errors left on the last poll, or simply never answered."""
    failed = _all_polls_failed(summary)
    if failed:
        return (
            f"every poll of the backend failed ({failed} poll{'s' if failed != 1 else ''}, every query an "
            f"error): all {unknown:,} {what} are unknown — is the backend up and reachable?"
        )
    if summary.get("status") == "partial":
        return f"the run stopped before read-back finished: {unknown:,} {what} are unknown"
    polls = [_d(p) for p in (_d(summary.get("readback")).get("polls") or [])]
    if polls and _i(polls[-1].get("errors")):
        last = polls[-1]
        return (
            f"the backend still failed {_i(last.get('errors')):,} of {_i(last.get('queried')):,} queries on "
            f"the last poll: {unknown:,} {what} are unknown (loadgen verify may find them later)"
        )
    return f"{unknown:,} {what} were never answered by the backend (unknown)"


def _decision_cause(summary: Mapping[str, Any], modes: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Why answered requests showed no decision: no such mode in the mix, every request failed,
    or no header echo."""
    modes = _modes(summary) if modes is None else modes
    if not modes:
        return "no request was sent"
    requests = sum(_i(m.get("requests")) for m in modes.values())
    answered = requests - sum(_i(m.get("errors")) for m in modes.values())
    if not answered:
        return f"every one of the {requests:,} requests failed"
    decided = sum(_i(m.get("decided_sampled")) + _i(m.get("decided_not_sampled")) for m in modes.values())
    if not decided:
        return (
            f"none of the {answered:,} answered requests showed the upstream's decision (no header echo: "
            "neither X-B3-Sampled nor an x-request-id came back)"
        )
    return f"{decided:,} of {answered:,} answered requests showed a decision"


def _shape_text(mesh: Mapping[str, Any]) -> str:
    expected = _i(mesh.get("expected_spans_per_trace"))
    shape = [s for s in mesh.get("expected_shape") or [] if isinstance(s, list | tuple) and len(s) == 3]
    parts = ", ".join(f"{svc} {kind} ×{count}" for svc, kind, count in shape if svc != "*")
    return f"{expected} spans" + (f" ({parts})" if parts else "")


def _histogram_cause(mesh: Mapping[str, Any]) -> str:
    """How the found traces differ from a complete one, from the span-count histogram."""
    hist: dict[int, int] = {}
    for key, count in _d(mesh.get("spans_per_found_trace")).items():
        try:
            hist[int(key)] = _i(count)
        except ValueError:
            continue
    expected = _i(mesh.get("expected_spans_per_trace"))
    want = _shape_text(mesh)
    short = sum(c for spans, c in hist.items() if spans < expected)
    if not hist:
        return f"no sampled trace was found at all (a complete one has {want})"
    commonest = max(hist, key=lambda spans: (hist[spans], -spans))
    if short and commonest < expected:
        return (
            f"most traces found hold {commonest} span{'s' if commonest != 1 else ''} ({hist[commonest]:,} "
            f"traces) where a complete one has {want}: a hop's spans do not arrive (a proxy not tracing, "
            "or reporting elsewhere?)"
        )
    if commonest > expected:
        return (
            f"most traces found hold {commonest} spans ({hist[commonest]:,} traces), more than the {want} "
            "expected: the learned shape does not match what arrives (an extra hop?)"
        )
    return (
        f"traces hold {commonest} spans but not the expected ones ({want}): spans of another "
        "service or kind stand in for a missing one"
    )


def _collection_undecided(k: int, n: int, unknown: int, threshold: float, more: str) -> str:
    """Why a collection interval straddles the minimum: unknowns, or too few traces."""
    if unknown and collection_verdict(k, n, 0, threshold) is not Verdict.INCONCLUSIVE:
        return f"{unknown:,} unknown trace{'s' if unknown != 1 else ''} could go either way"
    low, high = wilson_interval(k, n)
    needed = all_found_sample_size(threshold) if 0.0 <= threshold <= 1.0 else None
    text = (
        f"{k:,} of {n:,} found: the 95 % interval [{low:.4f}, {high:.4f}] straddles the minimum {threshold:g}"
    )
    if needed is None:
        return text + "; a minimum of 1 can never be shown by a sample (choose e.g. 0.999)"
    if n < needed:
        return text + f"; at least {needed:,} traces (all found) are needed to show ≥ {threshold:g}: {more}"
    return text + f"; {needed:,} traces all found would show ≥ {threshold:g}, but {n - k:,} were not"


def _mesh_collection_cause(summary: Mapping[str, Any], threshold: float) -> str:
    mesh = _d(summary.get("mesh"))
    coll = _d(mesh.get("collection"))
    k, n, unknown, partial = (
        _i(coll.get("k")),
        _i(coll.get("n")),
        _i(mesh.get("unknown")),
        _i(mesh.get("partial")),
    )
    if n == 0:
        if unknown:
            return unknown_cause(summary, unknown, "sampled mesh traces")
        modes = _modes(summary)
        if sum(_i(m.get("decided_sampled")) for m in modes.values()):
            return "no sampled request's trace id is known (none echoed or injected)"
        if sum(_i(m.get("decided_not_sampled")) for m in modes.values()):
            return "no request was decided sampled (sampling 0 % and no forced-sampled mode in the mix?)"
        return _decision_cause(summary, modes)
    verdict = collection_verdict(k, n, unknown, threshold)
    if verdict is Verdict.INCONCLUSIVE:
        return _collection_undecided(k, n, unknown, threshold, "a longer --duration or a higher rate")
    ref = _d(summary.get("reference"))
    rcoll = _d(ref.get("collection"))
    rk, rn = _i(rcoll.get("k")), _i(rcoll.get("n"))
    missing = n - k - partial
    if k == 0 and partial == 0:
        if rn and rk:
            return (
                f"reference spans arrive ({rk:,} of {rn:,} reference traces found) but none of {n:,} sampled "
                "mesh traces does: the mesh→collector path is broken (the proxies' tracing address, port "
                "or endpoint path?)"
            )
        if rn:
            return (
                f"neither mesh ({n:,}) nor reference ({rn:,}) traces are found: the backend does not hold "
                "what the collector receives (does --backend read what --collector stores?)"
            )
        return f"none of {n:,} sampled mesh traces is in the backend (no reference traces to tell where)"
    if partial >= missing:
        return f"{partial:,} of {n:,} sampled traces are partial: " + _histogram_cause(mesh)
    text = f"{missing:,} of {n:,} sampled traces are missing"
    if rn and collection_verdict(rk, rn, 0, threshold) is Verdict.FAIL:
        return (
            text
            + f"; reference collection is also low ({rk:,} of {rn:,}): the collector or backend loses spans"
        )
    if rn:
        return (
            text
            + f" while reference traces arrive ({rk:,} of {rn:,}): mesh spans are lost before the collector"
        )
    return text


def _reference_cause(summary: Mapping[str, Any], threshold: float) -> str:
    ref = _d(summary.get("reference"))
    coll = _d(ref.get("collection"))
    k, n, unknown, partial = (
        _i(coll.get("k")),
        _i(coll.get("n")),
        _i(ref.get("unknown")),
        _i(ref.get("partial")),
    )
    if n == 0:
        if unknown:
            return unknown_cause(summary, unknown, "exported reference traces")
        failed, dropped = _i(ref.get("failed")), _i(ref.get("dropped"))
        return (
            f"no reference trace was exported ({failed:,} failed, {dropped:,} dropped of "
            f"{_i(ref.get('started')):,} started): the collector refused or was unreachable?"
        )
    if collection_verdict(k, n, unknown, threshold) is Verdict.INCONCLUSIVE:
        return _collection_undecided(k, n, unknown, threshold, "raise --reference-rate or --duration")
    if k == 0 and partial == 0:
        return (
            f"none of {n:,} exported reference traces is in the backend: does --backend read what "
            "--collector stores?"
        )
    return (
        f"{n - k:,} of {n:,} exported reference traces not found complete ({partial:,} partial): the collector "
        "or backend loses spans sent straight to it"
    )


def _leak_inconclusive_cause(summary: Mapping[str, Any]) -> str:
    modes = _modes(summary)
    not_sampled = sum(_i(m.get("decided_not_sampled")) for m in modes.values())
    if not_sampled:
        failed = _all_polls_failed(summary)
        if failed:
            why = f"every poll of the backend failed ({failed} polls)"
        elif summary.get("status") == "partial":
            why = "the run stopped before read-back finished"
        else:
            why = "their trace ids are unknown or the backend never answered for them"
        reason = f"{not_sampled:,} decided not sampled, all unknown: {why}"
    elif sum(_i(m.get("decided_sampled")) for m in modes.values()):
        reason = "no request was decided not sampled: sampling 100 % and no not-sampled mode in the mix?"
    else:
        reason = _decision_cause(summary, modes)
    return f"no decided-not-sampled trace was queried ({reason})"


def _leak_cause(summary: Mapping[str, Any], checked: int) -> str:
    mesh = _d(summary.get("mesh"))
    leaked = _i(mesh.get("leaked"))
    text = f"{leaked:,} leaked of {checked:,} queried"
    worst = max(_modes(summary).items(), key=lambda mm: _i(mm[1].get("leaked")), default=None)
    if worst is not None and _i(worst[1].get("leaked")):
        mode, m = worst
        text += (
            f", most in {mode} ({_i(m.get('leaked')):,} of {_i(m.get('decided_not_sampled')):,} decided not "
            "sampled)"
        )
    return text + ": spans exist for requests the upstream saw not sampled (a proxy deciding on its own?)"


def _prediction_cause(summary: Mapping[str, Any]) -> str:
    sampling = _d(summary.get("sampling"))
    pred = _d(sampling.get("prediction"))
    checked, mismatches = _i(pred.get("checked")), _i(pred.get("mismatches"))
    by_mode = {str(m): _d(v) for m, v in _d(pred.get("by_mode")).items()}
    xrid = sorted(
        ((m, v) for m, v in by_mode.items() if _sends_xrid(m) and _i(v.get("mismatches"))),
        key=lambda mv: -_i(mv[1].get("mismatches")),
    )
    in_xrid = sum(_i(v.get("mismatches")) for _, v in xrid)
    if mismatches and in_xrid * 5 >= mismatches * 4:
        listed = ", ".join(
            f"{m}: {_i(v.get('mismatches')):,} of {_i(v.get('checked')):,}" for m, v in xrid[:3]
        )
        return (
            f"{in_xrid:,} of {mismatches:,} mismatches are in modes that send an x-request-id ({listed}): the "
            "gateway does not decide on the client's id as the profile says (preserve_external_request_id, "
            "an internal client?)"
        )
    pct = sampling.get("configured_percent")
    at = f" at {pct:g} %" if isinstance(pct, int | float) else ""
    return (
        f"{mismatches:,} of {checked:,} decisions disagree with Envoy's x-request-id rule{at}: the proxy samples "
        "at another rate (a runtime override of random_sampling, overall_sampling below 100, another sampler?)"
    )


_KINDS = {
    "request_id": (
        "x-request-id kept or replaced unlike the profile",
        "preserve_external_request_id or use_remote_address differ from the profile?",
    ),
    "leak": ("produced spans although they must never", "a proxy traces requests it cannot sample?"),
}


def _violation_text(kind: str, m: Mapping[str, Any]) -> tuple[str, str]:
    if kind == "decision":
        expected = m.get("expected_decision")
        if expected == "forced_sampled":
            return "not traced as forced", "overall_sampling or client_sampling below 100?"
        if expected in ("forced_not_sampled", "never_traced"):
            return "traced although they must not be", "a proxy ignores the client's not-sampled flag?"
        return "decided otherwise than predicted", "the gateway's configuration differs from the profile?"
    if kind == "trace_id":
        if m.get("expected_trace_id_kept"):
            return (
                "trace id replaced where it should be kept",
                "the mesh does not propagate this header format?",
            )
        return "trace id kept where it should be replaced", "W3C propagation on, unlike the profile?"
    return _KINDS.get(kind, (f"{kind} expectation broken", "the mesh differs from the profile?"))


def _header_modes_cause(summary: Mapping[str, Any]) -> str:
    pairs: list[tuple[int, str, str, Mapping[str, Any]]] = []
    for mode, m in _modes(summary).items():
        for kind, count in _d(m.get("violations")).items():
            if _i(count):
                pairs.append((_i(count), mode, str(kind), m))
    if not pairs:  # violations counted without a breakdown (an older summary)
        pairs = [(_i(m.get("expectation_violations")), mode, "", m) for mode, m in _modes(summary).items()]
        pairs = [p for p in pairs if p[0]]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    parts = []
    for count, mode, kind, m in pairs[:3]:
        text, hint = _violation_text(kind, m) if kind else ("broke the expectation", "")
        checked = _i(m.get("expectation_checked")) or _i(m.get("requests")) - _i(m.get("errors"))
        parts.append(f"{mode}: {count:,} of {checked:,} {text}" + (f" — {hint}" if hint else ""))
    more = len(pairs) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _error_hint(status: int) -> str:
    if status == 0:
        return "no response at all: is the gateway reachable at that address (--gateway)?"
    if status == 404:
        return "the gateway has no route for it: does --host match a route (VirtualService hosts), and --path exist?"
    if status in (502, 503, 504):
        return "the gateway has no healthy upstream, or the upstream fails"
    if 400 <= status < 500:
        return "the gateway or upstream refuses the request"
    if status >= 500:
        return "the gateway or upstream fails"
    return "the upstream answered something other than 200"


def describe_error(entry: Mapping[str, Any]) -> str:
    """One `requests.top_errors` entry as text: `HTTP 404`, `HTTP 503 (no healthy upstream)`,
    `no response (ConnectionRefusedError(...))`."""
    status, text = _i(entry.get("status")), str(entry.get("error") or "")
    label = f"HTTP {status}" if status else "no response"
    return label + (f" ({text})" if text and text != label else "")


def load_delivered_detail(summary: Mapping[str, Any], max_error_rate: float) -> VerdictDetail:
    """Was the load delivered? Fails when no request was made (a run that sent nothing measured
    nothing: a fail, not an inconclusive, since the run's own job was to send), or when more
    than `max_error_rate` of the requests failed; the cause names the commonest error."""
    requests = summary.get("requests")
    if not isinstance(requests, Mapping) or "total" not in requests:
        return VerdictDetail(
            Verdict.FAIL, 0, 1, BASIS_ERROR_SHARE,
            "the summary records no requests (no requests.total): nothing shows that load was delivered",
        )  # fmt: skip
    total, errors = _i(requests.get("total")), _i(requests.get("errors"))
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
    top = [_d(e) for e in requests.get("top_errors") or [] if isinstance(e, Mapping)]
    if top:
        first = top[0]
        cause += (
            f"; most common: {describe_error(first)}, {_i(first.get('count')):,} of {total:,} requests — "
            + _error_hint(_i(first.get("status")))
        )
    else:
        cause += " (the summary has no error breakdown: see the ledger's status and error fields)"
    return VerdictDetail(Verdict.FAIL, total, 1, BASIS_ERROR_SHARE, cause)


# --- the verdicts ------------------------------------------------------------------------------------


def sampling_detail(summary: Mapping[str, Any]) -> VerdictDetail:
    """The sampling verdict the reconciler reached, with the evidence it needs: exact (every
    decision checked against Envoy's rule) needs one decision; statistical needs enough decisions
    that a proxy at another rate could fail it at all (`planner.detectable_sample_size`)."""
    sampling = _d(summary.get("sampling"))
    decision = _d(sampling.get("decision"))
    k, n = _i(decision.get("k")), _i(decision.get("n"))
    basis = str(sampling.get("verdict_basis") or BASIS_STATISTICAL)
    try:
        raw = Verdict(str(sampling.get("verdict")))
    except ValueError:
        raw = Verdict.INCONCLUSIVE
    pct = sampling.get("configured_percent")
    expected = float(pct) / 100.0 if isinstance(pct, int | float) and 0.0 <= pct <= 100.0 else None
    minimum = 1
    if expected is not None and basis != BASIS_EXACT:
        try:
            minimum = detectable_sample_size(expected, FAIL_ALPHA)
        except ValueError:  # a percentage so small no plannable run could ever fail it
            minimum = MAX_PLANNED_REQUESTS

    def cause() -> str:
        if expected is None:
            return (
                "the configured sampling percentage is unknown: give --expect (or --expect-from) to judge it"
            )
        if n == 0:
            proxy = {m: v for m, v in _modes(summary).items() if v.get("expected_decision") == "proxy"}
            if not proxy and _modes(summary):
                return "the mix has no decision-free mode (none, *_no_flag): nothing for the proxy to decide"
            return "no decision-free request showed a decision: " + _decision_cause(summary, proxy or None)
        if basis == BASIS_EXACT:
            return _prediction_cause(summary)
        low, high = wilson_interval(k, n)
        p_value = sampling.get("p_value")
        observed = (
            f"observed {k / n:.4f} [{low:.4f}, {high:.4f}] (k={k:,}, n={n:,}) vs configured {expected:.4f}"
        )
        if raw is Verdict.FAIL:
            pv = f" (p = {p_value:.2g})" if isinstance(p_value, float) else ""
            if k / n < expected:
                return (
                    observed
                    + pv
                    + ": the proxy samples less than configured (overall_sampling below 100, a runtime override?)"
                )
            return (
                observed + pv + ": the proxy samples more than configured (another setting takes precedence?)"
            )
        return (
            observed
            + ": outside the interval, but the exact test is not conclusive; send more decision-free requests"
        )

    too_few = ""
    if n and n < minimum and expected is not None:
        too_few = (
            f"{n:,} decisions; at least {minimum:,} are needed before a proxy at another rate than "
            f"{expected:.4f} could fail the statistical verdict"
        )
    return settle(raw, n, minimum, basis, cause, too_few=too_few)


def _count_detail(
    bad: int, checked: int, cause: Callable[[], str], too_few: Callable[[], str]
) -> VerdictDetail:
    verdict = Verdict.FAIL if bad else Verdict.PASS
    return settle(verdict, checked, 1, BASIS_EXACT, cause, too_few=too_few() if checked < 1 else "")


def _collection_detail(
    k: int, n: int, unknown: int, threshold: float, cause: Callable[[], str]
) -> VerdictDetail:
    return settle(collection_verdict(k, n, unknown, threshold), n, 1, BASIS_INTERVAL, cause)


def judge_run(
    summary: Mapping[str, Any], min_collection: float, max_error_rate: float = DEFAULT_MAX_ERROR_RATE
) -> dict[str, VerdictDetail]:
    """Every verdict of a reconciled summary with its evidence and cause (pure)."""
    mesh = _d(summary.get("mesh"))
    out: dict[str, VerdictDetail] = {
        "load_delivered": load_delivered_detail(summary, max_error_rate),
        "sampling": sampling_detail(summary),
    }
    coll = _d(mesh.get("collection"))
    out["mesh_collection"] = _collection_detail(
        _i(coll.get("k")), _i(coll.get("n")), _i(mesh.get("unknown")), min_collection,
        lambda: _mesh_collection_cause(summary, min_collection),
    )  # fmt: skip
    if "leak_checked" in mesh:
        leak_checked = _i(mesh.get("leak_checked"))
    else:  # a summary from before leak_checked: the decided-not-sampled requests judged
        leak_checked = sum(_i(m.get("leaked")) + _i(m.get("not_sampled")) for m in _modes(summary).values())
    out["no_leaks"] = _count_detail(
        _i(mesh.get("leaked")), leak_checked,
        lambda: _leak_cause(summary, leak_checked), lambda: _leak_inconclusive_cause(summary),
    )  # fmt: skip
    pred = _d(_d(summary.get("sampling")).get("prediction"))
    if _i(pred.get("checked")):
        out["sampling_prediction"] = _count_detail(
            _i(pred.get("mismatches")), _i(pred.get("checked")), lambda: _prediction_cause(summary), str
        )
    integrity = _d(summary.get("integrity"))
    defects = {str(k): _d(d) for k, d in _d(integrity.get("defects")).items() if isinstance(d, Mapping)}
    counted = {k: _i(d.get("count")) for k, d in defects.items() if d.get("count") is not None}
    if integrity.get("traces") and counted:
        # Propagation through the hops: fragmented traces, broken/flattened parent links...
        def integrity_cause() -> str:
            name = max(counted, key=lambda k: (counted[k], k))
            explanation = str(defects[name].get("explanation") or "")
            total = sum(counted.values())
            return f"{total:,} defects, most {name} ({counted[name]:,})" + (
                f": {explanation}" if explanation else ""
            )

        out["propagation_integrity"] = _count_detail(
            sum(counted.values()), _i(integrity.get("traces")), integrity_cause, str
        )
    ref = _d(summary.get("reference"))
    if ref.get("started"):
        rcoll = _d(ref.get("collection"))
        out["reference_collection"] = _collection_detail(
            _i(rcoll.get("k")), _i(rcoll.get("n")), _i(ref.get("unknown")), min_collection,
            lambda: _reference_cause(summary, min_collection),
        )  # fmt: skip
    modes = _modes(summary)
    definite = {m: v for m, v in modes.items() if v.get("expectation_definite")}
    answered = sum(_i(v.get("requests")) - _i(v.get("errors")) for v in definite.values())
    if answered:
        checked = sum(_i(v.get("expectation_checked")) for v in modes.values())
        out["header_modes"] = _count_detail(
            sum(_i(v.get("expectation_violations")) for v in modes.values()), checked,
            lambda: _header_modes_cause(summary),
            lambda: (
                f"none of the {answered:,} answered requests of modes with a definite expectation could be "
                "checked (" + _decision_cause(summary, definite) + ")"
            ),
        )  # fmt: skip
    # Facts the probe could not learn: the verdicts this run judges that need them are
    # inconclusive, whatever the numbers say (a verdict the run does not judge is not invented).
    for name, reason in _d(summary.get("expectation_gaps")).items():
        detail = out.get(str(name))
        if detail is None:
            continue
        why = str(reason) or "a fact this verdict needs was not learned"
        if (
            name == "mesh_collection"
            and detail.verdict is Verdict.FAIL
            and _d(summary.get("mesh")).get("expected_shape") is None
        ):
            # With the shape unknown every trace holding any span counted as complete: an upper
            # bound on collection. A failure on it holds whatever the shape turns out to be.
            out[name] = replace(detail, cause=f"even counting every trace with any span as complete ({why})")
            continue
        out[str(name)] = replace(detail, verdict=Verdict.INCONCLUSIVE, cause=why)
    return out


def run_verdicts(
    summary: dict[str, Any], min_collection: float, max_error_rate: float = DEFAULT_MAX_ERROR_RATE
) -> dict[str, str]:
    """`{name: "pass"|"fail"|"inconclusive"}` for summary["verdicts"]; also (re)writes
    summary["verdict_details"] (`judge_run`'s `VerdictDetail`s as JSON) and the error share
    load_delivered was judged with (summary["max_error_rate"]), so every place that judges a run
    records the evidence with the verdicts."""
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
