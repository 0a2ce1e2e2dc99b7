"""API pages, generated from the package at each build: one page per layer's package listing
every module of it (``automodule``), so a new module is documented as soon as it exists.
Written to ``docs/api/`` before Sphinx reads the sources."""

from __future__ import annotations

import os
import pkgutil
from typing import Any

from generated import write_if_changed
from sphinx.application import Sphinx

import resseg_ray

CORE = "core"
"""The page of the package's top-level modules (configuration, errors, device, ...)."""


def pages() -> dict[str, list[str]]:
    """Page name -> fully qualified modules on it, in name order."""
    out: dict[str, list[str]] = {CORE: []}
    for info in pkgutil.iter_modules(resseg_ray.__path__):
        name = f"resseg_ray.{info.name}"
        if info.ispkg:
            sub = __import__(name, fromlist=["__path__"])
            # modules and nested packages (serving.routes) alike, at any depth
            mods = [m.name for m in pkgutil.walk_packages(sub.__path__, prefix=f"{name}.")]
            out[info.name] = [name, *sorted(mods)]
        else:
            out[CORE].append(name)
    out[CORE].sort()
    return out


def _write(app: Sphinx) -> None:
    folder = os.path.join(app.srcdir, "api")
    os.makedirs(folder, exist_ok=True)
    found = pages()
    order = [CORE, *sorted(k for k in found if k != CORE)]
    index = [
        "# API",
        "",
        "The package's modules, generated from their docstrings. Each layer imports only the layers",
        "below it ([Architecture](../architecture.md)).",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
        *order,
        "```",
        "",
    ]
    write_if_changed(os.path.join(folder, "index.md"), "\n".join(index))
    for page in order:
        title = "Top-level modules" if page == CORE else f"resseg_ray.{page}"
        body = [f"# {title}", ""]
        for mod in found[page]:
            # autodoc writes reST: parsed as such inside MyST's eval-rst
            # a package's page shows its docstring only: its re-exported names are documented
            # once, in the module that defines them
            bare = mod == f"resseg_ray.{page}"
            options = ["   :no-members:"] if bare else []
            body += [f"## `{mod}`", "", "```{eval-rst}", f".. automodule:: {mod}", *options, "```", ""]
        write_if_changed(os.path.join(folder, f"{page}.md"), "\n".join(body))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _write)
    return {"version": "1", "parallel_read_safe": True}
