"""The option tables of the job pages, generated from the commands' parsers at each build.

Each command's :func:`parser` (``resseg_ray/commands/<command>.py``) becomes a table of its
options: the flag with its value's name or choices, whether it is required, and its help (for
the flags made from configuration fields, the field's docstring and default), written to
``docs/_generated/options/<command>.md`` before Sphinx reads the sources and included by
``docs/jobs/<script>.md``. An option without a help text fails the build: the tables cannot
drift from the code, and no option goes undocumented.
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from generated import cell, write_if_changed
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError


def _flag(action: argparse.Action) -> str:
    """``--flag VALUE``, ``--flag {a,b}``, ``--flag A [A ...]`` as argparse's usage writes it."""
    formatter = argparse.HelpFormatter("resseg")
    usage = formatter._format_action_invocation(action)  # "--a, --b VALUE"
    return ", ".join(f"`{part.strip()}`" for part in usage.split(", "))


def _default(action: argparse.Action) -> str:
    """``(required)``, ``(default X)``, or nothing: no default of its own (a flag made from a
    configuration field says the field's default in its help), a switch, or a help that says
    its default already."""
    if action.required:
        return "(required)"
    d = action.default
    if (
        d is None
        or d is argparse.SUPPRESS
        or isinstance(d, bool)
        or d == []
        or "default" in (action.help or "")
    ):
        return ""
    return f"(default `{d:g}`)" if isinstance(d, float) else f"(default `{d}`)"


def options_table(command: str) -> str:
    """The options of ``resseg <command>`` as a MyST markdown table."""
    from resseg_ray.commands import COMMANDS

    module = importlib.import_module(f"resseg_ray.commands.{COMMANDS[command].module}")
    p = module.parser(f"resseg {command}")
    lines = ["| Option | Meaning |", "|---|---|"]
    missing = []
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = (action.help or "").replace("%%", "%")  # argparse's escape of a percent sign
        if not text.strip():
            missing.append(action.option_strings[0] if action.option_strings else action.dest)
        text = f"{text} {_default(action)}"
        lines.append(f"| {_flag(action)} | {cell(text)} |")
    if missing:
        raise ExtensionError(f"options of `resseg {command}` without a help text: {', '.join(missing)}")
    return "\n".join(lines) + "\n"


def _write(app: Sphinx) -> None:
    from resseg_ray.commands import COMMANDS

    for command in COMMANDS:
        write_if_changed(
            os.path.join(app.srcdir, "_generated", "options", f"{command}.md"), options_table(command)
        )


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _write)
    return {"version": "1", "parallel_read_safe": True}
