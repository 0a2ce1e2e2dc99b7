"""Damage rasters from building footprints with a damage field: GeoJSON in WGS 84 and
GeoPackage in UTM alike land on the scene's pixels with their class; ungraded buildings are no
data; a missing field or an unknown value is an error naming the file and what to give."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.warp
from rasterio.crs import CRS
from shapely.geometry import box, mapping

from resseg_ray.errors import InputDataError
from resseg_ray.geo.damage_labels import damage_values, make_damage_raster
from resseg_ray.geo.labels import read_footprints
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import ORIGIN, UTM, write_tif

LOCAL = StorageSettings()
RES = 0.5
# (pixel box c0, r0, c1, r1; damage as a mapper's file may spell it)
BUILDINGS = [
    ((5, 5, 15, 12), "no-damage"),
    ((20, 5, 30, 12), "Minor_Damage"),
    ((35, 5, 45, 12), "major-damage"),
    ((50, 5, 60, 12), "destroyed"),
    ((5, 30, 15, 40), "un-classified"),
    ((20, 30, 30, 40), None),  # not graded
    ((12, 8, 22, 10), "destroyed"),  # overlaps the first two: burned after them
]


def _pixel_box(c0: int, r0: int, c1: int, r1: int):
    x0, y0 = ORIGIN
    return box(x0 + c0 * RES, y0 - r1 * RES, x0 + c1 * RES, y0 - r0 * RES)


def _scene(tmp_path) -> str:
    data = np.full((4, 60, 80), 500, np.uint16)
    data[:, 55:] = 0  # no data
    return write_tif(tmp_path / "post.tif", data, nodata=0)


def _geojson_4326(path, buildings, field: str = "subtype") -> str:
    feats = []
    for b, damage in buildings:
        g = rasterio.warp.transform_geom(
            CRS.from_user_input(UTM), "EPSG:4326", mapping(_pixel_box(*b)), precision=12
        )
        props = {} if damage is None else {field: damage}
        feats.append({"type": "Feature", "properties": props, "geometry": g})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return str(path)


def test_footprints_with_damage_burn_into_a_damage_raster(tmp_path) -> None:
    scene = open_scene(_scene(tmp_path), LOCAL)
    fp = read_footprints(_geojson_4326(tmp_path / "damage.geojson", BUILDINGS), LOCAL, attribute="subtype")
    assert damage_values(fp, "subtype") == [1, 2, 3, 4, 255, 255, 4]
    out = str(tmp_path / "post_damage.tif")
    report = make_damage_raster(scene, fp, "subtype", out, LOCAL)
    with rasterio.open(out) as ds:
        raster = ds.read(1)
        assert ds.nodata == 255 and "4 destroyed" in ds.descriptions[0]
    expected = np.zeros((60, 80), np.uint8)
    value = {"no-damage": 1, "Minor_Damage": 2, "major-damage": 3, "destroyed": 4}
    for (c0, r0, c1, r1), damage in BUILDINGS:
        expected[r0:r1, c0:c1] = value.get(damage or "", 255)
    expected[30:40, 5:15] = expected[30:40, 20:30] = 255
    expected[55:] = 255
    assert np.array_equal(raster, expected)
    assert report.footprints == 7 and report.building_pixels == int(((expected >= 1) & (expected <= 4)).sum())


def test_a_geopackage_in_utm_with_numbered_damage(tmp_path) -> None:
    frame = gpd.GeoDataFrame(
        {"damage": [1, 4, 3]},
        geometry=[_pixel_box(5, 5, 15, 12), _pixel_box(20, 5, 30, 12), _pixel_box(35, 5, 45, 12)],
        crs=UTM,
    )
    path = str(tmp_path / "b.gpkg")
    frame.to_file(path, driver="GPKG")
    scene = open_scene(_scene(tmp_path), LOCAL)
    out = str(tmp_path / "d.tif")
    make_damage_raster(scene, read_footprints(path, LOCAL, attribute="damage"), "damage", out, LOCAL)
    with rasterio.open(out) as ds:
        raster = ds.read(1)
    assert raster[8, 10] == 1 and raster[8, 25] == 4 and raster[8, 40] == 3 and raster[20, 40] == 0


def test_bad_damage_footprints_are_errors_naming_the_file(tmp_path) -> None:
    path = _geojson_4326(tmp_path / "d.geojson", [((5, 5, 15, 12), "flooded"), ((20, 5, 30, 12), "flooded")])
    fp = read_footprints(path, LOCAL, attribute="subtype")
    with pytest.raises(
        InputDataError, match=r"field 'subtype' holds values that are no damage class: 'flooded' \(2\)"
    ):
        damage_values(fp, "subtype")
    with pytest.raises(InputDataError, match=r"has no field 'damage' \(its fields: subtype\)") as err:
        read_footprints(path, LOCAL, attribute="damage")
    assert path in str(err.value)
    osm = tmp_path / "b.osm"
    osm.write_text("<osm version='0.6'></osm>")
    with pytest.raises(InputDataError, match="an OSM file has no field 'subtype' to read"):
        read_footprints(str(osm), LOCAL, attribute="subtype")
