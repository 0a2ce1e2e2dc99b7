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
from shapely.ops import unary_union

from resseg_ray.errors import ConfigError


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
    """A GeoJSON FeatureCollection of the building (value 1) regions of a mask raster."""
    with rasterio.open(mask_path) as mask:
        final, edge = [], []
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
        features = []
        prob = rasterio.open(prob_path) if prob_path else None
        try:
            for poly in final:
                if poly.area < options.min_area:
                    continue
                props = {"area": round(float(poly.area), 2)}
                if prob is not None:
                    props["mean_probability"] = _mean_probability(prob, poly)
                geom = poly.simplify(options.simplify, preserve_topology=True) if options.simplify else poly
                g = mapping(geom)
                if options.wgs84:
                    g = rasterio.warp.transform_geom(crs, "EPSG:4326", g)
                features.append({"type": "Feature", "properties": props, "geometry": g})
        finally:
            if prob is not None:
                prob.close()
    for i, f in enumerate(features):
        f["properties"] = {"id": i, **f["properties"]}
    out = {"type": "FeatureCollection", "features": features}
    if not options.wgs84 and crs is not None:
        out["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    return out


def _mean_probability(prob: rasterio.io.DatasetReader, poly) -> float | None:
    window = (
        rasterio.windows.from_bounds(*poly.bounds, transform=prob.transform).round_offsets().round_lengths()
    )
    window = window.intersection(rasterio.windows.Window(0, 0, prob.width, prob.height))
    values = prob.read(1, window=window, masked=True).astype(np.float64)
    inside = rasterio.features.geometry_mask(
        [mapping(poly)], out_shape=values.shape, transform=prob.window_transform(window), invert=True
    )
    v = values[inside & ~np.ma.getmaskarray(values)]
    if v.size == 0:
        return None
    scale = 250.0 if prob.dtypes[0] == "uint8" else 1.0
    return round(float(np.mean(v)) / scale, 4)


def write_geojson(collection: dict, path: str) -> None:
    """Write a FeatureCollection to a local file."""
    with open(path, "w") as f:
        json.dump(collection, f)
