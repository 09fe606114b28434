"""Run-tag search: find a run's traces by the `x-loadgen-run-id` custom tag, and the statistical
decision-rate estimate for meshes whose upstream does not echo headers.

Every request carries `x-loadgen-run-id`; the proxies copy it into a span tag (Envoy
`custom_tags`, Istio `customTags`). Searching the backend for that tag over the run's time window
finds the run's traces without knowing their ids — the only way to see what happened to requests
whose trace id the generator never learned (no injected id, no header echo).

Statistical mode (no per-request decisions): decision rate ~ traces found by tag that belong to
decision-free requests / decision-free requests sent, corrected by the reference collection
rate (the share of traces the backend keeps, measured on spans sent straight to the collector).
The correction assumes mesh spans are lost at the same rate as reference spans.

No tagged mesh trace at all means nothing could be attributed (the mesh does not tag its spans
with the run id, or nothing was traced): "0 of n sampled" would be a measurement that never
happened, so the estimate is null with a `note` saying why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import compress
from typing import Any

import numpy as np

from loadgen.analysis.ledgerfold import LedgerFold, as_fold, unique_inverse
from loadgen.analysis.stats import Proportion, Tally
from loadgen.analysis.textcols import objects
from loadgen.ledger import LedgerRow
from loadgen.mesh.expect import Decision, ExpectationContext, Expected
from loadgen.mesh.modes import mode_spec


def _answered_by_injection(
    fold: LedgerFold, ctx: ExpectationContext | None, tagged_mesh: set[str]
) -> tuple[Counter[tuple[Expected, bool]], int]:
    """Answered requests of known modes by (expectation, found by tag under their injected id),
    and how many tagged mesh traces are none of theirs (under no injected id)."""
    expected: list[Expected | None] = []  # per facts code: None for an unanswered request
    for f in fold.facts:
        spec = mode_spec(f.mode) if f.answered else None
        expected.append(None if spec is None else spec.expected(ctx) if ctx is not None else spec.expected())
    known = np.array([e is not None for e in expected], dtype=np.bool_)
    counted = known[fold.codes]
    # Only requests with an injected id can be found by it.
    injected = counted & np.array([f.injected for f in fold.facts], dtype=np.bool_)[fold.codes]
    keys = objects(fold.injected_ids)[injected].tolist()
    hits = np.fromiter(map(tagged_mesh.__contains__, keys), dtype=np.bool_, count=len(keys))
    others = len(tagged_mesh) - len(set(compress(keys, hits.tolist())))
    found = np.zeros(len(fold), dtype=np.bool_)
    found[injected] = hits
    pairs, index = unique_inverse(fold.codes[counted].astype(np.int64) * 2 + found[counted])
    counts: Counter[tuple[Expected, bool]] = Counter()
    for pair, n in zip(pairs.tolist(), np.bincount(index, minlength=len(pairs)).tolist(), strict=True):
        exp = expected[pair // 2]
        assert exp is not None
        counts[(exp, bool(pair % 2))] += n
    return counts, others


def estimate_from_tags(
    ledger: LedgerFold | Iterable[LedgerRow | Mapping[str, Any]],
    tagged: set[str],
    reference_ids: set[str],
    reference_collection: Mapping[str, Any] | None,
    ctx: ExpectationContext | None = None,
) -> dict[str, Any]:
    """Pure: the `tag_search` section of summary.json, from the ledger's fold (or its records).

    Tagged mesh traces are attributed to ledger requests by injected trace id where one exists;
    the rest (traces Envoy started for header-less requests) count for the decision-free modes,
    less one per request that forces tracing under a trace id Envoy creates (x-client-trace-id,
    `b3: d`, a sampled flag without ids: traced, but not under an id we know). Each mode's
    expectation follows the mesh configuration `ctx` (default: Istio's gateway)."""
    tagged_mesh = tagged - reference_ids
    counts, not_injected = _answered_by_injection(as_fold(ledger), ctx, tagged_mesh)
    free = Tally()  # decision-free requests: found by their injected id, of those sent
    forced = {Decision.FORCED_SAMPLED: Tally(), Decision.FORCED_NOT_SAMPLED: Tally()}
    forced_new_id = 0  # forced-sampled requests whose trace id Envoy creates
    for (expected, found), n in counts.items():
        if expected.decision is Decision.PROXY:
            free.add(found, n)
        elif expected.decision in forced:
            forced[expected.decision].add(found, n)
            if expected.decision is Decision.FORCED_SAMPLED and not expected.keeps_trace_id:
                forced_new_id += n
    free_sent, free_found_known = free.n, free.k
    unattributed = max(0, not_injected - forced_new_id)
    raw = Proportion(min(free_sent, free_found_known + unattributed), free_sent)
    note: str | None = None
    if not free_sent:
        note = "no answered decision-free request: no decision rate to estimate"
    elif not tagged_mesh:
        note = (
            f"no mesh trace was found by the run tag ({len(tagged & reference_ids)} reference traces were): "
            f"nothing could be attributed to the {free_sent} decision-free requests (the mesh does not tag "
            "its spans with the run id, or traced nothing), so no decision rate is estimated"
        )
    corrected: dict[str, Any] | None = None
    ref = reference_collection or {}
    if note is None and ref.get("n") and ref.get("rate"):
        low, high = raw.ci95
        ref_low, ref_high = ref["ci95"]
        corrected = {
            "rate": min(1.0, raw.k / raw.n / ref["rate"]),
            # Conservative: the extremes of both intervals.
            "ci95": [
                min(1.0, low / ref_high) if ref_high else 0.0,
                min(1.0, high / ref_low) if ref_low else 1.0,
            ],
        }
    return {
        "tagged_traces": len(tagged),
        "tagged_reference": len(tagged & reference_ids),
        "tagged_mesh": len(tagged_mesh),
        "unattributed_mesh": unattributed,
        "forced_with_new_trace_id": forced_new_id,
        "decision": raw.to_dict() if note is None else None,
        "decision_corrected": corrected,
        "note": note,
        "forced_sampled_found": {
            "k": forced[Decision.FORCED_SAMPLED].k,
            "n": forced[Decision.FORCED_SAMPLED].n,
        },
        "forced_not_sampled_found": {
            "k": forced[Decision.FORCED_NOT_SAMPLED].k,
            "n": forced[Decision.FORCED_NOT_SAMPLED].n,
        },
    }
