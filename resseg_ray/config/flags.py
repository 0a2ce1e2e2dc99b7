"""Command-line flags made from configuration fields: one definition of each option.

A field's flag is named by its section (:meth:`~resseg_ray.config.base.Section.flag`); its
type, choices and number of values come from the field's annotation, its help from the
field's docstring and default. :func:`given` reads back the flags a user gave,
as changes to the section (validated by :meth:`~resseg_ray.config.base.Section.replace`, so a
bad value is the section's own one-line error, naming the flag).
"""

from __future__ import annotations

import argparse
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from resseg_ray.config.base import Section

_LITERAL = re.compile(r"``([^`]*)``")
_ROLE = re.compile(r":\w+:`~?(?:[\w.]*\.)?([^`]+)`")


def flag_of(section: type[Section], name: str) -> str:
    """The flag of field ``name`` (:meth:`~resseg_ray.config.base.Section.flag`)."""
    flag = section.flag(name)
    if flag is None:  # a programming error: the section does not give this field a flag
        raise ValueError(f"{section.__name__}.{name} has no command-line flag")
    return flag


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _plain(tp: Any) -> Any:
    """The annotation without ``| None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def help_text(section: type[Section], name: str) -> str:
    """The field's docstring as one line of plain text, with its default (where it has one)."""
    f = section.model_fields[name]
    text = " ".join(_ROLE.sub(r"\1", _LITERAL.sub(r"\1", f.description or "")).split())
    default = f.get_default(call_default_factory=True)
    if default is None or isinstance(default, bool) or default in ([], {}):
        return text
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{text} (default {shown})"


def add_flags(
    p: argparse.ArgumentParser,
    section: type[Section],
    names: Iterable[str] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Add the flags of ``section``'s fields ``names`` (default all) to ``p``, none with a
    default of its own (an absent flag leaves the configuration's value). ``extra``: more
    ``add_argument`` keywords by field (``metavar``, a fixed ``nargs``)."""
    for name in names if names is not None else section.model_fields:
        flag = flag_of(section, name)
        tp = _plain(section.model_fields[name].annotation)
        # argparse %-formats help texts: a docstring's "80 %" must reach it as "80 %%"
        kwargs: dict[str, Any] = {"dest": _dest(flag), "help": help_text(section, name).replace("%", "%%")}
        if tp is bool:
            kwargs.update(action="store_const", const=not flag.startswith("--no-"))
        elif typing.get_origin(tp) is typing.Literal:
            kwargs["choices"] = typing.get_args(tp)
        elif typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            kwargs.update(nargs="+", type=item)
        elif tp in (int, float):
            kwargs["type"] = tp
        kwargs.update((extra or {}).get(name, {}))
        p.add_argument(flag, **kwargs)


def given(args: argparse.Namespace, section: type[Section]) -> dict[str, Any]:
    """The fields of ``section`` whose flags were given, with their values."""
    out = {}
    for name in section.model_fields:
        flag = section.flag(name)
        value = getattr(args, _dest(flag), None) if flag else None
        if value is not None:
            out[name] = value
    return out


def add_config_options(p: argparse.ArgumentParser, default: str | None = None, used: str = "") -> None:
    """``--config FILE`` (``default``: one of the project's ``configs/``; ``used``: which of its
    sections the command reads, when not all) and ``--set SECTION.FIELD=VALUE``."""
    text = "YAML configuration" + (f" (default configs/{os.path.basename(default)})" if default else "")
    p.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help=f"{text}{'; ' + used if used else ''}: see the configuration reference",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        metavar="SECTION.FIELD=VALUE",
        action="append",
        default=[],
        help="override one field of the configuration, e.g. train.lr=0.001 (repeatable, after --config)",
    )
