"""Segmentation of whole scenes: windows, the ScenePredictor, BatchNorm re-estimation, outputs,
batches of scenes and polygons."""

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
