"""Verdicts of a run and the exit code they map to (pure).

Exit codes (documented in the README and `loadgen run --help`):
    0  every verdict passed or was inconclusive
    1  at least one verdict failed
    2  the run could not be done (bad configuration, unreachable gateway/collector/backend)
    130 interrupted (Ctrl-C / SIGTERM): a partial report was written
"""

from __future__ import annotations

from typing import Any

from loadgen.stats import Verdict

EXIT_OK = 0
EXIT_VERDICT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def collection_verdict(k: int, n: int, unknown: int, minimum: float) -> Verdict:
    """pass when k/n >= minimum; inconclusive when nothing was decided or when the unknowns
    could flip the answer (all found vs all missing); fail otherwise."""
    if n + unknown == 0:
        return Verdict.INCONCLUSIVE
    best = (k + unknown) / (n + unknown)
    worst = k / (n + unknown)
    if worst >= minimum:
        return Verdict.PASS
    if best < minimum:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


def run_verdicts(summary: dict[str, Any], min_collection: float) -> dict[str, str]:
    mesh = summary["mesh"]
    ref = summary.get("reference")
    out = {
        "sampling": summary["sampling"]["verdict"],
        "mesh_collection": collection_verdict(
            mesh["collection"]["k"], mesh["collection"]["n"], mesh["unknown"], min_collection
        ).value,
        "no_leaks": (Verdict.PASS if mesh["leaked"] == 0 else Verdict.FAIL).value,
    }
    prediction = summary["sampling"].get("prediction") or {}
    if prediction.get("checked"):
        out["sampling_prediction"] = (Verdict.PASS if prediction["mismatches"] == 0 else Verdict.FAIL).value
    integrity = summary.get("integrity") or {}
    defects = integrity.get("defects") or {}
    counts = [int(d["count"]) for d in defects.values() if isinstance(d, dict) and d.get("count") is not None]
    if integrity.get("traces") and counts:
        # Propagation through the hops: fragmented traces, broken/flattened parent links...
        out["propagation_integrity"] = (Verdict.PASS if sum(counts) == 0 else Verdict.FAIL).value
    if ref is not None and ref.get("started"):
        out["reference_collection"] = collection_verdict(
            ref["collection"]["k"], ref["collection"]["n"], ref["unknown"], min_collection
        ).value
    return out


def exit_code_for(verdicts: dict[str, str], *, partial: bool = False) -> int:
    if partial:
        return EXIT_INTERRUPTED
    return EXIT_VERDICT_FAILED if Verdict.FAIL.value in verdicts.values() else EXIT_OK
