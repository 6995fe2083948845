"""The README's vaultctl commands are real: each command path and option exists in the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"
COMMAND = re.compile(r"^\.venv/bin/vaultctl (?P<args>[^#]+?)\s*(#.*)?$")


def readme_commands() -> list[list[str]]:
    commands = []
    for line in README.read_text(encoding="utf-8").splitlines():
        match = COMMAND.match(line.strip())
        if match:
            commands.append(shlex.split(match.group("args")))
    return commands


def test_the_readme_shows_vaultctl_commands() -> None:
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("args", readme_commands(), ids=lambda args: " ".join(args[:2]))
def test_each_readme_command_and_its_options_exist(args: list[str]) -> None:
    groups = {group.name for group in app.registered_groups}
    path = [a for a in args if not a.startswith("-")][: 2 if args[0] in groups else 1]
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    for option in (a for a in args if a.startswith("--")):
        assert option in result.output, f"{option} is not an option of vaultctl {' '.join(path)}"
