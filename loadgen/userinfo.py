"""A URL's user-info (`user:password@`) apart from the URL: the gateway's credentials travel to
the Locust process beside its host, never in it, since Locust shows the host in its web UI."""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit, urlunsplit


def split_userinfo(url: str) -> tuple[str, str]:
    """(the URL without its user-info, the user-info as written: `user:password`, or "")."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, ""
    return urlunsplit(parts._replace(netloc=hostport)), userinfo


def basic_auth_header(userinfo: str) -> str:
    """`Authorization` for a URL's `user:password` (percent-decoded, latin-1 as Locust and
    requests encode it)."""
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode("latin-1"))
    return "Basic " + token.decode("ascii")
