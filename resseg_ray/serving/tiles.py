"""Web-mercator map tiles (256 px PNG) of a scene's imagery and of the model's outputs,
rendered from the COGs by rio-tiler (its overviews, its resampling; no hand-written warping).

- ``imagery``: three bands (default true colour), each stretched linearly between its 2nd
  and 98th percentile over the whole scene (computed once per scene and band, from an
  overview), no data transparent;
- ``probability``: the building probability as a colour ramp, transparent below 0.1;
- ``mask``: buildings in one colour, the rest transparent;
- of a damage scene, ``imagery`` is the pre-event image, ``post`` the post-event image (each in
  its own true-colour bands, stretched as ``imagery``) and ``damage`` the damage classes in
  :data:`DAMAGE_RGBA`'s colours, background and no data transparent.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

# imported here, not in the worker threads that render tiles: concurrent first imports of a
# package from several threads fail (a partially initialised module)
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.utils import render

from resseg_ray.geo.storage import StorageSettings, gdal_env, gdal_path
from resseg_ray.serving.scenes import DAMAGE_COLOURS, MapScene, rgb_of

__all__ = ["LAYERS", "MAX_ZOOM", "TileOutside", "render_tile"]

LAYERS = ("imagery", "probability", "mask", "post", "damage")
MAX_ZOOM = 24
TILE = 256


class TileOutside(Exception):
    """The tile does not touch the scene."""


@functools.lru_cache(maxsize=256)
def _stretch(uri: str, band: int, settings: StorageSettings) -> tuple[float, float]:
    """The 2nd and 98th percentile of one band over the scene (from a <= 1024 px overview)."""
    with gdal_env(settings), Reader(gdal_path(uri)) as src:
        stats = src.statistics(indexes=(band,), max_size=1024)
    s = next(iter(stats.values()))
    lo, hi = float(s.percentile_2), float(s.percentile_98)
    return (lo, hi if hi > lo else lo + 1.0)


def _ramp() -> np.ndarray:
    """RGBA of probabilities 0..250 (uint8 scale x250): transparent below 0.1, then from
    pale yellow to deep red, opaque above 0.5."""
    p = np.arange(256) / 250.0
    rgba = np.zeros((256, 4), np.uint8)
    t = np.clip((p - 0.1) / 0.9, 0, 1)
    rgba[:, 0] = 255
    rgba[:, 1] = (230 * (1 - t)).astype(np.uint8)
    rgba[:, 2] = (90 * (1 - t) ** 2).astype(np.uint8)
    rgba[:, 3] = np.where(p < 0.1, 0, np.clip(80 + 350 * (p - 0.1), 80, 255)).astype(np.uint8)
    rgba[251:] = 0  # no data
    return rgba


RAMP = _ramp()
MASK_RGBA = np.array([0, 229, 255, 255], np.uint8)
"""Buildings of the mask layer: cyan, visible over imagery of any colour."""


def _damage_rgba() -> np.ndarray:
    rgba = np.zeros((256, 4), np.uint8)  # 0 background, 255 no data and the rest: transparent
    for value, colour in enumerate(DAMAGE_COLOURS.values(), 1):
        rgba[value] = [int(colour[i : i + 2], 16) for i in (1, 3, 5)] + [255]
    return rgba


DAMAGE_RGBA = _damage_rgba()
"""RGBA of damage raster values: 1-4 the classes in :data:`DAMAGE_COLOURS`' colours."""


def render_tile(
    scene: MapScene,
    layer: str,
    z: int,
    x: int,
    y: int,
    settings: StorageSettings,
    rgb: Sequence[int] | None = None,
) -> bytes:
    """A 256 px PNG of ``layer`` at web-mercator tile ``z/x/y``; TileOutside when the tile
    does not touch the scene."""
    uri = scene.layer_uri(layer)
    if uri is None:
        raise TileOutside(f"scene {scene.id} has no {layer} layer")
    picture = layer in ("imagery", "post")
    bands: tuple[int, ...] = (1,)
    if layer == "imagery":
        bands = tuple(rgb or scene.rgb)
    elif layer == "post":
        bands = tuple(rgb or rgb_of(scene.post_band_names))
    try:
        with gdal_env(settings), Reader(gdal_path(uri)) as src:
            img = src.tile(x, y, z, tilesize=TILE, indexes=bands, resampling_method="bilinear"
                           if picture else "nearest")  # fmt: skip
    except TileOutsideBounds:
        raise TileOutside(f"tile {z}/{x}/{y} is outside scene {scene.id}") from None
    valid = ~np.ma.getmaskarray(img.array).any(axis=0)
    if picture:
        out = np.zeros((4, TILE, TILE), np.uint8)
        for i, band in enumerate(bands):
            lo, hi = _stretch(uri, band, settings)
            values = np.asarray(img.array.data[i], dtype=np.float64)
            out[i] = np.clip((values - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
        out[3] = np.where(valid, 255, 0)
    elif layer == "probability":
        values = np.asarray(img.array.data[0])
        if values.dtype.kind == "f":  # float32 probabilities (0..1, NaN no data)
            values = np.nan_to_num(np.clip(values, 0, 1) * 250, nan=255)
        out = RAMP[values.astype(np.uint8)].transpose(2, 0, 1).copy()
        out[3][~valid] = 0
    elif layer == "damage":
        out = DAMAGE_RGBA[np.asarray(img.array.data[0]).astype(np.uint8)].transpose(2, 0, 1).copy()
        out[3][~valid] = 0
    else:
        building = (np.asarray(img.array.data[0]) == 1) & valid
        out = np.zeros((4, TILE, TILE), np.uint8)
        out[:, building] = MASK_RGBA[:, None]
    return _png(out)


def _png(rgba: np.ndarray) -> bytes:
    return bytes(render(rgba[:3], mask=rgba[3], img_format="PNG"))
