"""docs/clusters.md "Two Istio tracing paths" (issue 12; in the README before issue 13): every YAML
block passes `loadgen doctor`'s Istio checks with no warning and selects the path it documents; its
Telemetry passes the Telemetry schema of deploy/schemas/ (strict); every command line uses flags the
CLI has and a valid --mix."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, cast

import jsonschema
import typer
import yaml
from typer.core import TyperGroup

from loadgen.cli import application
from loadgen.doctor import CheckStatus
from loadgen.doctor.istio import check_istio_tracing
from loadgen.mesh.istio_config import WorkloadMode
from loadgen.mesh.modes import parse_mix

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY_SCHEMA = ROOT / "deploy" / "schemas" / "telemetry.istio.io_v1_telemetry.json"
GATEWAY = {"istio": "ingressgateway"}


def _section() -> str:
    text = (ROOT / "docs" / "clusters.md").read_text(encoding="utf-8")
    start = text.index("## Two Istio tracing paths")
    end = text.index("\n**In-cluster runs**", start)
    return text[start:end]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), re.S)


def _doctor(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "istio.yaml"
    path.write_text(text, encoding="utf-8")
    checks = check_istio_tracing([path], "istio-system", GATEWAY, WorkloadMode.CLIENT)
    return {c.name: c for c in checks}


def test_each_yaml_block_is_one_path_and_passes_the_doctor(tmp_path: Path) -> None:
    zipkin, otel = _blocks("yaml")
    for text, family, expected in (
        (zipkin, "zipkin", {"istio.provider", "istio.zipkin.path", "istio.custom_tags"}),
        (otel, "opentelemetry", {"istio.provider", "istio.otel.protocol", "istio.custom_tags"}),
    ):
        checks = _doctor(tmp_path, text)
        assert set(checks) == expected, checks
        assert all(c.status is CheckStatus.PASS for c in checks.values()), checks
        assert checks["istio.provider"].data["family"] == family
        assert checks["istio.custom_tags"].data == {"run_id_tag": "loadgen.run_id"}
    assert _doctor(tmp_path, otel)["istio.otel.protocol"].data == {"otlp_protocol": "grpc"}
    # The docs' "select otel-tracing-http instead": OTLP/HTTP, and its path passes too.
    http = _doctor(
        tmp_path,
        otel.replace("providers:\n    - name: otel-tracing\n", "providers:\n    - name: otel-tracing-http\n"),
    )
    assert http["istio.otel.protocol"].data == {"otlp_protocol": "http"}
    assert http["istio.otel.http_path"].status is CheckStatus.PASS
    assert all(c.status is CheckStatus.PASS for c in http.values()), http


def test_the_telemetry_resources_pass_the_schema() -> None:
    schema = json.loads(TELEMETRY_SCHEMA.read_text(encoding="utf-8"))
    telemetries = [
        doc
        for text in _blocks("yaml")
        for doc in yaml.safe_load_all(text)
        if doc and doc["kind"] == "Telemetry"
    ]
    assert len(telemetries) == 2
    for doc in telemetries:
        jsonschema.Draft202012Validator(schema).validate(doc)
    broken = json.loads(json.dumps(telemetries[1]))
    broken["spec"]["tracing"][0]["randomSamplingPercentage"] = 150  # the schema really runs
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)


def test_the_command_lines_use_real_flags() -> None:
    root = cast(TyperGroup, typer.main.get_command(application.app))
    lines = [" ".join(part.strip().rstrip("\\") for part in block.splitlines()) for block in _blocks("sh")]
    commands = [c.split("#", 1)[0] for block in lines for c in re.split(r"(?=loadgen )", block) if c.strip()]
    assert len(commands) == 6  # doctor, run, embedded run for each path
    for command in commands:
        args = shlex.split(command)
        assert args[0] == "loadgen", command
        params = root.commands[args[1]].params
        known = {opt for p in params for opt in p.opts + p.secondary_opts}
        flags = [a for a in args[2:] if a.startswith("--")]
        assert set(flags) <= known, (command, set(flags) - known)
        for i, arg in enumerate(args):
            if arg == "--mix":
                assert parse_mix(args[i + 1])
