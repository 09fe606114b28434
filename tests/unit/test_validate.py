"""Option checks that click cannot express (issue 10, findings 4 and 9)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadgen.validate import http_url_problem, output_dir_problem


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://[::1", "not a valid URL"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("ftp://example.com", "http:// or https://"),
        ("127.0.0.1:8080", "http:// or https://"),
        ("http://", "no host"),
    ],
)
def test_unusable_urls_are_named(url: str, fragment: str) -> None:
    problem = http_url_problem(url)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9411", "https://u:p@gw.example.com/base", "http://[::1]:80/"]
)
def test_usable_urls_pass(url: str) -> None:
    assert http_url_problem(url) is None


def test_output_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    assert output_dir_problem(f) == "is not a folder"
    assert output_dir_problem(f / "sub") == f"cannot be made: {f} is not a folder"


def test_output_not_writable(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: then the check must say nothing
            assert output_dir_problem(ro / "new") is None
        else:
            assert output_dir_problem(ro / "new") == f"cannot be made: {ro} is not writable"
    finally:
        ro.chmod(0o755)


def test_output_that_can_be_made(tmp_path: Path) -> None:
    assert output_dir_problem(tmp_path / "a" / "b") is None
    assert output_dir_problem(tmp_path) is None
