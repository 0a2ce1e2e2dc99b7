"""The configuration reference, generated from the config classes at each build.

Every section of :class:`resseg_ray.config.Config` becomes a table of its fields: name, type,
default and the field's docstring (the string literal under it in ``resseg_ray/config/``, which
pydantic keeps as the field's description),
written to ``docs/_generated/config_reference.md`` before Sphinx reads the sources, and
included by ``configuration.md``. A field without a docstring fails the build: the reference
cannot drift from the code, and no option goes undocumented.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from typing import Any

from generated import cell, write_if_changed
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError


def _type(tp: Any) -> str:
    """A field's type as the reader writes values: choices spelled out (``'auto' | 'blocks'``)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str):
        return f"`{v}`" if v else '`""`'
    if isinstance(v, dict) and not v:
        return "`{}`"
    if isinstance(v, list) and not v:
        return "`[]`"
    return f"`{v}`"


def reference() -> str:
    """The whole reference as MyST markdown."""
    from resseg_ray.config import Config

    lines = []
    missing = []
    for section, info in Config.model_fields.items():
        cls = info.annotation
        assert isinstance(cls, type)
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0]
        lines += [f"### `{section}`", "", cell(summary), "", "| Field | Type | Default | Meaning |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, f in cls.model_fields.items():  # type: ignore[attr-defined]
            doc = inspect.cleandoc(f.description or "")
            if not doc:
                missing.append(f"{section}.{name}")
            flag = cls.flag(name)  # type: ignore[attr-defined]
            if flag and f"``{flag}``" not in doc:
                doc += f" Flag: ``{flag}``."
            annotation = _type(f.annotation)
            default = f.get_default(call_default_factory=True)
            lines.append(
                f"| `{section}.{name}` | `{annotation.replace('|', chr(92) + '|')}` | "
                f"{_value(default).replace('|', chr(92) + '|')} | {cell(doc)} |"
            )
        lines.append("")
    if missing:
        fields = ", ".join(missing)
        raise ExtensionError(f"config fields without a docstring in resseg_ray/config/: {fields}")
    return "\n".join(lines)


def _write(app: Sphinx) -> None:
    write_if_changed(os.path.join(app.srcdir, "_generated", "config_reference.md"), reference())


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _write)
    return {"version": "1", "parallel_read_safe": True}
