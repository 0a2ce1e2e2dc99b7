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

import warnings
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from resseg_ray.config import Config
from resseg_ray.data.prepare import PreparedDataset, prepare_dataset
from resseg_ray.errors import InputDataError
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES, IGNORE, VALUES_TEXT, make_damage_raster
from resseg_ray.geo.labels import read_footprints, scene_valid_mask, write_label_raster
from resseg_ray.geo.pairs import ScenePair, open_pair, read_pair_window
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings, atomic_output, join_uri

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


def stack_pair(pair: ScenePair, out_uri: str, settings: StorageSettings, rows: int = 512) -> None:
    """Write ``pair`` as one tiled GeoTIFF on the pre grid: pre bands, then post bands (named
    ``pre:<band>`` and ``post:<band>``), one data type for both (the wider), an internal mask
    of the pixels both scenes cover."""
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
        "compress": "deflate",
    }
    if pair.pre.crs:  # a plain pixel grid (xBD's PNGs) gets neither CRS nor transform
        profile.update(crs=CRS.from_wkt(pair.pre.crs), transform=pair.pre.affine)
    names = [f"pre:{n}" for n in pair.pre.band_names] + [f"post:{n}" for n in pair.pre.band_names]
    with warnings.catch_warnings():  # a plain pixel grid is wanted here: rasterio's warning says nothing
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        _write_stack(pair, out_uri, settings, profile, names, dtype, rows)


def _write_stack(
    pair: ScenePair,
    out_uri: str,
    settings: StorageSettings,
    profile: dict,
    names: list[str],
    dtype: np.dtype,
    rows: int,
) -> None:
    with (
        atomic_output(out_uri, settings, suffix=".tif") as tmp,
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        for r in range(0, pair.height, rows):
            h = min(rows, pair.height - r)
            pre, post, valid = read_pair_window(pair, settings, 0, r, pair.width, h)
            window = rasterio.windows.Window(0, r, pair.width, h)
            dst.write(np.concatenate([pre, post]).astype(dtype), window=window)
            dst.write_mask(valid.astype(np.uint8) * 255, window=window)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(pre=pair.pre.uri, post=pair.post.uri, reprojected=str(pair.reprojected))


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

    grids: set[bool] = set()
    for p in [*pairs, *(test_pairs or [])]:  # every input checked before anything is written
        pair = open_pair(p.pre, p.post, settings)
        grids.add(bool(pair.pre.crs))
        if p.xbd_labels is not None:
            _xbd_damage(p.xbd_labels, pair.width, pair.height, settings)
        elif p.footprints is not None:
            read_footprints(p.footprints, settings, attribute=p.field)
    if len(grids) > 1:
        raise InputDataError(
            "the pairs mix georeferenced scenes and plain pixel grids (no CRS); prepare them apart"
        )

    def stacked(items: list[DamagePair]) -> tuple[list[str], list[str]]:
        scenes, labels = [], []
        for p in items:
            pair = open_pair(p.pre, p.post, settings)
            scene_uri = join_uri(out, "pairs", f"{p.name}_pair.tif")
            stack_pair(pair, scene_uri, settings)
            label_uri = join_uri(out, "labels", f"{p.name}_pair_labels.tif")
            if p.xbd_labels is not None:
                xbd_damage_raster(p.xbd_labels, scene_uri, label_uri, settings)
            else:
                assert p.footprints is not None
                footprints = read_footprints(p.footprints, settings, attribute=p.field)
                make_damage_raster(pair.pre, footprints, p.field, label_uri, settings)
            scenes.append(scene_uri)
            labels.append(label_uri)
        return scenes, labels

    scenes, labels = stacked(pairs)
    test_scenes, test_labels = stacked(test_pairs or [])
    return prepare_dataset(
        scenes,
        out,
        cfg,
        labels=labels,
        test_scenes=test_scenes or None,
        test_labels=test_labels or None,
        settings=settings,
        georeferenced=grids != {False},
    )


def xbd_damage_raster(document: str, stacked_uri: str, out_uri: str, settings: StorageSettings) -> None:
    """Burn an xBD label document into a damage raster on the grid of a stacked pair (255 where
    the pair has no data) and write ``out_uri``."""
    with warnings.catch_warnings():  # xBD's PNGs: a pixel grid, as wanted
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        info = open_scene(stacked_uri, settings, georeferenced=False)
        raster = _xbd_damage(document, info.width, info.height, settings)
        raster[~scene_valid_mask(info, settings)] = IGNORE
        write_label_raster(info, raster, out_uri, settings, VALUES_TEXT)


def _xbd_damage(document: str, width: int, height: int, settings: StorageSettings) -> np.ndarray:
    """The damage raster of an xBD label document for a ``width x height`` pair (checked: its
    subtypes, its polygons inside the image, the image size it states)."""
    from resseg_ray.geo.xbd import damage_raster, read_labels

    labels = read_labels(document, settings)
    if labels.size is not None and labels.size != (width, height):
        raise InputDataError(
            f"label document {document} describes a {labels.size[0]}x{labels.size[1]} image but "
            f"the pair is {width}x{height}; is it this pair's document?"
        )
    return damage_raster(labels, width, height)
