"""Geo I/O: storage URIs (local, s3://), scenes and their windows, label rasters, statistics."""

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
