"""The collector's `/traceMany` answer (`SpanStore.get_many_json`) reads the spans of a whole batch
of ids in one query; it must stay what asking each id alone gives (`get_trace_json`): the found
traces in request order, each id once, each trace's spans in arrival order across the batches that
brought them, absent ids left out, and spans not indexed yet included."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from loadgen.mesh.ids import normalize_trace_id
from loadgen.stack.collector import store as store_module
from loadgen.stack.collector.store import SpanStore

TRACES = [f"{i:032x}" for i in range(1, 40)] + [f"{0xABC0 + i:016x}" for i in range(10)]


def _one_by_one(store: SpanStore, ids: list[str]) -> str:
    """The answer built from one `get_trace_json` per distinct normalized id."""
    found = [store.get_trace_json(t) for t in dict.fromkeys(normalize_trace_id(i) for i in ids)]
    return "[" + ",".join(t for t in found if t is not None) + "]"


def _fill(store: SpanStore, rng: random.Random, batches: int) -> None:
    for b in range(batches):
        spans: list[dict[str, Any]] = []
        for n in range(rng.randint(1, 12)):
            spans.append({"traceId": rng.choice(TRACES), "id": f"{b:08x}{n:08x}", "name": f"s{b}.{n}"})
        store.add(spans)


def _asked(rng: random.Random) -> list[str]:
    ids = rng.sample(TRACES, rng.randint(1, 20)) + [f"{rng.getrandbits(64):016x}" for _ in range(3)]
    ids += [i.upper() for i in rng.sample(ids, 2)] + ids[:2]  # other case, repeated
    rng.shuffle(ids)
    return ids


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trace_many_is_each_trace_asked_alone(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_MANY_IDS", 7)  # several queries per answer
    rng = random.Random(seed)
    store = SpanStore(None)
    _fill(store, rng, 60)
    for _ in range(20):
        ids = _asked(rng)
        answer = store.get_many_json(ids)
        assert answer == _one_by_one(store, ids)
        traces = json.loads(answer)
        asked = list(dict.fromkeys(normalize_trace_id(i) for i in ids))
        assert [t[0]["traceId"] for t in traces] == [i for i in asked if store.get_trace_json(i) is not None]


def test_trace_many_reads_spans_not_indexed_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(4)
    store = SpanStore(None)
    _fill(store, rng, 30)
    monkeypatch.setattr(store, "_try_catch_up", lambda: False)  # indexing failed (disk full)
    _fill(store, rng, 30)
    ids = _asked(rng)
    answer = store.get_many_json(ids)
    assert answer == _one_by_one(store, ids)
    assert sum(len(t) for t in json.loads(answer)) > 0
