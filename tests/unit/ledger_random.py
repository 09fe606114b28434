"""A seeded random ledger with every kind of line a ledger may hold: what a LedgerWriter writes
(every header mode, ids of every width and case, echoed and crafted x-request-ids, failures) and
what it never writes (ids that are empty, not hex, not ASCII or not strings; numbers of other
types; times that are not numbers; lines that are not UTF-8, not JSON, not an object, two objects
on one line; a torn last line). The columnar fold and its per-request path are compared on it
(tests/unit/test_ledgerfold_columns.py)."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from loadgen.mesh.modes import HeaderMode

MODES: list[Any] = [m.value for m in HeaderMode] + ["not_a_mode", None]
BAD_LINES = [
    b"{torn",
    b"[1, 2]",
    b"null",
    b"   ",
    b"",
    b'{"rid": "x", "mode": "none"} {"rid": "y"}',
    b'{"rid": "\xff\xfe", "mode": "none"}',
    b'{"rid": "z", "status": 200}\r',
]


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def _trace_id(rng: random.Random, odd: float) -> Any:
    if rng.random() >= odd:
        return _hex(rng, rng.choice((32, 32, 16)))
    return rng.choice(
        [
            "", "zz" * 16, _hex(rng, 32).upper(), "0" * 16 + _hex(rng, 16), "0" * 32, " " + _hex(rng, 16),
            "é" * 16, _hex(rng, 20), _hex(rng, 16) + "\u0000", 12345678901234567, True,
        ]
    )  # fmt: skip


def _xrid(rng: random.Random, odd: float, hostile: bool) -> Any:
    x = str(uuid.UUID(int=rng.getrandbits(128)))
    x = x[:14] + rng.choice("94ab7") + x[15:]
    if rng.random() >= odd:
        return x
    return rng.choice(
        [
            "",
            x.upper(),
            "abc",
            "zz" + x[2:],
            x + "-extra",
            "é" + x[1:],
            x[:14],
            x[:15],
            *([42] if hostile else []),
        ]
    )


def _record(rng: random.Random, odd: float, hostile: bool) -> dict[str, Any]:
    """One record: mostly what a LedgerWriter writes, with probability `odd` per field something
    else (`hostile`: also times and latencies that are not finite numbers, an x-request-id that
    is a number: the fold before it was columnar failed or differed on those)."""
    inj = _trace_id(rng, odd) if rng.random() < 0.6 else None
    if inj is not None and rng.random() < 0.85:
        up: Any = inj if rng.random() < 0.9 else rng.choice([str(inj).upper(), _trace_id(rng, odd)])
    else:
        up = _trace_id(rng, odd) if rng.random() < 0.9 else None
    answered = rng.random() < 0.95
    xrid = _xrid(rng, odd, hostile) if answered and rng.random() < 0.95 else None
    sent: Any = None
    if rng.random() < 0.3:
        sent = (
            _xrid(rng, odd, hostile)
            if rng.random() < 0.5 or not isinstance(xrid, str)
            else xrid[:14] + "4" + xrid[15:]
        )
    ts: Any = round(1_700_000_000 + rng.random() * 30, 6)
    latency: Any = round(rng.lognormvariate(1.5, 0.4), 3)
    if rng.random() < odd:
        ts = rng.choice(
            [None, 0, -5.0, 1_700_000_010, *(["12", float("nan"), float("inf"), False] if hostile else [])]
        )
    if rng.random() < odd:
        latency = rng.choice([None, 0, 7, *(["x", float("nan")] if hostile else [])])
    status: Any = 200 if answered else rng.choice([503, 0, 500])
    if rng.random() < odd:
        status = rng.choice([None, 200.0, "200", True, 503.0])
    flag: Any = rng.choice(["1", "0", "d", None, None])
    if rng.random() < odd:
        flag = rng.choice(["", "x", 1, "1 "])
    return {
        "rid": rng.choice([_hex(rng, 32), None, 7]) if rng.random() < odd else _hex(rng, 32),
        "mode": rng.choice(MODES), "path": rng.choice([None, "/headers", "/fanout?x=1", "/fanout-nopropagate"]),
        "ts": ts, "latency_ms": latency, "status": status,
        "error": None if status == 200 else rng.choice(["HTTP 503", None, {"why": "refused"}, "e" * 300]),
        "inj_trace": inj, "inj_span": None if inj is None else rng.choice([_hex(rng, 16), _hex(rng, 16), "ABC", 5]),
        "up_trace": up if answered else None, "up_span": _hex(rng, 16), "up_flag": flag if answered else None,
        "up_xrid": xrid, "xrid_sent": sent, "seq": 0, "worker": "w",
    }  # fmt: skip


def random_ledger(seed: int, n: int, *, odd: float = 0.05, bad: float = 0.01, hostile: bool = True) -> bytes:
    """`n` records (and about `bad` * n bad lines between them) as ledger bytes, the last line
    torn. `odd`: per field, how often it holds something a LedgerWriter would not write."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    for _ in range(n):
        if rng.random() < bad:
            lines.append(rng.choice(BAD_LINES))
        record = _record(rng, odd, hostile)
        if rng.random() < odd:
            record = dict(rng.sample(sorted(record.items()), len(record)))  # another key order
        lines.append(json.dumps(record, separators=(",", ":")).encode())
    torn = json.dumps(_record(rng, odd, hostile)).encode()
    return b"\n".join(lines) + b"\n" + torn[: len(torn) // 2]
