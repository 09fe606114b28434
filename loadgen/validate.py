"""Checks of option values that click's types cannot express: a URL that httpx can use, an
output folder loadgen can write. Each returns the problem as text (None when the value is fine),
so the CLI words the error and this module stays free of printing and exiting."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx

__all__ = ["http_url_problem", "output_dir_problem"]


def http_url_problem(value: str) -> str | None:
    """Why `value` is not an http(s)://HOST[:PORT][/PATH] URL, or None. Checked before any work
    starts, so `http://[::1` is a bad option, not a crash halfway through a run."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  urlsplit parses the port lazily; a bad one raises here
        url = httpx.URL(value)
    except (ValueError, httpx.InvalidURL) as exc:
        return f"not a valid URL ({exc})"
    if url.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not url.host:
        return "has no host"
    return None


def output_dir_problem(path: Path) -> str | None:
    """Why no run folder can be made under `path`, or None: it exists and is not a folder, or the
    nearest folder that exists is not writable."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return "cannot be made: no parent folder exists"
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot be made: {probe} is not a folder" if probe != path else "is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot be made: {probe} is not writable" if probe != path else "is not writable"
    return None
