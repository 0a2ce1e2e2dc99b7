"""The OSM XML export, parsed back as JOSM would read it: API 0.6, upload="false", negative
ids, one node per shared corner, building=yes and the source on every building, courtyards
as multipolygon relations, coordinates in EPSG:4326 where the polygons were."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import rasterio.crs
import rasterio.warp
from shapely.geometry import Polygon, mapping

from resseg_ray.errors import InputDataError
from resseg_ray.geo.osm import osm_xml

UTM = "EPSG:32633"
X0, Y0 = 452000.0, 5043000.0


def _square(x: float, y: float, side: float, hole: float = 0.0) -> dict:
    ring = [(x, y), (x + side, y), (x + side, y + side), (x, y + side)]
    holes = []
    if hole:
        c = side / 2
        holes = [[(x + c - hole, y + c - hole), (x + c - hole, y + c + hole), (x + c + hole, y + c + hole),
                  (x + c + hole, y + c - hole)]]  # fmt: skip
    return {"type": "Feature", "properties": {"id": 1}, "geometry": mapping(Polygon(ring, holes))}


def _parse(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    assert root.tag == "osm" and root.get("version") == "0.6" and root.get("upload") == "false"
    return root


def test_adjacent_buildings_share_their_corner_nodes_and_are_tagged() -> None:
    # two 10 m buildings side by side (a terrace): they share the two nodes of their common wall
    fc = {"type": "FeatureCollection", "features": [_square(X0, Y0, 10), _square(X0 + 10, Y0, 10)]}
    root = _parse(osm_xml(fc, UTM, "resseg-ray prop18 v3"))
    nodes = {int(n.get("id")): (float(n.get("lon")), float(n.get("lat"))) for n in root.iter("node")}
    ways = root.findall("way")
    assert len(nodes) == 6 and len(ways) == 2  # 8 corners, 2 shared
    assert all(i < 0 for i in nodes) and all(int(w.get("id")) < 0 for w in ways)
    assert all(n.get("version") is None for n in root.iter("node"))  # new objects
    refs = [[int(nd.get("ref")) for nd in w.iter("nd")] for w in ways]
    assert all(r[0] == r[-1] and len(r) == 5 for r in refs)  # closed
    assert len(set(refs[0]) & set(refs[1])) == 2
    for w in ways:
        tags = {t.get("k"): t.get("v") for t in w.iter("tag")}
        assert tags == {"building": "yes", "source": "resseg-ray prop18 v3"}
    # the coordinates are the UTM corners in EPSG:4326, to OSM's 1e-7 degrees
    lon, lat = rasterio.warp.transform(UTM, "EPSG:4326", [X0 + 10], [Y0])
    assert any(abs(x - lon[0]) < 1e-7 and abs(y - lat[0]) < 1e-7 for x, y in nodes.values())
    assert all(13.0 < x < 15.5 and 45.0 < y < 46.0 for x, y in nodes.values())


def test_a_courtyard_is_a_multipolygon_relation() -> None:
    fc = {"type": "FeatureCollection", "features": [_square(X0, Y0, 30, hole=5)]}
    root = _parse(osm_xml(fc, rasterio.crs.CRS.from_string(UTM), "test"))
    (rel,) = root.findall("relation")
    tags = {t.get("k"): t.get("v") for t in rel.iter("tag")}
    assert tags == {"type": "multipolygon", "building": "yes", "source": "test"}
    roles = sorted(m.get("role") for m in rel.iter("member"))
    assert roles == ["inner", "outer"]
    ways = {w.get("id"): w for w in root.findall("way")}
    assert {m.get("ref") for m in rel.iter("member")} == set(ways)
    assert all(not w.findall("tag") for w in ways.values())  # the tags live on the relation


def test_polygons_already_in_wgs84_and_multipolygons() -> None:
    a = Polygon([(14.0, 45.5), (14.0001, 45.5), (14.0001, 45.5001), (14.0, 45.5001)])
    b = Polygon([(14.001, 45.5), (14.0011, 45.5), (14.0011, 45.5001)])
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "MultiPolygon",
         "coordinates": [mapping(a)["coordinates"], mapping(b)["coordinates"]]}}]}  # fmt: skip
    root = _parse(osm_xml(fc, "EPSG:4326", "test"))
    assert len(root.findall("way")) == 2 and len(root.findall("node")) == 7
    assert {n.get("lon") for n in root.iter("node")} >= {"14.0000000", "14.0011000"}


def test_what_is_not_a_polygon_is_refused() -> None:
    point = {"type": "Point", "coordinates": [14.0, 45.5]}
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": point}]}
    with pytest.raises(InputDataError, match="OSM export takes polygons, got a Point"):
        osm_xml(fc, "EPSG:4326", "test")
