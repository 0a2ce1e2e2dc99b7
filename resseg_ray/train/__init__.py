"""Training on Ray Train: the per-worker loop, checkpoints, the driver, MLflow tracking.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.train.trainer import StartFrom, TrainResult, run_training

__all__ = [
    "StartFrom",
    "TrainResult",
    "run_training",
]

_EXPORTS = {
    "StartFrom": "resseg_ray.train.trainer",
    "TrainResult": "resseg_ray.train.trainer",
    "run_training": "resseg_ray.train.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
