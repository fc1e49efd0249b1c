"""Every command's --help reads as an operator expects: values named by metavars (URL,
PATH, N), no Python types (``<str>``, ``<list[str]>``, ``Optional[...]``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from cowrieprocessor.cli import db, enrich, loader

APPS = {"cowrie-loader": loader.app, "cowrie-db": db.app, "cowrie-enrich": enrich.app}
PYTHON_TYPES = re.compile(
    r"<(?:str|int|float|bool|path|list|dict|tuple|class|datetime|uuid)\b|Optional\[|NoneType|"
    r"typing\.|\{\w+\}"
)


def _commands() -> Iterator[tuple[str, list[str], Any]]:
    """(program, argv to the command, command) for every group and command."""
    for program, app in APPS.items():
        stack: list[tuple[list[str], Any]] = [([], typer.main.get_command(app))]
        while stack:
            path, command = stack.pop()
            yield program, path, command
            for name, sub in getattr(command, "commands", {}).items():
                stack.append(([*path, name], sub))


CASES = [(program, path) for program, path, _ in _commands()]


@pytest.mark.parametrize(("program", "path"), CASES, ids=[" ".join([p, *a]) for p, a in CASES])
def test_help_names_values_not_python_types(program: str, path: list[str]) -> None:
    result = CliRunner().invoke(APPS[program], [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert not PYTHON_TYPES.search(result.stdout), result.stdout


def test_every_option_taking_a_value_has_a_metavar() -> None:
    missing = []
    for program, path, command in _commands():
        for param in command.params:
            flag = isinstance(param, TyperOption) and param.is_flag
            if isinstance(param, TyperOption | TyperArgument) and not flag and not param.metavar:
                missing.append(f"{program} {' '.join(path)} {param.name}")
    assert missing == []


def test_loader_usage_line_and_metavars() -> None:
    result = CliRunner().invoke(loader.app, ["ingest", "--help"], terminal_width=100)
    assert "ingest [OPTIONS] PATH..." in result.stdout
    assert re.search(r"--db\s+URL\s", result.stdout)
    assert re.search(r"--batch-size\s+N \[x>=1\]", result.stdout)
    assert re.search(r"--json\s+Print one", result.stdout)  # a flag shows no type
    missing = CliRunner().invoke(loader.app, ["ingest"])
    assert missing.exit_code == 2
    assert "Missing argument 'PATH...'" in missing.stderr
