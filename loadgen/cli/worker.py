"""`loadgen worker`: load for a `loadgen run --master` elsewhere."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer

from loadgen.exitcodes import EXIT_INTERRUPTED
from loadgen.run import default_scenario_path

MasterHost = Annotated[str, typer.Option("--master-host", help="Host of the `loadgen run --master` process.")]
MasterPort = Annotated[int, typer.Option("--master-port", help="Its --master-bind-port.")]
Scenario = Annotated[str, typer.Option("--scenario", help="The same locustfile the master uses.")]


def worker(master_host: MasterHost, master_port: MasterPort = 5557, scenario: Scenario = "") -> None:
    """Generate load for a `loadgen run --master` elsewhere (another machine or pod). Records go to
    the master over Locust's message channel; the master writes the ledger and the report.
    Runs until the master ends the run (or Ctrl-C)."""
    argv = [
        sys.executable, "-m", "locust", "-f", scenario or default_scenario_path(),
        "--worker", "--master-host", master_host, "--master-port", str(master_port),
    ]  # fmt: skip
    try:
        code = subprocess.call(argv)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)
