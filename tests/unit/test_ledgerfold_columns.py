"""The columnar ledger fold against its per-request path, and the column checks against the
rules they stand for.

`fold_ledger` works out each request's facts for a block of rows at once with numpy;
`fold_per_request` applies the rules (`trace_id_of`, `decision_of`, `same_request_id`, Envoy's
rule ...) to one record at a time, as the fold did before it was columnar. On a seeded random
ledger holding every kind of line (tests/unit/ledger_random.py) both must give the same fold,
column by column, and every analysis the same answer. The expected values of the column checks
are the `loadgen.mesh` functions applied to each string."""

from __future__ import annotations

import math
import random
import string
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadgen.analysis import textcols
from loadgen.analysis.integrity import fold_integrity
from loadgen.analysis.ledgerfold import LedgerFold, fold_ledger, fold_per_request
from loadgen.analysis.observation import TraceObservation, TraceShape
from loadgen.analysis.reconcile import Expectation, reconcile_mesh
from loadgen.analysis.tagsearch import estimate_from_tags
from loadgen.analysis.windows import windows_summary
from loadgen.backends.base import FetchStatus
from loadgen.ledger import LedgerRows, LedgerStats, _parse_row, read_rows
from loadgen.mesh.echo import same_request_id
from loadgen.mesh.hops import Hop
from loadgen.mesh.ids import is_hex_id, normalize_trace_id
from loadgen.mesh.rule import envoy_random_sampled
from loadgen.mesh.tracer import TracerFamily
from tests.unit.ledger_random import random_ledger

GATEWAY, APP = "istio-ingressgateway", "httpbin"
HOPS = (Hop(GATEWAY, 2), Hop(APP, 1))


def _same_floats(a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True)
    )


def assert_same_fold(a: LedgerFold, b: LedgerFold) -> None:
    assert [a.facts[c] for c in a.codes.tolist()] == [b.facts[c] for c in b.codes.tolist()]
    assert a.trace_ids == b.trace_ids
    assert a.traced.tolist() == [t is not None for t in b.trace_ids] == b.traced.tolist()
    assert a.injected_ids == b.injected_ids
    assert a.injected_spans == b.injected_spans
    assert a.app_request_ids.tolist() == b.app_request_ids.tolist()
    assert len(a.app_request_ids) == len(a.trace_ids)
    assert _same_floats(a.starts.tolist(), b.starts.tolist())
    assert {m: sorted(v.tolist()) for m, v in a.latencies_ms.items()} == {
        m: sorted(v.tolist()) for m, v in b.latencies_ms.items()
    }
    assert a.errors == b.errors
    assert a.mispredicted_rids == b.mispredicted_rids
    assert (a.first_ts, a.last_ts, a.traced_last_end) == (b.first_ts, b.last_ts, b.traced_last_end)


def _span(sid: str, parent: str | None, service: str, kind: str) -> dict[str, Any]:
    return {"id": sid, "parentId": parent, "localEndpoint": {"serviceName": service}, "kind": kind,
            "timestamp": 1_000, "duration": 500}  # fmt: skip


def _observations(fold: LedgerFold, seed: int) -> dict[str, TraceObservation]:
    """Random answers for the fold's traces: complete, incomplete, with a broken link,
    missing, failed (none for some)."""
    rng = random.Random(seed)
    shapes = [
        TraceShape.from_spans([_span("a1", "c0", GATEWAY, "SERVER"), _span("a2", "a1", GATEWAY, "CLIENT"),
                               _span("a3", "a2", APP, "SERVER")]),
        TraceShape.from_spans([_span("a1", None, GATEWAY, "SERVER")]),
    ]  # fmt: skip
    kinds = [
        TraceObservation(FetchStatus.FOUND, 3, (GATEWAY, APP), 3, None, shapes[0]),
        TraceObservation(FetchStatus.FOUND, 1, (GATEWAY,), 1, None, shapes[1]),
        TraceObservation(FetchStatus.MISSING),
        TraceObservation(FetchStatus.ERROR),
    ]
    return {tid: rng.choice(kinds) for tid in fold.trace_ids if tid is not None and rng.random() < 0.9}


def _analyses(fold: LedgerFold, observations: dict[str, TraceObservation], percent: float) -> dict[str, Any]:
    expect = Expectation(3, (GATEWAY, APP), percent)
    tagged = {t for t, o in observations.items() if o.status is FetchStatus.FOUND}
    return {
        "reconcile": reconcile_mesh(fold, observations, expect),
        "windows": windows_summary(fold, observations, expect, bin_s=0.5),
        "tags": estimate_from_tags(fold, tagged, set(), None),
        "integrity": fold_integrity(
            fold, observations, HOPS, hops_by_path={"/fanout": HOPS[:1]}, hop_traces=[]
        ),
    }


@pytest.mark.parametrize(
    ("seed", "percent", "block_bytes"), [(1, 1.0, 4096), (2, 50.0, 1 << 20), (3, 10.0, 700)]
)
def test_the_columnar_fold_is_the_per_request_fold(
    tmp_path: Path, seed: int, percent: float, block_bytes: int
) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(random_ledger(seed, 3000, odd=0.05, bad=0.01))
    stats, reference_stats = LedgerStats(), LedgerStats()
    columnar = fold_ledger(LedgerRows(path, stats, block_bytes), percent=percent)
    reference = fold_per_request(read_rows(path, reference_stats), percent=percent)
    assert (stats.records, stats.truncated) == (reference_stats.records, reference_stats.truncated)
    assert stats.truncated > 0 and len(columnar) == stats.records > 2800
    assert_same_fold(columnar, reference)
    # Every kind of request was folded: odd and plain, sampled, failed, mispredicted.
    facts = [columnar.facts[c] for c in columnar.codes.tolist()]
    assert len({f.mode for f in facts}) > 40
    assert any(f.decided for f in facts) and any(not f.answered for f in facts)
    assert columnar.mispredicted_rids and columnar.errors
    observations = _observations(columnar, seed)
    assert _analyses(columnar, observations, percent) == _analyses(reference, observations, percent)


def test_the_columnar_fold_under_the_opentelemetry_tracer(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(random_ledger(4, 1500))
    tracer = TracerFamily.OPENTELEMETRY
    columnar = fold_ledger(LedgerRows(path, None, 2048), percent=5.0, tracer=tracer)
    assert_same_fold(columnar, fold_per_request(read_rows(path), percent=5.0, tracer=tracer))


def test_record_dicts_fold_as_the_lines_they_came_from(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(random_ledger(5, 1500, hostile=False))
    rows = list(read_rows(path))
    assert {type(r).__name__ for r in rows} == {"LedgerRow", "dict"}
    as_dicts = [r if isinstance(r, dict) else {k: getattr(r, k) for k in r.__struct_fields__} for r in rows]
    assert_same_fold(fold_ledger(as_dicts, percent=1.0), fold_ledger(rows, percent=1.0))


def test_times_that_are_not_finite_numbers_count_as_absent() -> None:
    records = [
        {"rid": "a", "mode": "none", "ts": float("nan"), "latency_ms": 3.0, "status": 200},
        {"rid": "b", "mode": "none", "ts": "1700000000", "latency_ms": float("inf"), "status": 200},
        {"rid": "c", "mode": "none", "ts": 1_700_000_001.0, "latency_ms": "slow", "status": 200},
        {"rid": "d", "mode": "none", "ts": True, "latency_ms": 2, "status": 200},
    ]
    fold = fold_ledger(records)
    # NaN and a string are no time: only c's 1_700_000_001 and d's True (a number: 1 s) count.
    assert np.isnan(fold.starts[:2]).all() and fold.starts[2:].tolist() == [1_700_000_001.0, 1.0]
    assert fold.first_ts == 1.0 and fold.last_ts == 1_700_000_001.0
    assert sorted(fold.latencies_ms["none"].tolist()) == [2.0, 3.0]  # inf and "slow": none


# --- reading in blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("block_bytes", [1, 333, 4096, 1 << 20])
def test_blocks_hold_the_rows_of_a_line_by_line_read(tmp_path: Path, block_bytes: int) -> None:
    data = random_ledger(6, 800, bad=0.05)
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(data)
    expected = [row for line in data.split(b"\n") if line.strip() and (row := _parse_row(line)) is not None]
    skipped = sum(1 for line in data.split(b"\n") if line.strip() and _parse_row(line) is None)
    stats = LedgerStats()
    blocks = list(LedgerRows(path, stats, block_bytes).blocks())
    assert [row for block in blocks for row in block] == expected
    assert (stats.records, stats.truncated) == (len(expected), skipped)
    assert skipped >= 10  # the bad lines and the torn last one


def test_a_block_of_two_objects_on_a_line_is_read_line_by_line(tmp_path: Path) -> None:
    # As many values as lines, yet line 1 is not one object: decode_lines alone would take it.
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b'{"rid":"a"} {"rid":"b"}\n{"rid":"c",\n"mode":"none"}\n{"rid":"d"}\n')
    stats = LedgerStats()
    rows = [r for block in LedgerRows(path, stats).blocks() for r in block]
    assert [getattr(r, "rid", None) for r in rows] == ["d"]
    assert (stats.records, stats.truncated) == (1, 3)


# --- the column checks -----------------------------------------------------------------------------


def _random_ids(rng: random.Random, n: int) -> list[str | None]:
    out: list[str | None] = []
    for _ in range(n):
        digits = rng.choice((16, 32, 32, 15, 33, 0))
        tid = "".join(rng.choice("0123456789abcdef") for _ in range(digits))
        tid = rng.choice(
            [tid, tid, tid.upper(), "0" * 16 + tid[:16], tid[:-1] + "g", tid + "\u0000", "é" + tid]
        )
        out.append(None if rng.random() < 0.1 else tid)
    return out


def _is_normal(value: str) -> bool:
    return normalize_trace_id(value) == value and is_hex_id(value)


def test_normal_trace_ids_are_those_the_rules_leave_alone() -> None:
    values = _random_ids(random.Random(7), 3000)
    present = np.array([v is not None for v in values])
    rows, lengths, exact = textcols.text_matrix(values, 32)
    expected = [v is not None and _is_normal(v) for v in values]
    assert (present & exact & textcols.normal_trace_ids(rows, lengths)).tolist() == expected
    # What `pack` takes: ASCII, no empty value (a NUL is a character like any other there).
    ascii_values: list[str | None] = [v if v and v.isascii() else None for v in values]
    packed = textcols.pack(ascii_values, np.array([v is not None for v in ascii_values]))
    assert packed is not None
    assert textcols.packed_normal_trace_ids(packed).tolist() == [_is_normal(v) for v in ascii_values if v]
    assert textcols.pack(values, present) is None  # non-ASCII: the matrix path


def test_envoy_sampled_is_envoys_rule() -> None:
    rng = random.Random(8)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    ids += [
        "".join(rng.choice(string.hexdigits + "xz-") for _ in range(rng.randint(0, 12))) for _ in range(500)
    ]
    rows, lengths, _ = textcols.text_matrix(ids, 36)
    for percent in (0.29, 1.0, 33.33, 100.0):
        known, sampled = textcols.envoy_sampled(rows, lengths, percent)
        expected = [envoy_random_sampled(x, percent) for x in ids]
        got = [bool(s) if k else None for k, s in zip(known.tolist(), sampled.tolist(), strict=True)]
        assert got == expected
        assert set(expected) == ({True, None} if percent == 100.0 else {True, False, None})


def test_same_request_ids_is_same_request_id() -> None:
    rng = random.Random(9)
    sent, echoed = [], []
    for _ in range(2000):
        x = str(uuid.UUID(int=rng.getrandbits(128)))
        y = rng.choice(
            [x, x.upper(), x[:14] + "9" + x[15:], x[:20], x[:14] + x[15:] + "a", x[:3] + "f" + x[4:]]
        )
        sent.append(x)
        echoed.append(y)
    a, a_len, _ = textcols.text_matrix(sent, 36)
    b, b_len, _ = textcols.text_matrix(echoed, 36)
    expected = [same_request_id(x, y) for x, y in zip(sent, echoed, strict=True)]
    assert textcols.same_request_ids(a, a_len, b, b_len).tolist() == expected
    assert True in expected and False in expected


def test_packed_rows_need_one_width_and_no_newline() -> None:
    values: list[str | None] = ["abc", None, "def"]
    packed = textcols.pack(values, np.array([True, False, True]))
    assert packed is not None and packed.lengths.tolist() == [3, 3]
    rows = packed.rows()
    assert rows is not None and bytes(rows[1]) == b"def"
    mixed = textcols.pack(["ab", "abc"], np.array([True, True]))
    assert mixed is not None and mixed.rows() is None
    assert textcols.pack(["a\nb"], np.array([True])) is None
    assert textcols.pack([""], np.array([True])) is None  # an empty value is no packed value
    assert textcols.char_at(*textcols.text_matrix(["0123456789abcdefg", "short"], 20)[:2], 14).tolist() == [
        ord("e") + 1,
        0,
    ]
