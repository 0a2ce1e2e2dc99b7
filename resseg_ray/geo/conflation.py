"""Conflation: which predicted buildings are already mapped (e.g. in OpenStreetMap).

A predicted building counts as already mapped when the existing buildings overlapping it
cover more than ``overlap`` of the smaller of the two areas (so a small mapped shed inside
a large prediction counts, as does a prediction inside a mapped block). The existing
buildings come from any vector file in any CRS (:func:`~resseg_ray.geo.labels.read_footprints`)
and are reprojected to the scene's CRS. They are read once per process (:func:`existing_buildings`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import rasterio.warp
import shapely
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from resseg_ray.errors import InputDataError
from resseg_ray.geo.labels import Footprints, read_footprints
from resseg_ray.geo.storage import StorageSettings

__all__ = ["already_mapped", "existing_buildings"]


@functools.lru_cache(maxsize=2)
def _load(uri: str, settings: StorageSettings) -> Footprints:
    footprints = read_footprints(uri, settings, "--existing")
    if not footprints.geometries:
        raise InputDataError(
            f"--existing {uri} holds no polygons: give the buildings already mapped as polygons "
            "(e.g. an OSM extract of building=* ways, a GeoJSON or GeoPackage of footprints)"
        )
    return footprints


def existing_buildings(uri: str, settings: StorageSettings) -> Footprints:
    """The buildings of an ``--existing`` file, read once per process (an InputDataError
    names the file when it cannot be read, has no CRS or holds no polygons)."""
    return _load(uri, settings)


def already_mapped(
    polygons: Sequence[BaseGeometry], crs: str, existing: Footprints, overlap: float
) -> np.ndarray:
    """For each of ``polygons`` (coordinates in ``crs``) whether existing buildings cover more
    than ``overlap`` of its area or of theirs."""
    flags = np.zeros(len(polygons), dtype=bool)
    if not len(polygons):
        return flags
    geoms = existing.geometries
    src, dst = CRS.from_wkt(existing.crs), CRS.from_user_input(crs)
    if src != dst:
        geoms = rasterio.warp.transform_geom(src, dst, geoms)
    mapped = shapely.make_valid(np.array([shapely.geometry.shape(g) for g in geoms], dtype=object))
    pred = shapely.make_valid(np.asarray(polygons, dtype=object))
    tree = shapely.STRtree(mapped)
    hits_pred, hits_mapped = tree.query(pred, predicate="intersects")
    if not len(hits_pred):
        return flags
    inter = shapely.area(shapely.intersection(pred[hits_pred], mapped[hits_mapped]))
    smaller = np.minimum(shapely.area(pred[hits_pred]), shapely.area(mapped[hits_mapped]))
    share = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    # a prediction covered by several mapped buildings: their shares of it add up
    covered = np.bincount(hits_pred, weights=inter, minlength=len(pred)) / np.maximum(
        shapely.area(pred), 1e-12
    )
    flags[hits_pred[share > overlap]] = True
    flags |= covered > overlap
    return flags
