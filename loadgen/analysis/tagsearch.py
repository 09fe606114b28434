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

from collections.abc import Iterable, Mapping
from typing import Any

from loadgen.analysis.stats import Proportion
from loadgen.backends.base import BackendError, TraceBackend
from loadgen.mesh.expect import Decision, ExpectationContext
from loadgen.mesh.ids import normalize_trace_id
from loadgen.mesh.modes import mode_spec


def search_run(
    backend: TraceBackend,
    *,
    tag: str,
    run_id: str,
    start_us: int,
    end_us: int,
    service: str | None = None,
    limit: int = 10_000,
    min_window_us: int = 1_000,
) -> set[str]:
    """Trace ids holding a span tagged `tag=run_id` in [start_us, end_us].

    Backends return at most `limit` traces per query (the ones nearest the end), so a full page
    means "there may be more": the window is split in two and each half searched again."""
    found: set[str] = set()
    stack = [(start_us, end_us)]
    while stack:
        lo, hi = stack.pop()
        traces = backend.search(tags={tag: run_id}, service=service, start_us=lo, end_us=hi, limit=limit)
        for trace in traces:
            for span in trace:
                if span.get("traceId"):
                    found.add(normalize_trace_id(str(span["traceId"])))
                    break
        if len(traces) >= limit:
            if hi - lo <= min_window_us:
                raise BackendError(
                    f"more than {limit} traces in a {hi - lo} µs window: raise the search limit"
                )
            mid = (lo + hi) // 2
            stack += [(lo, mid), (mid + 1, hi)]
    return found


def estimate_from_tags(
    ledger: Iterable[Mapping[str, Any]],
    tagged: set[str],
    reference_ids: set[str],
    reference_collection: Mapping[str, Any] | None,
    ctx: ExpectationContext | None = None,
) -> dict[str, Any]:
    """Pure: the `tag_search` section of summary.json.

    Tagged mesh traces are attributed to ledger requests by injected trace id where one exists;
    the rest (traces Envoy started for header-less requests) count for the decision-free modes,
    less one per request that forces tracing under a trace id Envoy creates (x-client-trace-id,
    `b3: d`, a sampled flag without ids: traced, but not under an id we know). Each mode's
    expectation follows the mesh configuration `ctx` (default: Istio's gateway)."""
    tagged_mesh = tagged - reference_ids
    free_sent = 0
    free_found_known = 0
    forced = {Decision.FORCED_SAMPLED: [0, 0], Decision.FORCED_NOT_SAMPLED: [0, 0]}
    forced_new_id = 0  # forced-sampled requests whose trace id Envoy creates
    injected: set[str] = set()
    for rec in ledger:
        if rec.get("status") != 200:
            continue
        mode = rec.get("mode")
        spec = mode_spec(mode)
        if spec is None:
            continue
        tid = rec.get("inj_trace")
        key = normalize_trace_id(tid) if tid else None
        if key:
            injected.add(key)
        expected = spec.expected(ctx) if ctx is not None else spec.expected()
        if expected.decision is Decision.PROXY:
            free_sent += 1
            free_found_known += int(key is not None and key in tagged_mesh)
        elif expected.decision in forced:
            forced[expected.decision][1] += 1
            forced[expected.decision][0] += int(key is not None and key in tagged_mesh)
            if expected.decision is Decision.FORCED_SAMPLED and not expected.keeps_trace_id:
                forced_new_id += 1
    unattributed = max(0, len(tagged_mesh - injected) - forced_new_id)
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
            "k": forced[Decision.FORCED_SAMPLED][0],
            "n": forced[Decision.FORCED_SAMPLED][1],
        },
        "forced_not_sampled_found": {
            "k": forced[Decision.FORCED_NOT_SAMPLED][0],
            "n": forced[Decision.FORCED_NOT_SAMPLED][1],
        },
    }
