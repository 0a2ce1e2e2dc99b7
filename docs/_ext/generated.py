"""What the extensions that generate pages share: a markdown table cell, and writing a
generated page only when it changed (an unchanged file keeps Sphinx's cache of the page)."""

from __future__ import annotations

import os
import re

ROLE = re.compile(r":(\w+):`")


def cell(text: str) -> str:
    """Markdown table cell: one line, pipes escaped, reST roles as MyST roles."""
    return ROLE.sub(r"{\1}`", " ".join(text.split())).replace("|", "\\|")


def write_if_changed(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (its folder made) unless the file holds it already."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    old = open(path).read() if os.path.exists(path) else None
    if text != old:
        with open(path, "w") as f:
            f.write(text)
