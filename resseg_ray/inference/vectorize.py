"""Building polygons from a mask raster, in row bands (memory bounded by the band, not the scene).

Polygons wholly inside a band are final; pieces touching a band edge are merged with
their neighbours from the next band at the end. Each polygon gets its area (in the
mask CRS's units squared, m² for UTM) and the mean building probability under it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import rasterio.windows
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from resseg_ray.errors import ConfigError
from resseg_ray.geo.storage import StorageSettings, gdal_env


@dataclass(frozen=True)
class PolygonOptions:
    """How the mask becomes polygons."""

    min_area: float = 10.0
    """Drop polygons smaller than this (CRS units squared; m² for UTM scenes)."""
    simplify: float = 0.5
    """Douglas-Peucker tolerance in CRS units (0: keep the pixel outlines)."""
    wgs84: bool = False
    """Write EPSG:4326 coordinates instead of the scene's CRS."""

    def __post_init__(self) -> None:
        if self.min_area < 0 or self.simplify < 0:
            raise ConfigError("polygon min_area and simplify must be >= 0")


def mask_polygons(mask_path: str, prob_path: str | None, options: PolygonOptions, rows: int = 2048) -> dict:
    """A GeoJSON FeatureCollection of the building (value 1) regions of a (local) mask raster."""
    # One GDAL environment for all the calls below: without one rasterio builds an environment
    # per call, and with AWS credentials in the environment each costs a boto3 session (~10 ms).
    # rasterize builds one internally anyway, hence one call per band of rows, not per polygon.
    with gdal_env(StorageSettings()):
        return _mask_polygons(mask_path, prob_path, options, rows)


def _mask_polygons(mask_path: str, prob_path: str | None, options: PolygonOptions, rows: int) -> dict:
    with rasterio.open(mask_path) as mask:
        final: list[BaseGeometry] = []
        edge: list[BaseGeometry] = []
        for r in range(0, mask.height, rows):
            h = min(rows, mask.height - r)
            window = rasterio.windows.Window(0, r, mask.width, h)
            band = (mask.read(1, window=window) == 1).astype(np.uint8)
            if not band.any():
                continue
            transform = mask.window_transform(window)
            top = mask.xy(r, 0, offset="ul")[1]
            bottom = mask.xy(r + h, 0, offset="ul")[1]
            for geom, _ in rasterio.features.shapes(band, mask=band.astype(bool), transform=transform):
                poly = shape(geom)
                ys = (poly.bounds[1], poly.bounds[3])  # a band edge is a row line: top or bottom
                at_top = r > 0 and any(np.isclose(y, top) for y in ys)
                at_bottom = r + h < mask.height and any(np.isclose(y, bottom) for y in ys)
                touches = at_top or at_bottom
                (edge if touches else final).append(poly)
        if edge:
            merged = unary_union(edge)
            final += list(getattr(merged, "geoms", [merged]))
        crs = mask.crs
    kept = [poly for poly in final if poly.area >= options.min_area]
    means: list[float | None] = (
        list(_mean_probabilities(prob_path, kept, min(rows, 512))) if prob_path else [None] * len(kept)
    )
    features = []
    for poly, mean in zip(kept, means, strict=True):
        props: dict[str, float | None] = {"area": round(float(poly.area), 2)}
        if prob_path:
            props["mean_probability"] = mean
        geom = poly.simplify(options.simplify, preserve_topology=True) if options.simplify else poly
        g = mapping(geom)
        if options.wgs84:
            g = rasterio.warp.transform_geom(crs, "EPSG:4326", g)
        features.append({"type": "Feature", "properties": props, "geometry": g})
    for i, f in enumerate(features):
        f["properties"] = {"id": i, **f["properties"]}
    out: dict[str, object] = {"type": "FeatureCollection", "features": features}
    if not options.wgs84 and crs is not None:
        out["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    return out


def _mean_probabilities(prob_path: str, polygons: list, rows: int = 512) -> list[float | None]:
    """Mean probability inside each polygon: the polygons (disjoint) are burnt with their
    index band by band and the probabilities summed per index (one rasterize call per band
    of rows, not one per polygon)."""
    n = len(polygons)
    sums, counts = np.zeros(n + 1), np.zeros(n + 1)
    with rasterio.open(prob_path) as prob:
        scale = 250.0 if prob.dtypes[0] == "uint8" else 1.0
        bounds = np.array([p.bounds for p in polygons]).reshape(-1, 4)
        for r in range(0, prob.height, rows):
            window = rasterio.windows.Window(0, r, prob.width, min(rows, prob.height - r))
            _, bottom, _, top = rasterio.windows.bounds(window, prob.transform)
            lo, hi = min(bottom, top), max(bottom, top)
            near = np.flatnonzero((bounds[:, 1] <= hi) & (bounds[:, 3] >= lo))
            if near.size == 0:
                continue
            ids = rasterio.features.rasterize(
                [(mapping(polygons[i]), int(i) + 1) for i in near],
                out_shape=(int(window.height), prob.width),
                transform=prob.window_transform(window),
                fill=0,
                dtype="int32",
            )
            values = prob.read(1, window=window, masked=True)
            ok = (ids > 0) & ~np.ma.getmaskarray(values)
            sums += np.bincount(ids[ok], weights=values.data[ok].astype(np.float64), minlength=n + 1)
            counts += np.bincount(ids[ok], minlength=n + 1)
    return [round(float(sums[i + 1] / counts[i + 1]) / scale, 4) if counts[i + 1] else None for i in range(n)]


def write_geojson(collection: dict, path: str) -> None:
    """Write a FeatureCollection to a local file."""
    with open(path, "w") as f:
        json.dump(collection, f)
