"""Option groups (loadgen.cli.groups): declared once, taken whole by each command that needs them,
with the same flags and defaults everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast

import pytest
import typer
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from loadgen import cli
from loadgen.cli.groups import FaultFlags, GatewayFlags, MeshFlags, TracingFlags, option_groups


@dataclass(frozen=True)
class Pair:
    left: Annotated[int, typer.Option("--left", help="Left.", min=0)] = 1
    right: Annotated[str, typer.Option("--right", help="Right.")] = "r"


def test_a_command_gets_one_instance_of_its_group() -> None:
    seen: list[Any] = []

    @option_groups
    def show(*, pair: Pair, name: Annotated[str, typer.Option("--name")] = "n") -> None:
        seen.append((pair, name))

    app = typer.Typer()
    app.command()(show)
    app.command()(lambda: None)  # two commands: `show` is a subcommand, as in loadgen
    result = CliRunner().invoke(app, ["show", "--left", "7", "--name", "x"])
    assert result.exit_code == 0, result.output
    assert seen == [(Pair(left=7, right="r"), "x")]
    # the group's range check is the option's own
    assert CliRunner().invoke(app, ["show", "--left", "-1"]).exit_code == 2


@dataclass(frozen=True)
class Named:
    pair: Annotated[int, typer.Option("--pair")] = 0


def test_a_group_repeating_a_parameter_is_refused() -> None:
    def field_twice(*, pair: Pair, left: int = 0) -> None:
        pass

    def group_name_as_field(*, pair: Pair, named: Named) -> None:
        pass

    with pytest.raises(TypeError, match="left"):
        option_groups(field_twice)
    with pytest.raises(TypeError, match="pair"):
        option_groups(group_name_as_field)


def _flags(command: Any, group: type[Any]) -> dict[str, tuple[list[str], object]]:
    names = set(group.__dataclass_fields__)
    return {p.name: (sorted(p.opts + p.secondary_opts), p.default) for p in command.params if p.name in names}


@pytest.mark.parametrize("group", [TracingFlags, GatewayFlags, MeshFlags, FaultFlags])
def test_every_command_taking_a_group_shows_the_same_flags(group: type[Any]) -> None:
    root = cast(TyperGroup, typer.main.get_command(cli.app))
    stack = cast(TyperGroup, root.commands["stack"])
    commands = {**root.commands, **{f"stack {n}": c for n, c in stack.commands.items()}}
    taking = {name: _flags(c, group) for name, c in commands.items() if _flags(c, group)}
    whole = {name: flags for name, flags in taking.items() if len(flags) == len(group.__dataclass_fields__)}
    assert len(whole) >= 2, taking  # a group exists because more than one command takes it
    first = next(iter(whole.values()))
    assert all(flags == first for flags in whole.values()), whole
    # the defaults shown are the group's own
    assert {name: default for name, (_, default) in first.items()} == {
        name: field.default for name, field in group.__dataclass_fields__.items()
    }
