"""Geo I/O: storage URIs (local, s3://), scenes and their windows, label rasters, statistics.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.geo.labels import (
        BUILDING,
        GROUND,
        IGNORE,
        rasterize_footprints,
        read_footprints,
        write_label_raster,
    )
    from resseg_ray.geo.scene import SceneInfo, open_scene, read_window
    from resseg_ray.geo.stats import Norm, Statistics, compute_statistics, norm_arrays, normalize
    from resseg_ray.geo.storage import (
        StorageSettings,
        atomic_output,
        check_output_file,
        check_writable,
        expand_uris,
        join_uri,
        normalize_uri,
        read_bytes,
        resolve_uri,
        scene_stem,
        write_bytes,
    )

__all__ = [
    "BUILDING",
    "GROUND",
    "IGNORE",
    "Norm",
    "SceneInfo",
    "Statistics",
    "StorageSettings",
    "atomic_output",
    "check_output_file",
    "check_writable",
    "compute_statistics",
    "expand_uris",
    "join_uri",
    "norm_arrays",
    "normalize",
    "normalize_uri",
    "open_scene",
    "rasterize_footprints",
    "read_bytes",
    "read_footprints",
    "read_window",
    "resolve_uri",
    "scene_stem",
    "write_bytes",
    "write_label_raster",
]

_EXPORTS = {
    "BUILDING": "resseg_ray.geo.labels",
    "GROUND": "resseg_ray.geo.labels",
    "IGNORE": "resseg_ray.geo.labels",
    "read_footprints": "resseg_ray.geo.labels",
    "rasterize_footprints": "resseg_ray.geo.labels",
    "write_label_raster": "resseg_ray.geo.labels",
    "SceneInfo": "resseg_ray.geo.scene",
    "open_scene": "resseg_ray.geo.scene",
    "read_window": "resseg_ray.geo.scene",
    "Norm": "resseg_ray.geo.stats",
    "Statistics": "resseg_ray.geo.stats",
    "compute_statistics": "resseg_ray.geo.stats",
    "norm_arrays": "resseg_ray.geo.stats",
    "normalize": "resseg_ray.geo.stats",
    "StorageSettings": "resseg_ray.geo.storage",
    "atomic_output": "resseg_ray.geo.storage",
    "check_output_file": "resseg_ray.geo.storage",
    "check_writable": "resseg_ray.geo.storage",
    "expand_uris": "resseg_ray.geo.storage",
    "join_uri": "resseg_ray.geo.storage",
    "normalize_uri": "resseg_ray.geo.storage",
    "read_bytes": "resseg_ray.geo.storage",
    "resolve_uri": "resseg_ray.geo.storage",
    "scene_stem": "resseg_ray.geo.storage",
    "write_bytes": "resseg_ray.geo.storage",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
