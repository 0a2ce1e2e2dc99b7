"""STAC out: beside a run's outputs, a STAC item per segmented scene and a catalog of them.

``<out>/<stem>_item.json`` describes one scene's outputs: the mask, probability and building
assets (COGs with the raster extension; relative hrefs, so the folder can be moved or
uploaded as it is), the grid (projection extension), the scene it was made from (a
``derived_from`` link to the source STAC item when the scene came from one) and how it was
made (the model's URI, registry name and version, content hash and architecture; the
windowing). ``<out>/catalog.json`` lists the items of every scene whose outputs are there,
from this run and earlier ones. Both are checked with ``pystac``'s ``validate_all`` offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pystac

from resseg_ray import __version__
from resseg_ray.config import PredictSection
from resseg_ray.errors import ConfigError
from resseg_ray.geo.stac import SceneInputs, StorageStacIO
from resseg_ray.geo.stac_write import add_raster_asset, raster_item, read_stac_json, validate_catalog
from resseg_ray.geo.storage import StorageSettings, exists, join_uri, normalize_uri
from resseg_ray.inference.outputs import PROB_SCALE, OutputOptions, output_uris
from resseg_ray.models.bundle import BundleInfo

__all__ = [
    "CATALOG",
    "ModelProvenance",
    "check_catalog_destination",
    "check_documents",
    "item_uri",
    "save_folder_catalog",
    "write_run_catalog",
]

CATALOG = "catalog.json"
CATALOG_ID = "resseg-ray-predictions"
PREFIX = "resseg_ray:"
_VECTOR_MEDIA = {
    ".geojson": "application/geo+json",
    ".parquet": "application/vnd.apache.parquet",
    ".fgb": "application/vnd.flatgeobuf",
}
OSM_MEDIA = "application/vnd.openstreetmap.data+xml"


@dataclass(frozen=True)
class ModelProvenance:
    """Which model made the outputs."""

    uri: str
    architecture: str
    sha256: str
    normalization: str = "pooled"
    """How the model normalises scenes unless told otherwise (as it was trained)."""
    registry: tuple[str, str] | None = None
    """(registered name, version) when the model came from the MLflow registry."""

    @classmethod
    def of(cls, uri: str, bundle_bytes: bytes, info: BundleInfo) -> ModelProvenance:
        """The provenance of a model fetched from ``uri`` (the registry asked for its version)."""
        from resseg_ray.models.source import registry_version

        sha = hashlib.sha256(bundle_bytes).hexdigest()
        normalization = str(info.extra.get("normalization", "pooled"))
        return cls(uri, info.architecture, sha, normalization, registry_version(uri))

    def properties(self) -> dict[str, Any]:
        """Item properties of the model."""
        props: dict[str, Any] = {
            PREFIX + "model": self.uri,
            PREFIX + "architecture": self.architecture,
            PREFIX + "model_sha256": self.sha256,
        }
        if self.registry is not None:
            props[PREFIX + "model_name"], props[PREFIX + "model_version"] = self.registry
        return props


def item_uri(out_dir: str, scene_uri: str, options: OutputOptions) -> str:
    """Where the STAC item of a scene's outputs is written."""
    return join_uri(out_dir, f"{options.stem(scene_uri)}_item.json")


def _ours(uri: str, settings: StorageSettings, kind: str) -> bool:
    """Whether the STAC document at ``uri`` was written by resseg-ray (a re-run may replace it)."""
    doc = read_stac_json(uri, settings)
    if doc is None:
        return False
    if kind == "catalog":
        return doc.get("id") == CATALOG_ID
    props = doc.get("properties")  # a scene's map names its source; a damage map its pre scene
    return isinstance(props, dict) and (PREFIX + "source" in props or PREFIX + "pre" in props)


def check_catalog_destination(
    out_dir: str, scene_uris: Sequence[str], options: OutputOptions, settings: StorageSettings
) -> None:
    """Before any work: no STAC document of the run would replace one the user has."""
    items = [item_uri(out_dir, u, options) for u in scene_uris]
    check_documents(out_dir, items, settings)


def check_documents(out_dir: str, item_uris: Sequence[str], settings: StorageSettings) -> None:
    """Before any work: neither ``<out_dir>/catalog.json`` nor any of ``item_uris`` is a STAC
    document the user has (one resseg-ray wrote may be replaced); else a ConfigError."""
    targets = [(join_uri(out_dir, CATALOG), "catalog"), *((u, "item") for u in item_uris)]
    for uri, kind in targets:
        if exists(uri, settings) and not _ours(uri, settings, kind):
            raise ConfigError(
                f"{uri} exists and is not a STAC {kind} resseg-ray wrote: move it away, choose another "
                "--out, or --no-stac (nothing was written)"
            )


def _scene_item(
    scene_uri: str,
    out_dir: str,
    options: OutputOptions,
    predict: PredictSection,
    model: ModelProvenance,
    inputs: SceneInputs,
    buildings: int | None,
    already_mapped: int | None,
    settings: StorageSettings,
) -> pystac.Item:
    uris = output_uris(out_dir, scene_uri, options)
    source = inputs.items.get(scene_uri)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    when = (source.datetime or source.common_metadata.start_datetime) if source is not None else None
    props: dict[str, Any] = {
        "created": now.isoformat().replace("+00:00", "Z"),
        PREFIX + "source": scene_uri,
        PREFIX + "version": __version__,
        **model.properties(),
        PREFIX + "window": predict.window,
        PREFIX + "overlap": predict.overlap,
        PREFIX + "blend": predict.blend,
        PREFIX + "normalization": predict.normalization or model.normalization,
        PREFIX + "adapt_bn": predict.adapt_bn,
        PREFIX + "runtime": predict.runtime,
        PREFIX + "precision": predict.precision,
    }
    if buildings is not None:
        props[PREFIX + "buildings"] = buildings
    if already_mapped is not None and predict.existing is not None:
        props[PREFIX + "already_mapped"] = already_mapped
        props[PREFIX + "existing"] = predict.existing
    if source is not None:
        props[PREFIX + "source_item"] = source.id
        props[PREFIX + "source_asset"] = inputs.assets.get(scene_uri)
    item = raster_item(options.stem(scene_uri), uris["mask"], settings, when or now, props)
    item.set_self_href(item_uri(out_dir, scene_uri, options))
    mask = add_raster_asset(
        item, "mask", _rel(uris["mask"]), uris["mask"], settings, "Building mask", ["data"]
    )
    mask.description = "0 ground, 1 building, 255 no data"
    if "prob" in uris:
        prob = add_raster_asset(
            item, "probability", _rel(uris["prob"]), uris["prob"], settings, "Building probability", ["data"]
        )
        if options.prob_dtype == "uint8":
            from pystac.extensions.raster import RasterExtension

            raster = RasterExtension.ext(prob)
            bands = raster.bands or []
            for band in bands:
                band.scale, band.offset = 1.0 / PROB_SCALE, 0.0
            raster.bands = bands
            prob.description = f"probability x {PROB_SCALE} (0-{PROB_SCALE}), 255 no data"
    if "buildings" in uris:
        suffix = "." + uris["buildings"].rsplit(".", 1)[-1]
        item.add_asset(
            "buildings",
            pystac.Asset(
                _rel(uris["buildings"]), "Building polygons", media_type=_VECTOR_MEDIA[suffix], roles=["data"]
            ),
        )
    if "osm" in uris:
        item.add_asset(
            "osm",
            pystac.Asset(
                _rel(uris["osm"]),
                "Buildings for JOSM (OSM XML, upload=false)",
                media_type=OSM_MEDIA,
                roles=["data"],
            ),
        )
    source_href = source.get_self_href() if source is not None else None
    if source is not None and source_href:
        item.add_link(pystac.Link("derived_from", source_href, pystac.MediaType.JSON, source.id))
    return item


def _rel(uri: str) -> str:
    return "./" + uri.rstrip("/").rsplit("/", 1)[-1]


def write_run_catalog(
    out_dir: str,
    scenes: Sequence[tuple[str, int | None, int | None, str]],
    options: OutputOptions,
    predict: PredictSection,
    model: ModelProvenance,
    inputs: SceneInputs,
    settings: StorageSettings,
) -> tuple[str, int]:
    """Write the items of ``scenes`` (URI, buildings written, buildings left out, the runtime
    and precision that ran, e.g. ``openvino bf16``; outputs complete) and ``<out>/catalog.json``
    listing them and the items of earlier runs whose outputs are still there; validate it all.
    Returns the catalog's URI and its item count."""
    new = []
    for uri, buildings, mapped, engine in scenes:
        item = _scene_item(uri, out_dir, options, predict, model, inputs, buildings, mapped, settings)
        if engine:
            item.properties[PREFIX + "engine"] = engine
        new.append(item)
    description = f"Building maps by resseg-ray {__version__}: a mask, probability and polygons per scene"
    return save_folder_catalog(out_dir, new, description, settings)


def save_folder_catalog(
    out_dir: str, new_items: Sequence[pystac.Item], description: str, settings: StorageSettings
) -> tuple[str, int]:
    """Write ``new_items`` (each beside its assets, at its self href) and ``<out>/catalog.json``
    listing them and the items of earlier runs in ``out_dir`` whose files are all still there
    (building maps and damage maps alike); validate it all. The catalog's URI and item count."""
    io = StorageStacIO(settings)
    href = join_uri(out_dir, CATALOG)
    items: dict[str, pystac.Item] = {}
    if exists(href, settings):  # earlier runs' items, kept while their files are there
        try:
            old = pystac.Catalog.from_file(href, stac_io=io)
            inside = normalize_uri(out_dir).rstrip("/") + "/"
            for link in old.get_links(pystac.RelType.ITEM):
                target = link.get_absolute_href()
                # only items of this folder: the catalog is rewritten with its items, and a
                # file elsewhere (a catalog.json edited to list one) is never touched
                if target and normalize_uri(target).startswith(inside) and exists(target, settings):
                    item = pystac.Item.from_file(target, stac_io=io)
                    if all(exists(a.get_absolute_href() or "", settings) for a in item.assets.values()):
                        items[item.id] = item
        except Exception:  # a broken catalog of ours is rebuilt from this run's items
            items = {}
    for item in new_items:
        items[item.id] = item
    catalog = pystac.Catalog(CATALOG_ID, description, title="resseg-ray predictions")
    catalog.set_self_href(href)
    for item in sorted(items.values(), key=lambda i: i.id):
        self_href = item.get_self_href()
        catalog.add_item(item)
        item.set_self_href(self_href)  # beside its assets, not in a folder of its own
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=io)
    validate_catalog(href, settings)
    return href, len(items)
