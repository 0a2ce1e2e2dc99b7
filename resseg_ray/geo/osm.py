"""Building polygons as an OSM XML file for JOSM (API 0.6), safe to open and never uploaded
by accident.

What JOSM and the OSM data model expect of an import file:

- coordinates in EPSG:4326 (WGS84 longitude/latitude), 7 decimals (OSM's precision);
- new objects with negative ids, nothing with a version (JOSM treats them as new);
- a node shared by the ways that meet there (adjacent buildings share their common corner
  nodes instead of stacking duplicates, which JOSM's validator flags);
- every building a closed way tagged ``building=yes`` plus a ``source`` tag; a building
  with courtyards a ``type=multipolygon`` relation whose outer and inner ways are members;
- ``upload="false"`` on the root element: JOSM refuses to upload the layer, so a reviewer
  must copy the buildings they accept into a real data layer.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

import rasterio.crs
import rasterio.warp
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.polygon import orient

from resseg_ray.errors import InputDataError

WGS84 = rasterio.crs.CRS.from_epsg(4326)
PRECISION = 7
"""Decimals of the coordinates: OSM stores 1e-7 degrees (about 1 cm)."""


def _polygons(geometry: Mapping[str, Any]) -> list[Polygon]:
    geom = shape(geometry)
    if isinstance(geom, Polygon):
        return [geom]
    if isinstance(geom, MultiPolygon):
        return list(geom.geoms)
    raise InputDataError(f"OSM export takes polygons, got a {geom.geom_type}")


class _Builder:
    """Negative ids, one node per distinct rounded coordinate."""

    def __init__(self) -> None:
        self.next_id = -1
        self.nodes: dict[tuple[float, float], int] = {}
        self.ways: list[tuple[int, list[int], dict[str, str]]] = []
        self.relations: list[tuple[int, list[tuple[int, str]], dict[str, str]]] = []

    def _id(self) -> int:
        i, self.next_id = self.next_id, self.next_id - 1
        return i

    def node(self, lon: float, lat: float) -> int:
        key = (round(lon, PRECISION), round(lat, PRECISION))
        if key not in self.nodes:
            self.nodes[key] = self._id()
        return self.nodes[key]

    def way(self, ring: Iterable[tuple[float, ...]], tags: dict[str, str]) -> int | None:
        refs: list[int] = []
        for x, y, *_ in ring:
            ref = self.node(x, y)
            if not refs or refs[-1] != ref:  # corners closer than 1e-7 degrees become one node
                refs.append(ref)
        if len(refs) < 4 or refs[0] != refs[-1]:  # a closed way needs 3 distinct nodes
            return None
        way_id = self._id()
        self.ways.append((way_id, refs, tags))
        return way_id


PROVENANCE = "resseg_ray_source"
"""Attribute of the root element naming the scene the file was made from (OSM readers ignore
attributes they do not know); see :func:`osm_provenance`."""


def osm_provenance(data: bytes) -> str | None:
    """The scene an OSM file of :func:`osm_xml` was made from (None: not one of ours)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        return None
    return root.get(PROVENANCE) if root.tag == "osm" else None


def osm_xml(
    collection: Mapping[str, Any], crs: str | rasterio.crs.CRS, source: str, provenance: str | None = None
) -> bytes:
    """The buildings of a GeoJSON FeatureCollection (polygons in ``crs``) as OSM XML bytes:
    each building ``building=yes`` and ``source=<source>``, the file marked ``upload="false"``;
    ``provenance`` (the scene's URI) is recorded for :func:`osm_provenance`."""
    src_crs = crs if isinstance(crs, rasterio.crs.CRS) else rasterio.crs.CRS.from_user_input(crs)
    b = _Builder()
    building = {"building": "yes", "source": source}
    geometries = [f["geometry"] for f in collection.get("features", []) if f.get("geometry")]
    if geometries and src_crs != WGS84:  # one transformer for all of them
        geometries = rasterio.warp.transform_geom(src_crs, WGS84, geometries)
    for geometry in geometries:
        for polygon in _polygons(geometry):
            polygon = orient(polygon)  # outer counter-clockwise, holes clockwise
            if not polygon.interiors:
                b.way(polygon.exterior.coords, building)
                continue
            outer = b.way(polygon.exterior.coords, {})
            if outer is None:
                continue
            inners = [b.way(r.coords, {}) for r in polygon.interiors]
            members = [(outer, "outer")] + [(w, "inner") for w in inners if w is not None]
            b.relations.append((b._id(), members, {"type": "multipolygon", **building}))
    return _serialize(b, provenance)


def _serialize(b: _Builder, provenance: str | None) -> bytes:
    root = ET.Element("osm", version="0.6", generator="resseg-ray", upload="false")
    if provenance is not None:
        root.set(PROVENANCE, provenance)
    for (lon, lat), node_id in sorted(b.nodes.items(), key=lambda kv: -kv[1]):
        ET.SubElement(root, "node", id=str(node_id), lat=f"{lat:.{PRECISION}f}", lon=f"{lon:.{PRECISION}f}")
    for way_id, refs, tags in b.ways:
        way = ET.SubElement(root, "way", id=str(way_id))
        for ref in refs:
            ET.SubElement(way, "nd", ref=str(ref))
        for k, v in tags.items():
            ET.SubElement(way, "tag", k=k, v=v)
    for rel_id, members, tags in b.relations:
        rel = ET.SubElement(root, "relation", id=str(rel_id))
        for ref, role in members:
            ET.SubElement(rel, "member", type="way", ref=str(ref), role=role)
        for k, v in tags.items():
            ET.SubElement(rel, "tag", k=k, v=v)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
