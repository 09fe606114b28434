"""deploy/watch/: `loadgen watch` on a cluster (issue 14), validated offline.

No cluster and no network:
- the Deployment, Service and PersistentVolumeClaim are validated with the Kubernetes schemas by
  test_deploy_manifests.py (every object under deploy/); here their links: the Service selects
  the pod and names its metrics port, the probes and --metrics-port use it, --state is on the
  claim, one replica with Recreate, the pod hardened like the Job's, the targets are the run's;
- the ServiceMonitor and the PrometheusRule against JSON schemas generated from
  prometheus-operator's CRDs (deploy/schemas/prometheus-operator/, kept verbatim and regenerated
  here), with broken copies that must be rejected;
- the rules with `promtool check rules` and `promtool test rules`
  (tests/fixtures/deploy_watch/rules-test.yaml: series that fire and do not fire each alert), and
  mutated rules that the unit tests must catch;
- every PromQL expression (rules, dashboard panels, dashboard variables) names only metrics of the
  watch's contract (tests/fixtures/deploy_watch/watch-metrics.md, a copy of the contract the
  implementation and deploy/ share) and parses with promtool;
- the dashboard: JSON, one datasource variable on every panel and query, the panels the issue asks.
promtool is Debian's `prometheus` package: without it those tests skip, unless
LOADGEN_REQUIRE_PROMTOOL=1 (set by .ci/run), where they fail saying what to install.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from loadgen.cli.application import app
from loadgen.watch.metrics import render_metrics
from loadgen.watch.model import TTQ_BUCKETS_S
from loadgen.watch.windows import parse_windows
from tests.unit.test_deploy_manifests import (
    DEPLOY,
    K8S_VERSIONS,
    REPO,
    check_names,
    find,
    no_network,  # noqa: F401  (a fixture, used by name)
    validate_k8s,
)
from tests.unit.watch_fixtures import sample_snapshot

WATCH = DEPLOY / "watch"
PO = DEPLOY / "schemas" / "prometheus-operator"
FIXTURES = REPO / "tests" / "fixtures" / "deploy_watch"
MONITORING_GROUP = "monitoring.coreos.com"
#: Series Prometheus itself makes, which an expression may use besides the contract's.
PROMETHEUS_SERIES = {"up"}
#: The four alerts of the contract's last paragraph.
ALERTS = (
    "LoadgenTraceCollectionLow",
    "LoadgenSamplingRateMismatch",
    "LoadgenTimeToQueryableHigh",
    "LoadgenWatchReadbackStale",
)

Obj = dict[str, Any]


def _watch_objects() -> list[Obj]:
    docs = []
    for path in sorted(WATCH.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


OBJECTS = _watch_objects()


def watch_object(kind: str) -> Obj:
    (obj,) = [o for o in OBJECTS if o["kind"] == kind]
    return copy.deepcopy(obj)


def container(deployment: Obj) -> Obj:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def watch_args() -> list[str]:
    args = container(watch_object("Deployment"))["args"]
    assert all(isinstance(a, str) for a in args)
    return list(args)


def arg(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times"
    return args[args.index(flag) + 1]


def rule_groups() -> list[Obj]:
    groups: list[Obj] = watch_object("PrometheusRule")["spec"]["groups"]
    return groups


def alerts() -> dict[str, Obj]:
    return {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}


def dashboard() -> Obj:
    board: Obj = json.loads((WATCH / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return board


# ------------------------------------------------------------------------------- the contract


def parse_contract(text: str) -> dict[str, str]:
    """Metric name -> type from the contract's table (`| name | type | labels | meaning |`); a
    row naming `base_lower / _upper` is both."""
    metrics: dict[str, str] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[0].startswith("loadgen_"):
            continue
        first, *others = [n.strip() for n in cells[0].split("/")]
        kind = cells[1].split()[0]
        metrics[first] = kind
        base = first.rsplit("_", 1)[0]
        for other in others:
            metrics[base + other if other.startswith("_") else other] = kind
    return metrics


CONTRACT = parse_contract((FIXTURES / "watch-metrics.md").read_text(encoding="utf-8"))


def series_of(contract: dict[str, str]) -> set[str]:
    """The series names a query can select: a histogram's _bucket, _sum and _count."""
    names = set()
    for name, kind in contract.items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


SERIES = series_of(CONTRACT) | PROMETHEUS_SERIES


def test_contract_table_is_read_whole() -> None:
    assert len(CONTRACT) == 17
    assert CONTRACT["loadgen_watch_decision_rate_upper"] == "gauge"
    assert CONTRACT["loadgen_watch_collection_ratio_lower"] == "gauge"
    assert CONTRACT["loadgen_watch_time_to_queryable_seconds"] == "histogram"
    assert CONTRACT["loadgen_watch_errors_total"] == "counter"
    assert "loadgen_watch_time_to_queryable_seconds_bucket" in SERIES
    assert "loadgen_watch_time_to_queryable_seconds" not in SERIES  # a histogram has no such series


def test_contract_copy_is_what_the_watch_exports() -> None:
    """The names the rules and the dashboard are checked against are the ones `loadgen watch`'s
    /metrics serves (rendered from a snapshot with every figure known), with their types."""
    text = render_metrics(sample_snapshot()).decode()
    typed = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            typed[name] = kind
    assert typed == CONTRACT
    served = {
        re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line[:1] not in ("#", "")
    }
    assert served == series_of(CONTRACT)


# ------------------------------------------------------------------------------- PromQL names

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta", "deriv",
    "floor", "group", "histogram_quantile", "idelta", "increase", "irate", "label_join",
    "label_replace", "last_over_time", "max", "max_over_time", "min", "min_over_time",
    "present_over_time", "quantile", "quantile_over_time", "rate", "resets", "round", "scalar",
    "sort", "sort_desc", "stddev", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
#: Clauses whose parentheses hold label names, not expressions.
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects. Strings, label matchers, range and offset
    durations, label lists and Grafana variables are cut first; what is left is functions
    (followed by a parenthesis), keywords and metric names. An unknown function is an error."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'", '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = LABEL_LISTS.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown function {word!r} in {expr!r}"
        elif word.lower() not in KEYWORDS:
            names.add(word)
    return names


def test_metric_names_finds_metrics_and_only_metrics() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (source, le) (rate(a_bucket{window="3600s", x=~"sum(y)"}'
        "[$__rate_interval] offset 5m))) > 1e3 and on (job) b_total unless ignoring(w) "
        'label_replace(c, "d", "e", "", "") or time() - f{namespace="$namespace"} > bool 600'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "f"}
    assert metric_names("rate(loadgen_watch_trace_total[5m])") - SERIES == {"loadgen_watch_trace_total"}
    with pytest.raises(AssertionError, match="unknown function 'ratee'"):
        metric_names("ratee(x[5m])")


# ------------------------------------------------------------------------------- promtool


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian: apt-get install prometheus)"
        if os.environ.get("LOADGEN_REQUIRE_PROMTOOL") == "1":
            pytest.fail(f"{reason}; LOADGEN_REQUIRE_PROMTOOL=1 needs it")
        pytest.skip(reason)
    return path


def run_promtool(
    promtool: str, *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def write_rules(path: Path, groups: list[Obj], *, runbooks: bool = True) -> Path:
    """The PrometheusRule's spec as a Prometheus rules file (what the operator hands Prometheus)."""
    groups = copy.deepcopy(groups)
    if not runbooks:
        for group in groups:
            for rule in group["rules"]:
                rule.get("annotations", {}).pop("runbook", None)
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def test_rules_pass_promtool_check(promtool: str, tmp_path: Path) -> None:
    done = run_promtool(promtool, "check", "rules", write_rules(tmp_path / "rules.yml", rule_groups()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout
    # ... and it rejects what the CRD schema lets through (deploy/schemas/prometheus-operator/README.md)
    twice = rule_groups() * 2
    done = run_promtool(promtool, "check", "rules", write_rules(tmp_path / "twice.yml", twice))
    assert done.returncode != 0 and "repeated in the same file" in done.stdout + done.stderr


def start_promtool_test(promtool: str, folder: Path, groups: list[Obj]) -> subprocess.Popen[str]:
    """`promtool test rules` of the fixture against `groups`, started in `folder`."""
    folder.mkdir(exist_ok=True)
    write_rules(folder / "rules.yml", groups, runbooks=False)
    shutil.copy(FIXTURES / "rules-test.yaml", folder / "rules-test.yaml")
    return subprocess.Popen(
        [promtool, "test", "rules", "rules-test.yaml"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_rules_unit_tests_pass(promtool: str, tmp_path: Path) -> None:
    proc = start_promtool_test(promtool, tmp_path, rule_groups())
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    tested = set(re.findall(r"alertname: (\w+)", (FIXTURES / "rules-test.yaml").read_text(encoding="utf-8")))
    assert tested == set(ALERTS)


def _edit_expr(alert: str, old: str, new: str) -> Callable[[list[Obj]], None]:
    def mutate(groups: list[Obj]) -> None:
        (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
        assert old in rule["expr"]
        rule["expr"] = rule["expr"].replace(old, new)

    return mutate


def _edit_for(alert: str, value: str) -> Callable[[list[Obj]], None]:
    def mutate(groups: list[Obj]) -> None:
        (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
        rule["for"] = value

    return mutate


# Each mutation must make `promtool test rules` fail on the alert it breaks.
MUTATIONS = [
    ("collection threshold 0.95 -> 0.85", _edit_expr(ALERTS[0], "< 0.95", "< 0.85"), ALERTS[0]),
    ("collection on every source", _edit_expr(ALERTS[0], 'source="mesh", ', ""), ALERTS[0]),
    ("collection without `for`", _edit_for(ALERTS[0], "0s"), ALERTS[0]),
    ("sampling on every window", _edit_expr(ALERTS[1], '{window="3600s"}', ""), ALERTS[1]),
    ("p99 -> p50", _edit_expr(ALERTS[2], "0.99", "0.5"), ALERTS[2]),
    ("read-back age 10 min -> 20 min", _edit_expr(ALERTS[3], "> 600", "> 1200"), ALERTS[3]),
    ("read-back without the absent case", _edit_expr(ALERTS[3], "absent(loadgen_watch_up)", "vector(0) < 0"),
     ALERTS[3]),
]  # fmt: skip


def test_rules_unit_tests_catch_broken_rules(promtool: str, tmp_path: Path) -> None:
    """Each mutation, in a folder of its own, all run at once (they are independent)."""
    runs = []
    for i, (label, mutate, alert) in enumerate(MUTATIONS):
        groups = rule_groups()
        mutate(groups)
        runs.append((label, alert, start_promtool_test(promtool, tmp_path / str(i), groups)))
    for label, alert, proc in runs:
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0, f"{label}: promtool test rules still passes"
        assert re.search(rf"(alertname|rule): {alert}\b", output), (label, output)


# ------------------------------------------------------------------------------- the alerts


def test_the_four_alerts_and_their_thresholds() -> None:
    rules = alerts()
    assert tuple(rules) == ALERTS
    collection, sampling, ttq, stale = (rules[a] for a in ALERTS)
    assert 'loadgen_watch_collection_ratio_upper{source="mesh", window="3600s"} < 0.95' in collection["expr"]
    assert re.search(
        r"_configured_sampling_ratio\s+<[^,]*_decision_rate_lower\{window=\"3600s\"\}", sampling["expr"]
    )
    assert re.search(
        r"_configured_sampling_ratio\s+>[^,]*_decision_rate_upper\{window=\"3600s\"\}", sampling["expr"]
    )
    assert "histogram_quantile(0.99, rate(loadgen_watch_time_to_queryable_seconds_bucket[" in ttq["expr"]
    assert "time() - loadgen_watch_last_readback_success_timestamp_seconds > 600" in stale["expr"]
    assert "absent(loadgen_watch_up)" in stale["expr"]
    assert [rules[a]["for"] for a in ALERTS] == ["15m", "15m", "15m", "5m"]


def test_alert_bounds_sit_on_histogram_buckets() -> None:
    """The time-to-queryable bound is a bucket bound of the watch's histogram, so the estimate of
    p99 is exact where it matters."""
    bound = float(re.findall(r"> (\d+)\s*$", alerts()[ALERTS[2]]["expr"])[0])
    assert bound in TTQ_BUCKETS_S


def test_every_alert_explains_itself() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook"}, name
        assert all(len(notes[k]) > 40 for k in notes), name
        # Runbooks name the watch's own errors metric, and say what to check in numbered steps.
        assert "loadgen_watch_errors_total" in notes["runbook"], name
        steps = [int(s) for s in re.findall(r"(?<!\S)(\d)\. ", notes["runbook"])]
        assert len(steps) >= 3 and steps == list(range(1, len(steps) + 1)), (name, steps)
        # Every loadgen metric an annotation names is one of the contract's.
        cited = set(re.findall(r"\bloadgen_\w+", " ".join(notes.values())))
        assert cited <= SERIES, (name, cited - SERIES)
    runbooks = {name: rule["annotations"]["runbook"] for name, rule in alerts().items()}
    collection, sampling = runbooks[ALERTS[0]], runbooks[ALERTS[1]]
    for what in ("otelcol_exporter_send_failed_spans", "zipkin_collector_spans_dropped_total", "retention"):
        assert what in collection
    for what in (
        "kubectl get telemetry",
        "randomSamplingPercentage",
        "configmap istio",
        "defaultConfig.tracing.sampling",
    ):
        assert what in sampling


def test_rule_expressions_use_contract_metrics_only() -> None:
    for name, rule in alerts().items():
        used = metric_names(rule["expr"])
        assert used and used <= SERIES, (name, used - SERIES)
    windows = {w for r in alerts().values() for w in re.findall(r'window="([^"]+)"', r["expr"])}
    assert windows == {"3600s"}
    configured = {label for label, _ in parse_windows(arg(watch_args(), "--window"))}
    assert windows <= configured  # the Deployment exports the windows the alerts read


def test_readback_alert_names_the_services_job() -> None:
    """prometheus-operator sets `job` to the Service's name (no jobLabel in the ServiceMonitor)."""
    assert "jobLabel" not in watch_object("ServiceMonitor")["spec"]
    jobs = set(re.findall(r'\bjob="([^"]+)"', alerts()[ALERTS[3]]["expr"]))
    assert jobs == {watch_object("Service")["metadata"]["name"]}


# ------------------------------------------------------------------------------- the dashboard


def panels(board: Obj) -> Iterator[Obj]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(board: Obj) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            yield f"variable {var['name']}", inner.group(1) if inner else query


DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def test_dashboard_has_a_datasource_variable_on_every_panel_and_query() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert board["uid"] == "loadgen-watch" and len(board["uid"]) <= 40
    data_panels = [p for p in panels(board) if p["type"] != "row"]
    assert len(data_panels) >= 8
    for panel in data_panels:
        assert panel.get("datasource") == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == DS, (panel["title"], target["refId"])
            assert target["expr"].strip(), (panel["title"], target["refId"])
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DS, var["name"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    # Every $variable a query or title uses is defined (Grafana's own start with __).
    text = json.dumps([board["panels"], [v.get("query") for v in variables.values()]])
    used = set(re.findall(r"\$\{?(\w+)", text)) - {"DS_PROMETHEUS"}
    assert {u for u in used if not u.startswith("__")} <= set(variables)


def test_dashboard_queries_use_contract_metrics_only() -> None:
    used: set[str] = set()
    for where, expr in queries(dashboard()):
        names = metric_names(expr)
        assert names, where
        assert names <= SERIES, (where, names - SERIES)
        used |= names
    # Every metric of the contract is on the dashboard (a histogram by its buckets).
    assert series_of(CONTRACT) - used <= {
        f"loadgen_watch_time_to_queryable_seconds_{s}" for s in ("sum", "count")
    }


def _panel_using(board: Obj, *needles: str) -> Obj:
    found = [
        p for p in panels(board) if all(any(n in t["expr"] for t in p.get("targets", [])) for n in needles)
    ]
    assert found, f"no panel queries all of {needles}"
    return found[0]


def _band_targets(panel: Obj) -> set[tuple[str, str]]:
    """(upper, lower) legend names of each filled band of a time series panel."""
    bands = set()
    for override in panel["fieldConfig"]["overrides"]:
        for prop in override["properties"]:
            if prop["id"] == "custom.fillBelowTo":
                bands.add((override["matcher"]["options"], prop["value"]))
    return bands


def test_dashboard_has_the_panels_the_issue_asks() -> None:
    board = dashboard()
    collection = _panel_using(
        board,
        "loadgen_watch_collection_ratio{",
        "loadgen_watch_collection_ratio_lower",
        "_collection_ratio_upper",
    )
    assert _band_targets(collection) == {("mesh upper", "mesh lower"), ("reference upper", "reference lower")}
    legends = {t["legendFormat"] for t in collection["targets"]}
    assert legends == {"{{source}}", "{{source}} lower", "{{source}} upper"}  # -> "mesh upper", ...
    decision = _panel_using(
        board, "loadgen_watch_decision_rate{", "_decision_rate_lower", "_decision_rate_upper",
        "loadgen_watch_configured_sampling_ratio",
    )  # fmt: skip
    assert _band_targets(decision) == {("observed upper", "observed lower")}
    assert {"observed upper", "observed lower"} <= {t["legendFormat"] for t in decision["targets"]}
    ttq = _panel_using(board, "histogram_quantile(0.5,", "histogram_quantile(0.99,")
    assert all("loadgen_watch_time_to_queryable_seconds_bucket" in t["expr"] for t in ttq["targets"])
    for metric, label in (
        ("loadgen_watch_traces_total", "outcome"),
        ("loadgen_watch_requests_total", "status"),
        ("loadgen_watch_reference_traces_total", "state"),
        ("loadgen_watch_errors_total", "component"),
    ):
        panel = _panel_using(board, metric)
        assert any(re.search(rf"by \([^)]*\b{label}\b", t["expr"]) for t in panel["targets"]), metric
    age = _panel_using(board, "time() - loadgen_watch_last_readback_success_timestamp_seconds")
    assert age["fieldConfig"]["defaults"]["unit"] == "s"


def _grafana_to_promql(expr: str, defaults: dict[str, str]) -> str:
    expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], expr)


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Each query, with Grafana's variables at their defaults, as a recording rule: promtool
    parses them all (and says which one it cannot)."""
    board = dashboard()
    defaults = {v["name"]: v["current"]["value"] for v in board["templating"]["list"] if v["type"] == "query"}
    rules = [
        {"record": f"loadgen:dashboard_query_{i}", "expr": _grafana_to_promql(expr, defaults)}
        for i, (_, expr) in enumerate(queries(board))
    ]
    path = write_rules(tmp_path / "dashboard.yml", [{"name": "dashboard", "rules": rules}])
    done = run_promtool(promtool, "check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = [{"name": "dashboard", "rules": [{"record": "x", "expr": "sum by (le (rate(x[5m]))"}]}]
    assert (
        run_promtool(promtool, "check", "rules", write_rules(tmp_path / "broken.yml", broken)).returncode != 0
    )


# ------------------------------------------------------------------------------- CRD schemas


def _po_generator() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("po_schema_generator", PO / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _po_generator()


def validate_monitoring(obj: Obj) -> None:
    check_names(obj)
    group, version = obj["apiVersion"].split("/")
    path = PO / GENERATE.schema_file(group, version, obj["kind"])
    assert path.is_file(), f"no schema {path.relative_to(REPO)}"
    jsonschema.Draft202012Validator(json.loads(path.read_text(encoding="utf-8"))).validate(obj)
    validate_k8s({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, K8S_VERSIONS[-1])


MONITORING = [o for o in OBJECTS if o["apiVersion"].startswith(MONITORING_GROUP + "/")]


def test_watch_objects_were_found() -> None:
    kinds = sorted(o["kind"] for o in OBJECTS)
    assert kinds == ["Deployment", "PersistentVolumeClaim", "PrometheusRule", "Service", "ServiceMonitor"]
    assert sorted(o["kind"] for o in MONITORING) == ["PrometheusRule", "ServiceMonitor"]


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("obj", MONITORING, ids=lambda o: o["kind"])
def test_monitoring_object_is_valid(obj: Obj) -> None:
    validate_monitoring(obj)


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    keys = [int(p) if p.isdigit() else p for p in path.split(".")]

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
R0 = "spec.groups.0.rules.0"
# fmt: off
BROKEN = [
    ("ServiceMonitor", "interval in words", _set("spec.endpoints.0.interval", "30 seconds"),
     "spec.endpoints.0.interval: '30 seconds' does not match"),
    ("ServiceMonitor", "misspelt endpoint field", _set("spec.endpoints.0.intervall", "30s"),
     "'intervall' was unexpected"),
    ("ServiceMonitor", "no selector", _set("spec.selector", DELETE), "spec: 'selector' is a required property"),
    ("ServiceMonitor", "scheme not http(s)", _set("spec.endpoints.0.scheme", "ftp"), "'ftp' is not one of"),
    ("PrometheusRule", "rule without expr", _set(f"{R0}.expr", DELETE), "rules.0: 'expr' is a required property"),
    ("PrometheusRule", "`for` in words", _set(f"{R0}.for", "15 minutes"), "for: '15 minutes' does not match"),
    ("PrometheusRule", "annotation not a string", _set(f"{R0}.annotations.runbook", 1),
     "annotations.runbook: 1 is not of type 'string'"),
    ("PrometheusRule", "group without a name", _set("spec.groups.0.name", DELETE),
     "groups.0: 'name' is a required property"),
    ("PrometheusRule", "partial_response_strategy not abort/warn",
     _set("spec.groups.0.partial_response_strategy", "ignore"), "does not match '(?i)^(abort|warn)?$'"),
    ("PrometheusRule", "name with capitals", _set("metadata.name", "Loadgen-Watch"),
     "'Loadgen-Watch' is not a valid PrometheusRule name"),
]
# fmt: on


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(("kind", "label", "mutate", "reason"), BROKEN, ids=[b[1] for b in BROKEN])
def test_monitoring_validators_reject_broken_objects(
    kind: str, label: str, mutate: Callable[[Obj], None], reason: str
) -> None:
    bad = watch_object(kind)
    validate_monitoring(copy.deepcopy(bad))
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError) as rejected:
        validate_monitoring(bad)
    where = ".".join(str(p) for p in rejected.value.absolute_path)
    assert reason in f"{where}: {rejected.value.message}"


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_crds_are_prometheus_operators_files_and_the_schemas_their_output() -> None:
    readme = (PO / "README.md").read_text(encoding="utf-8")
    assert GENERATE.COMMIT in readme
    for group, version, kind, file_name in GENERATE.KINDS:
        crd = (PO / file_name).read_bytes()
        assert f"`{file_name}` | the {kind} CRD, verbatim" in readme
        (blob,) = re.findall(rf"`{re.escape(file_name)}` \|[^|]*git blob `([0-9a-f]{{40}})`", readme)
        assert _git_blob_id(crd) == blob, f"{file_name} is not the file the README names"
        expected = GENERATE.render(GENERATE.build(crd.decode("utf-8"), group, version, kind, file_name))
        schema_path = PO / GENERATE.schema_file(group, version, kind)
        assert schema_path.read_text(encoding="utf-8") == expected, f"re-run {PO / 'generate.py'}"
        schema = json.loads(expected)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert f"prometheus-operator/prometheus-operator/blob/{GENERATE.COMMIT}/" in schema["$comment"]
    assert sorted(p.name for p in PO.glob("*.json")) == sorted(
        GENERATE.schema_file(*k[:3]) for k in GENERATE.KINDS
    )


def test_go_inline_flags_become_python_ones() -> None:
    with pytest.raises(re.error):
        re.compile("^(?i)(abort|warn)?$")  # what the CRD says, in Go's RE2
    moved = GENERATE.python_pattern("^(?i)(abort|warn)?$")
    assert moved == "(?i)^(abort|warn)?$"
    assert [bool(re.search(moved, s)) for s in ("ABORT", "warn", "", "ignore", "xwarn")] == [
        True, True, True, False, False,
    ]  # fmt: skip
    for unchanged in ("^(0|([0-9]+)s)$", "^(http|https)://.+$", "(?i)^x$"):
        assert GENERATE.python_pattern(unchanged) == unchanged


# ------------------------------------------------------------------------------- the links


def test_service_and_servicemonitor_reach_the_watch_pod() -> None:
    deployment, service, monitor = (watch_object(k) for k in ("Deployment", "Service", "ServiceMonitor"))
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # ... and not the run's Job pods, which share the namespace.
    job_labels = find("Job", "loadgen-run")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert ports[port["targetPort"]] == port["port"] == 9464
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"


def test_watch_runs_once_with_its_state_on_the_claim() -> None:
    deployment = watch_object("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # single writer
    c = container(deployment)
    args = watch_args()
    assert args[0] == "watch"
    assert int(arg(args, "--metrics-port")) == {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
    state = Path(arg(args, "--state"))
    (mount,) = [m for m in c["volumeMounts"] if state.is_relative_to(m["mountPath"])]
    assert not mount.get("readOnly", False)
    volume = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}[mount["name"]]
    claim = watch_object("PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe


def test_watch_pod_is_hardened_like_the_job() -> None:
    deployment = watch_object("Deployment")
    template = deployment["spec"]["template"]
    spec = template["spec"]
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    job_spec = find("Job", "loadgen-run")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == job_spec["securityContext"]["runAsUser"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]  # the claim's files
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    c = container(deployment)
    (job_c,) = job_spec["containers"]
    assert c["image"] == job_c["image"] and "command" not in c  # the image's entrypoint: loadgen
    assert c["securityContext"] == job_c["securityContext"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(
        c["resources"]["limits"]
    )
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    assert {v["name"] for v in spec["volumes"]} == {m["name"] for m in c["volumeMounts"]}
    for volume in spec["volumes"]:  # the kinds the "restricted" Pod Security Standard allows
        assert set(volume) - {"name"} <= {"emptyDir", "persistentVolumeClaim"}, volume
    for obj in OBJECTS:
        assert obj["metadata"]["namespace"] == find("Namespace", "loadgen")["metadata"]["name"]


def test_watch_targets_what_the_run_targets() -> None:
    """The seed setup's gateway, Host, collector, backend and sampling, as deploy/run/config.yaml."""
    args = watch_args()
    config = find("ConfigMap", "loadgen-run")["data"]
    for flag, key in (
        ("--gateway", "LOADGEN_GATEWAY"),
        ("--host", "LOADGEN_HOST"),
        ("--backend", "LOADGEN_BACKEND"),
        ("--collector", "LOADGEN_COLLECTOR"),
        ("--expect", "LOADGEN_EXPECT"),
    ):
        assert arg(args, flag) == config[key], flag


def test_watch_args_parse_with_the_real_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    if "watch" not in group.commands:
        pytest.skip("loadgen watch is not a command yet (issue 14 in progress)")
    monkeypatch.chdir(tmp_path)  # no ./loadgen.toml in the way
    name, *args = watch_args()
    with group.commands[name].make_context(name, args) as ctx:
        params = dict(ctx.params)
    assert params["metrics_port"] == 9464
    # A trace later than --give-up is concluded, so the time-to-queryable bound must sit below it.
    bound = float(re.findall(r"> (\d+)\s*$", alerts()[ALERTS[2]]["expr"])[0])
    assert params["give_up"] >= 2 * bound
    assert str(params["state"]) == arg(watch_args(), "--state")
    # In a pod the endpoint must listen beyond loopback: the probes and Prometheus come from outside.
    assert params.get("metrics_host") in {"0.0.0.0", "::"}, (
        "the Deployment must bind /metrics on all addresses"
    )


def test_kustomization_images_and_generated_dashboard() -> None:
    k = yaml.safe_load((WATCH / "kustomization.yaml").read_text(encoding="utf-8"))
    run_k = yaml.safe_load((DEPLOY / "run" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert k["images"] == run_k["images"]
    assert container(watch_object("Deployment"))["image"].split(":")[0] in {i["name"] for i in k["images"]}
    (generated,) = k["configMapGenerator"]
    assert generated["files"] == ["grafana-dashboard.json"]
    assert generated["options"]["labels"]["grafana_dashboard"] == "1"
    assert "../namespace" in k["resources"]


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed"
)
@pytest.mark.usefixtures("no_network")
def test_kubectl_kustomize_renders_valid_objects() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(WATCH)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    names = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    assert names == sorted(
        [("Namespace", "loadgen"), ("ConfigMap", "loadgen-watch-dashboard")]
        + [(o["kind"], o["metadata"]["name"]) for o in OBJECTS]
    )
    for obj in rendered:
        if obj["apiVersion"].startswith(MONITORING_GROUP + "/"):
            validate_monitoring(obj)
        else:
            check_names(obj)
            validate_k8s(obj, K8S_VERSIONS[0])
        if obj["kind"] == "ConfigMap":
            assert json.loads(obj["data"]["grafana-dashboard.json"]) == dashboard()
