"""Generate deploy/schemas/*.json from Istio's published CRDs (the openAPIV3Schema of each kind used).

    python deploy/schemas/generate.py --commit SHA            # downloads crd-all.gen.yaml at SHA
    python deploy/schemas/generate.py --commit SHA --crds FILE  # the same file, already on disk

The input is istio/istio's manifests/charts/base/files/crd-all.gen.yaml (every Istio CRD, generated
from istio/api). For each (group, version, kind) in KINDS the version's openAPIV3Schema, a Kubernetes
structural schema, becomes a JSON Schema (draft 2020-12) for the whole object:

- `nullable: true` adds the null type; `x-kubernetes-int-or-string` becomes integer or string;
- an object with `properties` and no `additionalProperties` gets `additionalProperties: false`
  (the API server rejects unknown fields under kubectl's default strict field validation), unless it
  has `x-kubernetes-preserve-unknown-fields`;
- descriptions and the other `x-kubernetes-*` keys are dropped: the CEL rules
  (`x-kubernetes-validations`) are not checked (their number is in each file's `$comment`);
- apiVersion and kind are pinned, metadata is an object (the tests check it as ObjectMeta).

Pure conversion (to_json_schema), I/O in main(). Re-run it when Istio's API changes and commit the
output with the commit it names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

REPOSITORY = "istio/istio"
CRD_PATH = "manifests/charts/base/files/crd-all.gen.yaml"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
OUT = Path(__file__).resolve().parent
#: The Istio kinds deploy/ and docs/clusters.md use: (group, version, kind).
KINDS = (
    ("telemetry.istio.io", "v1", "Telemetry"),
    ("networking.istio.io", "v1", "Gateway"),
    ("networking.istio.io", "v1", "VirtualService"),
)
#: Keys of a structural schema that JSON Schema has with the same meaning.
KEPT = {
    "type", "format", "enum", "default", "required", "pattern",
    "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
}  # fmt: skip
SUBSCHEMA_LISTS = ("oneOf", "anyOf", "allOf")

Schema = dict[str, Any]


def convert(node: Schema) -> Schema:
    """One structural-schema node as JSON Schema (recursive)."""
    out: Schema = {key: value for key, value in node.items() if key in KEPT}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        out["properties"] = {name: convert(sub) for name, sub in node["properties"].items()}
    if "items" in node:
        out["items"] = convert(node["items"])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = convert(extra)
    elif isinstance(extra, bool):
        out["additionalProperties"] = extra
    elif "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    for key in SUBSCHEMA_LISTS:
        if key in node:
            out[key] = [convert(sub) for sub in node[key]]
    if "not" in node:
        out["not"] = convert(node["not"])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def count_cel_rules(node: Any) -> int:
    """How many `x-kubernetes-validations` rules the schema holds (not reproduced here)."""
    if isinstance(node, dict):
        own = len(node.get("x-kubernetes-validations", []))
        return own + sum(count_cel_rules(value) for value in node.values())
    if isinstance(node, list):
        return sum(count_cel_rules(item) for item in node)
    return 0


def find_version_schema(crds: list[Schema], group: str, version: str, kind: str) -> Schema:
    """The openAPIV3Schema of `kind` in `group`/`version` among the CRD documents."""
    for crd in crds:
        spec = crd.get("spec", {}) if crd.get("kind") == "CustomResourceDefinition" else {}
        if spec.get("group") == group and spec.get("names", {}).get("kind") == kind:
            for entry in spec.get("versions", []):
                if entry["name"] == version:
                    schema: Schema = entry["schema"]["openAPIV3Schema"]
                    return schema
    raise LookupError(f"no CRD for {group}/{version} {kind}")


def to_json_schema(structural: Schema, group: str, version: str, kind: str, source: str) -> Schema:
    """The whole object's JSON Schema: apiVersion and kind pinned, metadata an object, the rest converted."""
    body = convert(structural)
    body.setdefault("properties", {})
    api_version = f"{group}/{version}"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:loadgen:schemas:{api_version}:{kind}",
        "title": f"Istio {kind} ({api_version})",
        "$comment": (
            f"Generated by deploy/schemas/generate.py from the openAPIV3Schema of {kind} {version} in "
            f"{source}; do not edit. Not checked: {count_cel_rules(structural)} CEL rules "
            "(x-kubernetes-validations)."
        ),
        **body,
        "required": ["apiVersion", "kind", "metadata", *body.get("required", [])],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
            **body["properties"],
        },
    }


def schema_file(group: str, version: str, kind: str) -> str:
    return f"{group}_{version}_{kind.lower()}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commit", required=True, help=f"{REPOSITORY} commit the CRDs come from")
    parser.add_argument("--crds", type=Path, help=f"{CRD_PATH} at that commit (default: download it)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the JSON files")
    args = parser.parse_args(argv)
    if args.crds:
        text = args.crds.read_text(encoding="utf-8")
    else:
        url = RAW_URL.format(repo=REPOSITORY, commit=args.commit, path=CRD_PATH)
        response = httpx.get(url, timeout=60, follow_redirects=True)
        response.raise_for_status()
        text = response.text
    crds = [doc for doc in yaml.safe_load_all(text) if doc]
    source = f"https://github.com/{REPOSITORY}/blob/{args.commit}/{CRD_PATH}"
    for group, version, kind in KINDS:
        schema = to_json_schema(find_version_schema(crds, group, version, kind), group, version, kind, source)
        path = args.out / schema_file(group, version, kind)
        path.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
