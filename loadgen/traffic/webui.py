"""Locust's web UI for loadgen: the "Tracing (loadgen)" tab, /loadgen as JSON, and the web mode
of `loadgen run --web`.

The tab (Locust's extended-tab mechanism: `template_args` extendedTabs/extendedTables, rows sent
in /stats/requests as `extended_stats`) shows the run id and, per header mode, the requests so
far and the sampled fraction the upstream saw. Under `loadgen run --web` (LOADGEN_WEB_STATE
names the state file in the run folder) it also says where the run is, and once loadgen has read
the traces back it shows the collection numbers from summary.json and links the report, served
at /loadgen/report (also listed on the "Download Data" tab). That run has one test: when it
stops, the ledger is closed and locust.json written, then the state file says so; starting
another test is refused (a new `loadgen run --web` makes a new run).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import flask
from locust import events
from locust.env import Environment
from locust.stats import save_stats_json

from loadgen.traffic.state import STATE, live_rows
from loadgen.traffic.web_tab import (
    RUNNING,
    STOPPED,
    WEB_STATE_ENV,
    WebState,
    read_state,
    tracing_rows,
    write_state,
)

TAB_KEY = "loadgen"
REPORT_ROUTE = "/loadgen/report"


def web_state_path() -> Path | None:
    """The state file of `loadgen run --web`, or None for plain Locust."""
    value = os.environ.get(WEB_STATE_ENV, "")
    return Path(value) if value else None


def _summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def current_rows(base_url: str) -> list[dict[str, str]]:
    """The Tracing tab's rows now (`base_url`: the web UI's address, for the report's link)."""
    state_path = web_state_path()
    if state_path is None:
        return tracing_rows(STATE.run_id, live_rows(), web=False)
    run_dir = state_path.parent
    summary = _summary(run_dir)
    report = summary is not None and (run_dir / "report.html").is_file()
    return tracing_rows(
        STATE.run_id or os.environ.get("LOADGEN_RUN_ID", ""),
        live_rows(),
        web=True,
        state=read_state(state_path),
        summary=summary,
        report_url=base_url.rstrip("/") + REPORT_ROUTE if report else None,
    )


@events.init.add_listener
def _extend_web_ui(environment: Environment, **_: Any) -> None:
    web_ui = environment.web_ui
    if web_ui is None or web_ui.app is None:
        return
    app = web_ui.app
    web_ui.template_args["extendedTabs"] = [{"title": "Tracing (loadgen)", "key": TAB_KEY}]
    web_ui.template_args["extendedTables"] = [
        {"key": TAB_KEY, "structure": [{"key": "what", "title": ""}, {"key": "value", "title": ""}]}
    ]
    if web_state_path() is not None:
        web_ui.template_args["extendedCsvFiles"] = [
            {"href": "." + REPORT_ROUTE, "title": "loadgen report (HTML, once the test has stopped)"}
        ]

    @app.after_request
    def _add_tracing_stats(response: Any) -> Any:
        if flask.request.path != "/stats/requests" or not response.is_json:
            return response
        data = response.get_json()
        data["extended_stats"] = [{"key": TAB_KEY, "data": current_rows(flask.request.host_url)}]
        response.set_data(json.dumps(data))
        return response

    @app.before_request
    def _one_test_per_run() -> Any:
        if flask.request.path == "/swarm" and STATE.finished:
            message = (
                "this loadgen run's test has ended (see the Tracing tab); start `loadgen run --web` again"
            )
            return flask.jsonify({"success": False, "message": message, "host": environment.host})
        return None

    @app.route("/loadgen")
    def _loadgen_stats() -> Any:
        state_path = web_state_path()
        state = read_state(state_path) if state_path else None
        return flask.jsonify(
            {
                "run_id": STATE.run_id,
                "modes": live_rows(),
                "state": state.state if state else None,
                "tracing": current_rows(flask.request.host_url),
            }
        )

    @app.route(REPORT_ROUTE)
    def _loadgen_report() -> Any:
        state_path = web_state_path()
        report = state_path.parent / "report.html" if state_path else None
        if report is None or not report.is_file():
            return flask.Response(
                "no report yet: it is written when the test stops\n", 404, mimetype="text/plain"
            )
        return flask.send_file(report.resolve(), mimetype="text/html")


@events.test_start.add_listener
def _on_web_test_start(environment: Environment, **_: Any) -> None:
    state_path = web_state_path()
    if state_path is not None and not STATE.finished:
        STATE.configure(environment)
        write_state(state_path, WebState(RUNNING, time.time()))


@events.test_stop.add_listener
def _on_web_test_stop(environment: Environment, **_: Any) -> None:
    """Web mode: the ledger closed, then locust.json, then the state file loadgen waits for."""
    state_path = web_state_path()
    if state_path is None or STATE.finished or read_state(state_path) is None:
        return  # not web mode, already stopped, or Locust quits before any test started
    STATE.finish()
    if environment.runner is not None:
        save_stats_json(environment.runner.stats, str(state_path.parent / "locust"))
    write_state(state_path, WebState(STOPPED, time.time(), STATE.requests()))
