"""Sphinx configuration of the resseg-ray manual (``make docs``; built with warnings as errors
inside ``make test``)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

project = "resseg-ray"
author = "the resseg-ray developers"
copyright = "2026, the resseg-ray developers"  # Sphinx's name for it

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "config_reference",
    "command_options",
    "api_pages",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated", "screenshots.py"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_member_order = "bysource"
# Sphinx 9's class documenter writes the string annotations it re-parses from third-party
# sources back onto classes, among them pydantic's BaseModel; a model defined after that with
# extra="allow" (MLflow's, imported by a later module) then fails to build
# (sphinx-doc/sphinx#14337). The legacy documenter does not.
autodoc_use_legacy_class_based = True
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False, "exclude-members": "model_config"}
html_theme = "alabaster"
html_title = "resseg-ray"
html_static_path: list[str] = []
