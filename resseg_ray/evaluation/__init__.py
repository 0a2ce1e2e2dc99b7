"""Scores: confusion-matrix metrics, scenes and masks against labels, object F1, Table II markdown.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.evaluation.metrics": ["Confusion"],
        "resseg_ray.evaluation.objects": ["object_scores"],
        "resseg_ray.evaluation.scenes": [
            "Evaluation",
            "SceneScore",
            "evaluate_mask",
            "evaluate_scene",
            "evaluate_scenes",
            "markdown_table",
            "scene_name",
        ],
    },
)
