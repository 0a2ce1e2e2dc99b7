"""Adaptation to a new scene: annotated areas, refinement from a parent model, where to annotate."""

from resseg_ray.adapt.area import AnnotatedArea
from resseg_ray.adapt.refine import AreaSpec, refine_scene
from resseg_ray.adapt.suggest import suggest_regions

__all__ = ["AnnotatedArea", "AreaSpec", "refine_scene", "suggest_regions"]
