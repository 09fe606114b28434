"""parse_echo_body, the traced user's fast path: wherever it answers, its view is the general
path's (`parse_echo` of `json.loads(body)["headers"]`), and it answers for the echoes meshes send."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.mesh.echo import UpstreamView, parse_echo, parse_echo_body
from loadgen.mesh.tracer import TracerFamily

TRACERS = list(TracerFamily)
T128 = "463ac35c9f6413ad48485a3953bb6124"
S64 = "2b0be974ad915801"
XRID = "2cc12a23-e3b4-4b66-8689-60999f258179"

# The echo of the embedded mesh (loadgen.stack.echo, aiohttp: the case Envoy sent).
MESH_ECHO = {
    "Host": "httpbin.istioinaction.io",
    "X-Loadgen-Run-Id": "bench-a0",
    "Accept-Encoding": "gzip, deflate, br",
    "X-Forwarded-Proto": "http",
    "X-Request-ID": XRID,
    "X-B3-Traceid": T128,
    "X-B3-Spanid": S64,
    "X-B3-Parentspanid": "0e15d0a67bee1701",
    "X-B3-Sampled": "0",
}


def general(body: bytes, tracer: TracerFamily) -> UpstreamView | None:
    """The traced user's general path; None where it reports the echo as not parsable."""
    try:
        return parse_echo(json.loads(body or b"null").get("headers", {}), tracer)
    except (ValueError, AttributeError):
        return None


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize(
    "headers",
    [
        MESH_ECHO,
        {k: [v] for k, v in MESH_ECHO.items()},  # go-httpbin: lists of values
        {k.lower(): v for k, v in MESH_ECHO.items()},
        {"X-Request-Id": XRID.upper(), "B3": f"{T128.upper()}-{S64}-1"},  # ids as sent, in capitals
        {"x-request-id": "0f0f0f0f-1234-4567-8901-123456789012", "traceparent": f"00-{T128}-{S64}-01"},
        {"X-Request-Id": ["LoadGen-ghij", "other"], "x-b3-sampled": "True", "X-B3-TraceId": T128},
        {},
    ],
)
def test_the_fast_path_answers_the_mesh_echoes_as_the_general_path(
    headers: dict[str, Any], tracer: TracerFamily
) -> None:
    for body in (
        json.dumps({"headers": headers}).encode(),
        json.dumps({"headers": headers}, indent=2).encode(),
    ):
        fast = parse_echo_body(body, tracer)
        assert fast is not None
        assert fast == general(body, tracer)


def test_the_request_id_keeps_the_case_it_was_echoed_in() -> None:
    view = parse_echo_body(json.dumps({"headers": {"Via": "x", "x-REQUEST-id": "AbC-1"}}).encode())
    assert view is not None and view.request_id == "AbC-1"
    assert parse_echo_body(b'{"headers": {"X-Request-Id" :\n [ "ABC-1" ] }}') == UpstreamView(
        None, None, None, "ABC-1"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'{"headers": null}',
        b'{"headers": "x"}',
        b'{"headers": {"b3": "1"}',
        b'{"headers": {}} x',
    ],
)
def test_what_the_general_path_refuses_the_fast_path_leaves_to_it(body: bytes) -> None:
    assert parse_echo_body(body) is None
    assert general(body, TracerFamily.ZIPKIN) is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"headers": {"x-b3-sampled": 1}}',  # parse_echo reads str() of any value
        b'{"headers": {"b3": [1]}}',
        b'{"headers": {"X-Request-Id": null}}',  # "None", not absent
        b'{"headers": {"b3": NaN}}',  # json.loads reads NaN
        b'\xef\xbb\xbf{"headers": {"b3": "1"}}',  # a UTF-8 byte order mark, json.loads skips it
    ],
)
def test_values_of_other_types_go_the_general_way(body: bytes) -> None:
    assert parse_echo_body(body) is None
    assert general(body, TracerFamily.ZIPKIN) is not None


@pytest.mark.parametrize(
    "body",
    [
        '{"headers": {"X-B3-\\u0053ampled": "1"}}',  # a key spelled with an escape
        '{"headers": {"b3": "\u00c4-1-1", "x-b3-sampled": "\u00c4"}}',  # str.lower() is not bytes.lower() here
        '{"headers": {"X-Request-Id": "A", "x-request-id": "B"}}',  # the key twice (last wins)
        '{"headers": {"X-Request-Id": "A"}, "other": {"x-request-id": "B"}}',
    ],
)
def test_bodies_it_cannot_prove_equal_go_the_general_way(body: str) -> None:
    data = body.encode()
    fast = parse_echo_body(data)
    assert fast is None or fast == general(data, TracerFamily.ZIPKIN)
    assert general(data, TracerFamily.ZIPKIN) is not None


NAMES = [
    "x-request-id",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "traceparent",
    "host",
    "x-b3-flags",
]
VALUES = [
    T128,
    S64,
    XRID,
    "1",
    "0",
    "d",
    "true",
    "False",
    f"{T128}-{S64}-1",
    f"00-{T128}-{S64}-01",
    "",
    " x ",
    "ÄB",
]


def spell(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


value_st = st.one_of(
    st.sampled_from(VALUES),
    st.text(max_size=12),
    st.lists(st.sampled_from(VALUES), max_size=2),
    st.integers(),
    st.none(),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(NAMES), value_st, st.integers(0, 2**16)), max_size=8),
    st.sampled_from(TRACERS),
    st.booleans(),
    st.sampled_from([None, 1]),
)
def test_wherever_the_fast_path_answers_it_is_the_general_path(
    pairs: list[tuple[str, Any, int]], tracer: TracerFamily, ascii_only: bool, indent: int | None
) -> None:
    # Key spellings in any case, repeated keys (a JSON object may spell a key twice; the last wins
    # in both paths), values of any JSON type.
    items = ", ".join(
        f"{json.dumps(spell(random.Random(seed), name))}: {json.dumps(value, ensure_ascii=ascii_only)}"
        for name, value, seed in pairs
    )
    body = ("{" + f'"headers": {{{items}}}' + "}").encode()
    if indent:
        body = json.dumps(json.loads(body), indent=indent, ensure_ascii=ascii_only).encode()
    fast = parse_echo_body(body, tracer)
    if fast is not None:
        assert fast == general(body, tracer)


def test_a_header_spelled_twice_is_left_to_the_general_path() -> None:
    """Hypothesis's find: `"B3"`, `"b3"`, `"B3"` again. The general path (a dict, then keys
    lowered) reads the value of whichever spelling first appeared last, here `"b3"`'s; the fast
    path read the last value in the text. Such a body now goes the general way."""
    first, last = "463ac35c9f6413ad48485a3953bb6124", "2b0be974ad915801"
    body = f'{{"headers": {{"B3": "{first}", "b3": "{first}", "B3": "{last}"}}}}'.encode()
    assert parse_echo_body(body) is None
    view = general(body, TracerFamily.ZIPKIN)
    assert view is not None and view.flag == first
