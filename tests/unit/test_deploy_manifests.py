"""deploy/: the Kubernetes and Istio manifests, validated offline, and their links to loadgen.

No cluster, no container runtime and no network (sockets are blocked while the validators run):
- Kubernetes kinds are validated against the Kubernetes OpenAPI schemas that the
  kubernetes-validate package bundles (strict: unknown fields are errors), for two Kubernetes
  versions;
- Istio kinds against the JSON schemas in deploy/schemas/ (generated from Istio's CRDs by
  deploy/schemas/generate.py, whose conversion is tested here), their metadata against ObjectMeta;
- the Job's script runs with a stand-in `loadgen` on PATH: each pod role's command line parses
  with the real CLI, with the ConfigMap's values, and the master's exit code and stdout pass through;
- cross-references: master Service -> pod 0 of the Job, ConfigMap keys -> loadgen run's flags,
  Telemetry custom tag -> loadgen's run-id header, kustomizations -> files, Dockerfile -> pods.
A few mutations of good manifests must be rejected, which proves the validators really run.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from loadgen.cli.application import app
from loadgen.mesh.headers import DEFAULT_RUN_ID_TAG, RUN_ID_HEADER
from loadgen.mesh.modes import parse_mix

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "schemas"

#: Kubernetes versions whose bundled schemas the manifests must pass (oldest kept, newest shipped).
K8S_VERSIONS = ("1.30.0", "1.37.0")
ISTIO_GROUPS = ("networking.istio.io", "telemetry.istio.io")
#: prometheus-operator's kinds (deploy/watch/): validated by test_deploy_watch.py, against its CRDs.
MONITORING_GROUP = "monitoring.coreos.com"
#: The label the Job controller gives each pod of an Indexed Job (Kubernetes >= 1.28).
INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
#: ConfigMap keys that are not `loadgen run` flags: the Job script's own.
SCRIPT_KEYS = {"REPORT_SERVE_SECONDS"}

Obj = dict[str, Any]


# ------------------------------------------------------------------------------------ loading


def _manifest_files() -> list[Path]:
    # deploy/schemas/ keeps CRD files as data (prometheus-operator's), not objects to apply.
    return sorted(
        p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml" and SCHEMAS not in p.parents
    )


def _load_documents() -> list[tuple[str, Obj]]:
    docs = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.relative_to(DEPLOY).as_posix(), doc))
    return docs


OBJECTS = _load_documents()


def _is_istio(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0] in ISTIO_GROUPS


def _oid(item: tuple[str, Obj]) -> str:
    path, obj = item
    return f"{path}:{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _is_monitoring(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0] == MONITORING_GROUP


K8S_OBJECTS = [item for item in OBJECTS if not _is_istio(item[1]) and not _is_monitoring(item[1])]
ISTIO_OBJECTS = [item for item in OBJECTS if _is_istio(item[1])]


def find(kind: str, name: str) -> Obj:
    matches = [o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name} under deploy/, found {len(matches)}"
    return copy.deepcopy(matches[0])


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def the_container(obj: Obj) -> Obj:
    (container,) = pod_spec(obj)["containers"]
    assert isinstance(container, dict)
    return container


def the_job() -> Obj:
    return find("Job", "loadgen-run")


def run_config() -> dict[str, str]:
    data: dict[str, str] = find("ConfigMap", "loadgen-run")["data"]
    return data


def job_script() -> str:
    c = the_container(the_job())
    assert c["command"] == ["/bin/sh", "-c"]
    (script,) = c["args"]
    assert isinstance(script, str)
    return script


# ------------------------------------------------------------------------------------ validators


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any connection or name lookup while validating fails the test: the schemas are local."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("network access during manifest validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def validate_k8s(obj: Obj, version: str) -> None:
    """Strict validation against the bundled Kubernetes schemas; an unknown kind is an error."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise AssertionError(f"no Kubernetes schema: {exc.message}") from None


def _istio_schema_path(obj: Obj) -> Path:
    group, version = obj["apiVersion"].split("/")
    return SCHEMAS / f"{group}_{version}_{obj['kind'].lower()}.json"


def validate_istio(obj: Obj) -> None:
    path = _istio_schema_path(obj)
    assert path.is_file(), f"no schema {path.relative_to(REPO)} for {obj['apiVersion']} {obj['kind']}"
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(obj)
    # ObjectMeta (name syntax, label value types, ...) with the Kubernetes schema: a ConfigMap
    # that has nothing but this metadata is valid exactly when the metadata is.
    validate_k8s({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, K8S_VERSIONS[-1])


DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(rf"{DNS1123_LABEL.pattern}(\.{DNS1123_LABEL.pattern})*")


def check_names(obj: Obj) -> None:
    """Name syntax, which the OpenAPI schemas leave to the API server: DNS-1123 labels for
    Namespace and Service names and for every namespace reference, DNS-1123 subdomains otherwise."""
    meta = obj.get("metadata", {})
    is_label = obj.get("kind") in ("Namespace", "Service")
    checks = [(meta.get("name"), DNS1123_LABEL if is_label else DNS1123_SUBDOMAIN, 63 if is_label else 253)]
    if "namespace" in meta:
        checks.append((meta["namespace"], DNS1123_LABEL, 63))
    for value, pattern, limit in checks:
        if not (isinstance(value, str) and len(value) <= limit and pattern.fullmatch(value)):
            raise jsonschema.ValidationError(f"{value!r} is not a valid {obj.get('kind')} name or namespace")


def validate_any(obj: Obj) -> None:
    check_names(obj)
    if _is_istio(obj):
        validate_istio(obj)
    else:
        validate_k8s(obj, K8S_VERSIONS[0])


def test_manifests_were_found() -> None:
    kinds = sorted({o["kind"] for _, o in OBJECTS})
    assert kinds == sorted(
        ["ConfigMap", "Gateway", "Job", "Namespace", "Service", "Telemetry", "VirtualService"]
        + ["Deployment", "PersistentVolumeClaim", "PrometheusRule", "ServiceMonitor"]  # deploy/watch/
    )


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", K8S_OBJECTS, ids=_oid)
def test_kubernetes_object_is_valid(item: tuple[str, Obj], version: str) -> None:
    check_names(item[1])
    validate_k8s(item[1], version)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("item", ISTIO_OBJECTS, ids=_oid)
def test_istio_object_is_valid(item: tuple[str, Obj]) -> None:
    check_names(item[1])
    validate_istio(item[1])


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_istio_schemas_are_valid_json_schemas(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


# --------------------------------------------------------------------------- schema generator


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("istio_schema_generator", SCHEMAS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _generator()


def test_generator_converts_structural_schema_rules() -> None:
    structural = {
        "type": "object",
        "description": "dropped",
        "properties": {
            "rate": {"type": "number", "nullable": True, "maximum": 100, "format": "double"},
            "mode": {"type": "string", "enum": ["A", "B"], "nullable": True},
            "port": {"x-kubernetes-int-or-string": True},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "one": {
                "type": "object",
                "oneOf": [{"required": ["x"]}, {"required": ["y"]}],
                "properties": {"x": {"type": "string"}, "y": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": "self.x != ''"}],
            },
        },
        "x-kubernetes-validations": [{"rule": "a"}, {"rule": "b"}],
    }
    got = GENERATE.convert(structural)
    assert "description" not in got and "x-kubernetes-validations" not in got
    assert got["additionalProperties"] is False
    assert got["properties"]["rate"] == {"type": ["number", "null"], "maximum": 100, "format": "double"}
    assert got["properties"]["mode"]["enum"] == ["A", "B", None]
    assert got["properties"]["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert "additionalProperties" not in got["properties"]["free"]
    assert got["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert got["properties"]["one"]["oneOf"] == [{"required": ["x"]}, {"required": ["y"]}]
    assert GENERATE.count_cel_rules(structural) == 3
    schema = GENERATE.to_json_schema(structural, "g.io", "v1", "Thing", "SOURCE")
    check = jsonschema.Draft202012Validator(schema)
    assert check.is_valid({"apiVersion": "g.io/v1", "kind": "Thing", "metadata": {}, "rate": None, "port": 8})
    for bad in (
        {"apiVersion": "g.io/v1beta1", "kind": "Thing", "metadata": {}},
        {"apiVersion": "g.io/v1", "kind": "Thing"},
        {"apiVersion": "g.io/v1", "kind": "Thing", "metadata": {}, "rate": "10"},
        {"apiVersion": "g.io/v1", "kind": "Thing", "metadata": {}, "one": {"x": "a", "y": "b"}},
        {"apiVersion": "g.io/v1", "kind": "Thing", "metadata": {}, "unknown": 1},
    ):
        assert not check.is_valid(bad), bad
    assert "SOURCE" in schema["$comment"] and "3 CEL rules" in schema["$comment"]


def test_schemas_are_the_generators_output_for_one_istio_commit() -> None:
    files = sorted(p.name for p in SCHEMAS.glob("*.json"))
    assert files == sorted(GENERATE.schema_file(*kind) for kind in GENERATE.KINDS)
    commits = set()
    for path in SCHEMAS.glob("*.json"):
        comment = json.loads(path.read_text(encoding="utf-8"))["$comment"]
        found = re.search(
            r"https://github\.com/istio/istio/blob/([0-9a-f]{40})/" + GENERATE.CRD_PATH, comment
        )
        assert found and comment.startswith("Generated by deploy/schemas/generate.py"), path.name
        commits.add(found.group(1))
    (commit,) = commits  # one Istio commit for all of them, named in both READMEs
    for readme in (SCHEMAS / "README.md", DEPLOY / "README.md"):
        assert commit in readme.read_text(encoding="utf-8"), readme


def _set(path: str | tuple[str | int, ...], value: Any) -> Callable[[Obj], None]:
    """A mutation that sets a dotted path (digits index lists; a tuple when a key has dots);
    value DELETE removes the key."""
    keys = path if isinstance(path, tuple) else tuple(int(p) if p.isdigit() else p for p in path.split("."))

    def mutate(obj: Obj) -> None:
        node: Any = obj
        for key in keys[:-1]:
            node = node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return mutate


DELETE = object()
C0 = "spec.template.spec.containers.0"
# (kind, name, what is broken, the mutation, what the rejection must say)
# fmt: off
BROKEN = [
    ("Job", "loadgen-run", "completions as a string", _set("spec.completions", "3"),
     "spec.completions: '3' is not of type 'integer'"),
    ("Job", "loadgen-run", "misspelt container field", _set(f"{C0}.imagePulPolicy", "Always"),
     "'imagePulPolicy' was unexpected"),
    ("Job", "loadgen-run", "port without a number", _set(f"{C0}.ports.0.containerPort", DELETE),
     "ports.0: 'containerPort' is a required property"),
    ("Job", "loadgen-run", "runAsNonRoot not a boolean",
     _set("spec.template.spec.securityContext.runAsNonRoot", "yes"),
     "runAsNonRoot: 'yes' is not of type 'boolean'"),
    ("Job", "loadgen-run", "unknown field in the Job spec", _set("spec.retries", 3),
     "'retries' was unexpected"),
    ("ConfigMap", "loadgen-run", "a value that is not a string", _set("data.LOADGEN_EXPECT", 10),
     "data.LOADGEN_EXPECT: 10 is not of type 'string'"),
    ("Service", "loadgen-master", "port number as a string", _set("spec.ports.0.port", "5557"),
     "spec.ports.0.port: '5557' is not of type 'integer'"),
    ("Service", "loadgen-master", "Service name with a dot", _set("metadata.name", "loadgen.master"),
     "'loadgen.master' is not a valid Service name"),
    ("Namespace", "loadgen", "label value not a string", _set("metadata.labels.istio-injection", False),
     "labels.istio-injection: False is not of type 'string'"),
    ("Telemetry", "mesh-default", "sampling above 100", _set("spec.tracing.0.randomSamplingPercentage", 150),
     "randomSamplingPercentage: 150 is greater than the maximum of 100"),
    ("Telemetry", "mesh-default", "sampling as a string", _set("spec.tracing.0.randomSamplingPercentage", "10"),
     "randomSamplingPercentage: '10' is not of type"),
    ("Telemetry", "mesh-default", "header tag without a name",
     _set(("spec", "tracing", 0, "customTags", DEFAULT_RUN_ID_TAG, "header", "name"), DELETE),
     "header: 'name' is a required property"),
    ("Telemetry", "mesh-default", "misspelt tracing field", _set("spec.tracing.0.customTag", {}),
     "'customTag' was unexpected"),
    ("Telemetry", "mesh-default", "metadata name not DNS-1123", _set("metadata.name", "Mesh_Default"),
     "'Mesh_Default' is not a valid Telemetry name"),
    ("Gateway", "coolstore-gateway", "port number as a string", _set("spec.servers.0.port.number", "80"),
     "port.number: '80' is not of type 'integer'"),
    ("Gateway", "coolstore-gateway", "server without hosts", _set("spec.servers.0.hosts", DELETE),
     "spec.servers.0: 'hosts' is a required property"),
    ("VirtualService", "thin-httbin-virtualservice", "misspelt route list", _set("spec.http.0.routes", []),
     "'routes' was unexpected"),
    ("VirtualService", "thin-httbin-virtualservice", "destination without host",
     _set("spec.http.0.route.0.destination.host", DELETE),
     "destination: 'host' is a required property"),
]
# fmt: on


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(("kind", "name", "label", "mutate", "reason"), BROKEN, ids=[b[2] for b in BROKEN])
def test_validators_reject_broken_manifests(
    kind: str, name: str, label: str, mutate: Callable[[Obj], None], reason: str
) -> None:
    good = find(kind, name)
    validate_any(good)
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError) as rejected:
        validate_any(bad)
    where = ".".join(str(p) for p in rejected.value.absolute_path)
    assert reason in f"{where}: {rejected.value.message}"  # rejected for this reason, not another


# --------------------------------------------------------------------------- the Job's script


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A `loadgen` and a `timeout` that record their argv (one line per call, NUL-separated
    arguments); `loadgen run` prints FAKE_JSON on stdout and exits FAKE_CODE."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (
        ("loadgen", 'if [ "$1" = run ]; then printf "%s\\n" "$FAKE_JSON"; exit "$FAKE_CODE"; fi'),
        ("timeout", ""),
    ):
        script = bin_dir / name
        script.write_text(
            f'#!/bin/sh\nprintf "{name}" >> "$CALLS"\nfor a in "$@"; do printf "\\0%s" "$a" >> "$CALLS"; done\n'
            f'echo >> "$CALLS"\n{body}\n',
            encoding="utf-8",
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_script(
    fake_bin: Path, index: int, overrides: dict[str, str] | None = None, code: int = 0
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """The Job's script in one pod: the ConfigMap as its environment (envFrom), the index the Job
    controller sets; returns the finished shell and each recorded call's argv."""
    calls = fake_bin.parent / f"calls-{index}"
    env = {
        "PATH": f"{fake_bin}{os.pathsep}/usr/bin{os.pathsep}/bin",
        **run_config(),
        **(overrides or {}),
        "JOB_COMPLETION_INDEX": str(index),
        "CALLS": str(calls),
        "FAKE_JSON": '{"run_id": "fake"}',
        "FAKE_CODE": str(code),
    }
    done = subprocess.run(
        ["/bin/sh", "-c", job_script()], env=env, capture_output=True, text=True, timeout=30
    )
    lines = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    return done, [line.split("\0") for line in lines]


def parse_cli(argv: list[str]) -> dict[str, Any]:
    """argv (after `loadgen`) parsed by the real CLI, as click does before running it."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    name, *args = argv
    with group.commands[name].make_context(name, args) as ctx:
        return dict(ctx.params)


def test_job_master_runs_loadgen_run_with_the_configmap(
    fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./loadgen.toml in the way of parsing
    config = run_config()
    done, calls = run_script(fake_bin, 0, code=3)
    assert done.returncode == 3  # the Job ends Failed with the run's exit code (3: inconclusive)
    assert done.stdout == '{"run_id": "fake"}\n'  # stdout is the summary JSON and nothing else
    (run, serve) = calls
    assert run[:2] == ["loadgen", "run"]
    params = parse_cli(run[1:])
    assert params["master"] is True and params["as_json"] is True
    assert params["expect_workers"] == int(config["LOADGEN_EXPECT_WORKERS"])
    assert str(params["output"]) == "/reports"
    for key, value in config.items():
        if key in SCRIPT_KEYS or key == "LOADGEN_EXPECT_WORKERS":
            continue
        param = key.removeprefix("LOADGEN_").lower()
        assert param in params, f"{key}: loadgen run has no --{param.replace('_', '-')}"
        flag = "--" + param.replace("_", "-")
        if value:
            assert run[run.index(flag) + 1] == value, key
        else:
            assert flag not in run, f"{key} is empty: the flag must be left out"
    assert serve[0] == "timeout" and serve[1] == config["REPORT_SERVE_SECONDS"]
    assert serve[2:] == ["python", "-m", "http.server", "8000", "--directory", "/reports"]
    assert "exited 3" in done.stderr


def test_job_without_serving_ends_with_the_run(fake_bin: Path) -> None:
    done, calls = run_script(fake_bin, 0, {"REPORT_SERVE_SECONDS": "0", "LOADGEN_EXPECT": ""})
    assert done.returncode == 0
    assert [c[0] for c in calls] == ["loadgen"] and "--expect" not in calls[0]


def test_job_workers_connect_to_the_master_service(
    fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done, calls = run_script(fake_bin, 2)
    assert done.returncode == 0 and done.stdout == ""
    ((_, *argv),) = calls
    params = parse_cli(argv)
    assert argv[0] == "worker"
    service = find("Service", "loadgen-master")
    assert params["master_host"] == service["metadata"]["name"]
    (master_port,) = [p for p in service["spec"]["ports"] if p["targetPort"] == "master"]
    assert params["master_port"] == master_port["port"]
    _, (run, _) = run_script(fake_bin, 0)
    assert run[run.index("--master-bind-port") + 1] == str(master_port["port"])


def test_job_runs_one_master_and_the_expected_workers() -> None:
    job = the_job()
    spec = job["spec"]
    workers = int(run_config()["LOADGEN_EXPECT_WORKERS"])
    assert workers >= 1
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == workers + 1
    assert spec["backoffLimit"] == 0  # a retried master would start a second run
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert the_container(job)["envFrom"] == [{"configMapRef": {"name": "loadgen-run"}}]


def test_master_service_selects_pod_0_only() -> None:
    service = find("Service", "loadgen-master")
    selector = service["spec"]["selector"]
    labels = the_job()["spec"]["template"]["metadata"]["labels"]
    for index in range(the_job()["spec"]["completions"]):
        pod_labels = {**labels, INDEX_LABEL: str(index)}
        assert all(pod_labels.get(k) == v for k, v in selector.items()) == (index == 0), index
    ports = {p["name"]: p["containerPort"] for p in the_container(the_job())["ports"]}
    for port in service["spec"]["ports"]:
        assert ports[port["targetPort"]] == port["port"], port
    assert service["metadata"]["namespace"] == the_job()["metadata"]["namespace"]


def test_configmap_targets_the_istio_examples() -> None:
    config = run_config()
    vs = find("VirtualService", "thin-httbin-virtualservice")
    gateway = find("Gateway", "coolstore-gateway")
    assert config["LOADGEN_HOST"] in vs["spec"]["hosts"]
    assert any(config["LOADGEN_HOST"] in s["hosts"] for s in gateway["spec"]["servers"])
    assert vs["spec"]["gateways"] == [gateway["metadata"]["name"]]
    telemetry = find("Telemetry", "mesh-default")
    assert float(config["LOADGEN_EXPECT"]) == telemetry["spec"]["tracing"][0]["randomSamplingPercentage"]
    if config["LOADGEN_MIX"]:
        parse_mix(config["LOADGEN_MIX"])
    assert set(re.findall(r"\$\{?([A-Z_]+)", job_script())) - {"JOB_COMPLETION_INDEX", "code"} == set(config)


def test_reports_are_on_a_writable_volume() -> None:
    job = the_job()
    (mount,) = [m for m in the_container(job)["volumeMounts"] if m["mountPath"] == "/reports"]
    assert not mount.get("readOnly", False)
    volume = {v["name"]: v for v in pod_spec(job)["volumes"]}[mount["name"]]
    assert "emptyDir" in volume


# --------------------------------------------------------------------------- pods and image


def test_pods_are_hardened() -> None:
    job = the_job()
    spec = pod_spec(job)
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels.get("sidecar.istio.io/inject") == "false"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    assert spec.get("enableServiceLinks") is False  # no LOADGEN_MASTER_* service variables
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    assert {v["name"] for v in spec["volumes"]} == {m["name"] for m in c["volumeMounts"]}
    assert all("emptyDir" in v for v in spec["volumes"])  # the "restricted" Pod Security Standard


def test_namespace_disables_sidecar_injection() -> None:
    ns = find("Namespace", "loadgen")
    assert ns["metadata"]["labels"]["istio-injection"] == "disabled"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for _, obj in OBJECTS:
        if not _is_istio(obj) and obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "loadgen", _oid(("", obj))


def test_dockerfile_builds_the_image_the_pods_run_without_the_mesh_extra() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    installs = [ln for ln in lines if ln.startswith("RUN") and "pip install" in ln]
    assert installs and not any("mesh" in ln or "envoy" in ln or "[" in ln for ln in installs), installs
    for ln in lines:
        if ln.startswith("COPY"):
            for src in ln.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    (user,) = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert pod_spec(the_job())["securityContext"]["runAsUser"] == int(user.split(":")[0])
    kustomization = yaml.safe_load((DEPLOY / "run" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert the_container(the_job())["image"].split(":")[0] in {i["name"] for i in kustomization["images"]}


def test_build_script_builds_that_dockerfile() -> None:
    script = DEPLOY / "build-image.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    assert subprocess.run(["/bin/sh", "-n", str(script)], check=False).returncode == 0
    assert '-f "$root/deploy/Dockerfile"' in script.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- Istio examples


def test_telemetry_tags_spans_with_loadgens_run_id() -> None:
    telemetries = [o for _, o in OBJECTS if o["kind"] == "Telemetry"]
    assert telemetries
    for tel in telemetries:
        for tracing in tel["spec"]["tracing"]:
            assert 0 <= tracing["randomSamplingPercentage"] <= 100
            assert tracing["customTags"][DEFAULT_RUN_ID_TAG] == {"header": {"name": RUN_ID_HEADER}}
    mesh = find("Telemetry", "mesh-default")
    assert mesh["metadata"]["namespace"] == "istio-system"  # root namespace: mesh-wide, gateway included
    assert "selector" not in mesh["spec"] and "targetRefs" not in mesh["spec"]
    namespaces = [t["metadata"]["namespace"] for t in telemetries]
    assert len(namespaces) == len(set(namespaces)), "one selector-less Telemetry per namespace"


# --------------------------------------------------------------------------- kustomize


def _kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


@pytest.mark.parametrize(
    "directory", _kustomization_dirs(), ids=lambda p: p.relative_to(DEPLOY).as_posix() or "."
)
def test_kustomization_lists_every_file(directory: Path) -> None:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    listed_files = set()
    for entry in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
        target = (directory / entry).resolve()
        assert target.exists(), f"{entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry} is not a kustomization"
        else:
            listed_files.add(target.name)
    present = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed_files == present


def test_every_manifest_belongs_to_a_kustomization() -> None:
    covered = set()
    for directory in _kustomization_dirs():
        k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
        for entry in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
            covered.add((directory / entry).resolve())
    assert {p.resolve() for p in _manifest_files()} <= covered


KUSTOMIZE_BUILDS = {
    ".": {("Job", "loadgen-run"), ("Service", "loadgen-master"), ("ConfigMap", "loadgen-run")},
    "istio": {("Telemetry", "mesh-default"), ("Gateway", "coolstore-gateway")},
}


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed"
)
@pytest.mark.parametrize("build", sorted(KUSTOMIZE_BUILDS))
def test_kubectl_kustomize_renders_valid_objects(build: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / build)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert KUSTOMIZE_BUILDS[build] <= names
    for obj in rendered:
        validate_any(obj)


def test_deploy_readme_mentions_only_existing_paths() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    # Paths written as code (`deploy/...`), and the directories given to `kubectl apply -k`.
    paths = set(re.findall(r"`(deploy/[\w./-]*)`", text)) | set(
        re.findall(r"apply -k (deploy/[\w./-]*)", text)
    )
    assert paths
    for p in paths:
        assert (REPO / p).exists(), p
