"""The README's usage block (under "The `cdl` command") is where a user looks for what a command takes: every
option `cdl COMMAND --help` lists must be in it (it lacked `devices enroll --inference-auth` and `--raw-below`,
which deploy.maintain's own hint names, `monitor --fail-on-drift` for CI, `loop --labels`, and more)."""
from __future__ import annotations

import re
from pathlib import Path

import click

from runtime.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _usage_block() -> str:
    return README.read_text(encoding="utf-8").split("## The `cdl` command", 1)[1].split("```")[1]


def _leaves(cmd: click.Command, path: tuple[str, ...]):
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                yield from _leaves(sub, (*path, name))
    else:
        yield path, cmd


def test_every_command_and_option_is_in_the_readme_usage_block() -> None:
    block = _usage_block()
    missing = []
    for path, cmd in _leaves(cli, ("cdl",)):
        if not re.search(rf"[ |]{re.escape(path[-1])}\b", block):
            missing.append(" ".join(path))
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and "--help" not in p.opts:
                if not any(o in block for o in p.opts if o.startswith("-")):
                    missing.append(f"{' '.join(path)} {'/'.join(p.opts)}")
    assert not missing, f"README's usage block lacks: {missing}"
