"""The scenes the map page knows: those of ``jobs/predict.py`` and ``jobs/damage.py`` output
folders, read from the STAC catalog each run writes beside its outputs (``<out>/catalog.json``).

A predict item is a building scene (its imagery, mask, probability, buildings); a damage item
is a damage scene: the pre-event imagery, the post-event imagery, the damage classes (its
``mask``) and the buildings with their damage class.

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
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stac import StorageStacIO
from resseg_ray.geo.storage import StorageSettings, exists, local_path, read_bytes

__all__ = ["DAMAGE_COLOURS", "SCENE_ID", "MapScene", "buildings_wgs84", "load_map_scenes", "rgb_of"]

SCENE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""What a scene id may be (also checked on every request path)."""
DAMAGE_COLOURS = dict(zip(DAMAGE_CLASSES, ("#2da44e", "#ffd33d", "#fb8500", "#cf222e"), strict=True))
"""The damage classes' colours, green to red: of the ``damage`` tiles, and of the buildings and
the legend on the page (each damage scene's summary gives them)."""


def rgb_of(band_names: tuple[str, ...]) -> tuple[int, int, int]:
    """Default true-colour band indexes (1-based): red, green, blue by name, else 1, 2, 3."""
    names = [n.lower() for n in band_names]
    if all(c in names for c in ("red", "green", "blue")):
        return names.index("red") + 1, names.index("green") + 1, names.index("blue") + 1
    if len(names) >= 3:
        return 1, 2, 3
    return 1, 1, 1


@dataclass(frozen=True)
class MapScene:
    """One scene of the map: its imagery and the model's outputs for it."""

    id: str
    imagery: str
    """The scene's image; of a damage scene, the pre-event image."""
    mask: str
    """The model's classes: 1 building of a building scene, 1-4 the damage classes of a damage
    scene (0 background, 255 no data)."""
    prob: str | None
    buildings: str | None
    bounds: tuple[float, float, float, float]
    """West, south, east, north in degrees (EPSG:4326)."""
    band_names: tuple[str, ...]
    crs: str
    properties: dict[str, Any] = field(default_factory=dict, compare=False)
    """The item's ``resseg_ray:`` properties (model, windowing, building count)."""
    post: str | None = None
    """The post-event image of a damage scene; None for a building scene."""
    post_band_names: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``damage`` (a pre/post pair mapped by a damage network) or ``buildings``."""
        return "damage" if self.post is not None else "buildings"

    @property
    def rgb(self) -> tuple[int, int, int]:
        """Default true-colour band indexes (1-based) of the (pre-event) imagery."""
        return rgb_of(self.band_names)

    @property
    def damage_counts(self) -> dict[str, int] | None:
        """Buildings per damage class of a damage scene (its item's count); None otherwise."""
        counts = self.properties.get("resseg_ray:buildings")
        if self.kind != "damage" or not isinstance(counts, dict):
            return None
        return {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}

    def layer_uri(self, layer: str) -> str | None:
        """The raster a map layer is rendered from; None for a layer the scene has not."""
        if self.kind == "damage":
            return {"imagery": self.imagery, "post": self.post, "damage": self.mask}.get(layer)
        return {"imagery": self.imagery, "mask": self.mask, "probability": self.prob}.get(layer)

    @property
    def layers(self) -> list[str]:
        """The scene's map layers: imagery, mask, probability; of a damage scene imagery (pre-event),
        post, damage."""
        order = ("imagery", "post", "damage") if self.kind == "damage" else ("imagery", "mask", "probability")
        return [layer for layer in order if self.layer_uri(layer)]

    def summary(self) -> dict[str, Any]:
        """What ``GET /v1/scenes`` says of the scene (the ``post_*`` and ``damage_*`` keys None
        for a building scene)."""
        damage = self.kind == "damage"
        counts = self.damage_counts
        if damage:
            building_count = sum(counts.values()) if counts is not None else None
        else:
            building_count = self.properties.get("resseg_ray:buildings")
        return {
            "id": self.id,
            "kind": self.kind,
            "bounds": list(self.bounds),
            "bands": list(self.band_names),
            "rgb": list(self.rgb),
            "layers": self.layers,
            "buildings": self.buildings is not None,
            "building_count": building_count,
            "model": self.properties.get("resseg_ray:model"),
            "architecture": self.properties.get("resseg_ray:architecture"),
            "post_bands": list(self.post_band_names) if damage else None,
            "post_rgb": list(rgb_of(self.post_band_names)) if damage else None,
            "damage_counts": counts,
            "damage_colours": DAMAGE_COLOURS if damage else None,
        }


def load_map_scenes(catalogs: list[str], settings: StorageSettings) -> dict[str, MapScene]:
    """The scenes of predict and damage output catalogs, by id (a later catalog's scene of the same id
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
    """A map scene of a predict or damage item; None (skipped) when it is neither or its files
    are gone."""
    found = item.properties.get("resseg_ray:post")
    post = found if isinstance(found, str) else None
    damage = post is not None
    source = item.properties.get("resseg_ray:pre" if damage else "resseg_ray:source")
    mask = _href(item, "damage" if damage else "mask")
    if not isinstance(source, str) or mask is None or not SCENE_ID.fullmatch(item.id) or item.bbox is None:
        return None
    if not all(exists(uri, settings) for uri in (source, mask, *([post] if post else []))):
        return None
    info = open_scene(source, settings)
    post_info = open_scene(post, settings) if post else None
    w, s, e, n = item.bbox
    props = {k: v for k, v in item.properties.items() if k.startswith("resseg_ray:")}
    return MapScene(
        id=item.id,
        imagery=source,
        mask=mask,
        prob=None if damage else _href(item, "probability"),
        buildings=_href(item, "buildings"),
        bounds=(float(w), float(s), float(e), float(n)),
        band_names=tuple(info.band_names),
        crs=info.crs,
        properties=props,
        post=post,
        post_band_names=tuple(post_info.band_names) if post_info is not None else (),
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
