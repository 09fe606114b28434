"""`loadgen stack up`: the embedded mesh on its own, in the foreground."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from loadgen.cli.console import fatal, out
from loadgen.cli.groups import GatewayFlags, MeshFlags, TracingFlags, option_groups, tracing_config
from loadgen.stack.mesh import EmbeddedMesh, MeshConfig
from loadgen.stack.procs import StackError

Workdir = Annotated[
    Path, typer.Option("--workdir", help="Folder for configs, logs and the collector's span store.")
]


@option_groups
def up(
    *, tracing: TracingFlags, gw: GatewayFlags, mesh: MeshFlags, workdir: Workdir = Path("reports/stack")
) -> None:
    """Run the embedded mesh in the foreground until Ctrl-C; prints its URLs."""
    embedded = EmbeddedMesh(workdir, MeshConfig(tracing=tracing_config(tracing, gw, mesh)))
    try:
        embedded.start()
    except StackError as exc:
        fatal(f"the embedded mesh did not start: {exc}")
    try:
        _print_urls(embedded, workdir)
        while True:
            time.sleep(1.0)
            embedded.check_alive()
    except KeyboardInterrupt:
        out.print("stopping")
    except StackError as exc:
        fatal(str(exc))
    finally:
        embedded.stop()


def _print_urls(mesh: EmbeddedMesh, workdir: Path) -> None:
    assert mesh.gateway is not None
    out.print(f"gateway        {mesh.gateway_url}   (Host: {mesh.host_header})", markup=False)
    out.print(f"gateway admin  {mesh.gateway.admin_url}")
    if mesh.sidecar is not None:
        out.print(f"sidecar admin  {mesh.sidecar.admin_url}")
    out.print(f"collector      {mesh.collector_url}   (Zipkin v2 API: /api/v2/spans, /api/v2/trace/ID, ...)")
    out.print(f"workdir        {workdir}", markup=False)
    out.print("")
    out.print(f"try: curl -s -H 'Host: {mesh.host_header}' {mesh.gateway_url}/headers", markup=False)
    out.print(f"     locust -f scenarios/mesh.py --host {mesh.gateway_url}")
    out.print("Ctrl-C stops everything.")
