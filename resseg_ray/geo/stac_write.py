"""STAC out: items of rasters (projection and raster extensions), static catalogs written
through the storage layer, and their validation offline (the extension schemas ship in
``stac_schemas/``).

:func:`write_scene_catalog` turns GeoTIFF scenes into a catalog shaped as the open-data
event catalogs (catalog -> event collection -> one item per scene with ``analytic`` and
``visual`` assets), e.g. to try the STAC path of the jobs on the demo's scenes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pystac
import rasterio
from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator
from rasterio.crs import CRS

from resseg_ray.errors import ConfigError, InputDataError, ResSegError
from resseg_ray.geo.cog import write_cog
from resseg_ray.geo.scene import SceneInfo, open_scene
from resseg_ray.geo.stac import StorageStacIO
from resseg_ray.geo.storage import (
    StorageSettings,
    atomic_output,
    check_writable,
    exists,
    gdal_env,
    gdal_path,
    join_uri,
    normalize_uri,
    read_bytes,
    removed_on_failure,
    scene_stem,
)

__all__ = [
    "COG_MEDIA",
    "SCENES_CATALOG_ID",
    "OfflineValidator",
    "add_projection",
    "check_scene_catalog_destination",
    "raster_bands",
    "raster_geometry",
    "read_stac_json",
    "validate_catalog",
    "write_scene_catalog",
]
COG_MEDIA = "image/tiff; application=geotiff; profile=cloud-optimized"
SCENES_CATALOG_ID = "resseg-ray-scenes"
"""Id of the catalogs :func:`write_scene_catalog` writes (a re-run may replace them)."""
_SCHEMA_FILES = {
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json": "projection-v2.0.0.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster-v1.1.0.json",
}
_PROJJSON = "https://proj.org/schemas/v0.7/projjson.schema.json"


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON-schema validator with the schemas of the extensions resseg-ray writes
    (shipped in ``stac_schemas/``) and PROJJSON (pyproj's copy): no schema is fetched from the
    internet; an object using another extension is reported as such."""

    def __init__(self) -> None:
        super().__init__()
        import importlib.resources
        import os

        import pyproj

        folder = importlib.resources.files("resseg_ray.geo").joinpath("stac_schemas")
        for uri, name in _SCHEMA_FILES.items():
            self.schema_cache[uri] = json.loads(folder.joinpath(name).read_text("utf-8"))
        projjson = os.path.join(pyproj.datadir.get_data_dir(), "projjson.schema.json")
        if os.path.exists(projjson):
            with open(projjson, encoding="utf-8") as f:
                self.schema_cache[_PROJJSON] = json.load(f)

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise GetSchemaError(
                schema_uri,
                LookupError("not among the schemas shipped with resseg-ray (validation runs offline)"),
            )
        return self.schema_cache[schema_uri]


def validate_catalog(href: str, settings: StorageSettings) -> int:
    """Validate a catalog and everything under it (``pystac.validation.validate_all``) against
    the shipped schemas; the number of objects checked. A STACValidationError says what is wrong."""
    from pystac.validation import RegisteredValidator, set_validator, validate_all_dict

    catalog = pystac.Catalog.from_file(href, stac_io=StorageStacIO(settings))
    previous = RegisteredValidator._validator
    set_validator(OfflineValidator())
    try:
        validate_all_dict(catalog.to_dict(), href, stac_io=StorageStacIO(settings))
    finally:
        RegisteredValidator._validator = previous
    return 1 + sum(1 for _ in catalog.get_children()) + sum(1 for _ in catalog.get_items(recursive=True))


def raster_geometry(crs: str, bounds: tuple[float, float, float, float]) -> tuple[dict, list[float]]:
    """GeoJSON footprint (EPSG:4326, edges densified) and bbox of a raster's bounds."""
    import rasterio.warp
    from shapely.geometry import box, shape

    ring = box(*bounds).exterior
    dense = [ring.interpolate(t, normalized=True).coords[0] for t in [i / 64 for i in range(65)]]
    geom = rasterio.warp.transform_geom(
        crs, "EPSG:4326", {"type": "Polygon", "coordinates": [dense]}, precision=7
    )
    return geom, [round(v, 7) for v in shape(geom).bounds]


def add_projection(item: pystac.Item, crs: str, shape: tuple[int, int], transform: Sequence[float],
                   bounds: tuple[float, float, float, float]) -> None:  # fmt: skip
    """The projection extension of an item whose assets share one grid."""
    from pystac.extensions.projection import ProjectionExtension

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = CRS.from_user_input(crs).to_epsg()
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:
        proj.code = None
        proj.wkt2 = CRS.from_user_input(crs).to_wkt()
    proj.shape = [int(shape[0]), int(shape[1])]
    proj.transform = [float(v) for v in transform[:6]]
    proj.bbox = [float(v) for v in bounds]


def raster_bands(uri: str, settings: StorageSettings) -> list[dict[str, Any]]:
    """The raster extension's band objects of a raster: data type, no data, scale/offset and
    spatial resolution, read from its header."""
    with gdal_env(settings), rasterio.open(gdal_path(uri)) as ds:
        out = []
        for i in range(ds.count):
            band: dict[str, Any] = {"data_type": ds.dtypes[i], "spatial_resolution": float(abs(ds.res[0]))}
            nodata = ds.nodatavals[i]
            if nodata is not None:
                band["nodata"] = "nan" if np.isnan(nodata) else float(nodata)
            if ds.scales[i] not in (None, 1.0) or ds.offsets[i] not in (None, 0.0):
                band["scale"], band["offset"] = float(ds.scales[i]), float(ds.offsets[i])
            out.append(band)
        return out


def raster_item(
    item_id: str,
    grid_uri: str,
    settings: StorageSettings,
    when: dt.datetime,
    properties: dict[str, Any] | None = None,
) -> pystac.Item:
    """An item whose footprint, bbox and projection are those of the raster ``grid_uri``."""
    with gdal_env(settings), rasterio.open(gdal_path(grid_uri)) as ds:
        crs, bounds, shape, transform = ds.crs.to_wkt(), tuple(ds.bounds), (ds.height, ds.width), ds.transform
    geometry, bbox = raster_geometry(crs, bounds)
    item = pystac.Item(item_id, geometry, bbox, when, dict(properties or {}))
    add_projection(item, crs, shape, list(transform)[:6], bounds)
    return item


def add_raster_asset(
    item: pystac.Item, key: str, href: str, uri: str, settings: StorageSettings, title: str, roles: list[str]
) -> pystac.Asset:
    """Add a COG asset with its raster extension bands."""
    from pystac.extensions.raster import RasterBand, RasterExtension

    asset = pystac.Asset(href, title=title, media_type=COG_MEDIA, roles=roles)
    item.add_asset(key, asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(**b) for b in raster_bands(uri, settings)
    ]
    return asset


def _check_rgb(scene: SceneInfo, rgb: Sequence[int]) -> None:
    if max(rgb) > scene.count or min(rgb) < 1:
        raise InputDataError(f"{scene.uri} has {scene.count} bands: --rgb {list(rgb)} names bands it lacks")


def write_visual(scene_uri: str, dst_uri: str, settings: StorageSettings, rgb: Sequence[int]) -> None:
    """An 8-bit true-colour COG of a scene (bands ``rgb``, each stretched between its 2nd and
    98th percentile, no data 0), for viewing in QGIS or a web map."""
    _check_rgb(open_scene(scene_uri, settings), rgb)  # a clear error for what is not a scene
    with gdal_env(settings), rasterio.open(gdal_path(scene_uri)) as src:
        data = src.read(list(rgb), masked=True)
        valid = ~np.ma.getmaskarray(data).any(axis=0)
        out = np.zeros(data.shape, np.uint8)
        for b in range(data.shape[0]):
            values = np.asarray(data[b], dtype=np.float64)
            lo, hi = np.percentile(values[valid], [2, 98]) if valid.any() else (0.0, 1.0)
            scaled = np.clip((values - lo) / max(hi - lo, 1e-9) * 254 + 1, 1, 255)
            out[b] = np.where(valid, scaled, 0).astype(np.uint8)
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 3, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": 0}  # fmt: skip
    with atomic_output(dst_uri, settings, suffix=".tif") as tmp:
        plain = tmp + ".plain.tif"
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(out)
            for b in range(3):
                dst.set_band_description(b + 1, ("red", "green", "blue")[b])
        write_cog(plain, tmp, resampling="average")
        os.remove(plain)


def read_stac_json(uri: str, settings: StorageSettings) -> dict[str, Any] | None:
    """The JSON object at ``uri``; None when it cannot be read or is not a JSON object."""
    try:
        doc = json.loads(read_bytes(uri, settings))
    except (ResSegError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check_scene_catalog_destination(
    out_dir: str, scene_uris: Sequence[str], settings: StorageSettings, collection_id: str = "event"
) -> None:
    """Before any work: ``out_dir`` can be written, holds none of the scenes, its
    ``catalog.json``, if any, is one :func:`write_scene_catalog` wrote (a re-run replaces it),
    and no file the catalog would write (collection, items, assets) is one the user has: such
    files are replaced only when that catalog of ours lists the collection."""
    check_writable(out_dir, settings, "--out")
    out = normalize_uri(out_dir).rstrip("/")
    if any(normalize_uri(s).startswith(out + "/") for s in scene_uris):
        raise ConfigError(f"--out {out_dir} holds the scenes; write the catalog to another folder")
    catalog = join_uri(out_dir, "catalog.json")
    there = exists(catalog, settings)
    doc = read_stac_json(catalog, settings) if there else None
    if there and (doc is None or doc.get("id") != SCENES_CATALOG_ID):
        raise ConfigError(f"{catalog} exists and was not written by this job: choose another --out")
    ours = doc is not None and any(
        link.get("rel") == "child"
        and str(link.get("href", "")).strip("./") == f"{collection_id}/collection.json"
        for link in doc.get("links", [])
        if isinstance(link, dict)
    )
    if ours:
        return
    targets = [join_uri(out_dir, collection_id, "collection.json")]
    for uri in scene_uris:
        stem = scene_stem(uri)
        folder = join_uri(out_dir, collection_id, stem)
        targets += [join_uri(folder, f"{stem}{end}") for end in (".json", "-analytic.tif", "-visual.tif")]
    for target in targets:
        if exists(target, settings):
            raise ConfigError(
                f"{target} exists and was not written by this job (no catalog of ours lists "
                f"{collection_id!r}): move it away, or choose another --out or --collection (nothing was "
                "written)"
            )


def write_scene_catalog(
    scene_uris: Sequence[str],
    out_dir: str,
    settings: StorageSettings,
    collection_id: str = "event",
    rgb: Sequence[int] | None = None,
    when: dt.datetime | None = None,
) -> str:
    """A static catalog of scenes, shaped as the open-data event catalogs: ``catalog.json`` ->
    ``<collection_id>/collection.json`` -> ``<collection_id>/<stem>/<stem>.json``, each item with
    the scene copied as its ``analytic`` asset and, with ``rgb`` (1-based band indexes), an
    8-bit ``visual`` asset. Returns the catalog's URI."""
    when = when or dt.datetime.now(dt.UTC)
    if not scene_uris:
        raise InputDataError("no scenes to catalog")
    stems: dict[str, str] = {}
    for uri in scene_uris:  # every scene checked before anything is written
        scene = open_scene(uri, settings)
        if rgb is not None:
            _check_rgb(scene, rgb)
        if scene_stem(uri) in stems:
            raise InputDataError(
                f"{stems[scene_stem(uri)]} and {uri} have the same name: one item id each, please"
            )
        stems[scene_stem(uri)] = uri
    made = [] if exists(join_uri(out_dir, collection_id), settings) else [join_uri(out_dir, collection_id)]
    with removed_on_failure(made, settings):
        return _write_scene_catalog(scene_uris, out_dir, settings, collection_id, rgb, when)


def _write_scene_catalog(
    scene_uris: Sequence[str],
    out_dir: str,
    settings: StorageSettings,
    collection_id: str,
    rgb: Sequence[int] | None,
    when: dt.datetime,
) -> str:
    catalog = pystac.Catalog(SCENES_CATALOG_ID, "Scenes for resseg-ray, as an open-data event catalog")
    items = []
    for uri in scene_uris:
        stem = scene_stem(uri)
        folder = join_uri(out_dir, collection_id, stem)
        analytic = join_uri(folder, f"{stem}-analytic.tif")
        with gdal_env(settings), atomic_output(analytic, settings, suffix=".tif") as tmp:
            write_cog(gdal_path(uri), tmp, predictor="2")
        item = raster_item(stem, analytic, settings, when)
        add_raster_asset(
            item, "analytic", f"./{stem}-analytic.tif", analytic, settings, "Analytic (all bands)", ["data"]
        )
        if rgb is not None:
            visual = join_uri(folder, f"{stem}-visual.tif")
            write_visual(uri, visual, settings, rgb)
            add_raster_asset(
                item, "visual", f"./{stem}-visual.tif", visual, settings, "Visual (true colour)", ["visual"]
            )
        items.append(item)
    boxes = np.array([i.bbox for i in items if i.bbox is not None], dtype=float)
    spatial = pystac.SpatialExtent([[*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]])
    extent = pystac.Extent(spatial, pystac.TemporalExtent([[when, when]]))
    collection = pystac.Collection(collection_id, f"Scenes of {collection_id}", extent, license="other")
    catalog.add_child(collection)
    for item in items:
        collection.add_item(item)
    catalog.normalize_hrefs(out_dir)  # <collection_id>/<stem>/<stem>.json, beside the assets
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=StorageStacIO(settings))
    return join_uri(out_dir, "catalog.json")
