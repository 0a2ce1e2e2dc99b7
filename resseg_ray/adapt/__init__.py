"""Adaptation to a new scene: annotated areas, refinement from a parent model, where to annotate.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.adapt.area": ["AnnotatedArea"],
        "resseg_ray.adapt.refine": ["AreaSpec", "refine_scene"],
        "resseg_ray.adapt.suggest": ["suggest_regions"],
    },
)
