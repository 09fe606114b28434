"""The `loadgen` command line: the only place that parses arguments, prints, and exits.

    main() (this module: every way out is one exit code from loadgen.exitcodes)
      -> application.app (Typer: the commands, in `--help` order)
           -> one module per command: run, plan, calibrate, capacity, worker, probe, doctor,
              verify, report, gate, stack (`stack up`)
                -> options (each shared option declared once), groups (option groups: the
                   embedded mesh's tracing, gateway, shape and faults), inputs (option values and
                   files more than one command reads), console (printing, one-line errors, the
                   option checks every command makes), crash (the traceback file)

A command parses and checks its options, hands one options object to its command module
(loadgen.run, loadgen.capacity, ...), prints what comes back and exits with its code.
"""

from __future__ import annotations

import signal
import sys

import typer
from rich.markup import escape
from typer._click import exceptions as click_errors

from loadgen.analysis.gates import GateConfigError
from loadgen.backends import BackendError
from loadgen.calibrate import CalibrationError
from loadgen.cli.application import app, stack_app
from loadgen.cli.console import CheckedCommand, err, error_line
from loadgen.cli.crash import os_error_message, save_traceback
from loadgen.cli.settings import ConfiguredCommand, source_of
from loadgen.exitcodes import EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED
from loadgen.mesh.istio_config import IstioConfigError
from loadgen.mesh.profile import ProfileError
from loadgen.probe import ProbeError
from loadgen.run import RunError
from loadgen.runfolder import RunFolderError
from loadgen.stack.procs import StackError

__all__ = ["CheckedCommand", "ConfiguredCommand", "app", "main", "stack_app"]

# Exceptions that are the user's or the environment's doing, not loadgen's: one line, exit 2.
# (Commands turn the ones they expect into `fatal` lines themselves; this is the net below.)
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RunError,
    StackError,
    BackendError,
    ProbeError,
    ProfileError,
    IstioConfigError,
    GateConfigError,
    CalibrationError,
    RunFolderError,
)


def main() -> None:
    """The console script: every way out is one exit code from `loadgen.exitcodes`, and no
    traceback reaches the terminal."""
    _interrupts_as_keyboard_interrupt()
    try:
        # Not standalone: click's own usage errors come here too, to be one line like the rest.
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError:
        sys.exit(EXIT_ERROR)  # the help is already printed
    except click_errors.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = source_of(exc) or exc.format_message()
        err.print(f"[bold red]error:[/] {error_line(message)}{escape(hint)}")
        sys.exit(EXIT_ERROR)
    except typer.Abort:
        err.print("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except _EXPECTED_ERRORS as exc:
        message = os_error_message(exc) if isinstance(exc, OSError) else str(exc)
        err.print(f"[bold red]error:[/] {error_line(message)}")
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        try:
            saved = f"traceback saved to {save_traceback(exc)}"
        except Exception:
            saved = "the traceback could not be saved"
        line = error_line(f"{type(exc).__name__}: {exc}")
        err.print(f"[bold red]internal error[/] (a bug in loadgen): {line}; {escape(saved)}")
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupts_as_keyboard_interrupt() -> None:
    """SIGINT, SIGTERM (CI, Kubernetes) and SIGHUP (a closed terminal or SSH session) all end a
    run the same way: the ledger flushed, a partial report, exit 130."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A background job of a non-interactive shell starts with SIGINT ignored, and Python then
    # installs no handler: without this, Ctrl-C / `kill -INT` would not stop a run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
