"""The base of every configuration section, and the one translation of a pydantic
validation error into the project's one-line :class:`~resseg_ray.errors.ConfigError`.

A section is a frozen, strict pydantic model: a field takes its own type only (``"3"`` is
not an integer, ``1`` is not ``true``), numbers are finite, unknown keys are errors, and the
string literal under a field (its attribute docstring) is its description, from which the
command-line flags (:mod:`resseg_ray.cli`) and the manual's reference are made.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from resseg_ray.errors import ConfigError

S = TypeVar("S", bound="Section")

MOVED = {"data.seed": "run.seed"}
"""Fields that moved: their old name gets an error naming the new one."""

_KINDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
"""What a field must be, by pydantic's error type."""


class Section(BaseModel):
    """A section of the configuration (a mapping in the YAML file)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

    section: ClassVar[str] = ""
    """The section's key in a configuration file (``""``: the whole configuration)."""
    flagged: ClassVar[bool] = False
    """Whether every field has a command-line flag (``--field-name`` unless :attr:`flags` says)."""
    flags: ClassVar[Mapping[str, str]] = {}
    """Fields whose flag is named otherwise, or the only fields with a flag (not :attr:`flagged`)."""

    @classmethod
    def flag(cls, name: str) -> str | None:
        """The command-line flag of field ``name``, where the jobs have one (named in its error
        messages, made by :mod:`~resseg_ray.config.flags`)."""
        if name in cls.flags:
            return cls.flags[name]
        return "--" + name.replace("_", "-") if cls.flagged and name in cls.model_fields else None

    @classmethod
    def field_name(cls, name: str) -> str:
        """``section.field``, with its flag where it has one (``predict.window (--window)``)."""
        flag = cls.flag(name)
        dotted = f"{cls.section}.{name}" if cls.section else name
        return f"{dotted} ({flag})" if flag else dotted

    def bad(self, name: str, rule: str, value: object) -> ConfigError:
        """The error of field ``name``: it ``must be {rule}, got {value!r}``."""
        return ConfigError(f"{self.field_name(name)} must be {rule}, got {value!r}")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as a new section is."""
        return from_dict(type(self), {**dict(self), **changes})


def from_dict(cls: type[S], data: Any, where: str | None = None) -> S:
    """Build section ``cls`` from a mapping (``None``: the defaults), checking every key, type
    and rule; any problem is a one-line :class:`~resseg_ray.errors.ConfigError` naming the
    field as the user wrote it (``where``: its dotted prefix, default the section's key)."""
    prefix = cls.section if where is None else where
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"configuration field {prefix or '<root>'} must be a mapping, got {data!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise config_error(cls, exc, prefix) from None


def config_error(cls: type[Section], exc: ValidationError, prefix: str = "") -> ConfigError:
    """The one error to show of a validation of ``cls``: an unknown field first (the likeliest
    typo), else the first in field order."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    ctx = first.get("ctx") or {}
    if isinstance(ctx.get("error"), ConfigError):  # a section's own rule: its message as it is
        return ctx["error"]
    loc = [p for p in first["loc"] if p != "[key]"]
    owner, name = _owner(cls, loc)
    where = _dotted(prefix, loc)
    flag = owner.flag(name) if owner is not None and name is not None else None
    if flag:
        where = f"{where} ({flag})"
    value = first.get("input")
    kind = first["type"]
    if kind == "extra_forbidden":
        moved = MOVED.get(where)
        if moved:
            return ConfigError(f"configuration field {where!r} is now {moved!r}; set that instead")
        known = list(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        parent = _dotted(prefix, loc[:-1])
        hint = f"; did you mean {_dotted(parent, [close[0]])!r}?" if close else f"; known: {', '.join(known)}"
        return ConfigError(f"unknown configuration field {where!r}{hint}")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}{hint}")
    if kind in _KINDS:
        return ConfigError(f"configuration field {where} must be {_KINDS[kind]}, got {value!r}")
    return ConfigError(f"configuration field {where}: {first['msg']}, got {value!r}")


def _owner(cls: type[Section], loc: Sequence[int | str]) -> tuple[type[Section] | None, str | None]:
    """The section that holds the field at ``loc`` (None inside a list or mapping), and the
    field's name."""
    owner: type[Section] | None = cls
    for part in loc[:-1]:
        if owner is None or not isinstance(part, str) or part not in owner.model_fields:
            return None, None
        owner = _section_type(owner.model_fields[part].annotation)
    return owner, (str(loc[-1]) if loc else None)


def _section_type(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    for arg in get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def _dotted(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def to_dict(cfg: Section) -> dict[str, Any]:
    """The configuration (or a section) as plain data, for YAML and JSON artifacts and for
    Ray workers, which build it back with :func:`from_dict`."""
    return cfg.model_dump()
