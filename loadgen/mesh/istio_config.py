"""Which trace sampling percentage an Istio proxy ends up with, from the YAML that configures it.

Input: YAML documents (files or stdin, multi-document, `kind: List` flattened) holding any of
- `Telemetry` (`telemetry.istio.io/v1` or `v1alpha1`): `spec.tracing[].randomSamplingPercentage`,
  `match.mode`, `providers`, `disableSpanReporting`, scoped by namespace and `spec.selector`;
- `IstioOperator`: `spec.meshConfig` (`defaultConfig.tracing.sampling`, `enableTracing`,
  `defaultProviders.tracing`, `rootNamespace`) and `spec.values.pilot.traceSampling`
  (istiod's `PILOT_TRACE_SAMPLING`);
- the `istio` ConfigMap: `data.mesh`, the same MeshConfig as embedded YAML;
- Pods and workload templates (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job) carrying the
  `proxy.istio.io/config` annotation (embedded ProxyConfig YAML with `tracing.sampling`).

Precedence, most specific first (what `effective_sampling` implements):
1. Telemetry API, applied root namespace → namespace → workload, later levels overriding field by
   field ("Any fields specified in the namespace configuration will completely override the field
   from the parent configuration"), https://istio.io/latest/docs/tasks/observability/telemetry/ and
   https://istio.io/latest/docs/reference/config/telemetry/ ("1. Workload-specific configuration
   2. Namespace-specific configuration 3. Root namespace configuration"). A selector in the root
   namespace only selects workloads of the root namespace (istio/istio pilot/pkg/model/telemetry.go,
   `applicableTelemetries`). Gateways and sidecar-outbound listeners use the CLIENT spec, sidecar
   inbound the SERVER spec (pilot/pkg/networking/core/tracing.go).
2. When no Telemetry level sets randomSamplingPercentage, the proxy's ProxyConfig: in Istio's own words
   "provider.sampler > telemetry.RandomSamplingPercentage > defaultConfig.tracing.sampling >
   PILOT_TRACE_SAMPLING" (pilot/pkg/networking/core/tracing.go). `sampling: 0` counts as unset and
   a value above 100 becomes 1 (`proxyConfigSamplingValue`).
3. The ProxyConfig is meshConfig.defaultConfig with the pod's `proxy.istio.io/config` merged over it;
   the annotation's `tracing` block replaces the global one ("any pod annotations added for tracing
   configuration overrides global settings. In order to preserve any global settings you should copy
   them", https://istio.io/v1.7/docs/tasks/observability/distributed-tracing/configurability/; the
   methods: https://istio.io/latest/docs/tasks/observability/distributed-tracing/sampling/ and
   .../distributed-tracing/mesh-and-proxy-config/).
4. PILOT_TRACE_SAMPLING, default 1 (%).
Without any Telemetry tracing and without `defaultProviders.tracing`, Istio uses the legacy path,
which needs `meshConfig.enableTracing` (default true).

Resources without `metadata.namespace` are taken as applied with `kubectl apply -n <namespace>`
(the namespace asked about), as in the walkthrough's webapp Deployment.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULT_PILOT_TRACE_SAMPLING",
    "DEFAULT_ROOT_NAMESPACE",
    "PROXY_CONFIG_ANNOTATION",
    "Considered",
    "EffectiveSampling",
    "IstioConfigError",
    "MeshSource",
    "Resource",
    "TelemetryLevel",
    "WorkloadMode",
    "effective_sampling",
    "load_istio_files",
    "mesh_configs",
    "mode_applies",
    "parse_istio_yaml",
    "telemetry_levels",
]

DEFAULT_ROOT_NAMESPACE = "istio-system"
DEFAULT_PILOT_TRACE_SAMPLING = 1.0
PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
_WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


class IstioConfigError(ValueError):
    """A document that cannot be read as Kubernetes YAML; the message names the file and document."""


class WorkloadMode(StrEnum):
    """Which Telemetry tracing spec a listener uses: gateways and sidecar outbound use CLIENT,
    sidecar inbound uses SERVER."""

    CLIENT = "CLIENT"
    SERVER = "SERVER"


@dataclass(frozen=True)
class Resource:
    """One Kubernetes object from the input; `origin` is `file#index` (1-based document)."""

    kind: str
    api_version: str
    name: str
    namespace: str | None
    body: dict[str, Any]
    origin: str

    @property
    def ref(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name or '(unnamed)'} ({self.origin})"


@dataclass(frozen=True)
class Considered:
    """One source in the precedence chain and what it contributed."""

    level: str  # e.g. "Telemetry (workload)", "proxy.istio.io/config", "meshConfig", "default"
    where: str  # the resource, or "" for built-in defaults
    percent: float | None  # the value it sets, None when it sets none
    decided: bool
    note: str

    def line(self) -> str:
        value = "-" if self.percent is None else f"{self.percent:g} %"
        mark = "=>" if self.decided else "  "
        where = f" {self.where}" if self.where else ""
        return f"{mark} {self.level}{where}: {value} ({self.note})"


@dataclass(frozen=True)
class EffectiveSampling:
    percent: float
    source: str
    considered: tuple[Considered, ...] = ()
    warnings: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return [c.line() for c in self.considered] + [f"warning: {w}" for w in self.warnings]


# --- reading ------------------------------------------------------------------------------------


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _get(obj: Mapping[str, Any], camel: str) -> Any:
    """A field by camelCase name, falling back to snake_case (MeshConfig YAML accepts both)."""
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(snake)


def parse_istio_yaml(text: str, origin: str = "<stdin>") -> list[Resource]:
    """Multi-document YAML → resources (empty documents skipped, `kind: List` flattened)."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise IstioConfigError(f"{origin}: not valid YAML: {exc}") from exc
    resources: list[Resource] = []
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue
        where = f"{origin}#{index}"
        if not isinstance(doc, dict):
            raise IstioConfigError(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
        items = doc.get("items") if doc.get("kind") == "List" else [doc]
        for sub, item in enumerate(items or [], start=1):
            if not isinstance(item, dict):
                raise IstioConfigError(f"{where}: list item {sub} is not an object")
            meta = _as_dict(item.get("metadata"))
            namespace = meta.get("namespace")
            resources.append(
                Resource(
                    kind=str(item.get("kind", "")),
                    api_version=str(item.get("apiVersion", "")),
                    name=str(meta.get("name", "")),
                    namespace=str(namespace) if namespace else None,
                    body=item,
                    origin=where if doc.get("kind") != "List" else f"{where}.items[{sub - 1}]",
                )
            )
    return resources


#: The largest Istio config file read. Real ones are kilobytes; a 29 MB file took 63 s and
#: 2.3 GB of memory to parse, so a larger one is refused before parsing.
MAX_ISTIO_FILE_BYTES = 4 * 1024 * 1024


def _read_istio_text(path: str | Path) -> tuple[str, str]:
    """(text, name) of one file, `-` being standard input: bounded in size, UTF-8, not empty."""
    name = "<stdin>" if str(path) == "-" else str(path)
    if str(path) == "-":
        raw = getattr(sys.stdin, "buffer", None)  # a text-only stdin (a test's StringIO) has none
        data = (
            raw.read(MAX_ISTIO_FILE_BYTES + 1) if raw else sys.stdin.read(MAX_ISTIO_FILE_BYTES + 1).encode()
        )
    else:
        with Path(path).open("rb") as f:
            data = f.read(MAX_ISTIO_FILE_BYTES + 1)
    if len(data) > MAX_ISTIO_FILE_BYTES:
        raise IstioConfigError(
            f"{name}: larger than {MAX_ISTIO_FILE_BYTES // (1024 * 1024)} MiB; "
            "give only the Istio resources that configure tracing"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IstioConfigError(f"{name}: not UTF-8 text (byte {exc.start}); expected Istio YAML") from exc
    return text, name


def load_istio_files(paths: Iterable[str | Path]) -> list[Resource]:
    """Read and parse each file (`-` is standard input). Raises IstioConfigError or OSError; a
    file with no resources at all is an error (it would silently mean Istio's default 1 %)."""
    resources: list[Resource] = []
    for path in paths:
        text, name = _read_istio_text(path)
        found = parse_istio_yaml(text, name)
        if not found:
            raise IstioConfigError(f"{name}: no Kubernetes resources in the file")
        resources.extend(found)
    return resources


def _embedded_yaml(text: Any, where: str) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise IstioConfigError(f"{where}: embedded YAML does not parse: {exc}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IstioConfigError(f"{where}: embedded YAML is not a mapping")
    return value


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise IstioConfigError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise IstioConfigError(f"{where}: expected a number, got {value!r}") from exc


# --- the mesh-wide pieces -----------------------------------------------------------------------


@dataclass(frozen=True)
class MeshSource:
    where: str
    config: dict[str, Any]


def mesh_configs(resources: Sequence[Resource]) -> list[MeshSource]:
    """MeshConfigs found, the live ConfigMap first (it is what istiod reads), then IstioOperators."""
    configmaps, operators = [], []
    for res in resources:
        if res.kind == "ConfigMap" and (res.name == "istio" or res.name.startswith("istio-")):
            data = _as_dict(res.body.get("data"))
            if "mesh" in data:
                configmaps.append(MeshSource(f"{res.ref} data.mesh", _embedded_yaml(data["mesh"], res.ref)))
        elif res.kind == "IstioOperator":
            mesh = _get(_as_dict(res.body.get("spec")), "meshConfig")
            if isinstance(mesh, dict):
                operators.append(MeshSource(f"{res.ref} spec.meshConfig", mesh))
    return configmaps + operators


def _pilot_trace_sampling(resources: Sequence[Resource]) -> tuple[float, str]:
    for res in resources:
        if res.kind == "IstioOperator":
            pilot = _as_dict(_as_dict(_as_dict(res.body.get("spec")).get("values")).get("pilot"))
            value = _number(pilot.get("traceSampling"), f"{res.ref} spec.values.pilot.traceSampling")
            if value is not None:
                return value, f"{res.ref} spec.values.pilot.traceSampling"
    return DEFAULT_PILOT_TRACE_SAMPLING, ""


def _labels_match(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == str(v) for k, v in selector.items())


def _in_namespace(res: Resource, namespace: str) -> bool:
    return res.namespace is None or res.namespace == namespace


def _workload_annotations(
    resources: Sequence[Resource], namespace: str, labels: Mapping[str, str]
) -> list[tuple[Resource, Any]]:
    """(resource, annotation text) for each Pod/workload template matching the labels."""
    found = []
    for res in resources:
        if res.kind == "Pod":
            meta = _as_dict(res.body.get("metadata"))
        elif res.kind in _WORKLOAD_KINDS:
            meta = _as_dict(_as_dict(_as_dict(res.body.get("spec")).get("template")).get("metadata"))
        else:
            continue
        pod_labels = {str(k): str(v) for k, v in _as_dict(meta.get("labels")).items()}
        if not _in_namespace(res, namespace) or not _labels_match(labels, pod_labels):
            continue
        annotations = _as_dict(meta.get("annotations"))
        if PROXY_CONFIG_ANNOTATION in annotations:
            found.append((res, annotations[PROXY_CONFIG_ANNOTATION]))
    return found


# --- Telemetry ----------------------------------------------------------------------------------


@dataclass
class TelemetryLevel:
    level: str
    res: Resource
    entries: list[dict[str, Any]] = field(default_factory=list)


def telemetry_levels(
    resources: Sequence[Resource],
    namespace: str,
    labels: Mapping[str, str],
    root: str,
    warnings: list[str],
) -> list[TelemetryLevel]:
    """Applicable Telemetry resources in Istio's application order: root, namespace, workload."""
    telemetries = [r for r in resources if r.kind == "Telemetry"]

    def spec(res: Resource) -> dict[str, Any]:
        return _as_dict(res.body.get("spec"))

    def namespace_wide(res: Resource) -> bool:
        return not _as_dict(spec(res).get("selector")).get("matchLabels") and not _get(
            spec(res), "targetRefs"
        )

    def ns_of(res: Resource) -> str:
        return res.namespace or namespace

    levels: list[TelemetryLevel] = []
    scopes = [("root namespace", root)] + ([("namespace", namespace)] if namespace != root else [])
    for level, ns in scopes:
        wide = [r for r in telemetries if ns_of(r) == ns and namespace_wide(r)]
        if len(wide) > 1:
            warnings.append(
                f"{len(wide)} selector-less Telemetry resources in {ns} ({', '.join(r.ref for r in wide)}): "
                "Istio allows one; the first is used here"
            )
        if wide:
            levels.append(TelemetryLevel(f"Telemetry ({level})", wide[0]))
    selected = []
    for res in telemetries:
        if ns_of(res) != namespace or namespace_wide(res):
            continue
        match_labels = _as_dict(_as_dict(spec(res).get("selector")).get("matchLabels"))
        if _get(spec(res), "targetRefs") and not match_labels:
            warnings.append(f"{res.ref} uses targetRefs, which this tool does not evaluate; ignored")
            continue
        if _labels_match(match_labels, labels):
            selected.append(res)
    if len(selected) > 1:
        warnings.append(
            f"{len(selected)} Telemetry resources select this workload ({', '.join(r.ref for r in selected)}): "
            "Istio considers that invalid; all are applied here in input order"
        )
    levels.extend(TelemetryLevel("Telemetry (workload)", r) for r in selected)
    for lvl in levels:
        tracing = spec(lvl.res).get("tracing") or []
        if not isinstance(tracing, list):
            raise IstioConfigError(f"{lvl.res.ref}: spec.tracing must be a list")
        lvl.entries = [e for e in tracing if isinstance(e, dict)]
    return levels


def mode_applies(entry: Mapping[str, Any], mode: WorkloadMode) -> bool:
    match_mode = _as_dict(entry.get("match")).get("mode")
    return match_mode in (None, "CLIENT_AND_SERVER", mode.value)


# --- the computation ----------------------------------------------------------------------------


def effective_sampling(
    resources: Sequence[Resource],
    namespace: str,
    labels: Mapping[str, str],
    mode: WorkloadMode = WorkloadMode.SERVER,
) -> EffectiveSampling:
    """The random sampling percentage Istio gives the proxy of the workload with `labels` in
    `namespace` (see the module docstring for the rules and their sources)."""
    warnings: list[str] = []
    meshes = mesh_configs(resources)
    mesh = meshes[0] if meshes else None
    mesh_cfg = mesh.config if mesh else {}
    root = str(_get(mesh_cfg, "rootNamespace") or DEFAULT_ROOT_NAMESPACE)
    levels = telemetry_levels(resources, namespace, labels, root, warnings)
    pilot_value, pilot_where = _pilot_trace_sampling(resources)
    proxy = _proxy_chain(resources, namespace, labels, meshes, warnings)
    default_note = "istiod's PILOT_TRACE_SAMPLING" if pilot_where else "Istio's default PILOT_TRACE_SAMPLING"
    default = Considered("default", pilot_where, pilot_value, False, default_note)
    decided_proxy = _proxy_decision(proxy, pilot_value, warnings)
    telemetry = _telemetry_chain(levels, mode, mesh_cfg)
    telemetry.warn(warnings)

    if telemetry.uses_telemetry and telemetry.value is not None:
        percent, source, tele_part = telemetry.decide()
        proxy_part = [_note(c, "overridden by Telemetry") for c in proxy.considered]
        default = _note(default, "overridden by Telemetry")
    elif not telemetry.uses_telemetry and _get(mesh_cfg, "enableTracing") is False:
        percent, tele_part = 0.0, telemetry.considered
        source = f"{mesh.where if mesh else 'meshConfig'} enableTracing: false (no tracing configured)"
        proxy_part = [_note(c, "tracing disabled mesh-wide") for c in proxy.considered]
        default = _note(default, "tracing disabled mesh-wide")
    else:
        percent, index = decided_proxy
        tele_part, proxy_part = telemetry.considered, list(proxy.considered)
        if index is None:
            source = f"{default_note} ({pilot_value:g} %)" + (f", {pilot_where}" if pilot_where else "")
            default = _decided(default, "decides: nothing more specific sets sampling")
        else:
            proxy_part[index] = _decided(proxy_part[index], "decides")
            default = _note(default, "overridden")
            source = f"{proxy_part[index].level} {proxy_part[index].where}".strip()
    considered = tuple(reversed(tele_part)) + tuple(proxy_part) + (default,)
    if not levels:
        considered = (Considered("Telemetry", "", None, False, "no Telemetry resource applies"),) + considered
    return EffectiveSampling(percent, source, considered, tuple(warnings))


# --- ProxyConfig: the annotation's tracing block, else meshConfig.defaultConfig.tracing ----------


@dataclass(frozen=True)
class _ProxyChain:
    considered: list[Considered]
    value: float | None  # the ProxyConfig's tracing.sampling as written
    index: int  # which of `considered` set it


def _mesh_tracing_sampling(mesh: MeshSource, where: str) -> float | None:
    tracing = _get(_as_dict(_get(mesh.config, "defaultConfig")), "tracing")
    return _number(_get(tracing, "sampling"), where) if isinstance(tracing, dict) else None


def _mesh_sampling(meshes: Sequence[MeshSource], warnings: list[str]) -> float | None:
    """meshConfig.defaultConfig.tracing.sampling of the first MeshConfig; the others that
    disagree are named in a warning."""
    if not meshes:
        return None
    mesh = meshes[0]
    value = _mesh_tracing_sampling(mesh, f"{mesh.where} defaultConfig.tracing.sampling")
    for other in meshes[1:]:
        other_value = _mesh_tracing_sampling(other, other.where)
        if other_value != value:
            warnings.append(
                f"{other.where} sets defaultConfig.tracing.sampling {other_value} but {mesh.where} "
                f"sets {value}: the first (the live ConfigMap when given) is used"
            )
    return value


def _proxy_chain(
    resources: Sequence[Resource],
    namespace: str,
    labels: Mapping[str, str],
    meshes: Sequence[MeshSource],
    warnings: list[str],
) -> _ProxyChain:
    """The ProxyConfig sources, most specific first: the pod's annotation (its tracing block
    replaces meshConfig's), then meshConfig.defaultConfig."""
    annotated = _workload_annotations(resources, namespace, labels)
    if len(annotated) > 1:
        warnings.append(
            f"{len(annotated)} workloads match the labels and carry {PROXY_CONFIG_ANNOTATION}: the first is used"
        )
    mesh_sampling = _mesh_sampling(meshes, warnings)
    mesh_level, mesh_where = "meshConfig defaultConfig.tracing.sampling", meshes[0].where if meshes else ""
    annotation_tracing: Any = None
    if annotated:
        res, text = annotated[0]
        annotation_tracing = _embedded_yaml(text, f"{res.ref} {PROXY_CONFIG_ANNOTATION}").get("tracing")
    if annotation_tracing is not None:
        res = annotated[0][0]
        value = _number(
            _get(_as_dict(annotation_tracing), "sampling"), f"{res.ref} annotation tracing.sampling"
        )
        note = "its tracing block replaces meshConfig's" + ("" if value else "; it sets no sampling")
        return _ProxyChain(
            [
                Considered(PROXY_CONFIG_ANNOTATION, res.ref, value, False, note),
                Considered(
                    mesh_level, mesh_where, mesh_sampling, False, "replaced by the annotation's tracing block"
                ),
            ],
            value,
            0,
        )
    considered = []
    if annotated:
        considered.append(
            Considered(PROXY_CONFIG_ANNOTATION, annotated[0][0].ref, None, False, "no tracing block")
        )
    note = "not set" if mesh_sampling is None else "set"
    considered.append(Considered(mesh_level, mesh_where, mesh_sampling, False, note))
    return _ProxyChain(considered, mesh_sampling, len(considered) - 1)


def _proxy_decision(proxy: _ProxyChain, pilot_value: float, warnings: list[str]) -> tuple[float, int | None]:
    """proxyConfigSamplingValue: 0 means unset (PILOT_TRACE_SAMPLING applies, index None), above
    100 becomes 1."""
    value = proxy.value
    if value is not None and value > 100.0:
        warnings.append(f"ProxyConfig tracing.sampling {value:g} is above 100: Istio uses 1 % instead")
        return 1.0, proxy.index
    if value:
        return value, proxy.index
    if value == 0.0:
        warnings.append(
            "ProxyConfig tracing.sampling 0 counts as unset in Istio: the default applies, not 0 %"
        )
    return pilot_value, None


# --- Telemetry: later (more specific) levels override; entries filtered by mode ------------------


@dataclass
class _TelemetryChain:
    considered: list[Considered] = field(default_factory=list)
    value: float | None = None
    decider: int | None = None  # which of `considered` set `value`
    any_tracing: bool = False
    provider_named: bool = False
    default_provider: bool = False  # meshConfig.defaultProviders.tracing
    span_reporting_disabled: str | None = None

    @property
    def uses_telemetry(self) -> bool:
        return self.any_tracing or self.default_provider

    def warn(self, warnings: list[str]) -> None:
        if self.uses_telemetry and not self.provider_named:
            warnings.append(
                "Telemetry tracing names no provider and no meshConfig.defaultProviders.tracing was given: "
                "recent Istio then disables tracing for the proxy (older releases fell back to meshConfig); "
                "ignore this if the provider is defined in a file you did not pass"
            )
        if self.span_reporting_disabled:
            warnings.append(
                f"{self.span_reporting_disabled} sets disableSpanReporting: this proxy reports no spans"
            )

    def decide(self) -> tuple[float, str, list[Considered]]:
        """Telemetry sets the percentage: (percent, source, the levels with their notes)."""
        assert self.value is not None and self.decider is not None
        decider = self.considered[self.decider]
        considered = [
            _decided(c, "decides: Telemetry overrides ProxyConfig")
            if i == self.decider
            else _note(c, "overridden by a more specific Telemetry level")
            for i, c in enumerate(self.considered)
        ]
        return self.value, f"{decider.level} {decider.where} randomSamplingPercentage", considered


def _telemetry_chain(
    levels: Sequence[TelemetryLevel], mode: WorkloadMode, mesh_cfg: Mapping[str, Any]
) -> _TelemetryChain:
    default_provider = bool(_get(_as_dict(_get(mesh_cfg, "defaultProviders")), "tracing"))
    chain = _TelemetryChain(provider_named=default_provider, default_provider=default_provider)
    for lvl in levels:
        applicable = [e for e in lvl.entries if mode_applies(e, mode)]
        chain.any_tracing = chain.any_tracing or bool(applicable)
        value = None
        for entry in applicable:
            chain.provider_named = chain.provider_named or bool(entry.get("providers"))
            pct = _number(_get(entry, "randomSamplingPercentage"), f"{lvl.res.ref} randomSamplingPercentage")
            if pct is not None:
                value = pct
            disable = _get(entry, "disableSpanReporting")
            if disable is not None:
                chain.span_reporting_disabled = lvl.res.ref if disable else None
        if value is not None:
            chain.value, chain.decider = value, len(chain.considered)
        if not lvl.entries:
            note = "no tracing section"
        elif not applicable:
            note = f"no tracing entry for mode {mode.value}"
        else:
            note = "set" if value is not None else "tracing without randomSamplingPercentage: inherits"
        chain.considered.append(Considered(lvl.level, lvl.res.ref, value, False, note))
    return chain


def _decided(c: Considered, note: str) -> Considered:
    return Considered(c.level, c.where, c.percent, True, f"{c.note}; {note}" if c.note != "set" else note)


def _note(c: Considered, note: str) -> Considered:
    if c.percent is None:
        return c
    return Considered(c.level, c.where, c.percent, False, note)
