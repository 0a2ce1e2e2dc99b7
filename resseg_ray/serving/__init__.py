"""The segmentation service on Ray Serve: the HTTP API and the batched model deployment.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.serving.app": ["build_app", "model_uri"],
    },
)
