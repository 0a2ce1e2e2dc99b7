"""Label rasters: footprints in any CRS and format land on the right pixels; grids are checked."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.warp
import shapely
from rasterio.crs import CRS
from shapely.geometry import box, mapping

from resseg_ray.errors import InputDataError
from resseg_ray.geo.labels import (
    FootprintsMissScene,
    check_label_raster,
    make_label_raster,
    read_footprints,
)
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import ORIGIN, UTM, write_tif

LOCAL = StorageSettings()
RES = 0.5


def _pixel_box(c0: int, r0: int, c1: int, r1: int):
    """A polygon in UTM metres covering pixels [r0, r1) x [c0, c1) exactly."""
    x0, y0 = ORIGIN
    return box(x0 + c0 * RES, y0 - r1 * RES, x0 + c1 * RES, y0 - r0 * RES)


def _scene(tmp_path, nodata_rows: int = 0) -> str:
    data = np.full((4, 60, 80), 500, np.uint16)
    data[:, :nodata_rows] = 0
    return write_tif(tmp_path / "scene.tif", data, nodata=0)


def _expected(boxes, shape=(60, 80)) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for c0, r0, c1, r1 in boxes:
        out[r0:r1, c0:c1] = 1
    return out


BOXES = [(5, 5, 15, 12), (30, 20, 52, 41), (70, 50, 90, 70)]  # the last hangs over the corner


def _geojson_4326(path, boxes) -> str:
    feats = []
    for b in boxes:
        g = rasterio.warp.transform_geom(
            CRS.from_user_input(UTM), "EPSG:4326", mapping(_pixel_box(*b)), precision=12
        )
        feats.append({"type": "Feature", "properties": {}, "geometry": g})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return str(path)


def test_epsg4326_geojson_lands_on_the_right_utm_pixels(tmp_path) -> None:
    scene = open_scene(_scene(tmp_path, nodata_rows=3), LOCAL)
    fp = read_footprints(_geojson_4326(tmp_path / "b.geojson", BOXES), LOCAL)
    assert CRS.from_wkt(fp.crs).to_epsg() == 4326
    out = str(tmp_path / "labels.tif")
    report = make_label_raster(scene, fp, out, LOCAL)
    with rasterio.open(out) as src:
        labels = src.read(1)
        assert src.crs == CRS.from_user_input(UTM) and src.transform == rasterio.Affine(*scene.transform)
        assert src.nodata == 255
    expected = _expected(BOXES)
    expected[:3] = 255  # the scene has no data in its first rows
    np.testing.assert_array_equal(labels, expected)
    assert report.footprints == 3 and report.ignore_pixels == 3 * 80


@pytest.mark.parametrize("driver,suffix", [("GPKG", ".gpkg"), ("ESRI Shapefile", ".shp")])
def test_geopackage_and_shapefile_in_another_crs(tmp_path, driver, suffix) -> None:
    scene = open_scene(_scene(tmp_path), LOCAL)
    web = CRS.from_epsg(3857)
    geoms = [
        shapely.geometry.shape(
            rasterio.warp.transform_geom(CRS.from_user_input(UTM), web, mapping(_pixel_box(*b)))
        )
        for b in BOXES[:2]
    ]
    path = str(tmp_path / f"b{suffix}")
    pyogrio.raw.write(
        path,
        shapely.to_wkb(geoms),
        field_data=[np.arange(2)],
        fields=["id"],
        crs="EPSG:3857",
        geometry_type="Polygon",
        driver=driver,
    )
    out = str(tmp_path / "l.tif")
    make_label_raster(scene, read_footprints(path, LOCAL), out, LOCAL)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), _expected(BOXES[:2]))


def test_footprints_that_miss_the_scene_warn_and_give_all_ground(tmp_path) -> None:
    scene = open_scene(_scene(tmp_path), LOCAL)
    fp = read_footprints(_geojson_4326(tmp_path / "far.geojson", [(1000, 1000, 1010, 1010)]), LOCAL)
    out = str(tmp_path / "l.tif")
    with pytest.warns(FootprintsMissScene, match=r"far\.geojson.*all ground"):
        make_label_raster(scene, fp, out, LOCAL)
    with rasterio.open(out) as src:
        assert (src.read(1) == 0).all()


def test_unreadable_footprints_and_scene_without_data(tmp_path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{ not json")
    with pytest.raises(InputDataError, match=r"bad\.geojson cannot be read as vector data"):
        read_footprints(str(bad), LOCAL)
    with pytest.raises(InputDataError, match="does not exist"):
        read_footprints(str(tmp_path / "none.geojson"), LOCAL)
    empty = open_scene(write_tif(tmp_path / "e.tif", np.zeros((1, 20, 20), np.uint16), nodata=0), LOCAL)
    fp = read_footprints(_geojson_4326(tmp_path / "b.geojson", BOXES[:1]), LOCAL)
    out = tmp_path / "l.tif"
    with pytest.raises(InputDataError, match=r"e\.tif has no valid pixels"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_label_raster(empty, fp, str(out), LOCAL)
    assert not out.exists() and not list(tmp_path.glob(".l.tif*"))


def test_ready_made_labels_must_share_the_scene_grid(tmp_path) -> None:
    scene = open_scene(_scene(tmp_path), LOCAL)
    good = write_tif(tmp_path / "good.tif", np.zeros((1, 60, 80), np.uint8))
    assert check_label_raster(scene, good, LOCAL).width == 80
    shifted = write_tif(
        tmp_path / "shift.tif", np.zeros((1, 60, 80), np.uint8), origin=(ORIGIN[0] + 1, ORIGIN[1])
    )
    with pytest.raises(InputDataError, match=r"shift\.tif is not on the grid of .*scene\.tif: transform"):
        check_label_raster(scene, shifted, LOCAL)
    small = write_tif(tmp_path / "small.tif", np.zeros((1, 50, 80), np.uint8))
    with pytest.raises(InputDataError, match="size 80x50 vs 80x60"):
        check_label_raster(scene, small, LOCAL)
    other = write_tif(tmp_path / "crs.tif", np.zeros((1, 60, 80), np.uint8), crs="EPSG:32634")
    with pytest.raises(InputDataError, match="CRS EPSG:32634 vs EPSG:32633"):
        check_label_raster(scene, other, LOCAL)
