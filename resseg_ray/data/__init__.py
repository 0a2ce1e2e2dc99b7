"""Training data: tiling and the train/validation split, prepared datasets, augmentation and
Ray Data pipelines.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.data.augment import augment_sample
    from resseg_ray.data.pipeline import build_datasets
    from resseg_ray.data.prepare import DatasetDescription, PreparedDataset, load_dataset, prepare_dataset

__all__ = [
    "DatasetDescription",
    "PreparedDataset",
    "augment_sample",
    "build_datasets",
    "load_dataset",
    "prepare_dataset",
]

_EXPORTS = {
    "augment_sample": "resseg_ray.data.augment",
    "build_datasets": "resseg_ray.data.pipeline",
    "DatasetDescription": "resseg_ray.data.prepare",
    "PreparedDataset": "resseg_ray.data.prepare",
    "load_dataset": "resseg_ray.data.prepare",
    "prepare_dataset": "resseg_ray.data.prepare",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
