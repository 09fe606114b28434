"""Where an option's value comes from when it is not on the command line: the environment
(`LOADGEN_<FLAG>`), then `loadgen.toml` (`[run]`, `[capacity]`), then the command's default.

    flag  >  LOADGEN_<FLAG>  >  loadgen.toml [<command>]  >  default

That is click's own order (command line, environment, `Context.default_map`, default):
`ConfiguredCommand` gives every option its variable (`--reference-rate` reads
`LOADGEN_REFERENCE_RATE`, `--no-probe`'s option `LOADGEN_PROBE=false`), and `--config`, an eager
option processed before the others, loads the file's table into the context's default map.
`run` and `capacity` read `./loadgen.toml` when it exists, as `gate` reads its `[gates]`.

A bad value from the environment or the file is one line naming where it came from
(`source_of`), exit 2 like any bad flag.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from typer._click import core as click_core
from typer._click import exceptions as click_errors

from loadgen.cli.console import CheckedCommand

ENV_PREFIX = "LOADGEN_"
DEFAULT_CONFIG = Path("loadgen.toml")
#: Commands whose options loadgen.toml sets, each from the table of its name.
CONFIGURED_COMMANDS = ("run", "capacity")
#: Options without a variable: --backend-header's is LOADGEN_BACKEND_HEADERS ("Name: v; Name2: v2",
#: loadgen.backends.base), read where the backend is opened; a plain variable would split its
#: values at spaces. --config's file cannot set --config.
_NO_ENV = frozenset({"--backend-header"})
_META = "loadgen.config"  # ctx.meta key: (file, table, {param name: key as written})


def env_name(flag: str) -> str:
    """`--reference-rate` -> `LOADGEN_REFERENCE_RATE`."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def _long_flag(param: click_core.Parameter) -> str | None:
    names = [o for o in param.opts if o.startswith("--")]
    return names[0] if names else None


class ConfiguredCommand(CheckedCommand):
    """A checked command whose every option also reads `LOADGEN_<FLAG>` from the environment
    (not shown in --help: one rule, stated in `loadgen --help` and docs/commands.md)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            flag = _long_flag(param)
            if param.param_type_name == "option" and flag and flag not in _NO_ENV and param.envvar is None:
                param.envvar = env_name(flag)


class ConfigError(click_errors.UsageError):
    """loadgen.toml cannot be used: unreadable, not TOML, or a key no option of the command has."""


def option_keys(params: list[click_core.Parameter]) -> dict[str, str]:
    """Keys a command's table may hold -> parameter names: each option's long flag without its
    dashes, with `-` or `_` (`reference-rate`, `reference_rate`). A `--x/--no-x` switch is `x`."""
    keys: dict[str, str] = {}
    for param in params:
        flag = _long_flag(param)
        if param.param_type_name != "option" or not flag or param.name in (None, "config"):
            continue
        key = flag.lstrip("-")
        keys[key] = keys[key.replace("-", "_")] = param.name or ""
    return keys


def config_defaults(
    text: str, source: str, table: str, params: list[click_core.Parameter]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The `[table]` of a loadgen.toml document as a default map (parameter name -> value, as
    written: the option's own type checks it later) and the key each came from. ConfigError names
    the file and the key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    values = doc.get(table, {})
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{table}] must be a table")
    known = option_keys(params)
    defaults: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, value in values.items():
        name = known.get(key)
        if name is None:
            raise ConfigError(f"{source}: [{table}] {key}: no option --{key.replace('_', '-')}")
        if name in defaults:
            raise ConfigError(f"{source}: [{table}] sets {keys[name]} twice (as {key})")
        if isinstance(value, dict):
            raise ConfigError(f"{source}: [{table}] {key} must be a value, not a table")
        defaults[name], keys[name] = value, key
    return defaults, keys


def load_config(ctx: click_core.Context, value: Path | None) -> Path | None:
    """--config's callback (eager: before any other option): the command's table of `value`, else
    of ./loadgen.toml when it exists, becomes the context's default map."""
    path = value if value is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is None or ctx.resilient_parsing:
        return value
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); expected TOML") from exc
    table = ctx.info_name or ""
    command = ctx.command
    defaults, keys = config_defaults(text, str(path), table, list(command.params))
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[_META] = (str(path), table, keys)
    return value


def source_of(exc: click_errors.ClickException) -> str | None:
    """For a bad option value that came from the environment or loadgen.toml, the one line that
    names it (`LOADGEN_RATE='abc': --rate: ...`, `loadgen.toml [run] rate = 'abc': --rate: ...`);
    None for a value given as a flag (click's message names the flag)."""
    ctx: click_core.Context | None = getattr(exc, "ctx", None)
    param: click_core.Parameter | None = getattr(exc, "param", None)
    if ctx is None or param is None or not param.name:
        return None
    source = ctx.get_parameter_source(param.name)
    flag = _long_flag(param) or param.name
    reason = getattr(exc, "message", None) or exc.format_message()
    if source is click_core.ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
        shown = os.environ.get(param.envvar, "")
        return f"{param.envvar}={shown!r} (environment): {flag}: {reason}"
    if source is click_core.ParameterSource.DEFAULT_MAP:
        path, table, keys = ctx.meta.get(_META, ("loadgen.toml", ctx.info_name, {}))
        key = keys.get(param.name, param.name)
        shown_value = _shown((ctx.default_map or {}).get(param.name))
        return f"{path} [{table}] {key} = {shown_value}: {flag}: {reason}"
    return None


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "{...}"
    return str(value).lower() if isinstance(value, bool) else str(value)
