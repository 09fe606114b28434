"""Every summary.json the suite produces is checked against the published schema
(summary.schema.json, issue 11).

After each test that used a temporary folder, the session's temporary tree is scanned for
summary.json files not yet checked (new, or changed since: path, size and mtime), and each is
validated with jsonschema. Module-scoped run folders are covered too: they live in the same
tree. A test that writes a deliberately broken or foreign summary.json (to test the error it
gets) says so with `@pytest.mark.handmade_summary`; its files are then not checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before any test module imports grpc: no gRPC fork handlers in this process, whose test servers
# and exporters run while it forks+execs Envoy and the collector (see loadgen/__init__.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

ROOT = Path(__file__).resolve().parents[1]
_checked: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) already validated or skipped
_validator: Any = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "handmade_summary: the test writes a summary.json that is not loadgen's (a broken or foreign "
        "file); it is not validated against summary.schema.json",
    )


def _summary_validator() -> Any:
    global _validator
    if _validator is None:
        import jsonschema

        schema = json.loads((ROOT / "summary.schema.json").read_text())
        _validator = jsonschema.Draft202012Validator(schema)
    return _validator


def _new_summaries(root: Path) -> list[tuple[Path, tuple[int, int]]]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if "summary.json" in files:
            path = os.path.join(dirpath, "summary.json")
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            if _checked.get(path) != key:
                found.append((Path(path), key))
    return found


def _schema_problems(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        return [f"not readable JSON: {exc}"]
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in _summary_validator().iter_errors(data)
    ][:5]


@pytest.fixture(autouse=True)
def _summaries_match_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not {"tmp_path", "tmp_path_factory", "tmpdir"} & set(request.fixturenames):
        return  # no temporary folder: nothing was written (cheap for the many pure unit tests)
    base = request.getfixturevalue("tmp_path_factory").getbasetemp()
    handmade = request.node.get_closest_marker("handmade_summary") is not None
    problems = []
    for path, key in _new_summaries(base):
        _checked[str(path)] = key
        if handmade:
            continue
        problems += [f"{path}: {p}" for p in _schema_problems(path)]
    assert not problems, "summary.json does not match summary.schema.json:\n" + "\n".join(problems)
