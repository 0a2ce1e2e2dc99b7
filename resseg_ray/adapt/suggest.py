"""Where to annotate first: the regions of a scene where the model is least certain.

The scene is segmented by the project's one windowing path
(:meth:`~resseg_ray.inference.predictor.ScenePredictor.strips`); each pixel's predictive
entropy ``-sum_c p_c log2 p_c`` (0 = certain, 1 bit = a coin flip for two classes) is
averaged over square regions of the scene grid, and the regions with the highest mean
entropy are taken, most uncertain first, until they hold the requested fraction of the
scene's valid pixels. The result is a ranked GeoJSON for annotators, and an annotated area
for ``jobs/finetune.py --area``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import rasterio.crs
import rasterio.warp

from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import SceneInfo
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor


@dataclass(frozen=True)
class Region:
    """One square region of the scene grid (pixel rows/cols ``[r0, r1) x [c0, c1)``)."""

    rank: int
    r0: int
    c0: int
    r1: int
    c1: int
    mean_entropy: float
    valid_pixels: int


def entropy_grid(
    predictor: ScenePredictor,
    scene: SceneInfo,
    settings: StorageSettings,
    region: int,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per region (``region`` px squares): summed predictive entropy (bits) and valid pixel
    count; ``progress`` is told the share of the scene's rows done."""
    gh, gw = -(-scene.height // region), -(-scene.width // region)
    sums = np.zeros((gh, gw), np.float64)
    counts = np.zeros((gh, gw), np.int64)
    cols = np.arange(scene.width) // region
    for strip in predictor.strips(scene, settings):
        p = np.clip(strip.probs, 1e-12, 1.0)
        ent = -(p * np.log2(p)).sum(0)
        rows = (strip.row + np.arange(ent.shape[0])) // region
        for gr in np.unique(rows):
            sel = rows == gr
            e, v = ent[sel], strip.valid[sel]
            np.add.at(sums[gr], cols, np.where(v, e, 0.0).sum(0))
            np.add.at(counts[gr], cols, v.sum(0))
        if progress is not None:
            progress(strip.done(scene))
    return sums, counts


def rank_regions(
    sums: np.ndarray,
    counts: np.ndarray,
    region: int,
    fraction: float,
    height: int,
    width: int,
    scene_uri: str = "the scene",
) -> list[Region]:
    """The most uncertain regions (regions less than half valid are skipped), ranked, until
    they hold ``fraction`` of the valid pixels (the last one may overshoot)."""
    if not 0 < fraction < 1:
        raise InputDataError(f"--fraction must be between 0 and 1 (e.g. 0.07), got {fraction}")
    total = int(counts.sum())
    if total == 0:
        raise InputDataError(
            f"{scene_uri} has no valid pixels (no data everywhere): there is nothing to suggest"
        )
    full = np.array(
        [
            [
                (min(height, (i + 1) * region) - i * region) * (min(width, (j + 1) * region) - j * region)
                for j in range(counts.shape[1])
            ]
            for i in range(counts.shape[0])
        ]
    )
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), -1.0)
    usable = counts >= 0.5 * full
    order = np.argsort(-np.where(usable, mean, -np.inf), axis=None, kind="stable")
    out: list[Region] = []
    acc = 0
    for k in order:
        i, j = divmod(int(k), counts.shape[1])
        if not usable[i, j]:
            break
        out.append(
            Region(
                len(out) + 1,
                i * region,
                j * region,
                min(height, (i + 1) * region),
                min(width, (j + 1) * region),
                float(mean[i, j]),
                int(counts[i, j]),
            )
        )
        acc += int(counts[i, j])
        if acc >= fraction * total:
            break
    return out


def regions_geojson(regions: list[Region], scene: SceneInfo, total_valid: int, wgs84: bool = False) -> dict:
    """Ranked regions as a GeoJSON FeatureCollection (scene CRS, or EPSG:4326)."""
    crs = rasterio.crs.CRS.from_wkt(scene.crs)
    feats = []
    for reg in regions:
        x0, y0 = scene.affine * (reg.c0, reg.r0)
        x1, y1 = scene.affine * (reg.c1, reg.r1)
        geom = {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}
        if wgs84:
            geom = rasterio.warp.transform_geom(crs, "EPSG:4326", geom)
        feats.append(
            {
                "type": "Feature",
                "properties": {
                    "rank": reg.rank,
                    "mean_entropy_bits": round(reg.mean_entropy, 4),
                    "valid_pixels": reg.valid_pixels,
                    "scene_fraction": round(reg.valid_pixels / total_valid, 5),
                    "rows": [reg.r0, reg.r1],
                    "cols": [reg.c0, reg.c1],
                },
                "geometry": geom,
            }
        )
    out: dict = {"type": "FeatureCollection", "features": feats}
    if not wgs84:
        out["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    return out


def suggest_regions(
    predictor: ScenePredictor,
    scene: SceneInfo,
    settings: StorageSettings,
    fraction: float,
    region: int = 256,
    wgs84: bool = False,
    progress: Callable[[float], None] | None = None,
) -> dict:
    """A ranked GeoJSON of the most uncertain ``region`` px squares holding ``fraction`` of the
    scene; ``progress`` is told the share of the scene's rows segmented so far."""
    if region < 16:
        raise InputDataError(f"--region must be >= 16 px, got {region}")
    if not 0 < fraction < 1:
        raise InputDataError(f"--fraction must be between 0 and 1 (e.g. 0.07), got {fraction}")
    sums, counts = entropy_grid(predictor, scene, settings, region, progress)
    regions = rank_regions(sums, counts, region, fraction, scene.height, scene.width, scene.uri)
    return regions_geojson(regions, scene, int(counts.sum()), wgs84)
