"""The configuration reference, generated from the config classes at each build.

Every section of :class:`resseg_ray.config.Config` becomes a table of its fields: name, type,
default and the field's docstring (the string literal under it in ``resseg_ray/config.py``),
written to ``docs/_generated/config_reference.md`` before Sphinx reads the sources, and
included by ``configuration.md``. A field without a docstring fails the build: the reference
cannot drift from the code, and no option goes undocumented.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
import textwrap
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

ROLE = re.compile(r":(\w+):`")


def field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """Field name -> (annotation as written, docstring) of a dataclass, from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: dict[str, tuple[str, str]] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                doc = inspect.cleandoc(str(after.value.value))
            out[node.target.id] = (ast.unparse(node.annotation), doc)
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _cell(text: str) -> str:
    """Markdown table cell: one line, pipes escaped, reST roles as MyST roles."""
    return ROLE.sub(r"{\1}`", " ".join(text.split())).replace("|", "\\|")


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
    for section in dataclasses.fields(Config):
        cls = section.type if isinstance(section.type, type) else type(_default(section))
        docs = field_docs(cls)
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0]
        lines += [f"### `{section.name}`", "", _cell(summary), "", "| Field | Type | Default | Meaning |",
                  "|---|---|---|---|"]  # fmt: skip
        for f in dataclasses.fields(cls):
            annotation, doc = docs.get(f.name, ("", ""))
            if not doc:
                missing.append(f"{section.name}.{f.name}")
            lines.append(
                f"| `{section.name}.{f.name}` | `{annotation.replace('|', chr(92) + '|')}` | "
                f"{_value(_default(f)).replace('|', chr(92) + '|')} | {_cell(doc)} |"
            )
        lines.append("")
    if missing:
        fields = ", ".join(missing)
        raise ExtensionError(f"config fields without a docstring in resseg_ray/config.py: {fields}")
    return "\n".join(lines)


def _write(app: Sphinx) -> None:
    folder = os.path.join(app.srcdir, "_generated")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "config_reference.md")
    text = reference()
    old = open(path).read() if os.path.exists(path) else None
    if text != old:  # an unchanged file keeps Sphinx's cache of the page
        with open(path, "w") as f:
            f.write(text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _write)
    return {"version": "1", "parallel_read_safe": True}
