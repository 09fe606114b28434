"""The live view's incremental ledger reader."""

from __future__ import annotations

import json
from pathlib import Path

from loadgen.analysis.reconcile import upstream_decision
from loadgen.ledger import LedgerTail


def line(mode: str, flag: str | None, status: int = 200) -> str:
    return json.dumps({"mode": mode, "status": status, "up_flag": flag}) + "\n"


def test_tail_counts_only_new_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    tail = LedgerTail(path, upstream_decision)
    assert tail.poll().requests == 0  # no file yet
    path.write_text(line("none", "1") + line("none", "0") + line("b3_multi_sampled", "1")[:10])
    c = tail.poll()
    assert (c.requests, c.decided, c.sampled) == (2, 2, 1)
    with open(path, "a") as fh:  # the rest of the partial line, then an error
        fh.write(line("b3_multi_sampled", "1")[10:] + line("none", None, status=503))
    c = tail.poll()
    assert (c.requests, c.errors, c.decided, c.sampled) == (4, 1, 3, 2)
    assert c.by_mode == {"none": [3, 1], "b3_multi_sampled": [1, 1]}
    assert c.sampled_fraction == 2 / 3
    assert tail.poll().requests == 4  # nothing new


def test_tail_skips_and_counts_lines_that_are_not_utf8_or_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    tail = LedgerTail(path, upstream_decision)
    path.write_bytes(
        line("none", "1").encode() + b'\xff{"mode":"x"}\n[1]\n42\n\n' + line("none", "0").encode()
    )
    c = tail.poll()  # once: AttributeError on the JSON list
    assert (c.requests, c.decided, c.sampled, c.skipped) == (2, 2, 1, 3)
    assert c.by_mode == {"none": [2, 1]}
