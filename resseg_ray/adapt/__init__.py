"""Adaptation to a new scene: annotated areas, refinement from a parent model, where to annotate.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.adapt.area import AnnotatedArea
    from resseg_ray.adapt.refine import AreaSpec, refine_scene
    from resseg_ray.adapt.suggest import suggest_regions

__all__ = [
    "AnnotatedArea",
    "AreaSpec",
    "refine_scene",
    "suggest_regions",
]

_EXPORTS = {
    "AnnotatedArea": "resseg_ray.adapt.area",
    "AreaSpec": "resseg_ray.adapt.refine",
    "refine_scene": "resseg_ray.adapt.refine",
    "suggest_regions": "resseg_ray.adapt.suggest",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
