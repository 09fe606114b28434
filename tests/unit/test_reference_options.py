"""--reference-protocol and --reference-grpc-endpoint from the command line to run.json: a bad value
is one line and exit 2 before anything starts, and an endpoint's credentials never reach run.json."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadgen.cli.application import app
from loadgen.run import RunError, RunOptions
from loadgen.run.options import check_reference, options_dict


def run_cli(*args: str, tmp_path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["run", "-o", str(tmp_path), "--run-id", "r1", *args])
    return result.exit_code, result.output


def test_unknown_protocol_is_refused_by_the_option(tmp_path: Path) -> None:
    code, output = run_cli("--reference-protocol", "jaeger", tmp_path=tmp_path)
    assert code == 2
    assert "jaeger" in output and "otlp-grpc" in output
    assert not (tmp_path / "r1").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reference-protocol", "otlp-http", "--reference-grpc-endpoint", "h:4317"], "only for otlp-grpc"),
        (["--reference-protocol", "otlp-grpc", "--reference-grpc-endpoint", "h"], "must be HOST:PORT"),
    ],
)
def test_a_grpc_endpoint_that_cannot_be_used_is_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    code, output = run_cli(*args, tmp_path=tmp_path)
    assert code == 2, output
    assert output.startswith("error: --reference-protocol/--reference-grpc-endpoint: ")
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "r1").exists()  # refused before the run folder or the mesh


def test_check_reference_accepts_what_the_emitter_can_use() -> None:
    check_reference("zipkin", "")
    check_reference("otlp-http", "")
    check_reference("otlp-grpc", "")
    check_reference("otlp-grpc", "https://u:p@otel.example:4317")
    with pytest.raises(RunError, match="one of zipkin, otlp-http, otlp-grpc"):
        check_reference("otlp", "")


def test_run_json_keeps_the_protocol_and_not_the_endpoint_credentials() -> None:
    opts = RunOptions(reference_protocol="otlp-grpc", reference_grpc_endpoint="http://u:s3cret@otel:4317")
    d = options_dict(opts)
    assert d["reference_protocol"] == "otlp-grpc"
    assert d["reference_grpc_endpoint"] == "http://***@otel:4317"
    assert options_dict(RunOptions())["reference_protocol"] == "zipkin"
