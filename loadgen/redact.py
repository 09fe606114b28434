"""Credentials never reach a file, a log or the terminal: redaction of URLs and of text holding URLs.

Two kinds of secret ride in URLs:

- **user-info**: ``http://user:password@host`` (or a bare ``http://token@host``) becomes
  ``http://***@host``;
- **query (or fragment) parameters named like secrets**: ``?token=abc&limit=5`` becomes
  ``?token=***&limit=5``. A name looks like a secret when, lowercased, percent-decoded and with its
  punctuation dropped, it contains one of `SECRET_PARAM_PARTS` (``access_token``, ``X-Amz-Signature``,
  ``apiKey``, ``client_secret``, ``sig``, ...). Erring toward masking is deliberate: a masked harmless
  value costs nothing, a shown secret cannot be taken back.

`redact_url` takes one URL (or a spec holding one, such as ``zipkin:http://u:p@h``); `redact_text`
takes arbitrary text (an exception message, a log line, a rendered report) and redacts every URL and
query string inside it. Both are pure, idempotent, and leave everything else byte for byte as it was,
so a redacted value still reads as the URL the user gave.

Redaction is for what is *stored or shown*. Requests must still be made with the real URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

__all__ = ["REDACTED", "SECRET_PARAM_PARTS", "is_secret_param", "redact_data", "redact_text", "redact_url"]

REDACTED = "***"
"""What a secret is replaced with."""

SECRET_PARAM_PARTS: tuple[str, ...] = (
    "token",
    "key",
    "secret",
    "passw",
    "pwd",
    "auth",
    "sig",
    "credential",
    "session",
    "cookie",
    "jwt",
    "bearer",
    "private",
    "otp",
)
"""Substrings of a (normalized) parameter name that make its value a secret."""

# `//` then anything up to the last `@` before the host ends (`/`, `?`, `#` or whitespace): a
# password may itself hold an unencoded `@`, and the greedy match takes it all.
_USERINFO = re.compile(r"//[^/?#\s]*@")
# A bare `user:password@host[:port]` (no scheme, no `//`) given where a URL was expected.
_BARE_USERINFO = re.compile(r"^[^/?#\s@]*@(?=[^/?#\s@]+)")
# `?name=value`, `&name=value`, `#name=value`, and `;name=value` (what `&amp;name=value` leaves
# after an HTML `&amp;`). The value ends at the next `&` or `#`, whitespace, a quote or an angle
# bracket, so a URL quoted in a message or embedded in HTML/JSON is cut where it ends.
_PARAM = re.compile(r"(?P<lead>[?&#;])(?P<name>[^=&#?;\s'\"<>/]+)=(?P<value>[^&#\s'\"<>]*)")
_NAME_NOISE = re.compile(r"[^a-z0-9]")


def is_secret_param(name: str) -> bool:
    """Whether a query parameter named `name` carries a secret (case and punctuation ignored)."""
    normalized = _NAME_NOISE.sub("", unquote(name).lower())
    return any(part in normalized for part in SECRET_PARAM_PARTS)


def _mask_param(match: re.Match[str]) -> str:
    if not match["value"] or not is_secret_param(match["name"]):
        return match[0]
    return f"{match['lead']}{match['name']}={REDACTED}"


def redact_text(text: str) -> str:
    """`text` with the user-info of every URL in it replaced by ``***`` and the values of every
    secret-named query parameter in it masked; everything else unchanged."""
    if "@" in text:
        text = _USERINFO.sub(f"//{REDACTED}@", text)
    if "=" in text:
        text = _PARAM.sub(_mask_param, text)
    return text


def redact_url(url: str) -> str:
    """`url` safe to store or show: no user-info, no secret query values (see `redact_text`).

    Also takes a spec that holds a URL (``zipkin:http://u:p@h:9411``) and a scheme-less
    ``user:password@host:port``."""
    if "//" not in url and "@" in url:
        url = _BARE_USERINFO.sub(f"{REDACTED}@", url, count=1)
    return redact_text(url)


def redact_data(obj: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings, scalars) with `redact_text` applied
    to every string value, at any depth; keys and non-string values are kept. For writers of JSON
    files: whatever a note or a field quotes, no credential reaches the file."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {key: redact_data(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_data(value) for value in obj]
    return obj
