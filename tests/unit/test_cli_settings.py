"""Locust and k6 habits (issue 13): duration strings, --headless/--csv, LOADGEN_<FLAG> variables
and loadgen.toml [run]/[capacity] with flag > environment > file, one line naming the source of
a bad value, and the OpenTelemetry SDK's variables for the side-emitter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from loadgen.cli.application import app
from loadgen.cli.options import parse_duration
from loadgen.cli.settings import env_name
from loadgen.emitter import DEFAULT_SERVICE_NAME, ReferenceProtocol, reference_target
from loadgen.emitter.protocols import parse_otel_headers, reference_settings
from loadgen.exitcodes import EXIT_ERROR
from loadgen.run import RunError, RunOptions
from loadgen.run.options import options_dict
from tests.unit.test_cli_errors import run_main

# --- duration strings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0), ("2.5", 2.5), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("1h", 3600.0),
        ("1m30.5s", 90.5), ("500ms", 0.5), ("1m500ms", 60.5), (" 2H ", 7200.0), (45, 45.0), (1.5, 1.5),
    ],
)  # fmt: skip
def test_durations_as_locust_and_k6_write_them(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "1h 30m", "30s5", "-5", "-5s", "inf", "nan", "1e999", True])
def test_what_is_not_a_duration_is_refused(text: object) -> None:
    with pytest.raises(typer.BadParameter, match="is not a duration"):
        parse_duration(text)


# --- the options a run receives, from flags, the environment and loadgen.toml -------------------------


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The options object run/capacity hand over; the command then stops (exit 2)."""
    got: list[Any] = []

    def stop(opts: Any, _status: Any) -> Any:
        got.append(opts)
        raise RunError("stopped by the test")

    monkeypatch.setattr("loadgen.cli.run.execute_run", stop)
    monkeypatch.setattr("loadgen.cli.capacity.run_capacity", stop)
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    return got


def invoke(args: list[str], env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2 and "stopped by the test" in result.output, result.output
    return result.output


def test_defaults_of_the_demo_run(seen: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no loadgen.toml here
    invoke(["run"])
    opts: RunOptions = seen[-1]
    assert (opts.duration_s, opts.rate, opts.tracing.sampling_percent) == (10.0, 500.0, 10.0)
    assert opts.keep_spans is False and opts.csv_prefix == ""
    assert opts.reference_protocol == "zipkin" and opts.reference_service == DEFAULT_SERVICE_NAME
    invoke(["run", "-t", "1h30m", "--headless", "--csv", "out/stats", "--keep-spans"])
    opts = seen[-1]
    assert opts.duration_s == 5400.0 and opts.keep_spans is True
    assert opts.csv_prefix == str(tmp_path / "out" / "stats")  # Locust runs elsewhere: absolute
    invoke(["run", "-d", "5m"])
    assert seen[-1].duration_s == 300.0


def test_headless_contradicts_web(seen: list[Any]) -> None:
    result = CliRunner().invoke(app, ["run", "--web", "--headless"])
    assert result.exit_code == 2 and "--web" in result.output and "--headless" in result.output
    assert seen == []


def test_flag_over_environment_over_file(
    seen: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loadgen.toml").write_text(
        '[gates]\nmax_leaked = 0\n\n[run]\nduration = "1m"\nrate = 200\nreference-rate = 20\n'
        "users = 3\nprobe = false\n\n[capacity]\nstep-duration = 7\nramp = 1\n"
    )
    monkeypatch.chdir(tmp_path)  # read as ./loadgen.toml, as gate reads its [gates]
    invoke(["run", "--users", "5"], env={"LOADGEN_RATE": "300", "LOADGEN_USERS": "4"})
    opts = seen[-1]
    assert opts.duration_s == 60.0 and opts.reference_rate == 20.0 and opts.probe is False  # file
    assert opts.rate == 300.0  # the environment over the file
    assert opts.users == 5  # the flag over both
    invoke(["run", "--probe"], env={"LOADGEN_DURATION": "2m"})
    assert seen[-1].duration_s == 120.0 and seen[-1].probe is True
    invoke(["capacity"], env={"LOADGEN_RAMP": "2s"})  # [capacity] is capacity's; [run] is not
    assert (seen[-1].step_s, seen[-1].ramp_s, seen[-1].run.reference_rate) == (7.0, 2.0, 5.0)
    other = tmp_path / "other.toml"
    other.write_text("[run]\nrate = 50\n")
    invoke(["run", "--config", str(other)])
    assert seen[-1].rate == 50.0 and seen[-1].duration_s == 10.0  # --config replaces ./loadgen.toml
    invoke(["run"], env={"LOADGEN_CONFIG": str(other)})
    assert seen[-1].rate == 50.0


def test_every_option_has_its_variable() -> None:
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    envvars = {p.opts[0]: p.envvar for p in command.params if p.param_type_name == "option"}
    assert envvars["--reference-rate"] == "LOADGEN_REFERENCE_RATE" == env_name("--reference-rate")
    assert envvars["--probe"] == "LOADGEN_PROBE" and envvars["--duration"] == "LOADGEN_DURATION"
    assert envvars["--backend-header"] is None  # LOADGEN_BACKEND_HEADERS, read where the backend opens


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ("", {"LOADGEN_RATE": "abc"}, "error: LOADGEN_RATE='abc' (environment): --rate: "),
        ("", {"LOADGEN_DURATION": "5x"}, "error: LOADGEN_DURATION='5x' (environment): --duration: '5x' is not a"),
        ("", {"LOADGEN_PROBE": "maybe"}, "error: LOADGEN_PROBE='maybe' (environment): --probe: "),
        ('[run]\nrate = "fast"\n', {}, "error: loadgen.toml [run] rate = 'fast': --rate: "),
        ("[run]\nsampling = 150\n", {}, "error: loadgen.toml [run] sampling = 150: --sampling: "),
        ("[run]\nduraton = 5\n", {}, "error: loadgen.toml: [run] duraton: no option --duraton"),
        ("[run]\nrate = 1\nrate = 2\n", {}, "error: loadgen.toml: not valid TOML"),
        ("[run]\nreference-rate = 1\nreference_rate = 2\n", {}, "error: loadgen.toml: [run] sets reference-rate twice"),
        ("run = 3\n", {}, "error: loadgen.toml: [run] must be a table"),
        ("", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "error: OTEL_EXPORTER_OTLP_PROTOCOL='http/json': "),
        ("", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b"},
         "error: OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not key=value"),
    ],
)  # fmt: skip
def test_a_bad_value_from_the_environment_or_the_file_is_one_line_naming_it(
    toml: str,
    env: dict[str, str],
    needle: str,
    seen: list[Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if toml:
        (tmp_path / "loadgen.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, err = run_main(monkeypatch, capsys, ["run"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_ERROR and len(lines) == 1, err
    assert lines[0].startswith(needle), lines[0]
    assert seen == []  # refused before the run


# --- the OpenTelemetry SDK's variables -----------------------------------------------------------------


def settings(environ: dict[str, str], **given: Any) -> Any:
    args: dict[str, Any] = {"protocol": None, "collector": "", "grpc_endpoint": "", "embedded": False}
    return reference_settings(environ, **{**args, **given})


def test_nothing_set_is_loadgen_s_defaults() -> None:
    got = settings({})
    assert (got.protocol, got.collector, got.service_name, got.headers) == (
        ReferenceProtocol.ZIPKIN,
        "",
        None,
        (),
    )


def test_service_name_as_the_sdk_reads_it() -> None:
    assert settings({"OTEL_SERVICE_NAME": "ref"}).service_name == "ref"
    attrs = {"OTEL_RESOURCE_ATTRIBUTES": "team=a, service.name=from%20attrs"}
    assert settings(attrs).service_name == "from attrs"
    assert settings({**attrs, "OTEL_SERVICE_NAME": "ref"}).service_name == "ref"  # the variable wins


def test_the_protocol_variable_maps_unless_the_flag_is_given() -> None:
    assert settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).protocol is ReferenceProtocol.OTLP_GRPC
    assert settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).protocol is ReferenceProtocol.OTLP_HTTP
    both = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert settings(both).protocol is ReferenceProtocol.OTLP_HTTP  # the signal's own variable wins
    given = settings(both, protocol=ReferenceProtocol.ZIPKIN)
    assert given.protocol is ReferenceProtocol.ZIPKIN and given.ignored == (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    )
    with pytest.raises(ValueError, match="expected grpc or http/protobuf"):
        settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})


def test_headers_are_percent_decoded_and_only_for_otlp() -> None:
    assert parse_otel_headers("api-key=a%2Cb , Authorization=Basic%20x%3D%3D,", "V") == (
        ("api-key", "a,b"),
        ("Authorization", "Basic x=="),
    )
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2"}
    assert settings(env, protocol=ReferenceProtocol.OTLP_HTTP).headers == (("b", "2"),)
    assert settings(env).headers == ()  # zipkin: the specification has no headers variable for it
    target = reference_target("otlp-grpc", "http://u:p@otel:4317", None, (("b", "2"),))
    assert target.headers == (("Authorization", "Basic dTpw"), ("b", "2"))
    opts = RunOptions(reference_headers=(("authorization", "Bearer s3cret"),))
    assert options_dict(opts)["reference_headers"] == [["authorization", "<redacted>"]]


def test_endpoints_on_an_existing_mesh_without_collector() -> None:
    zipkin = settings({"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans"})
    assert zipkin.collector == "http://zipkin:9411/api/v2/spans"
    assert reference_target("zipkin", zipkin.collector).endpoint == "http://zipkin:9411/api/v2/spans"
    base = settings(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    )
    assert reference_target("otlp-http", base.collector).endpoint == "http://otel:4318/v1/traces"
    traces = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otel:4318/v1/traces", **_http()}
    assert reference_target("otlp-http", settings(traces).collector).endpoint == "https://otel:4318/v1/traces"
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "otel:4317"}
    assert settings(grpc).grpc_endpoint == "https://otel:4317"  # no scheme: TLS unless INSECURE
    plain = settings({**grpc, "OTEL_EXPORTER_OTLP_INSECURE": "true"})
    target = reference_target("otlp-grpc", plain.collector, plain.grpc_endpoint)
    assert (target.endpoint, target.tls) == ("otel:4317", False)


def _http() -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}


def test_loadgen_s_options_and_the_embedded_mesh_win_over_endpoints() -> None:
    env = {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": "http://zipkin:9411/api/v2/spans"}
    given = settings(env, collector="http://mine:9411")
    assert given.collector == "http://mine:9411" and given.ignored == ("OTEL_EXPORTER_ZIPKIN_ENDPOINT",)
    embedded = settings(env, embedded=True)
    assert embedded.collector == "" and embedded.ignored == ("OTEL_EXPORTER_ZIPKIN_ENDPOINT",)


def test_the_variables_reach_the_run_and_flags_win(seen: list[Any]) -> None:
    env = {
        "OTEL_SERVICE_NAME": "ref-svc",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-token=t",
    }
    target = ["--gateway", "http://127.0.0.1:9", "--backend", "zipkin:http://127.0.0.1:9"]
    invoke(["run", *target], env=env)
    opts = seen[-1]
    assert (opts.reference_protocol, opts.collector, opts.reference_grpc_endpoint) == (
        "otlp-grpc", "http://otel:4317", "http://otel:4317",
    )  # fmt: skip
    assert opts.reference_service == "ref-svc" and opts.reference_headers == (("x-token", "t"),)
    flags = ["--reference-protocol", "otlp-http", "--collector", "http://mine:4318"]
    output = invoke(["run", *target, *flags], env=env)
    assert (seen[-1].reference_protocol, seen[-1].collector) == ("otlp-http", "http://mine:4318")
    assert "OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_ENDPOINT not used" in output
    invoke(["capacity", *target], env=env)
    assert seen[-1].run.reference_protocol == "otlp-grpc" and seen[-1].run.reference_service == "ref-svc"
