"""Training on Ray Train: the per-worker loop, checkpoints, the driver, MLflow tracking."""

from resseg_ray.train.trainer import StartFrom, TrainResult, run_training

__all__ = ["StartFrom", "TrainResult", "run_training"]
