"""The Typer application: every command, in the order `loadgen --help` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

from loadgen import __version__
from loadgen.cli import (
    calibrate,
    capacity,
    doctor,
    gate,
    plan,
    probe,
    report,
    run,
    stack,
    verify,
    watch,
    worker,
)
from loadgen.cli.console import out
from loadgen.cli.settings import ConfiguredCommand
from loadgen.exitcodes import EXIT_CODE_TABLE

app = typer.Typer(
    name="loadgen",
    help=(
        "Prove how Istio/Envoy tracing behaves: send traffic with and without B3 headers through a gateway, "
        "push reference spans straight to the collector, read everything back, and report the collection "
        "rate and sampling fidelity with confidence intervals.\n\n"
        "Start with `loadgen run` (it brings up an embedded real-Envoy mesh when no --gateway is given)."
    ),
    epilog="Every option can also be set as LOADGEN_<OPTION> in the environment (LOADGEN_DURATION=5m, "
    "LOADGEN_REFERENCE_RATE=20), and run's, capacity's and watch's in loadgen.toml's \\[run], "
    "\\[capacity] and \\[watch] tables (--config); a flag wins over the environment, which wins over the file.\n\n"
    "Exit codes (every command; `gate` uses 0, 1 and 2 only):\n\n"
    + "\n\n".join(f"{code}: {meaning}" for code, meaning in EXIT_CODE_TABLE),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
stack_app = typer.Typer(help="The embedded mesh on its own (real Envoy gateway + sidecar, echo, collector).")
app.add_typer(stack_app, name="stack")

for command in (
    run.run, plan.plan, calibrate.calibrate, capacity.capacity, watch.watch, worker.worker, probe.probe,
    doctor.doctor, verify.verify, report.report, gate.gate,
):  # fmt: skip
    app.command(cls=ConfiguredCommand)(command)
stack_app.command("up", cls=ConfiguredCommand)(stack.up)


def _version(value: bool) -> None:
    if value:
        out.print(f"loadgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass
