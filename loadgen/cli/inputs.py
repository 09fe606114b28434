"""Option values and files that more than one command reads, turned into what the command needs,
or into one `error:` line."""

from __future__ import annotations

import os
from pathlib import Path

from loadgen.cli.console import err, fatal, note
from loadgen.emitter import ReferenceProtocol
from loadgen.emitter.protocols import ReferenceSettings, reference_settings
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


def reference_flags(
    protocol: ReferenceProtocol | None, collector: str, grpc_endpoint: str, *, gateway: str
) -> ReferenceSettings:
    """--reference-protocol, --collector and --reference-grpc-endpoint (None / empty: not given),
    completed from the OpenTelemetry SDK's variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_*;
    loadgen.emitter.protocols.reference_settings). A variable that cannot be used is one line."""
    try:
        settings = reference_settings(
            os.environ,
            protocol=protocol,
            collector=collector,
            grpc_endpoint=grpc_endpoint,
            embedded=not gateway,
        )
    except ValueError as exc:
        fatal(str(exc))
    if settings.ignored:
        why = (
            "they go to the embedded mesh's own collector, the one read back"
            if not gateway
            else "--reference-protocol, --collector or --reference-grpc-endpoint decide"
        )
        note(f"{', '.join(settings.ignored)} not used for reference spans: {why}")
    return settings
