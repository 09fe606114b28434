"""Option values and files that more than one command reads, turned into what the command needs,
or into one `error:` line."""

from __future__ import annotations

from pathlib import Path

from loadgen.cli.console import err, fatal
from loadgen.mesh.istio_config import IstioConfigError, WorkloadMode, effective_sampling, load_istio_files
from loadgen.mesh.modes import parse_mix
from loadgen.runfolder import RunFolderError, read_summary
from loadgen.summary.model import Summary


def check_mix(mix: str) -> None:
    try:
        parse_mix(mix)
    except ValueError as exc:
        fatal(f"--mix: {exc}")


def expected_percent(expect: float | None, expect_from: list[Path] | None) -> float | None:
    """--expect, or the ingress gateway's sampling as Istio's YAML in --expect-from sets it."""
    if not expect_from:
        return expect
    if expect is not None:
        fatal("give either --expect or --expect-from, not both")
    try:
        resources = load_istio_files(expect_from)
    except (OSError, IstioConfigError) as exc:
        fatal(f"--expect-from: {exc}")
    eff = effective_sampling(resources, "istio-system", {"istio": "ingressgateway"}, WorkloadMode.CLIENT)
    err.print(f"expected sampling {eff.percent:g} % from {eff.source}", markup=False)
    return eff.percent


def summary_of(run_dir: Path) -> Summary:
    """A run folder's summary.json, decoded into the typed model (loadgen.runfolder)."""
    try:
        return read_summary(run_dir / "summary.json")
    except RunFolderError as exc:
        fatal(str(exc))
