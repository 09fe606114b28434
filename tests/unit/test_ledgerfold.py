"""The ledger fold: a read-back reads ledger.jsonl once, and the fold of `read_rows` (msgspec's
typed rows, other lines as dicts) gives the analyses the same answers as the record dicts."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.analysis.integrity import fold_integrity
from loadgen.analysis.ledgerfold import fold_ledger
from loadgen.analysis.reconcile import Expectation, reconcile_mesh
from loadgen.analysis.tagsearch import estimate_from_tags
from loadgen.analysis.windows import windows_summary
from loadgen.ledger import LedgerRow, LedgerStats, LedgerWriter, read_ledger, read_rows
from loadgen.mesh.hops import Hop
from loadgen.run import read_back_and_reconcile
from tests.unit.test_readback import mesh_trace, trace_id, zipkin_over

GATEWAY, APP = "istio-ingressgateway", "httpbin"
EXPECT = Expectation(3, (GATEWAY, APP), 1.0)


def xrid(n: int, mark: str) -> str:
    """An Envoy-made x-request-id whose char 14 says sampled (9) or not (4)."""
    return f"{n:08x}-7311-d{mark}a3-c2ce-6f447ed4d57b"


def write_ledger(path: Path, n: int) -> list[str]:
    """n answered `none`-mode requests, every third traced (sampled), plus one failure; returns
    the sampled ones' trace ids."""
    sampled: list[str] = []
    with LedgerWriter(path) as w:
        for i in range(n):
            tid = trace_id(i)
            traced = i % 3 == 0
            if traced:
                sampled.append(tid)
            w.append({
                "rid": f"r{i}", "mode": "none", "path": "/headers", "ts": 1_700_000_000.0 + i / 10,
                "latency_ms": 2.0 + i, "status": 200, "up_trace": tid, "up_flag": "1" if traced else "0",
                "up_xrid": xrid(i, "9" if traced else "4"),
            })  # fmt: skip
        w.append({"rid": "failed", "mode": "none", "ts": 1_700_000_100.0, "status": 503, "error": "HTTP 503"})
    return sampled


def test_a_read_back_reads_the_ledger_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = tmp_path / "ledger.jsonl"
    sampled = write_ledger(ledger, 30)
    backend = zipkin_over({tid: mesh_trace(tid, i) for i, tid in enumerate(sampled)})
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith("ledger.jsonl"):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    try:
        summary, interrupted = read_back_and_reconcile(
            tmp_path, "run-1", backend, EXPECT,
            min_collection=0.9, quiet_s=0.0, poll_interval_s=0.01, max_wait_s=5.0,
            run_id_tag="", load_end=1_700_000_200.0, status=lambda _msg: None,
            hops=(Hop(GATEWAY, 2), Hop(APP, 1)),
        )  # fmt: skip
    finally:
        backend.close()
    assert opened == [str(ledger)]  # the ids, reconcile, windows, integrity: one read
    assert not interrupted
    assert summary["requests"]["total"] == 31 and summary["requests"]["errors"] == 1
    assert (summary["mesh"]["collection"]["k"], summary["mesh"]["collection"]["n"]) == (10, 10)
    assert sum(w["requests"] for w in summary["windows"]["bins"]) == 31
    assert summary["integrity"]["traces"] == 10


ODD_LINES: list[dict[str, Any]] = [
    # What LedgerWriter writes: decoded by msgspec straight into a LedgerRow.
    {"rid": "a", "mode": "none", "ts": 1_700_000_000.5, "latency_ms": 3, "status": 200,
     "up_trace": "AB" * 16, "up_flag": "1", "up_xrid": xrid(1, "9")},
    # Fields of other types: read through json as a dict, folded the same way.
    {"rid": "b", "mode": "none", "ts": 1_700_000_001, "latency_ms": 4.5, "status": 200.0,
     "up_trace": "0" * 16 + "cd" * 8, "up_flag": "0", "up_xrid": xrid(2, "4")},
    {"rid": 3, "mode": None, "path": "/fanout?x=1", "ts": None, "status": 0, "error": {"why": "refused"}},
    {"rid": "d", "mode": "b3_multi_sampled", "ts": 1_700_000_002.25, "latency_ms": None, "status": 200,
     "inj_trace": "ef" * 16, "inj_span": "12" * 8, "up_trace": "ef" * 16, "up_flag": "1", "up_xrid": None,
     "xrid_sent": xrid(4, "a")},
]  # fmt: skip


def test_typed_rows_and_record_dicts_fold_alike(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text("".join(json.dumps(rec) + "\n" for rec in ODD_LINES) + '{"torn": \n[1, 2]\n')
    row_stats, dict_stats = LedgerStats(), LedgerStats()
    rows = list(read_rows(path, row_stats))
    records = list(read_ledger(path, dict_stats))
    assert [type(r) for r in rows] == [LedgerRow, dict, dict, LedgerRow]
    assert (row_stats.records, row_stats.truncated) == (dict_stats.records, dict_stats.truncated) == (4, 2)
    from_rows = fold_ledger(rows, percent=1.0)
    obs: dict[str, Any] = {}
    assert reconcile_mesh(from_rows, obs, EXPECT) == reconcile_mesh(records, obs, EXPECT)
    assert windows_summary(from_rows, obs, EXPECT) == windows_summary(records, obs, EXPECT)
    tagged = {"ef" * 16, "ab" * 16}
    assert estimate_from_tags(from_rows, tagged, set(), None) == estimate_from_tags(
        records, tagged, set(), None
    )
    hops = (Hop(GATEWAY, 2), Hop(APP, 1))
    assert fold_integrity(from_rows, obs, hops, hop_traces=[]) == fold_integrity(
        records, obs, hops, hop_traces=[]
    )
    out = reconcile_mesh(from_rows, obs, EXPECT)
    assert out["requests"]["total"] == 4 and out["requests"]["errors"] == 1
    assert out["requests"]["top_errors"] == [{"status": 0, "error": "{'why': 'refused'}", "count": 1}]
    assert out["requests"]["first_ts"] == 1_700_000_000.5
    assert set(out["modes"]) == {"none", "None", "b3_multi_sampled"}


def test_a_fold_predicts_at_one_percentage_only() -> None:
    fold = fold_ledger(ODD_LINES, percent=1.0)
    with pytest.raises(ValueError, match="predicting at 1.0 %"):
        reconcile_mesh(fold, {}, Expectation(3, (), 5.0))
