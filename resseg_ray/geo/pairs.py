"""Pre- and post-event scenes of one place, read on one grid: the pre scene's.

A post scene on another grid (another CRS, resolution or extent, as a different satellite
delivers it) is reprojected onto the pre scene's grid as it is read (a GDAL warped VRT,
bilinear); pixels it does not cover are invalid. Plain pixel grids without a CRS (xBD's PNGs)
pair when their sizes match. A pair that does not overlap, or whose band counts differ, is an
error that says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.warp
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import SceneInfo, cached_handle, open_scene, open_uncached, read_window
from resseg_ray.geo.storage import StorageSettings, gdal_env


@dataclass(frozen=True)
class ScenePair:
    """A pre-event and a post-event scene; windows are read on ``pre``'s grid."""

    pre: SceneInfo
    post: SceneInfo
    reprojected: bool
    """Whether the post scene is reprojected onto the pre scene's grid as it is read."""

    @property
    def width(self) -> int:
        """Width of the pair's grid (the pre scene's)."""
        return self.pre.width

    @property
    def height(self) -> int:
        """Height of the pair's grid (the pre scene's)."""
        return self.pre.height


def open_pair(
    pre_uri: str,
    post_uri: str,
    settings: StorageSettings,
    pre_bands: list[int] | None = None,
    post_bands: list[int] | None = None,
    expected_bands: int | None = None,
) -> ScenePair:
    """Open a pre and a post scene as a pair (band selections as :func:`open_scene`'s, named
    ``--pre-bands`` and ``--post-bands`` in errors); checks band counts, CRS and overlap."""
    pre = open_scene(
        pre_uri,
        settings,
        pre_bands,
        expected_bands=expected_bands,
        bands_option="--pre-bands",
        georeferenced=False,
    )
    post = open_scene(
        post_uri, settings, post_bands, expected_bands=expected_bands, bands_option="--post-bands",
        georeferenced=False,
    )  # fmt: skip
    if len(pre.bands) != len(post.bands):
        raise InputDataError(
            f"pre scene {pre_uri} gives {len(pre.bands)} bands but post scene {post_uri} "
            f"{len(post.bands)}; a pair needs the same bands in the same order: pick them with "
            "--pre-bands and --post-bands"
        )
    if not pre.crs or not post.crs:
        if pre.crs or post.crs:
            plain = post_uri if pre.crs else pre_uri
            raise InputDataError(
                f"{plain} has no CRS but the other scene of its pair has one: the post scene cannot be "
                "put on the pre scene's grid; georeference it (gdal_edit.py -a_srs -a_ullr), or give two "
                "plain images of one size"
            )
        if (pre.width, pre.height) != (post.width, post.height):
            raise InputDataError(
                f"pre image {pre_uri} is {pre.width}x{pre.height} and post image {post_uri} "
                f"{post.width}x{post.height}: images without a CRS pair only pixel for pixel, at one size"
            )
        return ScenePair(pre, post, reprojected=False)
    if pre.same_grid(post):
        return ScenePair(pre, post, reprojected=False)
    if not _overlap(pre, post):
        raise InputDataError(
            f"post scene {post_uri} does not overlap pre scene {pre_uri}: a pair is one place before and "
            "after the event; check that both scenes cover it"
        )
    return ScenePair(pre, post, reprojected=True)


def _overlap(pre: SceneInfo, post: SceneInfo) -> bool:
    left, bottom, right, top = rasterio.warp.transform_bounds(
        rasterio.crs.CRS.from_wkt(post.crs),
        rasterio.crs.CRS.from_wkt(pre.crs),
        *post.bounds,
        densify_pts=21,
    )
    x0, y0, x1, y1 = pre.bounds
    return left < x1 and right > x0 and bottom < y1 and top > y0


class _Warped:
    """A warped VRT that owns its source dataset (both closed together)."""

    def __init__(self, pair: ScenePair, settings: StorageSettings) -> None:
        self.src = open_uncached(pair.post.uri, settings)
        with gdal_env(settings):
            self.vrt = WarpedVRT(
                self.src,
                crs=rasterio.crs.CRS.from_wkt(pair.pre.crs),
                transform=pair.pre.affine,
                width=pair.pre.width,
                height=pair.pre.height,
                resampling=Resampling.bilinear,
                add_alpha=True,
            )

    @property
    def closed(self) -> bool:
        return bool(self.vrt.closed)

    def close(self) -> None:
        self.vrt.close()
        self.src.close()


def _warped(pair: ScenePair, settings: StorageSettings) -> WarpedVRT:
    """The post scene as a warped VRT on the pre scene's grid (one per thread and pair)."""
    grid = (pair.pre.crs, pair.pre.transform, pair.pre.width, pair.pre.height)
    handle = cached_handle(("warped", pair.post.uri, *grid, settings), lambda: _Warped(pair, settings))
    return handle.vrt


def read_pair_window(
    pair: ScenePair, settings: StorageSettings, col_off: int, row_off: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a window of the pair's grid (it may hang over the edges): ``(pre, post, valid)``,
    each scene's pixels ``(B, height, width)`` in its own data type (zero where invalid) and
    where both are valid."""
    pre, pre_valid = read_window(pair.pre, settings, col_off, row_off, width, height)
    if not pair.reprojected:
        post, post_valid = read_window(pair.post, settings, col_off, row_off, width, height)
    else:
        post, post_valid = _read_warped(pair, settings, col_off, row_off, width, height)
    valid = pre_valid & post_valid
    pre[:, ~valid] = 0
    post[:, ~valid] = 0
    return pre, post, valid


def _read_warped(
    pair: ScenePair, settings: StorageSettings, col_off: int, row_off: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    post = np.zeros((len(pair.post.bands), height, width), dtype=pair.post.dtype)
    post_valid = np.zeros((height, width), dtype=bool)
    c0, r0 = max(col_off, 0), max(row_off, 0)
    c1, r1 = min(col_off + width, pair.width), min(row_off + height, pair.height)
    if c1 > c0 and r1 > r0:
        vrt = _warped(pair, settings)
        win = Window(c0, r0, c1 - c0, r1 - r0)
        alpha = vrt.count  # the VRT's added alpha band: 0 where the post scene has no data
        with gdal_env(settings):
            inner = vrt.read([*pair.post.bands, alpha], window=win)
        ok = inner[-1] > 0
        data = inner[:-1]
        if data.dtype.kind == "f":
            ok &= np.all(np.isfinite(data), axis=0)
        data[:, ~ok] = 0
        ys, xs = slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off)
        post[:, ys, xs] = data
        post_valid[ys, xs] = ok
    return post, post_valid
