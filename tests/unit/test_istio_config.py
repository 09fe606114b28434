"""Effective sampling from Istio YAML: the walkthrough's examples and the documented precedence."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from loadgen.mesh.istio_config import (
    IstioConfigError,
    WorkloadMode,
    effective_sampling,
    load_istio_files,
    parse_istio_yaml,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"
SEED_OPERATOR = FIXTURES / "seed-istiooperator-tracing.yaml"
SEED_WEBAPP = FIXTURES / "seed-webapp-deployment-annotation.yaml"
TELEMETRY = FIXTURES / "telemetry-levels.yaml"
CONFIGMAP = FIXTURES / "istio-configmap-mesh.yaml"
WEBAPP = {"app": "webapp"}


def test_nothing_set_gives_istio_default_one_percent() -> None:
    result = effective_sampling([], "default", {"app": "x"})
    assert result.percent == 1.0
    assert "default PILOT_TRACE_SAMPLING" in result.source
    assert result.considered[-1].decided and result.considered[-1].level == "default"


def test_seed_istiooperator_sampling_100() -> None:
    resources = load_istio_files([SEED_OPERATOR])
    assert [r.kind for r in resources] == ["IstioOperator"]
    result = effective_sampling(resources, "istioinaction", {"app": "catalog"})
    assert result.percent == 100.0
    assert result.source.startswith("meshConfig defaultConfig.tracing.sampling IstioOperator")
    (decider,) = [c for c in result.considered if c.decided]
    assert decider.percent == 100.0


def test_seed_annotation_replaces_mesh_tracing_block() -> None:
    # The annotation alone decides 100 % for the webapp; with meshConfig at 5 % it still wins.
    resources = load_istio_files([SEED_WEBAPP, CONFIGMAP])
    result = effective_sampling(resources, "istioinaction", WEBAPP)
    assert result.percent == 100.0
    assert result.source.startswith("proxy.istio.io/config Deployment webapp")
    other = effective_sampling(resources, "istioinaction", {"app": "catalog"})
    assert other.percent == 5.0  # not annotated: meshConfig from the ConfigMap


def test_annotation_tracing_without_sampling_falls_back_to_default_not_mesh() -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop, labels: {app: web}, annotations: {"proxy.istio.io/config": "tracing: {maxPathTagLength: 99}"}}
"""
    resources = parse_istio_yaml(text, "pod.yaml") + load_istio_files([CONFIGMAP])
    result = effective_sampling(resources, "shop", {"app": "web"})
    assert result.percent == 1.0
    assert any("replaced by the annotation" in c.note for c in result.considered)


def test_telemetry_workload_beats_namespace_beats_root_beats_meshconfig() -> None:
    resources = load_istio_files([TELEMETRY, CONFIGMAP, SEED_WEBAPP])
    webapp = effective_sampling(resources, "istioinaction", WEBAPP)
    assert webapp.percent == 50.0  # workload Telemetry, over the annotation's 100 and mesh 5
    assert "webapp-tracing" in webapp.source
    assert [c.level for c in webapp.considered][:3] == [
        "Telemetry (workload)",
        "Telemetry (namespace)",
        "Telemetry (root namespace)",
    ]
    annotation = next(c for c in webapp.considered if c.level == "proxy.istio.io/config")
    assert annotation.note == "overridden by Telemetry"
    # A workload policy without randomSamplingPercentage inherits the namespace's value.
    catalog = effective_sampling(resources, "istioinaction", {"app": "catalog"})
    assert catalog.percent == 25.0 and "namespace-tracing" in catalog.source
    # Another namespace only sees the root namespace's mesh-wide policy.
    other = effective_sampling(resources, "default", {"app": "x"})
    assert other.percent == 10.0 and "mesh-default" in other.source


def test_match_mode_selects_client_or_server_spec() -> None:
    text = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
    randomSamplingPercentage: 10
  - match: {mode: CLIENT}
    randomSamplingPercentage: 30
"""
    resources = parse_istio_yaml(text)
    assert effective_sampling(resources, "a", {}, WorkloadMode.SERVER).percent == 10.0
    assert effective_sampling(resources, "a", {}, WorkloadMode.CLIENT).percent == 30.0


def test_root_namespace_selector_only_selects_root_namespace_workloads() -> None:
    text = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 42}]
"""
    resources = parse_istio_yaml(text)
    gateway = {"istio": "ingressgateway"}
    assert effective_sampling(resources, "istio-system", gateway, WorkloadMode.CLIENT).percent == 42.0
    assert effective_sampling(resources, "shop", gateway).percent == 1.0


@pytest.mark.parametrize(
    ("sampling", "percent", "warning"),
    [("0", 1.0, "counts as unset"), ("150", 1.0, "above 100"), ("0.5", 0.5, None)],
)
def test_proxyconfig_sampling_quirks(sampling: str, percent: float, warning: str | None) -> None:
    text = f"""
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec: {{meshConfig: {{defaultConfig: {{tracing: {{sampling: {sampling}}}}}}}}}
"""
    result = effective_sampling(parse_istio_yaml(text), "a", {})
    assert result.percent == percent
    if warning:
        assert any(warning in w for w in result.warnings)
    else:
        assert result.warnings == ()


def test_pilot_trace_sampling_and_enable_tracing_false() -> None:
    pilot = """
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec: {values: {pilot: {traceSampling: 3.5}}}
"""
    result = effective_sampling(parse_istio_yaml(pilot), "a", {})
    assert result.percent == 3.5 and "traceSampling" in result.source
    off = """
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    enableTracing: false
    defaultConfig: {tracing: {sampling: 50}}
"""
    result = effective_sampling(parse_istio_yaml(off), "a", {})
    assert result.percent == 0.0 and "enableTracing: false" in result.source


def test_telemetry_without_provider_warns_and_disable_span_reporting_warns() -> None:
    text = """
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: t, namespace: shop}
spec: {tracing: [{randomSamplingPercentage: 20, disableSpanReporting: true}]}
"""
    result = effective_sampling(parse_istio_yaml(text), "shop", {})
    assert result.percent == 20.0
    assert any("names no provider" in w for w in result.warnings)
    assert any("disableSpanReporting" in w for w in result.warnings)


def test_list_kind_stdin_and_snake_case_meshconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: istio, namespace: istio-system}
  data:
    mesh: |
      default_config:
        tracing:
          sampling: 7
"""
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    resources = load_istio_files(["-"])
    assert resources[0].origin == "<stdin>#1.items[0]"
    assert effective_sampling(resources, "a", {}).percent == 7.0


@pytest.mark.parametrize(
    "text",
    [
        "kind: [unclosed",
        "- just\n- a list\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata: {mesh: 'defaultConfig: [1'}\n",
        "kind: IstioOperator\nspec: {meshConfig: {defaultConfig: {tracing: {sampling: lots}}}}\n",
    ],
)
def test_bad_input_raises_istio_config_error(text: str) -> None:
    with pytest.raises(IstioConfigError):
        effective_sampling(parse_istio_yaml(text, "bad.yaml"), "a", {})


def test_conflicting_meshconfigs_prefer_the_configmap_and_warn() -> None:
    result = effective_sampling(load_istio_files([SEED_OPERATOR, CONFIGMAP]), "a", {})
    assert result.percent == 5.0
    assert any("the live ConfigMap" in w for w in result.warnings)


# --- files that are not Istio config (issue 10, findings 4 and 9) --------------------------------


def test_an_empty_file_is_an_error_not_istio_default(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(IstioConfigError, match="no Kubernetes resources"):
        load_istio_files([empty])


def test_a_binary_file_is_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"kind: Telemetry\n\x87\xff\x00")
    with pytest.raises(IstioConfigError, match="not UTF-8"):
        load_istio_files([binary])


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    from loadgen.mesh.istio_config import MAX_ISTIO_FILE_BYTES

    big = tmp_path / "big.yaml"
    # Valid YAML, just too much of it: a comment line repeated past the cap.
    line = b"# padding padding padding padding padding padding padding padding\n"
    big.write_bytes(line * (MAX_ISTIO_FILE_BYTES // len(line) + 2))
    with pytest.raises(IstioConfigError, match="larger than"):
        load_istio_files([big])
