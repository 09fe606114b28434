"""decode_json_spans (msgspec, one step) against the reference, validate_spans(json.loads(body)).

The typed decoder may only be faster: for every body it must accept exactly what the reference
accepts, normalize it to the same spans (and encode them to the same JSON values), and refuse the
rest with the reference's own exception and message. Hypothesis draws span batches from values
that are valid, hostile or of the wrong type in every field; fixed examples cover the inputs only
the reference reads (its fallback).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.stack.collector.decode import BadRequest, decode_json, decode_json_spans
from loadgen.stack.collector.normalize import SpanValidationError, ZipkinSpan, to_structs, validate_spans
from loadgen.stack.collector.store import spans_text

INT64_MAX = 2**63 - 1
ID16 = "463ac35c9f6413ad"
ID32 = "463AC35C9F6413AD48485A3953BB6124"


def reference(body: bytes) -> list[dict[str, Any]] | tuple[type[Exception], str]:
    try:
        return validate_spans(decode_json(body))
    except (BadRequest, SpanValidationError) as exc:
        return type(exc), str(exc)


def typed(body: bytes) -> list[dict[str, Any]] | tuple[type[Exception], str]:
    try:
        spans = decode_json_spans(body)
    except (BadRequest, SpanValidationError) as exc:
        return type(exc), str(exc)
    assert all(type(s) is ZipkinSpan for s in spans)
    as_dicts: list[dict[str, Any]] = msgspec.to_builtins(spans)
    # What the store keeps is its encoding of the typed spans: the same JSON values.
    assert json.loads(f"[{spans_text(spans)}]") == as_dicts
    return as_dicts


def hex_id(length: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdefABCDEF", min_size=length, max_size=length)


uint64 = st.one_of(st.sampled_from([0, 1, INT64_MAX, 1_700_000_000_000_000]), st.integers(0, INT64_MAX))
texts = st.one_of(
    st.sampled_from(["", "A", "gw", "GET /X", "\u00c9t\u00e9", "\u212a", "\n"]), st.text(max_size=8)
)
trace_ids = st.one_of(hex_id(16), hex_id(32), st.integers(17, 31).flatmap(hex_id), st.just("0" * 16 + ID16))
span_ids = st.one_of(hex_id(16), st.just("0" * 16))
endpoints = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "serviceName": st.one_of(st.none(), texts),
            "ipv4": st.one_of(st.none(), texts),
            "ipv6": st.one_of(st.none(), texts),
            "port": st.one_of(st.none(), st.integers(0, 65535), st.just(0)),
            "extra": texts,
        },
    ),
)
annotation = st.fixed_dictionaries({"timestamp": uint64, "value": texts}, optional={"extra": uint64})
VALID = {
    "parentId": st.one_of(st.none(), span_ids),
    "kind": st.sampled_from([None, "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]),
    "name": st.one_of(st.none(), texts),
    "timestamp": st.one_of(st.none(), uint64),
    "duration": st.one_of(st.none(), uint64),
    "localEndpoint": endpoints,
    "remoteEndpoint": endpoints,
    "annotations": st.one_of(st.none(), st.lists(annotation, max_size=2)),
    "tags": st.one_of(st.none(), st.dictionaries(texts, texts, max_size=3)),
    "debug": st.one_of(st.none(), st.booleans()),
    "shared": st.one_of(st.none(), st.booleans()),
    "unknownField": st.one_of(texts, uint64, st.lists(uint64, max_size=2), st.just({"a": [None]})),
}
valid_span = st.fixed_dictionaries({"traceId": trace_ids, "id": span_ids}, optional=VALID)
# Values no field accepts, or only some do: one of them replaces one field of a valid span.
wrong = st.sampled_from(
    [None, True, False, 1.5, 1.0, "1", "", [], {}, ["a"], {"a": 1}, -1, INT64_MAX + 1, 2**64, 65536,
     "server", "INTERNAL", ID16 + "\n", ID16.upper() + "0", "xyz", "0" * 15, [{"value": "x"}],
     [{"timestamp": -1, "value": "x"}], [{"timestamp": 1, "value": None}], {"port": 65536},
     {"serviceName": 3}, {"t": None}, {"t": 1}]
)  # fmt: skip
FIELDS = ["traceId", "id", *VALID, "localEndpoint", "tags", "annotations"]
spoiled_span = st.tuples(valid_span, st.sampled_from(FIELDS), wrong).map(lambda t: {**t[0], t[1]: t[2]})
bodies = st.one_of(
    st.lists(valid_span, max_size=4),
    st.lists(st.one_of(valid_span, valid_span, valid_span, spoiled_span), min_size=1, max_size=4),
    valid_span,
    wrong,
)


@settings(
    max_examples=1500, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(document=bodies, ascii_only=st.booleans())
def test_typed_decoding_matches_the_reference_on_any_batch(document: object, ascii_only: bool) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert typed(body) == reference(body)


def envoy_span(**fields: Any) -> dict[str, Any]:
    return {
        "traceId": ID32, "id": ID16.upper(), "parentId": "0" * 16, "kind": "SERVER", "name": "GET /Headers",
        "timestamp": 1_700_000_000_000_000, "duration": 0, "localEndpoint": {"serviceName": "GW", "port": 0},
        "remoteEndpoint": {"serviceName": "", "ipv4": ""}, "annotations": [], "tags": {"a": "B"},
        "debug": False, "shared": True, **fields,
    }  # fmt: skip


def test_a_typical_span_is_normalized_like_the_reference() -> None:
    body = json.dumps([envoy_span()]).encode()
    assert (
        typed(body)
        == reference(body)
        == [
            {
                "traceId": ID32.lower(),
                "id": ID16,
                "kind": "SERVER",
                "name": "get /headers",
                "timestamp": 1_700_000_000_000_000,
                "localEndpoint": {"serviceName": "gw"},
                "tags": {"a": "B"},
                "shared": True,
            }
        ]
    )


@pytest.mark.parametrize(
    "body",
    [
        json.dumps([envoy_span()]).encode("utf-16"),  # RFC 8259 encodings msgspec does not read
        json.dumps([envoy_span()]).encode("utf-32-le"),
        b"\xef\xbb\xbf" + json.dumps([envoy_span()]).encode(),  # a UTF-8 byte order mark
        json.dumps([envoy_span(tags={"t": "\ud800"})]).encode(),  # a lone surrogate, escaped
        json.dumps([envoy_span(unknownField=float("nan"))]).encode(),  # NaN where nobody looks
        b'[{"traceId": 5, "traceId": "' + ID16.encode() + b'", "id": "' + ID16.encode() + b'"}]',
    ],
    ids=["utf-16", "utf-32", "bom", "lone-surrogate", "nan-ignored", "duplicate-key"],
)
def test_bodies_only_the_reference_reads_are_accepted_through_it(body: bytes) -> None:
    expected = reference(body)
    assert isinstance(expected, list) and expected  # the reference accepts each of these
    assert typed(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"[" + json.dumps(envoy_span()).encode() + b"",  # truncated
        b"[]x",
        json.dumps([envoy_span(traceId=ID16 + "\n")]).encode(),  # Meta(pattern=...) would let it by
        json.dumps([envoy_span(timestamp=INT64_MAX + 1)]).encode(),
        json.dumps([envoy_span(localEndpoint={"port": 65536})]).encode(),
        b"[" + b"[" * 100_000 + b"]" * 100_001,  # nested too deep for json.loads
    ],
    ids=["truncated", "trailing", "id-newline", "int64", "port", "deep"],
)
def test_refusals_carry_the_reference_message(body: bytes) -> None:
    expected = reference(body)
    assert isinstance(expected, tuple)
    assert typed(body) == expected


def test_to_structs_keeps_validated_spans_as_they_are() -> None:
    validated = validate_spans([envoy_span(), envoy_span(traceId="0" * 16 + ID16, parentId=ID16)])
    assert msgspec.to_builtins(to_structs(validated)) == validated
