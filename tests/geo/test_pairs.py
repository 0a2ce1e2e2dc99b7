"""Pre/post pairs read on the pre scene's grid: a post scene from another sensor (another CRS,
resolution, extent and data type) is reprojected as it is read and its buildings land where the
pre scene's are; plain PNG pairs pair pixel for pixel; pairs that cannot pair are errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import rasterio.warp

from resseg_ray.errors import InputDataError
from resseg_ray.geo.pairs import open_pair, read_pair_window
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import ORIGIN, UTM, write_tif

H, W = 150, 200  # the pre scene, 0.5 m


def _pre(tmp_path) -> str:
    data = np.full((4, H, W), 300, np.uint16)
    data[:, 60:80, 100:120] = 3000  # a roof, 20 x 20 px, 10 x 10 m
    return write_tif(tmp_path / "pre.tif", data)


def _post_in_web_mercator(tmp_path, name: str = "post.tif", shift_m: float = 0.0) -> str:
    """The same place from another satellite: Web Mercator, ~0.7 m pixels, float32, a smaller
    extent (its first 40 m east of the pre scene's west edge are not covered)."""
    roof_x, roof_y = ORIGIN[0] + 100 * 0.5 + shift_m, ORIGIN[1] - 60 * 0.5  # the roof's NW corner
    (x0, x1), (y0, y1) = rasterio.warp.transform(
        UTM, "EPSG:3857", [ORIGIN[0] + 40, ORIGIN[0] + 100], [ORIGIN[1], ORIGIN[1] - 75]
    )
    (rx,), (ry,) = rasterio.warp.transform(UTM, "EPSG:3857", [roof_x], [roof_y])
    res = 0.7 / np.cos(np.radians(45.5))  # metres on the ground at ~45.5 N, in Web Mercator units
    w, h = int((x1 - x0) / res), int((y0 - y1) / res)
    data = np.full((4, h, w), 0.04, np.float32)
    c, r = int((rx - x0) / res), int((y0 - ry) / res)
    side = int(10 / 0.7 * 1)  # 10 m
    data[:, r : r + side, c : c + side] = 0.9
    return write_tif(tmp_path / name, data, crs="EPSG:3857", res=res, origin=(x0, y0))


def test_a_post_scene_on_another_grid_is_read_on_the_pre_scenes(tmp_path) -> None:
    settings = StorageSettings()
    pair = open_pair(_pre(tmp_path), _post_in_web_mercator(tmp_path), settings)
    assert pair.reprojected and (pair.width, pair.height) == (W, H)
    pre, post, valid = read_pair_window(pair, settings, -10, -10, W + 20, H + 20)  # over every edge
    assert pre.shape == (4, H + 20, W + 20) and pre.dtype == np.uint16 and post.dtype == np.float32
    inside = valid[10:-10, 10:-10]
    assert not inside[:, :75].any()  # the post scene starts 40 m (80 px) east: not covered there
    assert inside[8:-8, 90:190].all() and not valid[:10].any()  # covered (the corners: the grids turn)
    roof = post[0, 10:-10, 10:-10] > 0.5
    rows, cols = np.nonzero(roof)
    assert abs(rows.min() - 60) <= 2 and abs(cols.min() - 100) <= 2  # the roof where the pre scene has it
    assert abs(rows.max() - 79) <= 2 and abs(cols.max() - 119) <= 2
    assert (pre[:, ~valid] == 0).all() and (post[:, ~valid] == 0).all()


def test_plain_png_pairs_pair_pixel_for_pixel(tmp_path) -> None:
    paths = []
    for name, size in (("pre", 64), ("post", 64), ("small", 32)):
        profile = {"driver": "PNG", "width": size, "height": size, "count": 3, "dtype": "uint8"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(tmp_path / f"{name}.png", "w", **profile) as dst:
                dst.write(np.full((3, size, size), len(name), np.uint8))
        paths.append(str(tmp_path / f"{name}.png"))
    settings = StorageSettings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing said about the missing CRS
        pair = open_pair(paths[0], paths[1], settings)
        pre, post, valid = read_pair_window(pair, settings, 0, 0, 64, 64)
    assert not pair.reprojected and valid.all() and (pre == 3).all() and (post == 4).all()
    with pytest.raises(InputDataError, match="images without a CRS pair only pixel for pixel"):
        open_pair(paths[0], paths[2], settings)
    with pytest.raises(InputDataError, match="has no CRS but the other scene of its pair has one"):
        open_pair(_pre(tmp_path), paths[0], settings, pre_bands=[1, 2, 3])


def test_pairs_that_cannot_pair_are_errors(tmp_path) -> None:
    settings = StorageSettings()
    pre = _pre(tmp_path)
    far = write_tif(
        tmp_path / "far.tif", np.ones((4, 50, 50), np.uint16), origin=(ORIGIN[0] + 5000, ORIGIN[1])
    )
    with pytest.raises(InputDataError, match=r"post scene .*far.tif does not overlap pre scene .*pre.tif"):
        open_pair(pre, far, settings)
    three = write_tif(tmp_path / "three.tif", np.ones((3, H, W), np.uint16))
    with pytest.raises(InputDataError, match=r"gives 4 bands but post scene .*three.tif 3; a pair needs"):
        open_pair(pre, three, settings)
    pair = open_pair(pre, three, settings, pre_bands=[1, 2, 3])  # the same bands, chosen
    assert not pair.reprojected and pair.pre.bands == (1, 2, 3)
