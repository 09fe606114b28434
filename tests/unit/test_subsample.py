"""Sampled read-back (issue 15): the rule, the draw, and what reconciliation makes of it."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loadgen.analysis.reconcile import NOT_QUERIED, Expectation, Outcome, TraceObservation, reconcile_mesh
from loadgen.analysis.stats import wilson_interval
from loadgen.analysis.subsample import AUTO_COUNT, AUTO_MIN_IDS, SampleRule, choose_rule, draw, plan_sample
from loadgen.backends.base import FetchStatus
from loadgen.backends.tempo import TempoBackend
from loadgen.backends.zipkin import ZipkinBackend
from loadgen.report.render import render_markdown
from loadgen.run import read_back_and_reconcile
from loadgen.run.readback import _sample_plan
from loadgen.run.verify import _asked_sample
from loadgen.summary import as_summary
from loadgen.summary.build import Measured, build_summary
from tests.unit.test_ledgerfold import EXPECT as FOLD_EXPECT
from tests.unit.test_ledgerfold import write_ledger
from tests.unit.test_readback import mesh_trace, trace_id, zipkin_over

# --- the rule ---------------------------------------------------------------------------------


def test_the_rule_asked_for_wins_and_a_fraction_of_one_means_all() -> None:
    assert choose_rule(500, None, ids=10, multi_get=True) == SampleRule(count=500)
    assert choose_rule(None, 0.25, ids=10, multi_get=True) == SampleRule(fraction=0.25)
    # asked for all: even a large run on a backend without multi-get queries every id
    assert choose_rule(None, 1.0, ids=10 * AUTO_MIN_IDS, multi_get=False) is None
    with pytest.raises(ValueError, match="not both"):
        choose_rule(5, 0.5, ids=10, multi_get=True)


def test_automatic_only_without_multi_get_and_above_the_threshold() -> None:
    assert choose_rule(None, None, ids=AUTO_MIN_IDS + 1, multi_get=True) is None
    assert choose_rule(None, None, ids=AUTO_MIN_IDS, multi_get=False) is None
    auto = choose_rule(None, None, ids=AUTO_MIN_IDS + 1, multi_get=False)
    assert auto == SampleRule(count=AUTO_COUNT, automatic=True)
    assert auto is not None and auto.describe() == f"automatic (sample {AUTO_COUNT})"


@pytest.mark.parametrize(
    ("rule", "n", "size"),
    [
        (SampleRule(count=10), 3, 3),
        (SampleRule(count=10), 25, 10),
        (SampleRule(fraction=0.1), 25, 3),  # 2.5 rounds up
        (SampleRule(fraction=0.001), 25, 1),  # never none of a non-empty stratum
        (SampleRule(fraction=0.5), 0, 0),
        (SampleRule(fraction=1.0), 7, 7),
    ],
)
def test_sizes(rule: SampleRule, n: int, size: int) -> None:
    assert rule.size(n) == size


@pytest.mark.parametrize(
    "kwargs", [{}, {"count": 3, "fraction": 0.5}, {"count": 0}, {"fraction": 0.0}, {"fraction": 1.5}]
)
def test_bad_rules_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SampleRule(**kwargs)  # type: ignore[arg-type]


# --- the draw ---------------------------------------------------------------------------------


def _ids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:031x}" for i in range(n)]


def test_the_draw_is_seeded_by_the_run_and_differs_between_runs() -> None:
    ids = _ids(1000, "a")
    assert draw(ids, 50, "run-1:sampled") == draw(ids, 50, "run-1:sampled")
    assert set(draw(ids, 50, "run-1:sampled")) != set(draw(ids, 50, "run-2:sampled"))
    assert draw(ids[:10], 50, "x") == ids[:10]  # asked for more than there are: all of them


def test_the_draw_is_uniform() -> None:
    """Every id is equally likely to be drawn: over 2,000 draws of 10 of 40 ids each id is
    drawn Binomial(2000, 1/4) times (sd 19.4); all 40 within 5 sd of 500."""
    ids = _ids(40, "b")
    counts: Counter[str] = Counter()
    for seed in range(2000):
        counts.update(draw(ids, 10, f"seed-{seed}"))
    sd = math.sqrt(2000 * 0.25 * 0.75)
    assert all(abs(counts[i] - 500) <= 5 * sd for i in ids), counts.most_common(3)


def test_the_plan_samples_each_stratum_apart_and_never_skips_reference_traces() -> None:
    sampled, others, refs = _ids(300, "c"), _ids(900, "d"), _ids(50, "e")
    expected = {**dict.fromkeys(sampled, 3), **dict.fromkeys(others, 0), **dict.fromkeys(refs, 2)}
    plan = plan_sample(expected, set(refs), SampleRule(count=100), seed="run")
    assert (plan.sampled.queried, plan.sampled.of) == (100, 300)
    assert (plan.other.queried, plan.other.of) == (100, 900)
    assert len(plan.skipped) == 200 + 800
    assert not plan.skipped & set(refs)
    assert len(plan.skipped & set(sampled)) == 200
    assert plan.to_json()["sampled"] == {"queried": 100, "of": 300}
    assert plan.to_json()["others"] == {"queried": 100, "of": 900}
    assert "100 of 300 decided-sampled" in plan.note()


# --- reconciliation -----------------------------------------------------------------------------

EXPECT = Expectation(spans_per_trace=3, services=("gw", "app"), configured_percent=None)
FOUND = TraceObservation(FetchStatus.FOUND, 3, ("app", "gw"))
ABSENT = TraceObservation(FetchStatus.MISSING)


def _record(seq: int, tid: str, sampled: bool) -> dict[str, object]:
    return {
        "seq": seq, "rid": f"{seq:032x}", "mode": "b3_multi_sampled" if sampled else "b3_multi_not_sampled",
        "ts": 1000.0 + seq, "latency_ms": 1.0, "status": 200, "error": None,
        "inj_trace": tid, "inj_span": f"{seq:016x}", "inj_flag": "1" if sampled else "0",
        "up_trace": tid, "up_span": f"{seq + 1:016x}", "up_flag": "1" if sampled else "0",
        "up_xrid": None,
    }  # fmt: skip


def test_not_queried_is_neither_unknown_nor_missing_and_in_no_rate() -> None:
    """100 sampled requests (70 found, 30 missing by construction) and 100 not sampled; a sample
    of 40 + 40 queried: the rest are not_queried, the collection rate is the sample's own k/n,
    the leak check counts only the queried, unknown and missing do not grow."""
    rng = random.Random(5)
    sampled, others = _ids(100, "f"), _ids(100, "7")
    truth = {tid: (FOUND if i < 70 else ABSENT) for i, tid in enumerate(sampled)}
    ledger = [_record(i, tid, True) for i, tid in enumerate(sampled)]
    ledger += [_record(100 + i, tid, False) for i, tid in enumerate(others)]
    rng.shuffle(ledger)
    expected = {**dict.fromkeys(sampled, 3), **dict.fromkeys(others, 0)}
    plan = plan_sample(expected, set(), SampleRule(count=40), seed="truth")
    observations = {
        **dict.fromkeys(plan.skipped, NOT_QUERIED),
        **{t: truth.get(t, ABSENT) for t in expected if t not in plan.skipped},
    }
    s = reconcile_mesh(ledger, observations, EXPECT)
    queried_sampled = [t for t in sampled if t not in plan.skipped]
    k = sum(truth[t] is FOUND for t in queried_sampled)
    assert len(queried_sampled) == 40
    assert (s["mesh"]["collection"]["k"], s["mesh"]["collection"]["n"]) == (k, 40)
    assert s["mesh"]["collection"]["ci95"] == list(wilson_interval(k, 40))
    assert s["mesh"]["not_queried"] == 60
    assert s["mesh"]["unknown"] == 0
    assert s["mesh"]["leak_checked"] == 40
    kept = s["modes"]["b3_multi_sampled"]
    assert kept["not_queried"] == 60 and kept["unknown"] == 0
    assert kept["missing"] == 40 - k and kept["found"] == k
    dropped = s["modes"]["b3_multi_not_sampled"]
    assert (dropped["not_queried"], dropped["not_sampled"], dropped["unknown"]) == (60, 40, 0)
    # a full read-back of the same ledger: every count is the whole population's
    full = reconcile_mesh(ledger, {t: truth.get(t, ABSENT) for t in expected}, EXPECT)
    assert (full["mesh"]["collection"]["k"], full["mesh"]["collection"]["n"]) == (70, 100)
    assert full["mesh"]["not_queried"] == 0


def test_an_error_inside_the_sample_is_still_unknown() -> None:
    tid = _ids(2, "9")
    ledger = [_record(0, tid[0], True), _record(1, tid[1], True)]
    err = TraceObservation(FetchStatus.ERROR, error="503")
    s = reconcile_mesh(ledger, {tid[0]: NOT_QUERIED, tid[1]: err}, EXPECT)
    assert (s["mesh"]["unknown"], s["mesh"]["not_queried"], s["mesh"]["collection"]["n"]) == (1, 1, 0)
    assert s["modes"]["b3_multi_sampled"][Outcome.NOT_QUERIED.value] == 1


# --- a whole read-back --------------------------------------------------------------------------


def test_a_sampled_read_back_queries_only_the_sample_and_says_so(tmp_path: Path) -> None:
    """60 none-mode requests, every third decided sampled (20), all their traces stored: with
    --readback-sample 5 the backend is asked for 5 sampled and 5 other ids only (counted at the
    stand-in), the summary's collection is 5/5, 15 sampled requests are not queried, the sample
    is described in readback.sample and a note; `loadgen verify`'s rule reader finds it again."""
    sampled = write_ledger(tmp_path / "ledger.jsonl", 60)
    backend = zipkin_over({tid: mesh_trace(tid, i) for i, tid in enumerate(sampled)})
    asked: list[str] = []
    real_fetch = backend.fetch_reduced

    def counting(ids: Any, *args: Any, **kwargs: Any) -> Any:
        asked.extend(ids)
        return real_fetch(ids, *args, **kwargs)

    backend.fetch_reduced = counting  # type: ignore[method-assign,assignment]
    try:
        summary, _ = read_back_and_reconcile(
            tmp_path, "run-s", backend, FOLD_EXPECT,
            min_collection=0.9, quiet_s=0.0, poll_interval_s=0.01, max_wait_s=5.0,
            run_id_tag="", load_end=1_700_000_200.0, status=lambda _msg: None,
            readback_sample=5,
        )  # fmt: skip
    finally:
        backend.close()
    first_poll = summary["readback"]["polls"][0]["queried"]
    assert first_poll == 10
    assert set(asked) <= set(trace_id(i) for i in range(60))
    assert len(set(asked) & set(sampled)) == 5 and len(set(asked) - set(sampled)) == 5
    mesh = summary["mesh"]
    assert (mesh["collection"]["k"], mesh["collection"]["n"]) == (5, 5)
    assert (mesh["not_queried"], mesh["unknown"], mesh["leak_checked"]) == (15, 0, 5)
    assert summary["readback"]["sample"] == {
        "rule": "count", "count": 5, "fraction": None, "automatic": False,
        "sampled": {"queried": 5, "of": 20}, "others": {"queried": 5, "of": 40},
    }  # fmt: skip
    assert any("5 of 20 decided-sampled" in n for n in summary["notes"])
    assert _asked_sample(as_summary(summary)) == (5, None)
    # The reader's own count: one /traceMany per poll (at most 10 ids, batches of 20).
    queries = summary["readback"]["queries"]
    assert queries["requests"] == len(summary["readback"]["polls"]) >= 2
    assert queries["qps"] > 0 and queries["throttled"] == 0
    assert f"{queries['requests']} requests at" in render_markdown(summary)
    # report.md: a "not queried" column (the mode's 15 unasked requests... of 20 sampled, 40 others)
    row = next(line for line in render_markdown(summary).splitlines() if line.startswith("| none |"))
    header = next(line for line in render_markdown(summary).splitlines() if line.startswith("| mode |"))
    cells = dict(zip(header.strip("|").split(" | "), row.strip("|").split(" | "), strict=True))
    assert cells["not queried"].strip() == "50"  # 15 decided-sampled + 35 others outside the sample
    assert cells["found"].strip() == "5"


def test_the_automatic_sample_is_for_backends_without_multi_get() -> None:
    """Tempo and Jaeger's api_v3 fetch one id per request; Zipkin and Jaeger's /api batch."""
    expected = {trace_id(i): 3 for i in range(AUTO_MIN_IDS + 1)}
    per_id = TempoBackend("http://tempo.invalid:3200")
    batched = ZipkinBackend("http://zipkin.invalid:9411")
    try:
        plan = _sample_plan(per_id, expected, None, "run-a", None, None)
        assert plan is not None and plan.rule.automatic and plan.sampled.queried == AUTO_COUNT
        assert _sample_plan(batched, expected, None, "run-a", None, None) is None
        assert _sample_plan(per_id, expected, None, "run-a", None, 1.0) is None  # asked for all
    finally:
        per_id.close()
        batched.close()


def test_an_undecided_collection_of_a_sample_says_to_query_more() -> None:
    """40 of 40 queried found: inconclusive against 0.99 (381 needed); the cause names the
    traces left unasked instead of asking for a longer run."""
    tids = _ids(100, "a")
    ledger = [_record(i, tid, True) for i, tid in enumerate(tids)]
    observations = {t: (FOUND if i < 40 else NOT_QUERIED) for i, t in enumerate(tids)}
    summary = build_summary(
        run_id="r",
        measured=Measured(reconciled=reconcile_mesh(ledger, observations, EXPECT), reference={}),
        min_collection=0.99,
    )
    detail = summary.verdict_details["mesh_collection"]
    assert detail.verdict == "inconclusive"
    assert (
        detail.cause is not None
        and "--readback-fraction (60 sampled traces were not queried)" in detail.cause
    )


def test_a_sample_that_checked_nothing_judges_nothing_on_a_mesh_unlike_the_default() -> None:
    """A 1-span gateway-only mesh with no run tag and no header echo: no request has a known
    decision, so the sample has no decided-sampled trace to check: collection and leaks are
    inconclusive (never a pass), whatever the sampled others hold."""
    one_span = Expectation(spans_per_trace=1, services=("gw",), configured_percent=None)
    tids = _ids(50, "c")
    ledger = [
        {**_record(i, tid, True), "mode": "none", "up_flag": None, "inj_trace": None}
        for i, tid in enumerate(tids)
    ]
    plan = plan_sample(dict.fromkeys(tids, 0), set(), SampleRule(count=10), seed="unlike")
    found = TraceObservation(FetchStatus.FOUND, 1, ("gw",))
    observations = {
        **dict.fromkeys(plan.skipped, NOT_QUERIED),
        **{t: found for t in tids if t not in plan.skipped},
    }
    summary = build_summary(
        run_id="u",
        measured=Measured(reconciled=reconcile_mesh(ledger, observations, one_span), reference={}),
        min_collection=0.99,
    )
    assert summary.mesh is not None
    assert summary.mesh.collection.n == 0 and summary.mesh.leak_checked == 0
    assert summary.verdicts["mesh_collection"] == "inconclusive"
    assert summary.verdicts["no_leaks"] == "inconclusive"
