"""deploy/: the Kubernetes and Istio manifests, validated offline, and their links to loadgen.

No cluster and no network (sockets are blocked while the validators run):
- Kubernetes kinds are validated against the Kubernetes OpenAPI schemas that the
  kubernetes-validate package bundles (strict: unknown fields are errors), for two Kubernetes
  versions;
- Istio kinds against the JSON schemas in deploy/schemas/ (hand-written from Istio's CRDs, see
  deploy/schemas/README.md), their metadata against Kubernetes' ObjectMeta;
- cross-references: worker -> master Service, env names -> what loadgen reads, Telemetry custom
  tag -> loadgen's run-id header and tag, kustomizations -> files, Dockerfile -> pods.
A few mutations of good manifests must be rejected, which proves the validators really run.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from loadgen.mesh.headers import DEFAULT_RUN_ID_TAG, RUN_ID_HEADER
from loadgen.mesh.modes import parse_mix

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "schemas"
USER_PY = REPO / "loadgen" / "traffic" / "user.py"
MESH_SCENARIO = REPO / "scenarios" / "mesh.py"

#: Kubernetes versions whose bundled schemas the manifests must pass (oldest kept, newest shipped).
K8S_VERSIONS = ("1.30.0", "1.37.0")
ISTIO_GROUPS = ("networking.istio.io", "telemetry.istio.io")
GATEWAY_URL = "http://istio-ingressgateway.istio-system"
LOADGEN_ENV_REQUIRED = {
    "LOADGEN_RUN_ID",
    "LOADGEN_MIX",
    "LOADGEN_RATE",
    "LOADGEN_HOST_HEADER",
    "LOADGEN_LEDGER",
}

Obj = dict[str, Any]


# ------------------------------------------------------------------------------------ loading


def _manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def _load_documents() -> list[tuple[str, Obj]]:
    docs = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path.relative_to(DEPLOY).as_posix(), doc))
    return docs


DOCS = _load_documents()
#: Whole objects (kustomize patches such as `$patch: delete` are not objects of their own).
OBJECTS = [(f, d) for f, d in DOCS if "$patch" not in d]
PATCHES = [(f, d) for f, d in DOCS if "$patch" in d]


def _is_istio(obj: Obj) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0] in ISTIO_GROUPS


def _oid(item: tuple[str, Obj]) -> str:
    path, obj = item
    return f"{path}:{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


K8S_OBJECTS = [item for item in OBJECTS if not _is_istio(item[1])]
ISTIO_OBJECTS = [item for item in OBJECTS if _is_istio(item[1])]


def find(kind: str, name: str) -> Obj:
    matches = [o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name} under deploy/, found {len(matches)}"
    return copy.deepcopy(matches[0])


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def locust_container(obj: Obj) -> Obj:
    containers = [c for c in pod_spec(obj)["containers"] if c["name"] == "locust"]
    assert len(containers) == 1
    return containers[0]


def workloads() -> list[Obj]:
    """Every object that runs Locust: master Deployment, worker Deployment, headless master Job."""
    return [copy.deepcopy(o) for _, o in OBJECTS if o["kind"] in ("Deployment", "Job")]


def flag(args: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value` in a container's args (None if absent)."""
    for i, arg in enumerate(args):
        if arg == name:
            nxt = args[i + 1] if i + 1 < len(args) else ""
            return "" if nxt.startswith("-") else nxt
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def container_env(obj: Obj) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom ConfigMaps, then env."""
    c = locust_container(obj)
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        env.update(find("ConfigMap", src["configMapRef"]["name"])["data"])
    for var in c.get("env", []):
        env[var["name"]] = var.get("value", "")
    return env


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
        ["ConfigMap", "Deployment", "Gateway", "Job", "Namespace", "Service", "Telemetry", "VirtualService"]
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
    ("Deployment", "loadgen-worker", "replicas as a string", _set("spec.replicas", "2"),
     "spec.replicas: '2' is not of type 'integer'"),
    ("Deployment", "loadgen-worker", "misspelt container field", _set(f"{C0}.imagePulPolicy", "Always"),
     "'imagePulPolicy' was unexpected"),
    ("Deployment", "loadgen-worker", "env value not a string", _set(f"{C0}.env.0.value", 1),
     "env.0.value: 1 is not of type 'string'"),
    ("Deployment", "loadgen-master", "probe without port", _set(f"{C0}.readinessProbe.httpGet.port", DELETE),
     "readinessProbe.httpGet: 'port' is a required property"),
    ("Deployment", "loadgen-master", "runAsNonRoot not a boolean",
     _set("spec.template.spec.securityContext.runAsNonRoot", "yes"),
     "runAsNonRoot: 'yes' is not of type 'boolean'"),
    ("Service", "loadgen-master", "port number as a string", _set("spec.ports.0.port", "5557"),
     "spec.ports.0.port: '5557' is not of type 'integer'"),
    ("Service", "loadgen-master", "Service name with a dot", _set("metadata.name", "loadgen.master"),
     "'loadgen.master' is not a valid Service name"),
    ("Job", "loadgen-master-headless", "unknown field in the Job spec", _set("spec.retries", 3),
     "'retries' was unexpected"),
    ("Namespace", "loadgen", "label value not a string", _set("metadata.labels.istio-injection", False),
     "labels.istio-injection: False is not of type 'string'"),
    ("Telemetry", "mesh-default", "sampling above 100", _set("spec.tracing.0.randomSamplingPercentage", 150),
     "randomSamplingPercentage: 150 is greater than the maximum of 100"),
    ("Telemetry", "mesh-default", "sampling as a string", _set("spec.tracing.0.randomSamplingPercentage", "10"),
     "randomSamplingPercentage: '10' is not of type 'number'"),
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


# ------------------------------------------------------------------------------------ Locust wiring


@pytest.fixture(scope="module")
def locust_help() -> str:
    """`locust --help` of the installed Locust, in a child process (import locust patches gevent)."""
    out = subprocess.run(
        [sys.executable, "-m", "locust", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def test_every_locust_flag_in_the_manifests_exists(locust_help: str) -> None:
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", locust_help))
    for obj in workloads():
        c = locust_container(obj)
        assert c["command"] == ["locust"]
        used = {a.split("=", 1)[0] for a in c["args"] if a.startswith("--")}
        assert used, obj["metadata"]["name"]
        assert used <= known, f"{obj['metadata']['name']}: not Locust flags: {sorted(used - known)}"


def test_workers_connect_to_the_master_service() -> None:
    worker = find("Deployment", "loadgen-worker")
    service = find("Service", "loadgen-master")
    args = locust_container(worker)["args"]
    assert "--worker" in args
    host = flag(args, "--master-host")
    ns = service["metadata"]["namespace"]
    assert host in (
        service["metadata"]["name"],
        f"{service['metadata']['name']}.{ns}",
        f"{service['metadata']['name']}.{ns}.svc",
    )
    assert worker["metadata"]["namespace"] == ns
    port = int(flag(args, "--master-port") or 5557)
    (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    for master in (find("Deployment", "loadgen-master"), find("Job", "loadgen-master-headless")):
        c = locust_container(master)
        assert "--master" in c["args"]
        assert int(flag(c["args"], "--master-bind-port") or 5557) == port
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports[svc_port["targetPort"]] == port


def test_master_service_selects_the_masters_and_not_the_workers() -> None:
    selector = find("Service", "loadgen-master")["spec"]["selector"]

    def selected(obj: Obj) -> bool:
        labels = obj["spec"]["template"]["metadata"]["labels"]
        return all(labels.get(k) == v for k, v in selector.items())

    assert selected(find("Deployment", "loadgen-master"))
    assert selected(find("Job", "loadgen-master-headless"))
    assert not selected(find("Deployment", "loadgen-worker"))
    web = [p for p in find("Service", "loadgen-master")["spec"]["ports"] if p["port"] == 8089]
    assert web and web[0]["targetPort"] == "web"


def test_deployment_selectors_match_their_pod_labels() -> None:
    for obj in workloads():
        if obj["kind"] == "Deployment":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert find("Deployment", "loadgen-master")["spec"]["replicas"] == 1


def test_master_targets_the_ingress_gateway() -> None:
    for master in (find("Deployment", "loadgen-master"), find("Job", "loadgen-master-headless")):
        assert flag(locust_container(master)["args"], "--host") == GATEWAY_URL


def test_master_web_ui_has_probes() -> None:
    c = locust_container(find("Deployment", "loadgen-master"))
    assert flag(c["args"], "--web-port") == "8089"
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["web"] == 8089
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "web", probe


def test_headless_master_expects_every_worker() -> None:
    args = locust_container(find("Job", "loadgen-master-headless"))["args"]
    assert "--headless" in args
    workers = find("Deployment", "loadgen-worker")["spec"]["replicas"]
    assert int(flag(args, "--expect-workers") or 0) == workers
    assert int(flag(args, "--users") or 0) >= workers
    assert flag(args, "--spawn-rate") and flag(args, "--run-time")
    assert find("Job", "loadgen-master-headless")["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_headless_overlay_deletes_an_existing_object() -> None:
    assert PATCHES, "headless/ replaces the master Deployment with a $patch: delete"
    for _, patch in PATCHES:
        assert patch["$patch"] == "delete"
        target = find(patch["kind"], patch["metadata"]["name"])
        assert target["apiVersion"] == patch["apiVersion"]
        assert target["metadata"]["namespace"] == patch["metadata"]["namespace"]


# ------------------------------------------------------------------------------------ loadgen options


def loadgen_env_vars() -> set[str]:
    """LOADGEN_* names loadgen/traffic/user.py reads: env_var= of its Locust options, os.environ."""
    names = set()
    for node in ast.walk(ast.parse(USER_PY.read_text(encoding="utf-8"))):
        if isinstance(node, ast.keyword) and node.arg == "env_var" and isinstance(node.value, ast.Constant):
            assert isinstance(node.value.value, str), ast.dump(node)
            names.add(node.value.value)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("LOADGEN_")
        ):
            names.add(node.value)
    return names


def test_loadgen_reads_the_variables_we_set() -> None:
    known = loadgen_env_vars()
    assert known >= LOADGEN_ENV_REQUIRED, "loadgen/traffic/user.py no longer reads one of them"
    for obj in workloads():
        env = container_env(obj)
        ours = {k for k in env if k.startswith("LOADGEN_")}
        assert ours <= known, f"{obj['metadata']['name']}: loadgen does not read {sorted(ours - known)}"
        assert ours >= LOADGEN_ENV_REQUIRED, obj["metadata"]["name"]


def test_master_and_workers_share_the_loadgen_options() -> None:
    # The master's values override the workers' (Locust sends its custom options with each spawn).
    envs = [{k: v for k, v in container_env(o).items() if k.startswith("LOADGEN_")} for o in workloads()]
    assert all(e == envs[0] for e in envs)


def test_loadgen_option_values_are_valid() -> None:
    env = container_env(find("Deployment", "loadgen-worker"))
    # Empty would let every worker make up its own run id; it is also a folder name.
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", env["LOADGEN_RUN_ID"])
    parse_mix(env["LOADGEN_MIX"])
    assert float(env["LOADGEN_RATE"]) >= 0
    vs = find("VirtualService", "thin-httbin-virtualservice")
    assert env["LOADGEN_HOST_HEADER"] in vs["spec"]["hosts"]
    gateway = find("Gateway", "coolstore-gateway")
    assert any(env["LOADGEN_HOST_HEADER"] in s["hosts"] for s in gateway["spec"]["servers"])
    assert vs["spec"]["gateways"] == [gateway["metadata"]["name"]]
    assert vs["metadata"]["namespace"] == gateway["metadata"]["namespace"]


def test_ledger_is_on_a_writable_volume_of_every_pod() -> None:
    for obj in workloads():
        ledger = Path(container_env(obj)["LOADGEN_LEDGER"])
        assert ledger.is_absolute()
        volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
        mounts = [
            m
            for m in locust_container(obj)["volumeMounts"]
            if ledger.is_relative_to(m["mountPath"]) and not m.get("readOnly", False)
        ]
        assert mounts, f"{obj['metadata']['name']}: {ledger} is not on a writable mount"
        volume = volumes[mounts[0]["name"]]
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume


def test_locustfile_comes_from_the_configmap_and_matches_the_scenario() -> None:
    cm = find("ConfigMap", "loadgen-locustfile")
    (key,) = cm["data"]
    for obj in workloads():
        c = locust_container(obj)
        locustfile = Path(flag(c["args"], "--locustfile") or "")
        (mount,) = [m for m in c["volumeMounts"] if locustfile.parent == Path(m["mountPath"])]
        assert mount.get("readOnly") is True
        volume = {v["name"]: v for v in pod_spec(obj)["volumes"]}[mount["name"]]
        assert volume["configMap"]["name"] == cm["metadata"]["name"]
        assert locustfile.name == key

    def code(source: str) -> list[str]:
        body = ast.parse(source).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring may differ
        return [ast.dump(node) for node in body]

    assert code(cm["data"][key]) == code(MESH_SCENARIO.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ pod hardening


def test_pods_are_hardened() -> None:
    for obj in workloads():
        name = obj["metadata"]["name"]
        spec = pod_spec(obj)
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert labels.get("sidecar.istio.io/inject") == "false", name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("enableServiceLinks") is False, name  # no LOADGEN_MASTER_* service variables
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name
        assert {v["name"] for v in spec["volumes"]} == {
            m["name"] for m in locust_container(obj)["volumeMounts"]
        }


def test_namespace_disables_sidecar_injection() -> None:
    ns = find("Namespace", "loadgen")
    assert ns["metadata"]["labels"]["istio-injection"] == "disabled"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for _, obj in OBJECTS:
        if not _is_istio(obj) and obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "loadgen", _oid(("", obj))


def test_dockerfile_builds_the_image_the_pods_run() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any("pip install ." in ln for ln in lines if ln.startswith("RUN"))
    for ln in lines:
        if ln.startswith("COPY"):
            for src in ln.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    (user,) = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    uid = int(user.split(":")[0])
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    image_names = {i["name"] for i in kustomization.get("images", [])}
    for obj in workloads():
        assert pod_spec(obj)["securityContext"]["runAsUser"] == uid
        image = locust_container(obj)["image"]
        assert image.split(":")[0] in image_names, image


# ------------------------------------------------------------------------------------ Istio examples


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


# ------------------------------------------------------------------------------------ kustomize


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
    ".": {("Deployment", "loadgen-master"), ("Deployment", "loadgen-worker"), ("Service", "loadgen-master")},
    "headless": {
        ("Job", "loadgen-master-headless"),
        ("Deployment", "loadgen-worker"),
        ("Service", "loadgen-master"),
    },
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
    if build == "headless":
        assert ("Deployment", "loadgen-master") not in names
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
