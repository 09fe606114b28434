"""loadgen.redact: no credential in a URL survives redaction, and nothing else changes."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest

from loadgen.redact import is_secret_param, redact_data, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:pass@host:8080/x", "http://***@host:8080/x"),
        ("https://token@host/", "https://***@host/"),
        ("http://u:p@ss@host/x", "http://***@host/x"),  # an unencoded @ in the password
        ("http://u:p%40ss@host", "http://***@host"),
        ("http://[::1]:80/", "http://[::1]:80/"),
        ("http://u:p@[::1]:80/", "http://***@[::1]:80/"),
        ("zipkin:http://u:SECRET@127.0.0.1:9411", "zipkin:http://***@127.0.0.1:9411"),
        ("u:SECRET@127.0.0.1:8080", "***@127.0.0.1:8080"),
        ("http://host/x?token=abc", "http://host/x?token=***"),
        ("http://host/x?limit=5&token=abc&b=2", "http://host/x?limit=5&token=***&b=2"),
        ("http://h/?TOKEN=abc", "http://h/?TOKEN=***"),
        ("http://h/?access_token=abc#frag", "http://h/?access_token=***#frag"),
        ("http://h/#access_token=abc&state=s", "http://h/#access_token=***&state=s"),
        (
            "http://h/?X-Amz-Signature=ff&X-Amz-Credential=k%2F1",
            "http://h/?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        ("http://h/?apiKey=1&api_key=2&api-key=3", "http://h/?apiKey=***&api_key=***&api-key=***"),
        (
            "http://h/?password=1&passwd=2&pwd=3&secret=4",
            "http://h/?password=***&passwd=***&pwd=***&secret=***",
        ),
        (
            "http://h/?auth=1&sig=2&signature=3&credential=4&session=5",
            "http://h/?auth=***&sig=***&signature=***&credential=***&session=***",
        ),
        ("http://h/?api%5Fkey=1", "http://h/?api%5Fkey=***"),
        ("http://h/?token=", "http://h/?token="),  # nothing to hide
        ("http://h/?q=token&limit=10", "http://h/?q=token&limit=10"),  # a value named token is no secret
        ("http://a:b@h/p?token=t&x=1", "http://***@h/p?token=***&x=1"),
        ("http://host:9411/api/v2", "http://host:9411/api/v2"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


def test_plain_values_are_untouched() -> None:
    for text in ["127.0.0.1:8080", "http://127.0.0.1:8080/headers", "mail me: a@b.c", "x = 1", "a==b"]:
        assert redact_text(text) == text
    assert redact_url("a@b") == "***@b"  # where a URL is expected, a bare user@host is user-info


@pytest.mark.parametrize(
    "template",
    [
        "Client error '401 Unauthorized' for url '{url}'",
        'GET "{url}" failed',
        "cannot reach {url}: [Errno 111] Connection refused",
        '<a href="{url}">x</a>',
        "({url})",
        "{url}\nnext line",
    ],
)
def test_redact_text_finds_urls_in_messages(template: str) -> None:
    url = "http://u:SECRETPW@h:1/x?token=SECRETTOK&limit=5"
    out = redact_text(template.format(url=url))
    assert "SECRETPW" not in out
    assert "SECRETTOK" not in out
    assert "u:" not in out.replace("url", "")
    assert "limit=5" in out
    assert "h:1/x?token=***" in out


def test_redact_text_covers_every_url_and_encodings_sinks_use() -> None:
    urls = ["http://a:S1@h1/", "https://b:S2@h2/?sig=S3", "zipkin:http://c:S4@h3:9411?api_key=S5"]
    text = " and ".join(urls)
    for rendered in [text, json.dumps({"u": urls}), html.escape(text), repr(urls)]:
        out = redact_text(rendered)
        for secret in ["S1", "S2", "S3", "S4", "S5"]:
            assert secret not in out, (rendered, out)
    # html.escape turns & into &amp; : the parameter after it is still found.
    escaped = html.escape("http://h/?a=1&token=SECRET")
    assert "SECRET" not in redact_text(escaped)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("token", True),
        ("Token", True),
        ("access_token", True),
        ("id_token", True),
        ("client_secret", True),
        ("x-api-key", True),
        ("Authorization", True),
        ("sessionid", True),
        ("limit", False),
        ("q", False),
        ("service", False),
        ("lookback", False),
        ("traceId", False),
        ("spanName", False),
        ("end", False),
    ],
)
def test_is_secret_param(name: str, secret: bool) -> None:
    assert is_secret_param(name) is secret


def test_backends_base_re_exports_redact_url() -> None:
    from loadgen.backends import base

    assert base.redact_url is redact_url
    assert "redact_url" in base.__all__


def test_redact_data_reaches_every_string_and_keeps_the_rest() -> None:
    doc: dict[str, Any] = {
        "target": {"gateway": "http://u:S1@h:1", "port": 1, "ok": True, "none": None},
        "notes": ["collector http://h/?token=S2 failed", ("http://a:S3@b",)],
        "rate": 0.5,
    }
    out = redact_data(doc)
    assert out == {
        "target": {"gateway": "http://***@h:1", "port": 1, "ok": True, "none": None},
        "notes": ["collector http://h/?token=*** failed", ["http://***@b"]],
        "rate": 0.5,
    }
    assert doc["target"]["gateway"] == "http://u:S1@h:1"  # a copy: the caller's value is untouched
