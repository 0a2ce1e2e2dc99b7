"""Conflation with buildings already mapped: any CRS, the overlap share of the smaller
building, OSM XML (negative ids, as JOSM writes them) read as existing buildings, and the
clear refusal of a file without polygons."""

from __future__ import annotations

import json

import pytest
import rasterio.warp
from shapely.geometry import box, mapping

from resseg_ray.errors import InputDataError
from resseg_ray.geo.conflation import already_mapped, existing_buildings
from resseg_ray.geo.osm import osm_xml
from resseg_ray.geo.storage import StorageSettings
from tests.helpers import points_geojson

UTM = "EPSG:32633"
X, Y = 452000.0, 5043000.0
LOCAL = StorageSettings()

PREDICTED = [
    box(X, Y, X + 10, Y + 10),  # mapped exactly
    box(X + 20, Y, X + 30, Y + 10),  # a mapped shed of 2 x 2 m inside: 100 % of the smaller one
    box(X + 40, Y, X + 50, Y + 10),  # a mapped neighbour overlapping 1 m of 10: 10 %
    box(X + 60, Y, X + 70, Y + 10),  # nothing mapped there
    box(X + 80, Y, X + 90, Y + 10),  # two mapped halves, each 50 % of it
]
MAPPED = [
    box(X, Y, X + 10, Y + 10),
    box(X + 24, Y + 4, X + 26, Y + 6),
    box(X + 49, Y, X + 59, Y + 10),
    box(X + 80, Y, X + 85, Y + 10),
    box(X + 85, Y, X + 90, Y + 10),
]


def _geojson_4326(path, geoms) -> str:
    """The mapped buildings as GeoJSON in EPSG:4326 (another CRS than the scene's)."""
    g = rasterio.warp.transform_geom(UTM, "EPSG:4326", [mapping(b) for b in geoms])
    feats = [{"type": "Feature", "properties": {"building": "yes"}, "geometry": x} for x in g]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return str(path)


def test_buildings_mapped_in_another_crs_are_recognised(tmp_path) -> None:
    existing = existing_buildings(_geojson_4326(tmp_path / "osm.geojson", MAPPED), LOCAL)
    flags = already_mapped(PREDICTED, rasterio.crs.CRS.from_string(UTM).to_wkt(), existing, 0.3)
    assert flags.tolist() == [True, True, False, False, True]
    strict = already_mapped(PREDICTED, UTM, existing, 0.99)
    assert strict.tolist() == [True, True, False, False, True]  # exact copies and the shed: 100 %


def test_a_josm_file_is_read_as_existing_buildings(tmp_path) -> None:
    g = rasterio.warp.transform_geom(UTM, "EPSG:4326", [mapping(b) for b in MAPPED[:2]])
    feats = [{"type": "Feature", "properties": {}, "geometry": x} for x in g]
    fc = {"type": "FeatureCollection", "features": feats}
    path = tmp_path / "mapped.osm"
    path.write_bytes(osm_xml(fc, "EPSG:4326", "test", None))
    existing = existing_buildings(str(path), LOCAL)
    assert len(existing.geometries) == 2
    assert already_mapped(PREDICTED[:2], UTM, existing, 0.3).tolist() == [True, True]


def test_a_file_without_polygons_is_refused(tmp_path) -> None:
    points = points_geojson(tmp_path / "points.geojson")
    with pytest.raises(InputDataError, match=r"points\.geojson holds no polygons"):
        existing_buildings(points, LOCAL)
    with pytest.raises(InputDataError, match=r"does not exist|cannot be read"):
        existing_buildings(str(tmp_path / "missing.geojson"), LOCAL)
