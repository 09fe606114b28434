"""Generate the JSON schemas of ServiceMonitor and PrometheusRule from prometheus-operator's CRDs.

    python deploy/schemas/prometheus-operator/generate.py

The inputs are the two CRD files next to this script, kept verbatim from the prometheus-operator
repository (SOURCE below names the commit; README.md says how to update them). The conversion is
deploy/schemas/generate.py's, the one the Istio schemas come from (structural schema -> JSON
Schema draft 2020-12: nullable, int-or-string, additionalProperties false unless
preserve-unknown-fields, CEL rules counted and not checked), plus one rewrite of its own: a
pattern's inline flag group such as `^(?i)(abort|warn)?$` moves to the front, `(?i)^(abort|warn)?$`
(the API server's Go RE2 takes flags anywhere, Python's re only at the start: same language).
Not checked either:
`x-kubernetes-list-type: map` (unique keys in a list, e.g. two rule groups of one name); promtool
catches that one for the rules (`promtool check rules`).

Pure conversion (build), I/O in main(). Offline: the CRDs are in the repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPOSITORY = "prometheus-operator/prometheus-operator"
COMMIT = "6adcebc5076c34f4f55f8f5f7b1e528929373ac7"  # v0.93.0-24-g6adcebc50, 2026-08-08
CRD_DIR = "example/prometheus-operator-crd"
#: (group, version, kind, CRD file name): the prometheus-operator kinds deploy/watch/ uses.
KINDS = (
    ("monitoring.coreos.com", "v1", "ServiceMonitor", "monitoring.coreos.com_servicemonitors.yaml"),
    ("monitoring.coreos.com", "v1", "PrometheusRule", "monitoring.coreos.com_prometheusrules.yaml"),
)

Schema = dict[str, Any]


def _istio_generator() -> ModuleType:
    """deploy/schemas/generate.py (a script, not a package): its conversion is reused as is."""
    spec = importlib.util.spec_from_file_location("crd_schema_generator", HERE.parent / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONVERT = _istio_generator()


def source_url(file_name: str) -> str:
    return f"https://github.com/{REPOSITORY}/blob/{COMMIT}/{CRD_DIR}/{file_name}"


def schema_file(group: str, version: str, kind: str) -> str:
    name: str = CONVERT.schema_file(group, version, kind)
    return name


def python_pattern(pattern: str) -> str:
    """A Go RE2 pattern that Python's re accepts: flag groups after a leading `^` go first."""
    match = re.match(r"\^((?:\(\?[a-z]+\))+)", pattern)
    return f"{match.group(1)}^{pattern[match.end() :]}" if match else pattern


def _python_patterns(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: python_pattern(value)
            if key == "pattern" and isinstance(value, str)
            else _python_patterns(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_python_patterns(item) for item in node]
    return node


def build(crd_text: str, group: str, version: str, kind: str, file_name: str) -> Schema:
    """The JSON Schema of one kind from its CRD file's text."""
    crds = [doc for doc in yaml.safe_load_all(crd_text) if doc]
    structural = CONVERT.find_version_schema(crds, group, version, kind)
    schema: Schema = _python_patterns(
        CONVERT.to_json_schema(structural, group, version, kind, source_url(file_name))
    )
    schema["title"] = f"prometheus-operator {kind} ({group}/{version})"
    schema["$comment"] = schema["$comment"].replace(
        "deploy/schemas/generate.py", "deploy/schemas/prometheus-operator/generate.py"
    )
    return schema


def render(schema: Schema) -> str:
    """The file's text, formatted as the Istio schemas are."""
    return json.dumps(schema, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the JSON files")
    args = parser.parse_args(argv)
    for group, version, kind, file_name in KINDS:
        schema = build((HERE / file_name).read_text(encoding="utf-8"), group, version, kind, file_name)
        path = args.out / schema_file(group, version, kind)
        path.write_text(render(schema), encoding="utf-8")
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
