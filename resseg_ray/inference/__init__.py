"""Segmentation of whole scenes: windows, the ScenePredictor, BatchNorm re-estimation, outputs,
batches of scenes and polygons.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.inference.batch": [
            "SceneReport",
            "predict_scene",
            "predict_scenes",
            "predict_scenes_on_ray",
        ],
        "resseg_ray.inference.batchnorm": ["adapt_to_scene", "reestimate_batchnorm", "set_batchnorm_eval"],
        "resseg_ray.inference.export": ["export_bundle"],
        "resseg_ray.inference.outputs": [
            "OutputOptions",
            "SceneWriter",
            "check_destination",
            "output_options",
            "output_uris",
        ],
        "resseg_ray.inference.predictor": ["ScenePredictor"],
        "resseg_ray.inference.vectorize": [
            "Buildings",
            "PolygonOptions",
            "building_polygons",
            "mask_polygons",
        ],
        "resseg_ray.inference.windows": ["blend_weights", "window_starts"],
    },
)
