"""What the collector keeps of endpoint addresses and annotations, as Zipkin keeps them (both
ingest paths: the reference `validate_spans` and the typed msgspec decode). The response schema
(shared/specs/zipkin2-api.yaml) says `ipv4`/`ipv6` are addresses and annotations unique items;
the collector fuzz test found a stored `"ipv6": "b\\u0017"` and two equal annotations answered
back against it."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from loadgen.stack.collector.decode import decode_json_spans
from loadgen.stack.collector.normalize import validate_spans

SPAN = {"traceId": "a" * 16, "id": "b" * 16}


def both(span: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The span as each path keeps it (JSON, as the store writes it)."""
    reference = validate_spans([span])[0]
    typed = json.loads(msgspec.json.encode(decode_json_spans(json.dumps([span]).encode())[0]))
    return reference, typed


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ({"ipv4": "10.1.2.3"}, {"ipv4": "10.1.2.3"}),
        ({"ipv6": "2001:DB8:0:0:0:0:0:1"}, {"ipv6": "2001:db8::1"}),  # RFC 5952 text
        ({"ipv6": "::ffff:10.1.2.3"}, {"ipv4": "10.1.2.3"}),  # IPv4-mapped: an IPv4 address
        ({"ipv4": "::1"}, {"ipv6": "::1"}),  # under its own family, whichever field
        ({"ipv6": "b\u0017", "serviceName": "gw"}, {"serviceName": "gw"}),  # not an address: dropped
        ({"ipv4": "300.1.1.1", "port": 80}, {"port": 80}),
        ({"ipv4": "1.2.3.4", "ipv6": "::2"}, {"ipv4": "1.2.3.4", "ipv6": "::2"}),
    ],
)
def test_endpoint_addresses_are_kept_as_zipkin_keeps_them(
    given: dict[str, Any], kept: dict[str, Any]
) -> None:
    for span in both({**SPAN, "remoteEndpoint": given}):
        assert span["remoteEndpoint"] == kept


def test_an_endpoint_left_with_nothing_is_absent() -> None:
    for span in both({**SPAN, "localEndpoint": {"ipv4": "not an address"}}):
        assert "localEndpoint" not in span


def test_annotations_are_sorted_and_unique() -> None:
    given = [{"timestamp": 2, "value": "b"}, {"timestamp": 1, "value": ""}, {"timestamp": 1, "value": ""},
             {"timestamp": 1, "value": "a"}, {"timestamp": 2, "value": "b"}]  # fmt: skip
    for span in both({**SPAN, "annotations": given}):
        assert span["annotations"] == [
            {"timestamp": 1, "value": ""},
            {"timestamp": 1, "value": "a"},
            {"timestamp": 2, "value": "b"},
        ]
