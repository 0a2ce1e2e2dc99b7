"""The map's export: the buildings a mapper can take to OSM or a GIS, from the newest saved
annotations and the model.

Inside the annotated areas the mapper's word counts: the buildings drawn and the predicted
ones accepted (rejected and undecided predictions are left out); outside them, the model's
buildings. As GeoJSON (EPSG:4326, each feature's ``source``: ``drawn``, ``accepted`` or
``model``; on a damage scene also its ``damage`` class, the mapper's inside the areas, the
model's with its ``confidence`` outside) or as the project's JOSM file
(:func:`~resseg_ray.geo.osm.osm_xml`: negative ids, shared nodes, ``upload="false"``).
"""

from __future__ import annotations

import json
from typing import Any

from shapely.geometry import shape  # imported here, not in the worker threads exporting
from shapely.ops import unary_union

from resseg_ray.geo.osm import osm_xml
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.serving.scenes import MapScene, buildings_wgs84

__all__ = ["EXPORT_FORMATS", "export_buildings"]

EXPORT_FORMATS = {"geojson": ("application/geo+json", "geojson"), "osm": ("application/xml", "osm")}


def export_collection(
    scene: MapScene, annotations: dict[str, Any], settings: StorageSettings
) -> dict[str, Any]:
    """The export's FeatureCollection (EPSG:4326)."""
    features = annotations.get("features", [])
    areas = [shape(f["geometry"]) for f in features if f["properties"]["kind"] == "area"]
    annotated = unary_union(areas) if areas else None
    out = []
    for f in features:
        p = f["properties"]
        if p["kind"] == "building":
            source = "accepted" if p.get("source") == "predicted" else "drawn"
            props = {"source": source, **({"damage": p["damage"]} if "damage" in p else {})}
            out.append({"type": "Feature", "properties": props, "geometry": f["geometry"]})
    if scene.buildings is not None:
        model = json.loads(buildings_wgs84(scene, settings))
        keys = ("damage", "confidence") if scene.kind == "damage" else ("mean_probability",)
        for f in model["features"]:
            geom = shape(f["geometry"])
            if annotated is None or not annotated.covers(geom.representative_point()):
                props = {"source": "model", **{k: f["properties"].get(k) for k in keys}}
                out.append({"type": "Feature", "properties": props, "geometry": f["geometry"]})
    return {"type": "FeatureCollection", "features": out}


def export_buildings(
    scene: MapScene, annotations: dict[str, Any], fmt: str, settings: StorageSettings
) -> bytes:
    """The export as bytes of ``fmt`` (one of :data:`EXPORT_FORMATS`)."""
    collection = export_collection(scene, annotations, settings)
    if fmt == "osm":
        source = f"resseg-ray building segmentation of {scene.id}, reviewed on the map"
        return osm_xml(collection, "EPSG:4326", source)
    return json.dumps(collection).encode()
