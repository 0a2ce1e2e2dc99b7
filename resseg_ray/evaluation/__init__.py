"""Scores: confusion-matrix metrics, scenes and masks against labels, object F1, Table II markdown.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.evaluation.metrics import Confusion
    from resseg_ray.evaluation.objects import object_scores
    from resseg_ray.evaluation.scenes import (
        Evaluation,
        SceneScore,
        evaluate_mask,
        evaluate_scene,
        evaluate_scenes,
        markdown_table,
        scene_name,
    )

__all__ = [
    "Confusion",
    "Evaluation",
    "SceneScore",
    "evaluate_mask",
    "evaluate_scene",
    "evaluate_scenes",
    "markdown_table",
    "object_scores",
    "scene_name",
]

_EXPORTS = {
    "Confusion": "resseg_ray.evaluation.metrics",
    "object_scores": "resseg_ray.evaluation.objects",
    "Evaluation": "resseg_ray.evaluation.scenes",
    "SceneScore": "resseg_ray.evaluation.scenes",
    "evaluate_mask": "resseg_ray.evaluation.scenes",
    "evaluate_scene": "resseg_ray.evaluation.scenes",
    "evaluate_scenes": "resseg_ray.evaluation.scenes",
    "markdown_table": "resseg_ray.evaluation.scenes",
    "scene_name": "resseg_ray.evaluation.scenes",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
