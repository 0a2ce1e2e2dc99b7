"""Typed configuration shared by every job: sections loaded from YAML + ``key=value`` overrides.

One config system for the whole project. A configuration file is YAML whose sections mirror
the section classes (one module each: :mod:`~resseg_ray.config.data`,
:mod:`~resseg_ray.config.train`, ...); ``--set data.stride=100`` style overrides are applied on
top. Each section is a frozen, strict pydantic model (:mod:`~resseg_ray.config.base`): unknown
keys and values of the wrong type are :class:`~resseg_ray.errors.ConfigError` naming the dotted
field (with a "did you mean" suggestion), never silently ignored, and every field's docstring
is its description, from which the jobs' flags and the manual's reference are made.

The named choices (:mod:`~resseg_ray.config.choices`) import with the standard library alone;
everything else is imported from its module on first use, so the runtimes, which need only
the choices, import on the lent GPU image, which has no pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from resseg_ray.config.choices import (
    BLEND_MODES,
    NORMALIZATIONS,
    PRECISIONS,
    PROB_DTYPES,
    RUNTIMES,
    SPLIT_MODES,
    STAC_ASSETS,
    VECTOR_FORMATS,
)

if TYPE_CHECKING:
    from resseg_ray.config.base import MOVED, Section, from_dict, to_dict  # noqa: F401
    from resseg_ray.config.data import DataSection  # noqa: F401
    from resseg_ray.config.loading import apply_override, load_config  # noqa: F401
    from resseg_ray.config.mlflow import MlflowSection  # noqa: F401
    from resseg_ray.config.model import ModelSection  # noqa: F401
    from resseg_ray.config.predict import PredictSection  # noqa: F401
    from resseg_ray.config.root import Config  # noqa: F401
    from resseg_ray.config.run import RunSection  # noqa: F401
    from resseg_ray.config.scaling import ScalingSection  # noqa: F401
    from resseg_ray.config.serve import ServeSection  # noqa: F401
    from resseg_ray.config.storage import StacSection, StorageSection  # noqa: F401
    from resseg_ray.config.train import TrainSection  # noqa: F401

_LAZY = {
    "MOVED": "base",
    "Section": "base",
    "from_dict": "base",
    "to_dict": "base",
    "apply_override": "loading",
    "load_config": "loading",
    "Config": "root",
    "DataSection": "data",
    "MlflowSection": "mlflow",
    "ModelSection": "model",
    "PredictSection": "predict",
    "RunSection": "run",
    "ScalingSection": "scaling",
    "ServeSection": "serve",
    "StacSection": "storage",
    "StorageSection": "storage",
    "TrainSection": "train",
}
"""Name -> the module of this package that defines it (imported on first use)."""

__all__ = [
    "BLEND_MODES",
    "NORMALIZATIONS",
    "PRECISIONS",
    "PROB_DTYPES",
    "RUNTIMES",
    "SPLIT_MODES",
    "STAC_ASSETS",
    "VECTOR_FORMATS",
    *_LAZY,
]


RENAMED = {
    "StorageConfig": "StorageSection",
    "DataConfig": "DataSection",
    "ModelConfig": "ModelSection",
    "TrainConfig": "TrainSection",
}
"""Classes renamed to the one ``...Section`` convention: the old names still work, with a
DeprecationWarning."""


def __getattr__(name: str) -> Any:
    if name in RENAMED:
        import warnings

        new = RENAMED[name]
        warnings.warn(
            f"resseg_ray.config.{name} is now {new}; import that instead", DeprecationWarning, stacklevel=2
        )
        return __getattr__(new)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resseg_ray.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"resseg_ray.config.{module}"), name)
    globals()[name] = value
    return value
