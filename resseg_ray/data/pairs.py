"""Damage data sets: pre/post pairs prepared for training as the building path prepares scenes.

Each pair is written once as one raster on the pre scene's grid, the pre scene's bands then
the post scene's (reprojected as :mod:`resseg_ray.geo.pairs` reads it; invalid where either
lacks data), with its damage labels beside it (0 background, 1..4, 255), burned from
footprints with a damage field or from xBD's label documents (its PNG pairs stay pixel grids). From there
:func:`~resseg_ray.data.prepare.prepare_dataset` tiles, splits, measures and describes them as
it does scenes, so the Siamese network trains on Ray Train like any network, and augmentation
turns and flips both images of a tile together. Band statistics are per stacked band: the pre
and the post sensor each get their own normalisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.crs import CRS

from resseg_ray.config import Config
from resseg_ray.data.prepare import PreparedDataset, prepare_dataset
from resseg_ray.errors import InputDataError
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES, IGNORE, VALUES_TEXT, make_damage_raster
from resseg_ray.geo.labels import Footprints, read_footprints, scene_valid_mask, write_label_raster
from resseg_ray.geo.pairs import ScenePair, open_pair, read_pair_window
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stats import Moments
from resseg_ray.geo.storage import StorageSettings, atomic_output, join_uri
from resseg_ray.geo.xbd import XbdLabels, damage_raster, read_labels

CLASS_NAMES = ["background", *DAMAGE_CLASSES]
"""The damage network's classes, in label order."""


@dataclass(frozen=True)
class DamagePair:
    """One place before and after an event, and its buildings with their damage."""

    name: str
    pre: str
    post: str
    footprints: str | None
    """A vector file of the buildings, each with its damage in :attr:`field`; None with
    :attr:`xbd_labels`."""
    field: str = "subtype"
    xbd_labels: str | None = None
    """Instead of footprints: xBD's post-event label document (WKT in pixel coordinates)."""


def stack_pair(
    pair: ScenePair,
    out_uri: str,
    settings: StorageSettings,
    rows: int = 512,
    compress: str | None = "deflate",
) -> Moments:
    """Write ``pair`` as one tiled GeoTIFF on the pre grid: pre bands, then post bands (named
    ``pre:<band>`` and ``post:<band>``), one data type for both (the wider), an internal mask
    of the pixels both scenes cover. ``compress=None`` for a scratch copy read once: DEFLATE
    is most of the time of staging a large pair (a D12-size pair's 432 MB of pixels). Returns
    the written pixels' :class:`~resseg_ray.geo.stats.Moments` (a per-scene normalisation
    without reading them again)."""
    dtype = np.result_type(np.dtype(pair.pre.dtype), np.dtype(pair.post.dtype))
    if dtype.kind == "f" or dtype.itemsize > 2:
        dtype = np.dtype("float32")
    b = len(pair.pre.bands)
    profile = {
        "driver": "GTiff",
        "width": pair.width,
        "height": pair.height,
        "count": 2 * b,
        "dtype": dtype.name,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if compress:
        profile["compress"] = compress
    if pair.pre.crs:  # a plain pixel grid (xBD's PNGs) gets neither CRS nor transform
        profile.update(crs=CRS.from_wkt(pair.pre.crs), transform=pair.pre.affine)
    names = [f"pre:{n}" for n in pair.pre.band_names] + [f"post:{n}" for n in pair.pre.band_names]
    with (
        atomic_output(out_uri, settings, suffix=".tif") as tmp,
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        moments = Moments.none(2 * b)
        for r, (pre, post, valid) in _pair_strips(pair, settings, rows):
            window = rasterio.windows.Window(0, r, pair.width, min(rows, pair.height - r))
            pixels = np.concatenate([pre, post]).astype(dtype)
            dst.write(pixels, window=window)
            dst.write_mask(valid.astype(np.uint8) * 255, window=window)
            moments = moments + Moments.of(pixels, valid)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(pre=pair.pre.uri, post=pair.post.uri, reprojected=str(pair.reprojected))
    return moments


STAGING_THREADS = 2
"""Threads reading (and warping) a pair's strips while :func:`stack_pair` writes them: GDAL
decompresses and warps outside the GIL (a D12-size pair's warp is ~5 s on one core)."""


def _pair_strips(
    pair: ScenePair, settings: StorageSettings, rows: int
) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """``(row, read_pair_window(...))`` of each strip of ``rows`` rows, in order, read by
    :data:`STAGING_THREADS` threads at most :data:`STAGING_THREADS` + 1 strips ahead."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    ahead: deque[tuple[int, Future]] = deque()
    with ThreadPoolExecutor(STAGING_THREADS, thread_name_prefix="resseg-pair") as pool:
        for r in range(0, pair.height, rows):
            h = min(rows, pair.height - r)
            ahead.append((r, pool.submit(read_pair_window, pair, settings, 0, r, pair.width, h)))
            if len(ahead) > STAGING_THREADS:
                row, strip = ahead.popleft()
                yield row, strip.result()
        while ahead:
            row, strip = ahead.popleft()
            yield row, strip.result()


def prepare_pairs(
    pairs: list[DamagePair],
    out: str,
    cfg: Config,
    test_pairs: list[DamagePair] | None = None,
    settings: StorageSettings | None = None,
) -> PreparedDataset:
    """Stack each pair under ``out/pairs/``, burn its damage labels under ``out/labels/`` and
    prepare them as a data set (of the classes :data:`CLASS_NAMES`, whatever
    ``model.class_names`` says: a damage network is trained with them)."""
    settings = settings or StorageSettings.resolve(cfg.storage)
    cfg = cfg.replace(model=cfg.model.replace(class_names=CLASS_NAMES))

    # every input read and checked before anything is written; each footprint file read once
    footprints: dict[tuple[str, str], Footprints] = {}
    read: list[tuple[DamagePair, ScenePair, Footprints | XbdLabels]] = []
    for p in [*pairs, *(test_pairs or [])]:
        pair = open_pair(p.pre, p.post, settings)
        if p.xbd_labels is not None:
            source: Footprints | XbdLabels = _xbd_labels(p.xbd_labels, pair.width, pair.height, settings)
        else:
            assert p.footprints is not None
            key = (p.footprints, p.field)
            if key not in footprints:
                footprints[key] = read_footprints(p.footprints, settings, attribute=p.field)
            source = footprints[key]
        read.append((p, pair, source))
    grids = {bool(pair.pre.crs) for _, pair, _ in read}
    if len(grids) > 1:
        raise InputDataError(
            "the pairs mix georeferenced scenes and plain pixel grids (no CRS); prepare them apart"
        )
    scenes: dict[str, list[str]] = {"train": [], "test": []}
    labels: dict[str, list[str]] = {"train": [], "test": []}
    for k, (p, pair, source) in enumerate(read):
        role = "train" if k < len(pairs) else "test"
        scene_uri = join_uri(out, "pairs", f"{p.name}_pair.tif")
        stack_pair(pair, scene_uri, settings)
        label_uri = join_uri(out, "labels", f"{p.name}_pair_labels.tif")
        if isinstance(source, XbdLabels):
            xbd_damage_raster(source, scene_uri, label_uri, settings)
        else:
            make_damage_raster(pair.pre, source, p.field, label_uri, settings)
        scenes[role].append(scene_uri)
        labels[role].append(label_uri)
    return prepare_dataset(
        scenes["train"],
        out,
        cfg,
        labels=labels["train"],
        test_scenes=scenes["test"] or None,
        test_labels=labels["test"] or None,
        settings=settings,
        georeferenced=grids != {False},
    )


def xbd_damage_raster(labels: XbdLabels, stacked_uri: str, out_uri: str, settings: StorageSettings) -> None:
    """Burn an xBD label document into a damage raster on the grid of a stacked pair (255 where
    the pair has no data) and write ``out_uri``."""
    info = open_scene(stacked_uri, settings, georeferenced=False)
    raster = damage_raster(labels, info.width, info.height)
    raster[~scene_valid_mask(info, settings)] = IGNORE
    write_label_raster(info, raster, out_uri, settings, VALUES_TEXT)


def _xbd_labels(document: str, width: int, height: int, settings: StorageSettings) -> XbdLabels:
    """An xBD label document of a ``width x height`` pair, checked: its subtypes, the image size
    it states, its polygons inside the image (burned once here, kept only if they are)."""
    labels = read_labels(document, settings)
    if labels.size is not None and labels.size != (width, height):
        raise InputDataError(
            f"label document {document} describes a {labels.size[0]}x{labels.size[1]} image but "
            f"the pair is {width}x{height}; is it this pair's document?"
        )
    damage_raster(labels, width, height)
    return labels
