"""Training on Ray Train: the per-worker loop, checkpoints, the driver, MLflow tracking.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.train.fit": ["TrainResult"],
        "resseg_ray.train.trainer": ["StartFrom", "run_training"],
    },
)
