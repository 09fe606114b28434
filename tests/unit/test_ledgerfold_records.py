"""Record dicts (what a caller or a test hands the analyses instead of a ledger file) fold the
same whichever path folds them.

`fold_ledger` folds a record dict whose values are as a ledger line holds them on the columnar
path (as its LedgerRow), any other on the per-request path; `fold_per_request` folds every one
on the per-request path, as the fold always did for dicts. On the seeded random ledger's records
(tests/unit/ledger_random.py: every kind of value a line may hold) and on records with values no
line can hold (NaN and infinite times, bools, str subclasses, enum modes, ints of any size) both
must give the same fold and the same analyses."""

from __future__ import annotations

import enum
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.analysis.ledgerfold import _as_line_row, fold_ledger, fold_per_request
from loadgen.ledger import LedgerRow, read_ledger
from tests.unit.ledger_random import random_ledger
from tests.unit.test_ledgerfold_columns import _analyses, _observations, assert_same_fold


class _Mode(enum.StrEnum):
    B3 = "b3_multi"


class _Text(str):
    __slots__ = ()


# Values no ledger line holds, each in a field that a line holds a str, a number or null in.
ODD_VALUES: dict[str, list[Any]] = {
    # (True is a time of 1.0 s to the per-request path: only the fold test below takes it, the
    # windows of the analyses would span 54 years.)
    "ts": [float("nan"), float("inf"), -float("inf"), 10**400, 1_700_000_005],
    "latency_ms": [float("nan"), float("inf"), False, 10**400, 3],
    "status": [True, 200.0, 2**63, -(2**63) - 1, 2**64, "200", 200],
    "mode": [_Mode.B3, _Text("none"), 7, None],
    "up_trace": [_Text("a" * 32), b"ab" * 16, 5, 0, ""],
    "inj_trace": [_Text("b" * 16), 12345678901234567, ""],
    "up_xrid": [_Text("0" * 36), 42, ""],
    "up_flag": [1, True, _Text("1"), "0"],
    "inj_span": [7, _Text("c" * 16)],
    "error": [{"kind": "x"}, _Text("boom")],
    "path": [["/x"], _Text("/status/200")],
}


def _records(tmp_path: Path, seed: int, n: int) -> list[dict[str, Any]]:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(random_ledger(seed, n, odd=0.05, bad=0.0))
    return list(read_ledger(path))


def _with_odd_values(records: list[dict[str, Any]], seed: int, share: float) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for record in records:
        record = dict(record)
        if rng.random() < share:
            field = rng.choice(sorted(ODD_VALUES))
            record[field] = rng.choice(ODD_VALUES[field])
        out.append(record)
    return out


@pytest.mark.parametrize(("seed", "percent", "share"), [(11, 1.0, 0.0), (12, 50.0, 0.1), (13, 10.0, 0.5)])
def test_record_dicts_fold_as_the_per_request_path_folds_them(
    tmp_path: Path, seed: int, percent: float, share: float
) -> None:
    records = _with_odd_values(_records(tmp_path, seed, 2500), seed, share)
    fast = fold_ledger(records, percent=percent)
    reference = fold_per_request(records, percent=percent)
    assert_same_fold(fast, reference)
    observations = _observations(fast, seed)
    assert _analyses(fast, observations, percent) == _analyses(reference, observations, percent)
    # Both paths were taken: most records as their line's row, the odd ones per request.
    as_rows = sum(_as_line_row(r) is not None for r in records)
    assert 0.3 * len(records) < as_rows < len(records)


def test_a_record_as_a_line_holds_it_is_its_line_row() -> None:
    record = {
        "seq": 3, "rid": "r", "mode": "b3_multi", "ts": 5, "latency_ms": 1.25, "status": 200, "error": None,
        "inj_trace": "a" * 32, "inj_span": "b" * 16, "up_trace": "a" * 32, "up_flag": "1",
        "up_xrid": "x", "worker": "w:1",
    }  # fmt: skip
    row = _as_line_row(record)
    assert row == LedgerRow(
        rid="r", mode="b3_multi", ts=5.0, latency_ms=1.25, status=200, inj_trace="a" * 32,
        inj_span="b" * 16, up_trace="a" * 32, up_flag="1", up_xrid="x",
    )  # fmt: skip
    assert row is not None and type(row.ts) is float


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in ODD_VALUES.items() for v in vs])
def test_a_value_no_line_holds_keeps_the_record_on_the_per_request_path(field: str, value: Any) -> None:
    record = {"rid": "r", "mode": "none", "status": 200, "ts": 1.0, field: value}
    numbers = ("ts", "latency_ms", "status")
    line_like = value is None or (type(value) is str and field not in numbers)
    line_like |= field in ("ts", "latency_ms") and type(value) in (int, float) and abs(value) < 1e300
    line_like |= field == "status" and type(value) is int and -(2**63) <= value < 2**63
    assert (_as_line_row(record) is not None) == line_like


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                field: st.one_of(st.none(), st.sampled_from([*values, True]), st.text(max_size=40))
                for field, values in ODD_VALUES.items()
            },
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([None, 1.0, 100.0]),
)
def test_any_record_dicts_fold_as_the_per_request_path_folds_them(
    records: list[dict[str, Any]], percent: float | None
) -> None:
    assert_same_fold(fold_ledger(records, percent=percent), fold_per_request(records, percent=percent))
