"""Scores: confusion-matrix metrics, scenes and masks against labels, object F1, Table II markdown."""

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
