"""Segmentation of whole scenes: windows, the ScenePredictor, BatchNorm re-estimation, outputs,
batches of scenes and polygons.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.inference.batch import SceneReport, predict_scene, predict_scenes, predict_scenes_on_ray
    from resseg_ray.inference.batchnorm import adapt_to_scene, reestimate_batchnorm, set_batchnorm_eval
    from resseg_ray.inference.export import export_bundle
    from resseg_ray.inference.outputs import (
        OutputOptions,
        SceneWriter,
        check_destination,
        output_options,
        output_uris,
    )
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.inference.vectorize import PolygonOptions, mask_polygons
    from resseg_ray.inference.windows import blend_weights, window_starts

__all__ = [
    "OutputOptions",
    "PolygonOptions",
    "ScenePredictor",
    "SceneReport",
    "SceneWriter",
    "adapt_to_scene",
    "blend_weights",
    "check_destination",
    "export_bundle",
    "mask_polygons",
    "output_options",
    "output_uris",
    "predict_scene",
    "predict_scenes",
    "predict_scenes_on_ray",
    "reestimate_batchnorm",
    "set_batchnorm_eval",
    "window_starts",
]

_EXPORTS = {
    "SceneReport": "resseg_ray.inference.batch",
    "predict_scene": "resseg_ray.inference.batch",
    "predict_scenes": "resseg_ray.inference.batch",
    "predict_scenes_on_ray": "resseg_ray.inference.batch",
    "adapt_to_scene": "resseg_ray.inference.batchnorm",
    "reestimate_batchnorm": "resseg_ray.inference.batchnorm",
    "set_batchnorm_eval": "resseg_ray.inference.batchnorm",
    "export_bundle": "resseg_ray.inference.export",
    "OutputOptions": "resseg_ray.inference.outputs",
    "SceneWriter": "resseg_ray.inference.outputs",
    "check_destination": "resseg_ray.inference.outputs",
    "output_options": "resseg_ray.inference.outputs",
    "output_uris": "resseg_ray.inference.outputs",
    "ScenePredictor": "resseg_ray.inference.predictor",
    "PolygonOptions": "resseg_ray.inference.vectorize",
    "mask_polygons": "resseg_ray.inference.vectorize",
    "blend_weights": "resseg_ray.inference.windows",
    "window_starts": "resseg_ray.inference.windows",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
