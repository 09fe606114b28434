"""`loadgen gate`: a finished run checked against CI thresholds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadgen.analysis.gates import (
    GateConfig,
    GateConfigError,
    evaluate_gates,
    gates_exit_code,
    gates_headline,
    load_gate_config,
)
from loadgen.cli.console import fatal, out
from loadgen.cli.inputs import summary_of
from loadgen.cli.options import RunDirArg
from loadgen.report.junit import render_junit

Config = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML with a [gates] table; default ./loadgen.toml when it exists.", dir_okay=False
    ),
]
MinCollection = Annotated[
    float | None, typer.Option("--min-collection", min=0, max=1, help="Mesh collection rate floor.")
]
MinReferenceCollection = Annotated[
    float | None,
    typer.Option("--min-reference-collection", min=0, max=1, help="Reference collection rate floor."),
]
MaxErrorRate = Annotated[
    float | None,
    typer.Option(
        "--max-error-rate",
        min=0,
        max=1,
        help="Errors / requests ceiling, a fraction as in `run` (default 0.05; 1 allows any share).",
    ),
]
MaxP99 = Annotated[
    float | None, typer.Option("--max-p99-ms", min=0, help="p99 latency ceiling (slowest mode).")
]
MaxLeaked = Annotated[int | None, typer.Option("--max-leaked", min=0, help="Leaked traces ceiling.")]
AllowInconclusive = Annotated[
    bool | None,
    typer.Option(
        "--allow-inconclusive/--require-pass",
        help="Whether an inconclusive verdict passes (default: it fails the gate).",
    ),
]
VerdictGates = Annotated[
    bool | None,
    typer.Option(
        "--verdict-gates/--no-verdict-gates",
        help="Check every verdict of the run (default); --no-verdict-gates checks only the sampling "
        "verdict and the thresholds.",
    ),
]
SamplingGate = Annotated[
    bool | None,
    typer.Option("--sampling-gate/--no-sampling-gate", help="Check the sampling verdict at all."),
]
Junit = Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here (one test case per gate).")]


def gate(
    run_dir: RunDirArg,
    config: Config = None,
    min_collection: MinCollection = None,
    min_reference_collection: MinReferenceCollection = None,
    max_error_rate: MaxErrorRate = None,
    max_p99_ms: MaxP99 = None,
    max_leaked: MaxLeaked = None,
    allow_inconclusive: AllowInconclusive = None,
    verdict_gates: VerdictGates = None,
    sampling_gate: SamplingGate = None,
    junit: Junit = None,
) -> None:
    """Check a finished run: every verdict must pass, and thresholds (flags, over the gates
    table of loadgen.toml) tighten that.

    Exit codes: 0 every gate passed, 1 a gate failed (a failed verdict, or an inconclusive one
    without --allow-inconclusive), 2 bad configuration or unreadable run. A gate whose quantity
    was never measured fails: a check that checked nothing is not green."""
    summary = summary_of(run_dir)
    flags = {
        "min_collection": min_collection,
        "min_reference_collection": min_reference_collection,
        "max_error_rate": max_error_rate,
        "max_p99_ms": max_p99_ms,
        "max_leaked": max_leaked,
        "allow_inconclusive": allow_inconclusive,
        "verdicts": verdict_gates,
        "sampling": sampling_gate,
    }
    cfg = _config(config, flags)
    results = evaluate_gates(summary, cfg)
    for result in results:
        out.print(
            f"{'PASS' if result.passed else 'FAIL'}  {result.name}: {result.message}",
            markup=False,
            highlight=False,
        )
    out.print(gates_headline(results), markup=False, highlight=False)
    if junit:
        props = {"run_id": summary.run_id, "run_dir": str(run_dir)}
        junit.write_text(render_junit(results, "loadgen.analysis.gates", properties=props))
    raise typer.Exit(gates_exit_code(results))


def _config(path: Path | None, flags: dict[str, float | int | bool | None]) -> GateConfig:
    """The gates: loadgen.toml's [gates] (--config, else ./loadgen.toml when it exists), flags over it."""
    path = path or (Path("loadgen.toml") if Path("loadgen.toml").exists() else None)
    try:
        base = load_gate_config(path) if path else GateConfig()
        return base.merged(flags)
    except GateConfigError as exc:
        fatal(str(exc))
