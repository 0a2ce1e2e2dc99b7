"""STAC out for damage: a STAC item per mapped pair, ``<out>/<name>_damage_item.json``, and
``<out>/catalog.json`` listing them (as ``predict``'s catalog lists its scenes).

The item's footprint and projection are the damage raster's (the pre scene's grid); its assets
are the damage-class COG, the class probabilities (raster extension, scale 1/250), the
buildings and the summary, with relative hrefs so the folder can be moved or uploaded as it
is; its properties say which pre and post scenes and which model made it, and how many
buildings each damage class holds. It is checked against the shipped schemas, offline.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pystac

from resseg_ray import __version__
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES, VALUES_TEXT
from resseg_ray.geo.stac import StorageStacIO
from resseg_ray.geo.stac_write import OfflineValidator, add_raster_asset, raster_item
from resseg_ray.geo.storage import StorageSettings, exists, join_uri, write_bytes
from resseg_ray.inference.damage import DamageReport
from resseg_ray.inference.outputs import PROB_SCALE
from resseg_ray.inference.stac_items import save_folder_catalog

PREFIX = "resseg_ray:"
_VECTOR_MEDIA = {
    "geojson": "application/geo+json",
    "parquet": "application/vnd.apache.parquet",
    "fgb": "application/vnd.flatgeobuf",
}


def damage_item_uri(out_dir: str, name: str) -> str:
    """Where the STAC item of the pair ``name`` goes."""
    return join_uri(out_dir, f"{name}_damage_item.json")


def write_damage_item(
    report: DamageReport,
    out_dir: str,
    model: str,
    settings: StorageSettings,
    sources: Mapping[str, pystac.Item] | None = None,
) -> pystac.Item | None:
    """Write (and validate) the STAC item of a mapped pair; the item. Pairs on plain pixel grids
    (no CRS) get none (None): a STAC item needs a place on Earth. ``sources`` maps scene URIs
    to the STAC items they came from: the pre and post scenes' are named in the properties
    (``resseg_ray:pre_item``, ``post_item``) and linked (``derived_from``)."""
    if not report.georeferenced:
        return None
    uris = report.outputs
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    props: dict[str, Any] = {
        "created": now.isoformat().replace("+00:00", "Z"),
        PREFIX + "pre": report.pre,
        PREFIX + "post": report.post,
        PREFIX + "model": model,
        PREFIX + "version": __version__,
        PREFIX + "buildings": dict(report.buildings),
    }
    linked = [(when, (sources or {}).get(uri)) for when, uri in (("pre", report.pre), ("post", report.post))]
    for when, source in linked:
        if source is not None:
            props[f"{PREFIX}{when}_item"] = source.id
    item = raster_item(f"{report.name}-damage", uris["damage"], settings, now, props)
    href = damage_item_uri(out_dir, report.name)
    item.set_self_href(href)
    damage = add_raster_asset(
        item, "damage", _rel(uris["damage"]), uris["damage"], settings, "Damage class", ["data"]
    )
    damage.description = VALUES_TEXT
    prob = add_raster_asset(
        item, "probability", _rel(uris["prob"]), uris["prob"], settings, "Class probabilities", ["data"]
    )
    from pystac.extensions.raster import RasterExtension

    raster = RasterExtension.ext(prob)
    bands = raster.bands or []
    for band in bands:
        band.scale, band.offset = 1.0 / PROB_SCALE, 0.0
    raster.bands = bands
    prob.description = (
        f"one band per class (background, {', '.join(DAMAGE_CLASSES)}): probability x {PROB_SCALE}"
    )
    fmt = uris["buildings"].rsplit(".", 1)[-1]
    buildings = pystac.Asset(
        _rel(uris["buildings"]), "Buildings with their damage", media_type=_VECTOR_MEDIA[fmt]
    )
    buildings.roles = ["data"]
    item.add_asset("buildings", buildings)
    summary = pystac.Asset(
        _rel(uris["summary"]), "Buildings per damage class", media_type=pystac.MediaType.JSON
    )
    summary.roles = ["metadata"]
    item.add_asset("summary", summary)
    for _, source in linked:
        source_href = source.get_self_href() if source is not None else None
        if source is not None and source_href:
            item.add_link(pystac.Link("derived_from", source_href, pystac.MediaType.JSON, source.id))
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    OfflineValidator().validate(doc, pystac.STACObjectType.ITEM, doc["stac_version"], item.stac_extensions)
    write_bytes(href, (json.dumps(doc, indent=2) + "\n").encode(), settings)
    return item


def write_damage_catalog(
    out_dir: str, items: Sequence[pystac.Item], names: Sequence[str], settings: StorageSettings
) -> tuple[str, int] | None:
    """``<out>/catalog.json`` of ``items`` (this run's), of the items of the pairs ``names`` already
    beside their maps (mapped by a run cut short before its catalog was written) and of the items
    of earlier runs it listed that are still there, building maps included; its URI and item
    count; None (nothing written) when no pair has an item."""
    io = StorageStacIO(settings)
    have = {i.id for i in items}
    found = [damage_item_uri(out_dir, n) for n in names if f"{n}-damage" not in have]
    earlier = [pystac.Item.from_file(u, stac_io=io) for u in found if exists(u, settings)]
    if not items and not earlier:
        return None
    description = (
        f"Damage maps by resseg-ray {__version__}: damage classes, probabilities and buildings per pair"
    )
    return save_folder_catalog(out_dir, [*items, *earlier], description, settings)


def _rel(uri: str) -> str:
    return "./" + uri.rstrip("/").rsplit("/", 1)[-1]
