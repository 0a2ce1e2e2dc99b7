"""Training data: tiling and the train/validation split, prepared datasets, augmentation and
Ray Data pipelines."""

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
