"""`loadgen run --web` without Locust: the state file, the Tracing tab's rows, Locust's argv/env."""

from __future__ import annotations

import sys
from pathlib import Path

from loadgen.run.load import _locust_argv, locust_env
from loadgen.run.options import RunOptions
from loadgen.run.webui import web_test_started, web_test_stopped, web_url
from loadgen.traffic.web_tab import WebState, read_state, tracing_rows, write_state
from loadgen.userinfo import basic_auth_header, split_userinfo

SUMMARY = {
    "status": "complete",
    "mesh": {"collection": {"k": 1234, "n": 1250, "rate": 0.9872, "ci95": [0.9793, 0.9922]}, "partial": 9},
    "reference": {"collection": {"k": 0, "n": 0, "rate": None}},
    "sampling": {"decision": {"k": 50, "n": 100, "rate": 0.5, "ci95": [0.4, 0.6]}},
    "modes": {"none": {"found": 40, "partial": 1, "missing": 2}},
    "verdicts": {"mesh_collection": "fail", "sampling": "pass"},
}
MODES = [{"mode": "none", "requests": 2000, "sampled": 50, "sampled_fraction": 0.025}]


def test_state_file_round_trip_and_phases(tmp_path: Path) -> None:
    path = tmp_path / "webui.json"
    assert read_state(path) is None and not web_test_started(tmp_path)
    write_state(path, WebState("running", 10.0))
    assert web_test_started(tmp_path) and not web_test_stopped(tmp_path)
    write_state(path, WebState("stopped", 12.5, 321))
    assert read_state(path) == WebState("stopped", 12.5, 321)
    assert web_test_stopped(tmp_path)
    path.write_text("{not json")
    assert read_state(path) is None  # a torn file reads as no state, never raises


def _tab(rows: list[dict[str, str]]) -> dict[str, str]:
    return {r["what"]: r["value"] for r in rows}


def test_tracing_rows_during_the_load_and_after_the_read_back() -> None:
    live = _tab(tracing_rows("r1", MODES, web=True, state=WebState("running", 1.0)))
    assert live == {
        "run id": "r1",
        "state": "load running: stop the test to read the traces back and write the report",
        "mode none": "2,000 requests, the upstream saw 50 sampled (2.5 %)",
    }
    reading = _tab(tracing_rows("r1", MODES, web=True, state=WebState("stopped", 2.0, 2000)))
    assert reading["state"].startswith("reading the traces back")
    done = _tab(
        tracing_rows(
            "r1", MODES, web=True, state=WebState("stopped", 2.0), summary=SUMMARY, report_url="http://h/r"
        )
    )
    assert done["state"] == "report written (complete)"
    assert done["mode none"].endswith("; traces found 40, partial 1, missing 2")
    assert done["mesh collection"] == "1,234 of 1,250 (98.7 %, 95 % interval 97.9–99.2 %)"
    assert done["reference collection"] == "none checked"
    assert done["sampled decisions"] == "50 of 100 (50.0 %, 95 % interval 40.0–60.0 %)"
    assert done["verdicts"] == "mesh_collection: fail, sampling: pass"
    assert done["report"] == "http://h/r"
    # plain Locust: no state row, no result
    assert [r["what"] for r in tracing_rows("", MODES, web=False)] == ["run id", "mode none"]


def test_web_mode_runs_locust_with_its_ui_not_headless(tmp_path: Path) -> None:
    opts = RunOptions(web=True, web_host="127.0.0.1", web_port=18089, users=3, spawn_rate=2)
    argv = _locust_argv(opts, tmp_path)
    assert argv[:3] == [sys.executable, "-m", "locust"]
    assert "--headless" not in argv and "-t" not in argv and "--json-file" not in argv
    assert argv[argv.index("--web-port") + 1] == "18089" and argv[argv.index("--web-host") + 1] == "127.0.0.1"
    assert argv[argv.index("-u") + 1] == "3"  # the start form's default
    env = locust_env(opts, "r", "http://gw", "h", tmp_path / "ledger.jsonl", None)
    assert env["LOADGEN_WEB_STATE"] == str(tmp_path / "webui.json")
    headless = _locust_argv(RunOptions(duration_s=7), tmp_path)
    assert "--headless" in headless and headless[headless.index("-t") + 1] == "7s"
    assert "--web-port" not in headless
    assert "LOADGEN_WEB_STATE" not in locust_env(RunOptions(), "r", "http://gw", "h", tmp_path / "l", None)
    assert web_url("::1", 8089) == "http://[::1]:8089/"


def test_the_gateway_credentials_travel_apart_from_the_host_locust_shows(tmp_path: Path) -> None:
    env = locust_env(
        RunOptions(web=True), "r", "http://gw:p%40ss@127.0.0.1:8080/base", "h", tmp_path / "l", None
    )
    assert env["LOCUST_HOST"] == "http://127.0.0.1:8080/base"
    assert env["LOADGEN_GATEWAY_USERINFO"] == "gw:p%40ss"
    assert "LOADGEN_GATEWAY_USERINFO" not in locust_env(
        RunOptions(), "r", "http://gw", "h", tmp_path / "l", None
    )
    # RFC 7617: base64 of "gw:p@ss" (percent-decoded), worked out by hand: Z3c6cEBzcw==
    assert basic_auth_header("gw:p%40ss") == "Basic Z3c6cEBzcw=="
    assert split_userinfo("https://[::1]:9/x?y=1") == ("https://[::1]:9/x?y=1", "")
