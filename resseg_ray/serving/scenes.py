"""The scenes the map page knows: those of ``jobs/predict.py`` output folders, read from the
STAC catalog each run writes beside its outputs (``<out>/catalog.json``).

A scene is addressed by its id (the STAC item id, e.g. ``test_01``), never by a path or a URL
from a request: the registry maps ids to the files the service was configured with.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd  # here, not in the worker thread that reads the polygons
import pystac

from resseg_ray.errors import ConfigError
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stac import StorageStacIO
from resseg_ray.geo.storage import StorageSettings, exists, local_path, read_bytes

__all__ = ["SCENE_ID", "MapScene", "buildings_wgs84", "load_map_scenes"]

SCENE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""What a scene id may be (also checked on every request path)."""


@dataclass(frozen=True)
class MapScene:
    """One scene of the map: its imagery and the model's outputs for it."""

    id: str
    imagery: str
    mask: str
    prob: str | None
    buildings: str | None
    bounds: tuple[float, float, float, float]
    """West, south, east, north in degrees (EPSG:4326)."""
    band_names: tuple[str, ...]
    crs: str
    properties: dict[str, Any] = field(default_factory=dict, compare=False)
    """The item's ``resseg_ray:`` properties (model, windowing, building count)."""

    @property
    def rgb(self) -> tuple[int, int, int]:
        """Default true-colour band indexes (1-based): red, green, blue by name, else 1, 2, 3."""
        names = [n.lower() for n in self.band_names]
        if all(c in names for c in ("red", "green", "blue")):
            return names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1
        if len(names) >= 3:
            return 1, 2, 3
        return 1, 1, 1

    def summary(self) -> dict[str, Any]:
        """What ``GET /v1/scenes`` says of the scene."""
        layers = ["imagery", "mask"] + (["probability"] if self.prob else [])
        return {
            "id": self.id,
            "bounds": list(self.bounds),
            "bands": list(self.band_names),
            "rgb": list(self.rgb),
            "layers": layers,
            "buildings": self.buildings is not None,
            "building_count": self.properties.get("resseg_ray:buildings"),
            "model": self.properties.get("resseg_ray:model"),
            "architecture": self.properties.get("resseg_ray:architecture"),
        }


def load_map_scenes(catalogs: list[str], settings: StorageSettings) -> dict[str, MapScene]:
    """The scenes of predict output catalogs, by id (a later catalog's scene of the same id
    replaces an earlier one). A configured catalog that cannot be read is a ConfigError."""
    scenes: dict[str, MapScene] = {}
    io = StorageStacIO(settings)
    for href in catalogs:
        if not exists(href, settings):
            raise ConfigError(
                f"serve.map_catalogs: {href} does not exist; give the catalog.json of a jobs/predict.py "
                "output folder (make demo writes runs/demo-maps/catalog.json)"
            )
        try:
            catalog = pystac.Catalog.from_file(href, stac_io=io)
            items = list(catalog.get_items(recursive=True))
        except Exception as exc:
            raise ConfigError(f"serve.map_catalogs: {href} is not a readable STAC catalog ({exc})") from None
        for item in items:
            scene = _scene(item, settings)
            if scene is not None:
                scenes[scene.id] = scene
    return scenes


def _href(item: pystac.Item, key: str) -> str | None:
    asset = item.assets.get(key)
    href = asset.get_absolute_href() if asset is not None else None
    if href is None:
        return None
    return local_path(href) if href.startswith("file://") else href


def _scene(item: pystac.Item, settings: StorageSettings) -> MapScene | None:
    """A map scene of a predict item; None (skipped) when it is not one or its files are gone."""
    source = item.properties.get("resseg_ray:source")
    mask = _href(item, "mask")
    if not isinstance(source, str) or mask is None or not SCENE_ID.fullmatch(item.id) or item.bbox is None:
        return None
    if not (exists(source, settings) and exists(mask, settings)):
        return None
    info = open_scene(source, settings)
    w, s, e, n = item.bbox
    props = {k: v for k, v in item.properties.items() if k.startswith("resseg_ray:")}
    return MapScene(
        id=item.id,
        imagery=source,
        mask=mask,
        prob=_href(item, "probability"),
        buildings=_href(item, "buildings"),
        bounds=(float(w), float(s), float(e), float(n)),
        band_names=tuple(info.band_names),
        crs=info.crs,
        properties=props,
    )


def buildings_wgs84(scene: MapScene, settings: StorageSettings) -> bytes:
    """The scene's building polygons as GeoJSON bytes in EPSG:4326 (any of the vector formats
    predict writes; GeoJSON without a CRS member is EPSG:4326 already)."""
    assert scene.buildings is not None
    data = read_bytes(scene.buildings, settings)
    if scene.buildings.endswith(".parquet"):
        frame = gpd.read_parquet(io.BytesIO(data))
    else:
        frame = gpd.read_file(io.BytesIO(data))
    if frame.crs is None:
        frame = frame.set_crs("EPSG:4326")
    return frame.to_crs("EPSG:4326").to_json(drop_id=True).encode()
