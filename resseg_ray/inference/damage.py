"""Whole events mapped for damage: each pre/post pair segmented by windows, with the blending,
runtimes and normalisation of building maps (:class:`~resseg_ray.inference.predictor.ScenePredictor`),
into a damage-class COG, a per-class probability COG, the buildings as polygons with their
damage class and confidence, and a summary of buildings per class, the figure coordinators
need first.

The pair is read on the pre scene's grid (the post scene reprojected), staged once as one
local raster of both images' bands (:func:`~resseg_ray.data.pairs.stack_pair`), the form the
damage network was trained on. Outputs are published atomically, the class raster last: a
pair counts as mapped when its class raster exists.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import shape

from resseg_ray.data.pairs import CLASS_NAMES, stack_pair
from resseg_ray.errors import ConfigError
from resseg_ray.geo.cog import write_cog
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES, IGNORE, VALUES_TEXT
from resseg_ray.geo.pairs import open_pair
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stats import norm_arrays, pooled_statistics
from resseg_ray.geo.storage import (
    StorageSettings,
    atomic_output,
    exists,
    gdal_env,
    gdal_path,
    join_uri,
    read_bytes,
    scene_stem,
    write_bytes,
)
from resseg_ray.geo.vectors import vector_suffix, write_vector
from resseg_ray.inference.outputs import PROB_SCALE, SOURCE_TAG, output_source
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.vectorize import PolygonOptions, building_polygons
from resseg_ray.jsondoc import dump_json
from resseg_ray.models.bundle import BundleInfo
from resseg_ray.models.registry import model_task
from resseg_ray.scratch import make_scratch_dir


@dataclass
class DamageReport:
    """One pair mapped: its name, inputs, outputs and the buildings per damage class."""

    name: str
    pre: str
    post: str
    outputs: dict[str, str]
    seconds: float = 0.0
    megapixels: float = 0.0
    buildings: dict[str, int] = field(default_factory=dict)
    engine: str = ""
    georeferenced: bool = True
    """Whether the pair has a place on Earth (a CRS), not only a pixel grid."""


def pair_name(pre_uri: str) -> str:
    """A pair's name in its outputs' file names: the pre scene's file name less ``_pre`` (or
    xBD's ``_pre_disaster``) and its suffix."""
    stem = scene_stem(pre_uri).removesuffix(".png")
    return stem.removesuffix("_pre_disaster").removesuffix("_pre")


def damage_uris(out_dir: str, name: str, vector_format: str = "geojson") -> dict[str, str]:
    """The outputs of the pair ``name`` under ``out_dir``."""
    return {
        "damage": join_uri(out_dir, f"{name}_damage.tif"),
        "prob": join_uri(out_dir, f"{name}_damage_prob.tif"),
        "buildings": join_uri(out_dir, f"{name}_damage_buildings{vector_suffix(vector_format)}"),
        "summary": join_uri(out_dir, f"{name}_damage_summary.json"),
    }


POST_TAG = "RESSEG_RAY_POST"
"""The GeoTIFF tag of a damage raster naming the post scene it was made from."""


def damage_state(out_dir: str, name: str, pre_uri: str, post_uri: str, vector_format: str,
                 settings: StorageSettings) -> str:  # fmt: skip
    """What is under the pair's output names: ``"done"`` (every output, written by resseg-ray
    for this pre and post scene: a re-run may skip the pair), ``"todo"`` (none, or only some of
    them: a run cut short) or ``"foreign"`` (a file resseg-ray did not write for this pair:
    never replaced)."""
    uris = damage_uris(out_dir, name, vector_format)
    there = {k: u for k, u in uris.items() if exists(u, settings)}
    for key, uri in there.items():
        if key == "summary":
            try:
                doc = json.loads(read_bytes(uri, settings))
            except (OSError, ValueError):
                return "foreign"
            ours = isinstance(doc, dict) and doc.get("format") == "resseg-damage-summary/1"
            made = (doc.get("pre"), doc.get("post")) if ours else None
        elif key == "buildings":
            made = (output_source(uri, settings), post_uri)  # a vector names its pre scene only
        else:  # both rasters are tagged with both scenes
            try:
                with gdal_env(settings), rasterio.open(gdal_path(uri), driver="GTiff") as ds:
                    tags = ds.tags()
            except rasterio.errors.RasterioError:
                return "foreign"
            made = (tags.get(SOURCE_TAG), tags.get(POST_TAG))
        if made != (pre_uri, post_uri):
            return "foreign"
    return "done" if len(there) == len(uris) else "todo"


def check_damage_model(info: BundleInfo, model: str) -> None:
    """Refuse a model that does not map damage (a building model, other classes)."""
    if model_task(info.architecture) != "damage" or list(info.class_names) != CLASS_NAMES:
        raise ConfigError(
            f"--model {model} is a {info.architecture} model of classes {info.class_names}; damage maps "
            "need a damage model (damage-prop<depth>, trained on pre/post pairs)"
        )


def map_damage(
    predictor: ScenePredictor,
    pre_uri: str,
    post_uri: str,
    out_dir: str,
    settings: StorageSettings,
    name: str | None = None,
    polygons: PolygonOptions | None = None,
    vector_format: str = "geojson",
    progress: Callable[[float], None] | None = None,
    provenance: bool = True,
) -> DamageReport:
    """Map one pair's damage under ``out_dir`` (:func:`damage_uris`); ``name`` defaults to the
    pre scene's file name. ``provenance=False`` keeps the inputs' paths out of every output (the
    service's: a client must not learn the server's paths)."""
    start = time.perf_counter()
    name = name or pair_name(pre_uri)
    uris = damage_uris(out_dir, name, vector_format)
    pair = open_pair(pre_uri, post_uri, settings, expected_bands=predictor.info.in_bands // 2)
    tmp = make_scratch_dir("damage")
    try:
        with warnings.catch_warnings():  # a pair of plain images (xBD's PNGs): no CRS, as wanted
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            stacked = os.path.join(tmp, "pair.tif")
            moments = stack_pair(pair, stacked, settings, compress=None)  # a scratch copy, read once
            scene = open_scene(  # a pair of plain images (xBD's PNGs) stays a plain pixel grid
                stacked, StorageSettings(), expected_bands=predictor.info.in_bands, georeferenced=False
            )
            norm = None  # per-scene statistics from the staging's pixels, not a second reading
            if predictor.normalization == "per_scene":
                stats = pooled_statistics([(f"{pre_uri} + {post_uri}", moments)], scene.band_names).pooled
                norm = norm_arrays(stats.mean, stats.std)
            classes, probs = os.path.join(tmp, "damage.tif"), os.path.join(tmp, "prob.tif")
            profile = {
                "driver": "GTiff", "width": scene.width, "height": scene.height,
                "tiled": True, "blockxsize": 256, "blockysize": 256, "dtype": "uint8", "nodata": IGNORE,
            }  # fmt: skip
            if scene.crs:  # a plain pixel grid gets neither CRS nor transform
                profile.update(crs=scene.crs, transform=scene.affine)
            n = len(CLASS_NAMES)
            with (
                gdal_env(settings),
                rasterio.open(classes, "w", count=1, **profile) as cls_ds,
                rasterio.open(probs, "w", count=n, **profile) as prob_ds,
            ):
                for strip in predictor.strips(scene, StorageSettings(), norm=norm):
                    h = strip.probs.shape[1]
                    window = rasterio.windows.Window(0, strip.row, scene.width, h)
                    cls = strip.probs.argmax(0).astype(np.uint8)
                    cls[~strip.valid] = IGNORE
                    p = np.rint(np.clip(strip.probs, 0, 1) * PROB_SCALE).astype(np.uint8)
                    p[:, ~strip.valid] = IGNORE
                    cls_ds.write(cls, 1, window=window)
                    prob_ds.write(p, window=window)
                    if progress is not None:
                        progress(strip.done(scene))
                for i, label in enumerate(CLASS_NAMES, start=1):
                    prob_ds.set_band_description(i, f"P({label}) x {PROB_SCALE}")
                cls_ds.set_band_description(1, VALUES_TEXT)
                for ds in (cls_ds, prob_ds):
                    if provenance:
                        ds.update_tags(**{SOURCE_TAG: pre_uri, POST_TAG: post_uri})
            collection, crs = damage_polygons(classes, probs, polygons or PolygonOptions(), tmp)
            counts = {
                c: sum(f["properties"]["damage"] == c for f in collection["features"]) for c in DAMAGE_CLASSES
            }
            source = {SOURCE_TAG: pre_uri} if provenance else {}
            with atomic_output(uris["buildings"], settings, suffix=vector_suffix(vector_format)) as dst:
                write_vector(collection, crs, dst, source)
            summary = {
                "format": "resseg-damage-summary/1", "pre": pre_uri if provenance else None,
                "post": post_uri if provenance else None, "name": name,
                "buildings": counts, "total": sum(counts.values()), "model": predictor.info.architecture,
            }  # fmt: skip
            write_bytes(uris["summary"], dump_json(summary).encode(), settings)
            for key, path, resampling in (("prob", probs, "average"), ("damage", classes, "nearest")):
                with atomic_output(uris[key], settings, suffix=".tif") as dst:
                    write_cog(path, dst, predictor="2", resampling=resampling, bigtiff="IF_SAFER")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DamageReport(
        name, pre_uri, post_uri, uris, time.perf_counter() - start, pair.width * pair.height / 1e6, counts,
        predictor.describe_engine().get("runtime", ""), bool(pair.pre.crs),
    )  # fmt: skip


def damage_polygons(classes: str, probs: str, options: PolygonOptions, tmp: str) -> tuple[dict, str | None]:
    """The buildings of a local damage-class raster as polygons (the building path's outlines,
    :func:`~resseg_ray.inference.vectorize.building_polygons`), each with its ``damage`` (the
    class most of its pixels carry; ties: the milder) and ``confidence`` (the mean probability
    of that class over its pixels)."""
    mask = os.path.join(tmp, "buildings.tif")
    with rasterio.open(classes) as src:
        values = src.read(1)
        profile = {**src.profile, "nodata": None}
        transform, crs = src.transform, src.crs
    with rasterio.open(mask, "w", **profile) as dst:
        dst.write(((values >= 1) & (values <= len(DAMAGE_CLASSES))).astype(np.uint8), 1)
    found = building_polygons(mask, None, options)
    features = found.collection["features"]
    if not features:
        return found.collection, found.crs
    outlines = [shape(f["geometry"]) for f in features]
    if options.wgs84 and crs is not None:  # back to the raster's grid to count its pixels
        outlines = [
            shape(g)
            for g in rasterio.warp.transform_geom("EPSG:4326", crs, [f["geometry"] for f in features])
        ]
    ids = rasterio.features.rasterize(
        ((g, i + 1) for i, g in enumerate(outlines)),
        out_shape=values.shape,
        transform=transform,
        dtype="int32",
    )
    n = len(features) + 1
    keep = (ids > 0) & (values >= 1) & (values <= len(DAMAGE_CLASSES))
    votes = np.bincount(ids[keep] * 5 + values[keep], minlength=n * 5).reshape(n, 5)[1:, 1:]
    chosen = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1) + 1, 1)
    flat = ids.ravel()
    pixels = np.bincount(flat, minlength=n)[1:]
    with rasterio.open(probs) as src:  # the mean probability of each building's class over it
        sums = np.stack(
            [
                np.bincount(flat, weights=src.read(c + 1).ravel().astype(np.float64), minlength=n)[1:]
                for c in range(5)
            ]
        )
    for i, f in enumerate(features):
        c = int(chosen[i])
        conf = round(float(sums[c, i] / pixels[i] / PROB_SCALE), 4) if pixels[i] else None
        f["properties"].update(damage=DAMAGE_CLASSES[c - 1], damage_value=c, confidence=conf)
    return found.collection, found.crs


def summary_line(report: DamageReport) -> str:
    """One line of a pair's buildings per damage class."""
    counts = ", ".join(f"{n} {c}" for c, n in report.buildings.items())
    return f"{report.name}: {sum(report.buildings.values())} buildings ({counts})"


__all__ = [
    "DamageReport",
    "check_damage_model",
    "damage_polygons",
    "damage_uris",
    "map_damage",
    "summary_line",
]
