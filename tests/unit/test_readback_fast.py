"""The faster read-back (issue 15 goal 3) against the code it replaced
(tests/unit/readback_reference.py), on random answers: well-formed ones, and ones with every
kind of wrong value a backend or a proxy may send (spans that are not objects, fields missing or
of another type, ids in other case or width, endpoints and tags that are not objects, bodies that
are not JSON or not UTF-8, NaN, huge numbers, lone surrogates).

- `loads_json` (msgspec, else json.loads) gives the value `json.loads` gives, or raises as it does;
- `assign` groups the same spans under the same ids;
- `TraceObservation.from_fetched` and `TraceShape.from_spans` give the same observation and
  shape (and raise as before where the old code raised);
- end to end, a `/traceMany` answer's bytes become the same observations per id, and an answer
  that is not a list of traces is still not one (the engine makes every id ERROR);
- the typed path (`zipkin._observe_traces`: spans decoded by msgspec straight into
  `SpanFields`, no dicts) gives, whenever it answers, exactly what the dict path gives, and
  declines (None: the engine reads the answer as dicts) every answer it does not read the same
  way; through the real engine too (`ZipkinBackend.fetch_reduced`), where a declined answer
  that is not a list of traces makes every id ERROR and an id absent from a valid one MISSING."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.analysis.observation import ObserveTrace, TraceObservation, TraceShape
from loadgen.backends._common import assign, loads_json
from loadgen.backends.base import Fetched, FetchStatus
from loadgen.backends.zipkin import ZipkinBackend, _assign_traces, _observe_traces
from loadgen.mesh.ids import normalize_trace_id
from tests.unit import readback_reference as ref

TAG, RUN = "loadgen.run_id", "run-1"
IDS = ["a" * 32, "b" * 16, "0" * 16 + "c" * 16, "d" * 16 + "e" * 16, "e" * 16, "f" * 32]
SPAN_IDS = ["1" * 16, "2" * 16, "3" * 16, "0" * 15 + "4", "5" * 16]
SERVICES = ["gw", "app", "backend"]


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """What `fn()` gives: ("value", it) or ("raises", the exception's type)."""
    try:
        return "value", fn()
    except Exception as exc:  # compared by type: each path must raise as the other
        return "raises", type(exc)


def same_json(a: Any, b: Any) -> bool:
    """Equal JSON values of the same types (1 is not 1.0 nor True; NaN is NaN; key order too)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


def same_observations(a: dict[str, TraceObservation], b: dict[str, TraceObservation]) -> bool:
    return a == b and [o.to_dict() for o in a.values()] == [o.to_dict() for o in b.values()]


# -- loads_json ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
JSON_ODDITIES = [
    b"", b" ", b"[1,]", b"{\"a\":1,\"a\":2}", b"\xef\xbb\xbf[1]", b"\"\\ud800\"", b"\"\\udc00x\"", b"NaN",
    b"[Infinity, -Infinity]", b"1e400", b"-1e400", b"[1e-400]", b"\"\xff\"", b"[\"\xc3\"]", b"123456789012345678901234567890",
    b"[" * 3000 + b"]" * 3000, b"<html>login</html>", b"404 page not found", b"\"a\x01b\"", b"[1] x", b"{\"a\":}",
    "[\"é\"]".encode("utf-16"), "[1]".encode("utf-32"), b"-0", b"-0.0", b"1E2", b"[0.1, 1.7976931348623157e308]",
]  # fmt: skip


@pytest.mark.parametrize("body", JSON_ODDITIES)
def test_loads_json_is_json_loads_on_odd_bodies(body: bytes) -> None:
    got, want = outcome(lambda: loads_json(body)), outcome(lambda: json.loads(body))
    assert got[0] == want[0]
    assert same_json(got[1], want[1]) if got[0] == "value" else got[1] is want[1]


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans(), st.integers(min_value=0, max_value=3))
def test_loads_json_is_json_loads(value: Any, ascii_only: bool, cut: int) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    body = body[: len(body) - cut]  # also torn
    got, want = outcome(lambda: loads_json(body)), outcome(lambda: json.loads(body))
    assert got[0] == want[0]
    assert same_json(got[1], want[1]) if got[0] == "value" else got[1] is want[1]


# -- spans ---------------------------------------------------------------------------------------

odd = st.sampled_from([None, 0, 1, True, False, 1.5, "", " ", [], {}, "x", ["a"], {"a": 1}])
trace_ids = (
    st.sampled_from([*IDS, "A" * 32, " " + "b" * 16, "c" * 16, "d" * 16, "e" * 32, "f" * 16, "B" * 16, " a"])
    | odd
)
span_ids = st.sampled_from([*SPAN_IDS, "1" * 16 + " ", "2" * 16, "4", "00000000000000004", "3" * 16]) | odd
endpoints = st.fixed_dictionaries({}, optional={"serviceName": st.sampled_from(SERVICES) | odd}) | odd
tags = st.dictionaries(st.sampled_from([TAG, "http.method"]), st.sampled_from([RUN, "other"]) | odd) | odd
span = st.fixed_dictionaries(
    {},
    optional={
        "traceId": trace_ids,
        "id": span_ids,
        "parentId": span_ids,
        "kind": st.sampled_from(["SERVER", "CLIENT", "PRODUCER"]) | odd,
        "localEndpoint": endpoints,
        "timestamp": st.integers(min_value=0, max_value=2**62) | odd,
        "duration": st.integers(min_value=0, max_value=10**9) | odd,
        "shared": odd,
        "tags": tags,
    },
)
plain_span = st.fixed_dictionaries(
    {
        "traceId": st.sampled_from(IDS),
        "id": st.sampled_from(SPAN_IDS),
        "kind": st.sampled_from(["SERVER", "CLIENT"]),
        "localEndpoint": st.fixed_dictionaries({"serviceName": st.sampled_from(SERVICES)}),
        "timestamp": st.integers(min_value=1, max_value=2**53),
        "duration": st.integers(min_value=0, max_value=10**6),
        "tags": st.fixed_dictionaries({TAG: st.sampled_from([RUN, "other"])}),
    },
    optional={"parentId": st.sampled_from(SPAN_IDS), "shared": st.booleans()},
)
any_span = plain_span | span | odd


@settings(max_examples=400, deadline=None)
@given(st.lists(plain_span | span, max_size=8), st.sampled_from([("", ""), (TAG, RUN), (TAG, "")]))
def test_observation_is_the_reference_one(spans: list[Any], run: tuple[str, str]) -> None:
    for status, cut in (
        (FetchStatus.FOUND, False),
        (FetchStatus.FOUND, True),
        (FetchStatus.ERROR, False),
    ):
        fetched = Fetched(
            status, spans=tuple(spans), error="e" if status is FetchStatus.ERROR else None, partial=cut
        )
        got = outcome(partial(TraceObservation.from_fetched, fetched, *run))
        want = outcome(partial(ref.from_fetched, fetched, *run))
        assert got == want
        if got[0] == "value":
            assert got[1].to_dict() == want[1].to_dict()


@settings(max_examples=300, deadline=None)
@given(st.lists(any_span, max_size=8))
def test_shape_is_the_reference_one(spans: list[Any]) -> None:
    got, want = outcome(lambda: TraceShape.from_spans(spans)), outcome(lambda: ref.shape_from_spans(spans))
    assert got == want
    if got[0] == "value":
        assert got[1].to_dict() == want[1].to_dict()


def test_a_span_the_fast_path_does_not_read_is_read_as_before() -> None:
    # Each span is in the common form but one value: the general code reads the trace.
    base = {"traceId": IDS[0], "id": SPAN_IDS[0], "kind": "SERVER", "localEndpoint": {"serviceName": "gw"},
            "timestamp": 10, "duration": 5, "tags": {TAG: RUN}}  # fmt: skip
    child = {**base, "id": SPAN_IDS[1], "parentId": SPAN_IDS[0].upper(), "kind": "CLIENT"}
    for change in ({"localEndpoint": {"serviceName": 7}}, {"kind": 3}, {"id": 12}, {"parentId": 5},
                   {"tags": ["x"]}, {"localEndpoint": "gw"}, {"timestamp": True}):  # fmt: skip
        spans = (base, {**child, **change})
        fetched = Fetched(FetchStatus.FOUND, spans)
        got = outcome(partial(TraceObservation.from_fetched, fetched, TAG, RUN))
        want = outcome(partial(ref.from_fetched, fetched, TAG, RUN))
        assert got == want, change
    # The child's upper-case parentId still names the parent: one link, one root.
    obs = TraceObservation.from_fetched(Fetched(FetchStatus.FOUND, (base, child)), TAG, RUN)
    assert obs.shape is not None and obs.shape.links == {("gw", "CLIENT", "gw", "SERVER"): 1}
    assert (obs.shape.roots, obs.run_tagged, obs.span_count) == (1, 2, 2)


# -- assign and the /traceMany answer --------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*IDS, "B" * 16, " a"]), max_size=6), st.lists(any_span, max_size=12))
def test_assign_is_the_reference_one(ids: list[str], spans: list[Any]) -> None:
    assert assign(ids, spans) == ref.assign(ids, spans)


def reference_answer(ids: list[str], body: bytes) -> dict[str, TraceObservation] | None | str:
    """The read-back before: json.loads, the old grouping, the old reduction."""
    try:
        decoded = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        decoded = None
    if not (
        isinstance(decoded, list)
        and all(isinstance(t, list) and all(isinstance(s, dict) for s in t) for t in decoded)
    ):
        return None
    try:
        grouped = ref.assign(ids, (s for t in decoded for s in t))
        return {tid: ref.from_fetched(f, TAG, RUN) for tid, f in grouped.items()}
    except Exception as exc:
        return type(exc).__name__


def fast_answer(ids: list[str], body: bytes) -> dict[str, TraceObservation] | None | str:
    try:
        decoded = loads_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        decoded = None
    result = _assign_traces(ids, decoded)
    if result is None:
        return None
    try:
        return {tid: TraceObservation.from_fetched(f, TAG, RUN) for tid, f in result.items()}
    except Exception as exc:
        return type(exc).__name__


answers = st.lists(st.lists(any_span, max_size=5), max_size=4) | st.lists(any_span, max_size=3) | json_values


@settings(max_examples=300, deadline=None)
@given(answers, st.integers(min_value=0, max_value=2))
def test_a_trace_many_answer_reads_as_before(answer: Any, cut: int) -> None:
    body = json.dumps(answer).encode()
    body = body[: len(body) - cut]
    got, want = fast_answer(IDS, body), reference_answer(IDS, body)
    if isinstance(want, dict):
        assert isinstance(got, dict) and same_observations(got, want)
    else:
        assert got == want


def test_an_answer_not_in_the_route_form_is_not_read() -> None:
    for body in (b"<html>", b"[{}]", b"[[1]]", b'{"traces": []}', b"[[{}], 5]", b"[NaN]", b"\xff"):
        assert fast_answer(IDS, body) is None is reference_answer(IDS, body)
    # A list of traces without a requested id: that id is MISSING (Zipkin's own answer).
    got = fast_answer(IDS, b'[[{"traceId": "' + b"9" * 32 + b'", "id": "' + b"1" * 16 + b'"}]]')
    assert isinstance(got, dict) and {o.status for o in got.values()} == {FetchStatus.MISSING}


# -- the typed path: spans decoded straight into SpanFields --------------------------------------

OBSERVE = ObserveTrace(TAG, RUN)


def typed_answer(ids: list[str], body: bytes) -> dict[str, TraceObservation] | None:
    return _observe_traces(ids, body, OBSERVE)


def engine_answer(ids: list[str], body: bytes) -> dict[str, TraceObservation] | None | str:
    """What the engine gives: the typed path where it answers, else the dict path."""
    typed = typed_answer(ids, body)
    return typed if typed is not None else fast_answer(ids, body)


# Values of exactly the types the typed path reads, odd ones included (None, "", {}, big ints,
# ids in other case, width or padding, unknown fields of any JSON value).
typed_str = st.none() | st.sampled_from(["", " ", "x"])
# JSON values msgspec reads (json_values but NaN, infinities and lone surrogates).
plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)
typed_span = st.fixed_dictionaries(
    {},
    optional={
        "traceId": st.sampled_from([*IDS, "A" * 32, " " + "b" * 16, "c" * 16, "d" * 16, "B" * 16])
        | typed_str,
        "id": st.sampled_from([*SPAN_IDS, "1" * 16 + " ", "4", "00000000000000004", "3" * 16]) | typed_str,
        "parentId": st.sampled_from([*SPAN_IDS, "2" * 16, "4"]) | typed_str,
        "kind": st.sampled_from(["SERVER", "CLIENT"]) | typed_str,
        "localEndpoint": st.none()
        | st.fixed_dictionaries(
            {}, optional={"serviceName": st.sampled_from(SERVICES) | typed_str, "ipv4": plain_json}
        ),
        "timestamp": st.none() | st.integers(min_value=-(2**70), max_value=2**70),
        "duration": st.none() | st.integers(min_value=-5, max_value=2**70),
        "shared": st.none() | st.booleans(),
        "tags": st.none()
        | st.dictionaries(
            st.sampled_from([TAG, "http.method", "", "value"]), st.sampled_from([RUN, "other"]) | odd
        )
        | st.fixed_dictionaries({TAG: plain_json}),
        "annotations": plain_json,
        "name": plain_json,
    },
)
typed_answers = st.lists(st.lists(plain_span | typed_span, max_size=5), max_size=4)


@settings(max_examples=400, deadline=None)
@given(typed_answers)
def test_the_typed_path_reads_answers_in_its_form_as_before(answer: Any) -> None:
    body = json.dumps(answer).encode()
    typed, want = typed_answer(IDS, body), reference_answer(IDS, body)
    assert typed is not None  # these it reads itself
    assert isinstance(want, dict) and same_observations(typed, want)


@settings(max_examples=400, deadline=None)
@given(answers | typed_answers, st.integers(min_value=0, max_value=2), st.booleans())
def test_the_typed_path_answers_as_before_or_not_at_all(answer: Any, cut: int, ascii_only: bool) -> None:
    body = json.dumps(answer, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    body = body[: len(body) - cut]
    typed, want = typed_answer(IDS, body), reference_answer(IDS, body)
    if typed is not None:
        assert isinstance(want, dict) and same_observations(typed, want)
    got = engine_answer(IDS, body)
    if isinstance(want, dict):
        assert isinstance(got, dict) and same_observations(got, want)
    else:
        assert got == want


SPAN = b'{"traceId":"' + IDS[0].encode() + b'","id":"' + SPAN_IDS[0].encode() + b'","tags":{"' + TAG.encode()
# Answers the typed path must leave to the dict path: bytes json.loads refuses in a field the
# typed path skips, values of another type, JSON that only json.loads reads.
DECLINED = [
    b"[[" + SPAN + b'":"x"},"name":"\xff"}]]',  # not UTF-8 where it is skipped
    b"[[" + SPAN + b'":"x"},"name":"\xc3"}]]',
    b"[[" + SPAN + b'":"x"},"name":"\xed\xa0\x80"}]]',  # an encoded surrogate
    b"[[" + SPAN + b'":"x"},"name":NaN}]]',
    b"[[" + SPAN + b'":"x"},"name":"\\ud800"}]]',  # a lone surrogate: json.loads reads it
    b"[[" + SPAN + b'":"x"},"name":"a\x01b"}]]',
    b"[[" + SPAN + b'":"x"},"name":' + b"[" * 1500 + b"]" * 1500 + b"}]]",
    b"[[" + SPAN + b'":"x"},"timestamp":1.0}]]',
    b"[[" + SPAN + b'":"x"},"shared":1}]]',
    b"[[" + SPAN + b'":"x"},"localEndpoint":[]}]]',
    b"[[" + SPAN + b'":"x"},"kind":0}]]',
    b"[[" + SPAN + b'":Infinity}}]]',
    b'[[{"traceId":"' + IDS[0].encode() + b'","tags":["x"]}]]',
    b"\xef\xbb\xbf[]",
    "[[]]".encode("utf-16"),
    b"[[{}], 5]",
    b'{"traces": []}',
    b"[[1]]",
    b"<html>",
]


@pytest.mark.parametrize("body", DECLINED)
def test_the_typed_path_declines_what_it_does_not_read_as_the_dict_path(body: bytes) -> None:
    assert typed_answer(IDS, body) is None
    got, want = outcome(lambda: fast_answer(IDS, body)), outcome(lambda: reference_answer(IDS, body))
    if isinstance(want[1], dict):
        assert isinstance(got[1], dict) and same_observations(got[1], want[1])
    else:  # not in the route's form (None: every id ERROR), or raising as before (RecursionError)
        assert got == want


def test_the_typed_path_on_duplicate_keys_and_ids_it_was_not_asked() -> None:
    # The last of duplicate keys wins, as in json.loads; a trace of an id not asked is ignored,
    # and an asked id without spans in a valid answer is MISSING (Zipkin's own answer).
    body = (
        b'[[{"traceId":"' + IDS[1].encode() + b'","id":"1","id":"' + SPAN_IDS[1].encode() + b'",'
        b'"tags":{"' + TAG.encode() + b'":"' + RUN.encode() + b'","' + TAG.encode() + b'":"other"}}],'
        b'[{"traceId":"' + b"9" * 32 + b'","id":"' + SPAN_IDS[0].encode() + b'"}]]'
    )
    typed, want = typed_answer(IDS, body), reference_answer(IDS, body)
    assert typed is not None and isinstance(want, dict) and same_observations(typed, want)
    assert typed[IDS[1]].status is FetchStatus.FOUND and typed[IDS[1]].run_tagged == 0
    assert {typed[t].status for t in IDS if t != IDS[1]} == {FetchStatus.MISSING}


def test_the_typed_path_is_only_for_the_read_back_reduce() -> None:
    body = b'[[{"traceId":"' + IDS[0].encode() + b'"}]]'
    assert (
        _observe_traces(IDS, body, partial(TraceObservation.from_fetched, run_id_tag=TAG, run_id=RUN)) is None
    )
    assert _observe_traces(IDS, body, ObserveTrace("", RUN)) is None  # the dict path reads tags[""]
    assert _observe_traces(IDS, body, ObserveTrace()) is not None


def zipkin_answering(body: bytes) -> ZipkinBackend:
    """A real ZipkinBackend (engine, threads) whose every /traceMany answer is `body`."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    backend = ZipkinBackend("http://zipkin.invalid:9411", batch_size=len(IDS), concurrency=1, retries=0)
    backend._http._client = httpx.Client(transport=httpx.MockTransport(handler))
    return backend


@settings(max_examples=150, deadline=None)
@given(answers | typed_answers, st.integers(min_value=0, max_value=1))
def test_the_engine_reduces_an_answer_as_before(answer: Any, cut: int) -> None:
    body = json.dumps(answer).encode()
    body = body[: len(body) - cut]
    want = reference_answer(list(dict.fromkeys(map(normalize_trace_id, IDS))), body)  # what it asks
    with zipkin_answering(body) as backend:
        got = outcome(lambda: backend.fetch_reduced(IDS, OBSERVE))
        plain = outcome(
            lambda: backend.fetch_reduced(
                IDS, partial(TraceObservation.from_fetched, run_id_tag=TAG, run_id=RUN)
            )
        )
    if isinstance(want, dict):
        assert got[0] == "value" and same_observations(got[1], want)
    elif want is None:  # not a list of traces: every id ERROR, the answer quoted
        assert got[0] == "value" and {o.status for o in got[1].values()} == {FetchStatus.ERROR}
        assert all("/traceMany: " in (o.error or "") for o in got[1].values())
    else:
        assert got == ("raises", want)  # raised before as it raises now (none seen so far)
    assert got == plain  # the dict path through the engine: the same
