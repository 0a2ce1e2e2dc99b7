"""The named choices of the configuration, as ``Literal`` types and their values in order.

Standard library only: the runtimes import it on the lent GPU image, which has torch but not
pydantic or PyYAML (``tests/models/test_imports.py``)."""

from __future__ import annotations

from typing import Literal, get_args

BlendMode = Literal["flat", "linear", "cosine"]
"""How overlapping windows are blended: averaged (the paper), or weighted by a linear or
raised-cosine ramp towards the window edges (the authors' code)."""
BLEND_MODES: tuple[str, ...] = get_args(BlendMode)

Normalization = Literal["pooled", "per_scene"]
"""``pooled``: one mean/std over all training scenes (the bundle's); ``per_scene``: each
scene's own statistics."""
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)

Runtime = Literal["auto", "torch", "openvino", "onnxruntime"]
"""Inference runtimes (``--runtime``; :mod:`resseg_ray.runtime`)."""
RUNTIMES: tuple[str, ...] = get_args(Runtime)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Inference precisions (``--precision``)."""
PRECISIONS: tuple[str, ...] = get_args(Precision)

SplitMode = Literal["auto", "blocks", "scenes"]
"""How ``prepare`` holds out validation: blocks of each scene, whole scenes, or ``auto``."""
SPLIT_MODES: tuple[str, ...] = get_args(SplitMode)

ProbDtype = Literal["uint8", "float32"]
"""Probability raster types: ``uint8`` (0-250 = probability x 250, 255 no data) or
``float32`` (NaN no data)."""
PROB_DTYPES: tuple[str, ...] = get_args(ProbDtype)

VectorFormat = Literal["geojson", "parquet", "fgb"]
"""Building polygon file formats: GeoJSON, GeoParquet, FlatGeobuf (``--vector-format``)."""
VECTOR_FORMATS: tuple[str, ...] = get_args(VectorFormat)

Selection = Literal["val_loss", "val_f1", "last"]
"""Which kept checkpoint becomes a training run's final model."""

RefineStart = Literal["parent", "adapted"]
"""A refinement's starting weights."""

STAC_ASSETS: tuple[str, ...] = ("analytic", "visual", "data")
"""Assets taken from a STAC item when ``stac.asset`` is not given: the first one present."""
