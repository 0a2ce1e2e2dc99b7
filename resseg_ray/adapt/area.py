"""The hand-annotated part of a scene, for refinement (the paper's Table III).

An annotated area is a boolean mask on the scene grid: from polygons drawn by the
annotators (GeoJSON, GeoPackage or Shapefile, any CRS), or, for experiments, a square
block holding a given fraction of the scene's valid pixels (at the top-left corner, at
a seeded random place, or around a suggested point). From the scene's labels it makes
two label rasters: the refinement labels (the labels inside the area, 255 elsewhere), on
which training tiles are cut, and the evaluation labels (255 inside the area), so that a
refined model is only scored on pixels it never trained on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import rasterio.crs
import rasterio.features
import rasterio.warp
import shapely
from shapely.geometry import shape

from resseg_ray.errors import InputDataError
from resseg_ray.evaluation.metrics import IGNORE
from resseg_ray.geo.labels import (
    Footprints,
    rasterize_footprints,
    read_footprints,
    scene_valid_mask,
    write_label_raster,
)
from resseg_ray.geo.scene import SceneInfo, open_scene, read_window
from resseg_ray.geo.storage import StorageSettings


class FootprintsOutsideArea(UserWarning):
    """Footprints that do not touch the annotated area are ignored."""


@dataclass(frozen=True)
class AnnotatedArea:
    """Pixels of a scene whose labels may be used for refinement."""

    mask: np.ndarray
    """``(H, W)`` bool on the scene grid."""
    source: str
    """How it was chosen (for reports)."""

    def fraction(self, valid: np.ndarray) -> float:
        """Share of the scene's valid pixels inside the area."""
        return float((self.mask & valid).sum() / max(int(valid.sum()), 1))

    def polygons(self, scene: SceneInfo) -> dict:
        """The area as a GeoJSON FeatureCollection in the scene's CRS."""
        feats = [
            {"type": "Feature", "properties": {}, "geometry": g}
            for g, _ in rasterio.features.shapes(
                self.mask.astype(np.uint8), mask=self.mask, transform=scene.affine
            )
        ]
        return {
            "type": "FeatureCollection",
            "crs": {"type": "name", "properties": {"name": rasterio.crs.CRS.from_wkt(scene.crs).to_string()}},
            "features": feats,
        }


def check_area(area: AnnotatedArea, valid: np.ndarray, scene_uri: str) -> None:
    """A clear error when the area holds no valid pixel of the scene, or all of them (then
    nothing is left to evaluate on)."""
    inside = int((area.mask & valid).sum())
    if inside == 0:
        raise InputDataError(
            f"the annotated area ({area.source}) holds no valid pixel of scene {scene_uri}: it lies "
            "outside the scene or over no data; check its CRS and extent"
        )
    if inside == int(valid.sum()):
        raise InputDataError(
            f"the annotated area ({area.source}) covers all of scene {scene_uri}: nothing is left to "
            "evaluate the refinement on; annotate a part of the scene only"
        )


def area_from_polygons(scene: SceneInfo, uri: str, settings: StorageSettings) -> AnnotatedArea:
    """The area drawn as polygons (any CRS; reprojected to the scene's)."""
    polygons = read_footprints(uri, settings)
    if not polygons.geometries:
        raise InputDataError(f"annotated area {uri} holds no polygon")
    burned, hits = rasterize_footprints(scene, polygons)
    if hits == 0 or not burned.any():
        raise InputDataError(
            f"annotated area {uri} lies outside scene {scene.uri} (check its CRS and coordinates)"
        )
    return AnnotatedArea(burned == 1, f"polygons {uri}")


def block_area(
    valid: np.ndarray, fraction: float, centre: tuple[int, int] | None = None, corner: bool = False
) -> np.ndarray:
    """A square block (clipped to the scene) holding about ``fraction`` of the valid pixels:
    anchored at the top-left corner with ``corner``, else centred on ``centre`` (row, col)."""
    if not 0 < fraction < 1:
        raise InputDataError(f"--fraction must be between 0 and 1 (e.g. 0.07), got {fraction}")
    h, w = valid.shape
    total = int(valid.sum())
    ii = np.zeros((h + 1, w + 1), np.int64)
    ii[1:, 1:] = valid.cumsum(0).cumsum(1)

    def box(side: int) -> tuple[int, int, int, int]:
        if corner or centre is None:
            r0, c0 = 0, 0
        else:
            r0, c0 = centre[0] - side // 2, centre[1] - side // 2
        r0, c0 = max(0, min(r0, h - min(side, h))), max(0, min(c0, w - min(side, w)))
        return r0, c0, min(h, r0 + side), min(w, c0 + side)

    def inside(side: int) -> int:
        r0, c0, r1, c1 = box(side)
        return int(ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0])

    lo, hi = 1, max(h, w)
    target = fraction * total
    while lo < hi:  # smallest side whose block holds the target
        mid = (lo + hi) // 2
        if inside(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    r0, c0, r1, c1 = box(lo)
    mask = np.zeros_like(valid, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def contiguous_area(valid: np.ndarray, fraction: float) -> AnnotatedArea:
    """A square block at the scene's top-left corner holding ``fraction`` of its valid pixels."""
    return AnnotatedArea(
        block_area(valid, fraction, corner=True), f"contiguous block, {fraction:g} of the scene"
    )


def random_area(valid: np.ndarray, fraction: float, seed: int = 0) -> AnnotatedArea:
    """A square block at a seeded random valid place holding ``fraction`` of the valid pixels."""
    rows, cols = np.nonzero(valid)
    if rows.size == 0:
        raise InputDataError("the scene has no valid pixels")
    k = int(np.random.default_rng(seed).integers(rows.size))
    mask = block_area(valid, fraction, centre=(int(rows[k]), int(cols[k])))
    return AnnotatedArea(mask, f"random block (seed {seed}), {fraction:g} of the scene")


def footprints_in_area(scene: SceneInfo, footprints: Footprints, area: AnnotatedArea) -> np.ndarray:
    """Labels (0 ground, 1 building) from footprints, warning about (and ignoring) footprints
    that do not touch the annotated area: outside it nothing was annotated."""
    burned, _ = rasterize_footprints(scene, footprints)
    outline = shapely.union_all([shape(f["geometry"]) for f in area.polygons(scene)["features"]])
    crs_fp = rasterio.crs.CRS.from_wkt(footprints.crs)
    geoms = footprints.geometries
    if geoms and crs_fp != rasterio.crs.CRS.from_wkt(scene.crs):
        geoms = rasterio.warp.transform_geom(crs_fp, rasterio.crs.CRS.from_wkt(scene.crs), geoms)
    outside = sum(1 for g in geoms if not shape(g).intersects(outline))
    if outside:
        warnings.warn(
            f"{outside} of {len(geoms)} footprints in {footprints.uri} lie outside the annotated area "
            "and are ignored",
            FootprintsOutsideArea,
            stacklevel=2,
        )
    return burned


@dataclass(frozen=True)
class AreaLabels:
    """The two label rasters written for a refinement, and the area's share of the scene."""

    refine_uri: str
    evaluate_uri: str
    fraction: float
    refine_pixels: int
    evaluate_pixels: int
    area_uri: str | None = None
    """The area itself (uint8: 1 annotated, 0 not), to which training tiles are confined."""


def write_area_labels(
    scene: SceneInfo,
    labels: np.ndarray,
    area: AnnotatedArea,
    refine_uri: str,
    evaluate_uri: str,
    settings: StorageSettings,
    area_uri: str | None = None,
) -> AreaLabels:
    """Write the refinement labels (``labels`` inside the area, 255 outside) and the
    evaluation labels (255 inside the area) on the scene grid; no data is 255 in both. With
    ``area_uri``, also the area as a raster (1 inside, 0 outside)."""
    valid = scene_valid_mask(scene, settings)
    check_area(area, valid, scene.uri)
    base = labels.astype(np.uint8).copy()
    base[~valid] = IGNORE
    refine = np.where(area.mask, base, IGNORE).astype(np.uint8)
    evaluate = np.where(area.mask, IGNORE, base).astype(np.uint8)
    write_label_raster(scene, refine, refine_uri, settings)
    write_label_raster(scene, evaluate, evaluate_uri, settings)
    if area_uri is not None:
        write_label_raster(scene, area.mask.astype(np.uint8), area_uri, settings)
    return AreaLabels(
        refine_uri,
        evaluate_uri,
        area.fraction(valid),
        int((refine != IGNORE).sum()),
        int((evaluate != IGNORE).sum()),
        area_uri,
    )


def read_labels(scene: SceneInfo, label_uri: str, settings: StorageSettings) -> np.ndarray:
    """A ready-made label raster (0/1/255) on the scene's grid, as one array."""
    labels = open_scene(label_uri, settings, bands=[1])
    if not scene.same_grid(labels):
        raise InputDataError(f"labels {label_uri} are not on the grid of scene {scene.uri}")
    pixels, _ = read_window(labels, settings, 0, 0, labels.width, labels.height)
    return pixels[0]
