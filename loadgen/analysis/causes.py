"""Why a verdict is not a pass: the most likely cause, found from the summary's own numbers
(pure; `verdicts` asks for a cause only when a verdict is a fail or inconclusive).

The span-count histogram against the expected shape, which header modes the violations and
mismatches sit in, whether reference spans arrive when mesh spans do not, what the read-back
polls saw, the commonest request error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.analysis.planner import all_found_sample_size
from loadgen.analysis.stats import Verdict, wilson_interval
from loadgen.mesh.modes import mode_spec
from loadgen.summary.model import Mesh, ModeStats, Prediction, Reference, Sampling, Summary, TopError


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


# --- the summary's sections, empty when absent (an older or partial summary) -------------------------


def mesh_of(s: Summary) -> Mesh:
    return s.mesh or Mesh()


def sampling_of(s: Summary) -> Sampling:
    return s.sampling or Sampling()


def reference_of(s: Summary) -> Reference:
    return s.reference or Reference()


def prediction_of(s: Summary) -> Prediction:
    return sampling_of(s).prediction or Prediction()


def _sends_xrid(mode: str) -> bool:
    spec = mode_spec(mode)
    return spec is not None and spec.sends.xrid is not None


def _all_polls_failed(s: Summary) -> int:
    """How many read-back polls there were when every one of them failed every query; else 0."""
    polls = s.readback.polls if s.readback else []
    if polls and all(p.queried > 0 and p.errors >= p.queried for p in polls):
        return len(polls)
    return 0


def unknown_cause(s: Summary, unknown: int, what: str) -> str:
    """Why `unknown` traces (`what`) were never judged: every poll failed, an interrupted
    read-back, query errors left on the last poll, or simply never answered."""
    failed = _all_polls_failed(s)
    if failed:
        return (
            f"every poll of the backend failed ({failed} poll{'s' if failed != 1 else ''}, every query an "
            f"error): all {unknown:,} {what} are unknown — is the backend up and reachable?"
        )
    if s.partial:
        return f"the run stopped before read-back finished: {unknown:,} {what} are unknown"
    polls = s.readback.polls if s.readback else []
    if polls and polls[-1].errors:
        last = polls[-1]
        return (
            f"the backend still failed {last.errors:,} of {last.queried:,} queries on "
            f"the last poll: {unknown:,} {what} are unknown (loadgen verify may find them later)"
        )
    return f"{unknown:,} {what} were never answered by the backend (unknown)"


def decision_cause(s: Summary, modes: Mapping[str, ModeStats] | None = None) -> str:
    """Why answered requests showed no decision: no such mode in the mix, every request failed,
    or no header echo."""
    modes = s.modes if modes is None else modes
    if not modes:
        return "no request was sent"
    requests = sum(m.requests for m in modes.values())
    answered = requests - sum(m.errors for m in modes.values())
    if not answered:
        return f"every one of the {requests:,} requests failed"
    decided = sum(m.decided_sampled + m.decided_not_sampled for m in modes.values())
    if not decided:
        return (
            f"none of the {answered:,} answered requests showed the upstream's decision (no header echo: "
            "neither X-B3-Sampled nor an x-request-id came back)"
        )
    return f"{decided:,} of {answered:,} answered requests showed a decision"


def _shape_text(mesh: Mesh) -> str:
    parts = ", ".join(
        f"{svc} {kind} ×{count}" for svc, kind, count in mesh.expected_shape or () if svc != "*"
    )
    return f"{mesh.expected_spans_per_trace} spans" + (f" ({parts})" if parts else "")


def _histogram_cause(mesh: Mesh) -> str:
    """How the found traces differ from a complete one, from the span-count histogram."""
    hist: dict[int, int] = {}
    for key, count in mesh.spans_per_found_trace.items():
        try:
            hist[int(key)] = count
        except ValueError:
            continue
    expected = mesh.expected_spans_per_trace
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


def _nothing_sampled_cause(s: Summary, unknown: int) -> str:
    if unknown:
        return unknown_cause(s, unknown, "sampled mesh traces")
    if sum(m.decided_sampled for m in s.modes.values()):
        return "no sampled request's trace id is known (none echoed or injected)"
    if sum(m.decided_not_sampled for m in s.modes.values()):
        return "no request was decided sampled (sampling 0 % and no forced-sampled mode in the mix?)"
    return decision_cause(s)


def mesh_collection_cause(s: Summary, threshold: float) -> str:
    mesh = mesh_of(s)
    k, n, unknown, partial = mesh.collection.k, mesh.collection.n, mesh.unknown, mesh.partial
    if n == 0:
        return _nothing_sampled_cause(s, unknown)
    if collection_verdict(k, n, unknown, threshold) is Verdict.INCONCLUSIVE:
        # A sampled read-back left traces unasked: a bigger sample is the cheaper remedy.
        remedy = (
            f"a bigger --readback-sample or --readback-fraction ({mesh.not_queried:,} sampled traces were not queried)"
            if mesh.not_queried
            else "a longer --duration or a higher rate"
        )
        return _collection_undecided(k, n, unknown, threshold, remedy)
    rcoll = reference_of(s).collection
    rk, rn = rcoll.k, rcoll.n
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


def reference_cause(s: Summary, threshold: float) -> str:
    ref = reference_of(s)
    k, n, unknown, partial = ref.collection.k, ref.collection.n, ref.unknown, ref.partial
    if n == 0:
        if unknown:
            return unknown_cause(s, unknown, "exported reference traces")
        return (
            f"no reference trace was exported ({ref.failed:,} failed, {ref.dropped:,} dropped of "
            f"{ref.started:,} started): the collector refused or was unreachable?"
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


def leak_inconclusive_cause(s: Summary) -> str:
    not_sampled = sum(m.decided_not_sampled for m in s.modes.values())
    if not_sampled:
        failed = _all_polls_failed(s)
        if failed:
            why = f"every poll of the backend failed ({failed} polls)"
        elif s.partial:
            why = "the run stopped before read-back finished"
        else:
            why = "their trace ids are unknown or the backend never answered for them"
        reason = f"{not_sampled:,} decided not sampled, all unknown: {why}"
    elif sum(m.decided_sampled for m in s.modes.values()):
        reason = "no request was decided not sampled: sampling 100 % and no not-sampled mode in the mix?"
    else:
        reason = decision_cause(s)
    return f"no decided-not-sampled trace was queried ({reason})"


def leak_cause(s: Summary, checked: int) -> str:
    text = f"{mesh_of(s).leaked or 0:,} leaked of {checked:,} queried"
    worst = max(s.modes.items(), key=lambda mm: mm[1].leaked, default=None)
    if worst is not None and worst[1].leaked:
        mode, m = worst
        text += f", most in {mode} ({m.leaked:,} of {m.decided_not_sampled:,} decided not sampled)"
    return text + ": spans exist for requests the upstream saw not sampled (a proxy deciding on its own?)"


def prediction_cause(s: Summary) -> str:
    pred = prediction_of(s)
    checked, mismatches = pred.checked, pred.mismatches or 0
    xrid = sorted(
        ((m, v) for m, v in pred.by_mode.items() if _sends_xrid(m) and v.mismatches),
        key=lambda mv: -mv[1].mismatches,
    )
    in_xrid = sum(v.mismatches for _, v in xrid)
    if mismatches and in_xrid * 5 >= mismatches * 4:
        listed = ", ".join(f"{m}: {v.mismatches:,} of {v.checked:,}" for m, v in xrid[:3])
        return (
            f"{in_xrid:,} of {mismatches:,} mismatches are in modes that send an x-request-id ({listed}): the "
            "gateway does not decide on the client's id as the profile says (preserve_external_request_id, "
            "an internal client?)"
        )
    pct = sampling_of(s).configured_percent
    at = f" at {pct:g} %" if pct is not None else ""
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


def _violation_text(kind: str, m: ModeStats) -> tuple[str, str]:
    if kind == "decision":
        expected = m.expected_decision
        if expected == "forced_sampled":
            return "not traced as forced", "overall_sampling or client_sampling below 100?"
        if expected in ("forced_not_sampled", "never_traced"):
            return "traced although they must not be", "a proxy ignores the client's not-sampled flag?"
        return "decided otherwise than predicted", "the gateway's configuration differs from the profile?"
    if kind == "trace_id":
        if m.expected_trace_id_kept:
            return (
                "trace id replaced where it should be kept",
                "the mesh does not propagate this header format?",
            )
        return "trace id kept where it should be replaced", "W3C propagation on, unlike the profile?"
    return _KINDS.get(kind, (f"{kind} expectation broken", "the mesh differs from the profile?"))


def header_modes_cause(s: Summary) -> str:
    pairs: list[tuple[int, str, str, ModeStats]] = [
        (count, mode, kind, m)
        for mode, m in s.modes.items()
        for kind, count in (m.violations or {}).items()
        if count
    ]
    if not pairs:  # violations counted without a breakdown (an older summary)
        pairs = [(m.expectation_violations, mode, "", m) for mode, m in s.modes.items()]
        pairs = [p for p in pairs if p[0]]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    parts = []
    for count, mode, kind, m in pairs[:3]:
        text, hint = _violation_text(kind, m) if kind else ("broke the expectation", "")
        checked = m.expectation_checked or m.requests - m.errors
        parts.append(f"{mode}: {count:,} of {checked:,} {text}" + (f" — {hint}" if hint else ""))
    more = len(pairs) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def error_hint(status: int) -> str:
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


def describe_error(entry: TopError | Mapping[str, Any]) -> str:
    """One `requests.top_errors` entry as text: `HTTP 404`, `HTTP 503 (no healthy upstream)`,
    `no response (ConnectionRefusedError(...))`."""
    if not isinstance(entry, TopError):  # summary data not yet decoded (report.html)
        status = entry.get("status")
        code = status if isinstance(status, int) and not isinstance(status, bool) else 0
        entry = TopError(status=code, error=str(entry.get("error") or "") or None)
    text = entry.error or ""
    label = f"HTTP {entry.status}" if entry.status else "no response"
    return label + (f" ({text})" if text and text != label else "")


__all__ = [
    "collection_verdict",
    "decision_cause",
    "describe_error",
    "error_hint",
    "header_modes_cause",
    "leak_cause",
    "leak_inconclusive_cause",
    "mesh_collection_cause",
    "mesh_of",
    "prediction_cause",
    "prediction_of",
    "reference_cause",
    "reference_of",
    "sampling_of",
    "unknown_cause",
]
