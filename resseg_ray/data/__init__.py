"""Training data: tiling and the train/validation split, prepared datasets, augmentation and
Ray Data pipelines.

Its names are imported on first use (:mod:`resseg_ray.exports`).
"""

from resseg_ray.exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "resseg_ray.data.augment": ["augment_sample"],
        "resseg_ray.data.pipeline": ["build_datasets"],
        "resseg_ray.data.prepare": [
            "DatasetDescription",
            "PreparedDataset",
            "load_dataset",
            "prepare_dataset",
        ],
    },
)
