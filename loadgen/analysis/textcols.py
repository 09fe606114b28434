"""Columns of short strings as numpy bytes: the checks the ledger fold makes on every id of a
block of requests at once, instead of once per request in Python (pure).

`pack` joins a column's values into one run of bytes (the usual case: ASCII, no newline in a
value) and `text_matrix` lays any column out as rows of bytes; the other functions answer, for
every value at once, what a function of `loadgen.mesh` answers for one string. They answer only
for values held exactly (ASCII, no wider than the matrix): the fold sends every other request
through its per-request path, so these need not handle anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from loadgen.mesh.rule import sampling_threshold

Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]

_LOWER_HEX = np.zeros(256, dtype=np.bool_)
_LOWER_HEX[list(b"0123456789abcdef")] = True
#: Each byte's value as a hex digit of either case (-1: not one), as `int(x, 16)` reads it.
_HEX_VALUE = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
    _HEX_VALUE[ord(chr(_c).upper())] = _i
#: ASCII lower case (`str.lower` on an ASCII string).
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[65:91] += 32
_HEAD_WEIGHTS = 16 ** np.arange(7, -1, -1, dtype=np.int64)
_NONE = np.array(None, dtype=np.object_)
_NEWLINE = ord("\n")


def objects(values: Sequence[object]) -> Objects:
    """A column of any values as a one-dimensional object array (a list or tuple value stays one)."""
    return np.fromiter(values, dtype=np.object_, count=len(values))


def not_none(values: Objects) -> Bools:
    """Which values of an object column are not None."""
    out: Bools = np.not_equal(values, _NONE)
    return out


def where_none(keep: Bools, values: Objects) -> list[Any]:
    """The values where `keep`, None elsewhere, as a list."""
    out: list[Any] = np.where(keep, values, _NONE).tolist()
    return out


@dataclass(frozen=True)
class Packed:
    """The values of a column that are not None, in order, as one run of ASCII bytes with a
    newline after each: `starts` and `lengths` per value."""

    joined: bytes
    data: Bytes  # `joined`, as an array
    starts: Ints
    lengths: Ints

    def rows(self) -> Bytes | None:
        """The values as a (values, width) matrix, when they all have one width."""
        n = len(self.lengths)
        if n == 0 or (self.lengths != self.lengths[0]).any():
            return None
        return self.data.reshape(n, -1)[:, :-1]


def pack(values: Sequence[str | None], present: Bools) -> Packed | None:
    """The values not None (`present`) packed, or None when one is empty, is not ASCII or holds
    a newline (read those with `text_matrix`)."""
    strings = list(filter(None, values))
    n = len(strings)
    if n != np.count_nonzero(present):
        return None  # an empty value
    try:
        joined = ("\n".join(strings) + "\n").encode("ascii") if strings else b""
    except UnicodeEncodeError:
        return None
    data = np.frombuffer(joined, dtype=np.uint8)
    if joined.count(b"\n") != n:
        return None  # a newline inside a value
    width = len(joined) // n if n else 0
    if n and width * n == len(joined) and (data[width - 1 :: width] == _NEWLINE).all():
        # n newlines, one every `width` bytes: every value is `width` - 1 long
        return Packed(joined, data, np.arange(0, len(joined), width), np.full(n, width - 1))
    ends = np.flatnonzero(data == _NEWLINE)
    starts = np.concatenate(([0], ends[:-1] + 1)) if n else ends
    return Packed(joined, data, starts, ends - starts)


def text_matrix(values: Sequence[str | None], width: int) -> tuple[Bytes, Ints, Bools]:
    """(rows, lengths, exact): each value (None: the empty string) as `width` bytes, zero
    padded; its length in characters; whether its row holds it whole (ASCII, at most `width`
    characters). A longer or non-ASCII value's row is cut or empty: read only `exact` rows."""
    filled = [v or "" for v in values]
    n = len(filled)
    lengths = np.fromiter(map(len, filled), dtype=np.int64, count=n)
    try:
        packed = np.array(filled, dtype=f"S{width}")
        exact = lengths <= width
    except UnicodeEncodeError:
        is_ascii = np.fromiter(map(str.isascii, filled), dtype=np.bool_, count=n)
        packed = np.array(
            [v if ok else "" for v, ok in zip(filled, is_ascii.tolist(), strict=True)], f"S{width}"
        )
        exact = is_ascii & (lengths <= width)
    return packed.view(np.uint8).reshape(n, width), lengths, exact


def packed_normal_trace_ids(packed: Packed) -> Bools:
    """`normal_trace_ids` per packed value."""
    if not packed.joined.translate(None, b"0123456789abcdef\n"):
        hex_ = np.ones(len(packed.lengths), dtype=np.bool_)
    else:  # count each value's bytes that are not lowercase hex (its newline is not)
        bad = np.concatenate(([0], np.cumsum(~_LOWER_HEX[packed.data])))
        hex_ = bad[packed.starts + packed.lengths] - bad[packed.starts] == 0
    long = packed.lengths == 32
    zero_high = np.zeros(len(long), dtype=np.bool_)
    if b"0" * 16 in packed.joined and long.any():
        heads = packed.data[packed.starts[long, None] + np.arange(16)]
        zero_high[long] = (heads == ord("0")).all(axis=1)
    normal: Bools = hex_ & ((packed.lengths == 16) | long) & ~zero_high
    return normal


def normal_trace_ids(rows: Bytes, lengths: Ints) -> Bools:
    """Which rows hold a trace id already in the form `normalize_trace_id` gives and
    `is_hex_id` accepts: lowercase hex, 16 digits, or 32 without a zero high half (such an id
    is its own normalized form). Rows must be at least 32 bytes wide."""
    hex_ = _LOWER_HEX[rows[:, :32]]
    short = (lengths == 16) & hex_[:, :16].all(axis=1)
    zero_high = (rows[:, :16] == ord("0")).all(axis=1)
    long = (lengths == 32) & hex_.all(axis=1) & ~zero_high
    normal: Bools = short | long
    return normal


def envoy_sampled(rows: Bytes, lengths: Ints, percent: float) -> tuple[Bools, Bools]:
    """(known, sampled): `loadgen.mesh.rule.envoy_random_sampled(row, percent)` per row, None
    as not known: the id starts with 8 hex digits (either case), and int(those, 16) % 10000 is
    below Envoy's threshold for the percentage. Rows must be at least 8 bytes wide."""
    digits = _HEX_VALUE[rows[:, :8]]
    known = (lengths >= 8) & (digits.min(axis=1, initial=0) >= 0)
    head = digits @ _HEAD_WEIGHTS  # int(head, 16) where known
    sampled: Bools = known & (head % 10000 < sampling_threshold(percent))
    return known, sampled


def same_request_ids(a: Bytes, a_len: Ints, b: Bytes, b_len: Ints, skip: int = 14) -> Bools:
    """`loadgen.mesh.echo.same_request_id` per row pair, for rows holding non-empty ids: equal
    lengths, and equal ignoring ASCII case and character `skip` (where Envoy writes its
    decision into a kept id)."""
    equal = _LOWER[a] == _LOWER[b]
    if a.shape[1] > skip:
        equal[:, skip] = True
    same: Bools = (a_len == b_len) & equal.all(axis=1)
    return same


def char_at(rows: Bytes, lengths: Ints, index: int) -> Ints:
    """The byte at `index` plus one per row, 0 for a string too short to have one."""
    if rows.shape[1] <= index:
        return np.zeros(len(rows), dtype=np.int64)
    return np.where(lengths > index, rows[:, index].astype(np.int64) + 1, 0)


def all_lower_hex(values: Sequence[object], length: int) -> bool:
    """Whether every value is a string of `length` lowercase hex digits."""
    if not set(map(type, values)) <= {str}:
        return False
    strings: Sequence[str] = values  # type: ignore[assignment]
    try:
        joined = "".join(strings).encode("ascii")
    except UnicodeEncodeError:
        return False
    return (
        len(joined) == length * len(strings)
        and set(map(len, strings)) <= {length}
        and not joined.translate(None, b"0123456789abcdef")
    )


class TextColumn:
    """A column of strings (or None) kept compact: each block's values as the one run of ASCII
    bytes they were packed into (`Packed`), rather than a string object each; `tolist` makes
    the strings again (for the rare reader of a whole column)."""

    def __init__(self) -> None:
        self._blocks: list[tuple[Bools, bytes | None, Bools, Objects | None, dict[int, Any]]] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(
        self, keep: Bools, present: Bools, packed: Packed | None, values: Objects, others: dict[int, Any]
    ) -> None:
        """A block's values where `keep`, None elsewhere, but `others` at their rows: those of
        `packed` (the block's `values` where `present`, packed) when given, else `values`."""
        if packed is None:
            self._blocks.append((keep, None, present, values, others))
        else:
            self._blocks.append((keep, packed.joined, present, None, others))
        self._len += len(keep)

    def tolist(self) -> list[Any]:
        out: list[Any] = []
        for keep, joined, present, values, others in self._blocks:
            if values is None:
                values = np.full(len(keep), None, dtype=np.object_)
                values[present] = joined.decode("ascii").split("\n")[:-1] if joined else []
            column = np.where(keep, values, _NONE)
            for i, value in others.items():
                column[i] = value
            out += column.tolist()
        return out
