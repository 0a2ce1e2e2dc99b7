"""Label rasters: building footprints rasterized onto a scene's exact grid.

Label values: 0 ground, 1 building, 255 ignore (the scene has no data there). Footprints
may be GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet or OSM XML (the ways and
multipolygons tagged ``building``, e.g. a JOSM or Overpass download) in any CRS; they are
reprojected to the scene's CRS before rasterization. Ready-made label rasters must share the scene's grid.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import rasterio.windows
from rasterio.crs import CRS

from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import SceneInfo, open_scene, open_uncached, read_window
from resseg_ray.geo.storage import StorageSettings, atomic_output, download, gdal_env, is_s3

GROUND, BUILDING, IGNORE = 0, 1, 255
"""Label raster values: ground, building, and pixels that count for nothing (no data, outside
the scene, unlabelled). Declared here only; every stage imports them."""
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".zip", ".fgb", ".parquet", ".osm")
_SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")


class FootprintsMissScene(UserWarning):
    """No footprint touches the scene: its labels are all ground."""


@dataclass(frozen=True)
class Footprints:
    """Building polygons as GeoJSON-like geometries in ``crs``; with ``values``, each one's
    value of the attribute asked for (in the geometries' order)."""

    uri: str
    crs: str
    geometries: list[dict]
    values: list[object] | None = None


@dataclass(frozen=True)
class LabelReport:
    """What rasterization produced for one scene."""

    scene_uri: str
    label_uri: str
    footprints: int
    building_pixels: int
    ignore_pixels: int


def read_footprints(
    uri: str, settings: StorageSettings, what: str = "footprints", attribute: str | None = None
) -> Footprints:
    """Read polygons from a vector file of :data:`VECTOR_SUFFIXES` (local or s3://); a file of
    geometries none of which is a polygon is refused (``what`` names the file's role). With
    ``attribute``, each polygon's value of that field too (a file without it is refused)."""
    import shapely

    with tempfile.TemporaryDirectory(prefix="resseg-vec-") as tmp:
        path = download(uri, tmp, settings)
        if is_s3(uri) and uri.lower().endswith(".shp"):
            stem = uri[:-4]
            for ext in _SHAPEFILE_SIDECARS:
                try:
                    download(stem + ext, tmp, settings)
                except InputDataError:
                    if ext in (".shx", ".dbf"):
                        raise InputDataError(f"{uri}: the shapefile's {ext} file is missing") from None
        if not os.path.exists(path):
            raise InputDataError(f"footprints {uri}: the file does not exist")
        if attribute is not None:
            if path.lower().endswith(".osm"):
                raise InputDataError(
                    f"{what} {uri}: an OSM file has no field {attribute!r} to read; give the buildings as "
                    "GeoJSON, GeoPackage, FlatGeobuf, Shapefile or GeoParquet with that field"
                )
            _check_attribute(uri, path, attribute, what)
        try:
            crs, geoms, values = _read_geometries(path, attribute)
        except Exception as exc:
            raise InputDataError(
                f"footprints {uri} cannot be read as vector data (GeoJSON, GeoPackage, Shapefile, "
                f"FlatGeobuf, GeoParquet, OSM XML): {exc}"
            ) from None
    if not crs:
        if uri.lower().endswith((".geojson", ".json")):
            crs = "EPSG:4326"  # RFC 7946: GeoJSON without a crs member is WGS 84
        else:
            raise InputDataError(f"footprints {uri} have no CRS; add a .prj / define the layer's CRS")
    kept = [i for i, g in enumerate(geoms) if g is not None]
    shapes = shapely.from_wkb([geoms[i] for i in kept])
    _check_coordinates(uri, CRS.from_user_input(crs), shapes)
    polygonal = [
        j
        for j, s in enumerate(shapes)
        if s is not None and not s.is_empty and s.geom_type in ("Polygon", "MultiPolygon")
    ]
    polys = [shapely.geometry.mapping(shapes[j]) for j in polygonal]
    kinds = sorted({s.geom_type for s in shapes if s is not None and not s.is_empty})
    if kinds and not polys:
        raise InputDataError(
            f"{what} {uri} holds no polygons (only {', '.join(kinds)} geometries): buildings must be "
            "given as polygons (outlines), not points or lines"
        )
    return Footprints(
        uri=uri,
        crs=CRS.from_user_input(crs).to_wkt(),
        geometries=polys,
        values=None if values is None else [values[kept[j]] for j in polygonal],
    )


def _check_attribute(uri: str, path: str, attribute: str, what: str) -> None:
    """Refuse a vector file without the field ``attribute`` (naming the fields it has)."""
    import pyogrio

    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        fields = list(pq.read_schema(path).names)
    else:
        try:
            fields = list(pyogrio.read_info(path)["fields"])
        except Exception:
            return  # unreadable: said by the read that follows
    if attribute not in fields:
        raise InputDataError(
            f"{what} {uri} has no field {attribute!r} (its fields: {', '.join(fields) or 'none'}); "
            "name the field that holds each building's damage"
        )


def _read_geometries(
    path: str, attribute: str | None = None
) -> tuple[str | None, list[bytes | None], list | None]:
    """CRS, WKB geometries and (with ``attribute``) that field's values of a local vector file."""
    import pyogrio

    lower = path.lower()
    if lower.endswith(".parquet"):
        import geopandas as gpd

        frame = gpd.read_parquet(path)
        values = None if attribute is None else frame[attribute].tolist()
        return (frame.crs.to_wkt() if frame.crs else None), list(frame.geometry.to_wkb()), values
    if lower.endswith(".osm"):
        # buildings only; JOSM files number new objects with negative ids, which GDAL's own
        # node index refuses
        pyogrio.set_gdal_config_options({"OSM_USE_CUSTOM_INDEXING": "NO"})
        try:
            meta, _, geoms, _ = pyogrio.raw.read(
                path, layer="multipolygons", columns=[], where="building IS NOT NULL"
            )
        finally:
            pyogrio.set_gdal_config_options({"OSM_USE_CUSTOM_INDEXING": None})
        return meta.get("crs") or "EPSG:4326", list(geoms), None
    columns = [] if attribute is None else [attribute]
    meta, _, geoms, fields = pyogrio.raw.read(path, read_geometry=True, columns=columns)
    return meta.get("crs"), list(geoms), None if attribute is None else list(fields[0])


def _check_coordinates(uri: str, crs: CRS, shapes: np.ndarray) -> None:
    """Coordinates that cannot be right: not finite, or beyond longitude/latitude in a geographic
    CRS (typically projected metres in a file that says, or defaults to, EPSG:4326)."""
    import shapely

    shapes = shapes[~shapely.is_empty(shapes)] if len(shapes) else shapes
    if not len(shapes):
        return
    bounds = shapely.bounds(shapes)
    if not np.isfinite(bounds).all():
        raise InputDataError(
            f"footprints {uri}: some coordinates are NaN or infinite; fix or drop those features"
        )
    if crs.is_geographic:
        bad = (bounds[:, 0] < -180) | (bounds[:, 2] > 180) | (bounds[:, 1] < -90) | (bounds[:, 3] > 90)
        if bad.any():
            x, y = bounds[int(np.flatnonzero(bad)[0]), :2]
            raise InputDataError(
                f"footprints {uri}: {int(bad.sum())} features have coordinates beyond longitude/latitude "
                f"(e.g. {x:.6g}, {y:.6g}) although the file's CRS is {crs.to_string()}; they look projected: "
                "write the file with its real CRS"
            )


def rasterize_footprints(
    info: SceneInfo, footprints: Footprints, values: list[int] | None = None
) -> tuple[np.ndarray, int]:
    """Burn footprints onto the scene grid: a uint8 array of 0 and 1 (``values``: each
    footprint's own value, burned in order, so a later one wins where they overlap) and the
    number that touch it."""
    dst_crs = CRS.from_wkt(info.crs)
    src_crs = CRS.from_wkt(footprints.crs)
    geoms = footprints.geometries
    if geoms and src_crs != dst_crs:
        geoms = rasterio.warp.transform_geom(src_crs, dst_crs, geoms)
    left, top = info.affine @ (0, 0)
    right, bottom = info.affine @ (info.width, info.height)
    xmin, xmax = sorted((left, right))
    ymin, ymax = sorted((bottom, top))
    burn = values if values is not None else [BUILDING] * len(geoms)
    inside = [(g, v) for g, v in zip(geoms, burn, strict=True) if _bbox_hits(g, xmin, ymin, xmax, ymax)]
    if not inside:
        return np.zeros((info.height, info.width), np.uint8), 0
    burned = rasterio.features.rasterize(
        inside,
        out_shape=(info.height, info.width),
        transform=info.affine,
        fill=GROUND,
        dtype="uint8",
    )
    return burned, len(inside)


def _bbox_hits(geom: dict, xmin: float, ymin: float, xmax: float, ymax: float) -> bool:
    coords = np.asarray(_all_coords(geom["coordinates"]), dtype=float)
    if coords.size == 0:
        return False
    return bool(
        coords[:, 0].max() >= xmin
        and coords[:, 0].min() <= xmax
        and coords[:, 1].max() >= ymin
        and coords[:, 1].min() <= ymax
    )


def _all_coords(c) -> list:
    if c and isinstance(c[0], int | float):
        return [c[:2]]
    out: list = []
    for part in c:
        out.extend(_all_coords(part))
    return out


def warn_footprints_miss(footprints_uri: str, scene_uri: str) -> None:
    """Warn that no footprint touches a scene (its labels are all ground)."""
    warnings.warn(
        f"no footprint of {footprints_uri} touches scene {scene_uri}: its labels are all ground "
        "(check that the footprints cover this scene)",
        FootprintsMissScene,
        stacklevel=3,
    )


def scene_valid_mask(info: SceneInfo, settings: StorageSettings, strip: int = 1024) -> np.ndarray:
    """The scene's validity mask, read in strips of rows."""
    valid = np.empty((info.height, info.width), dtype=bool)
    for r in range(0, info.height, strip):
        h = min(strip, info.height - r)
        _, valid[r : r + h] = read_window(info, settings, 0, r, info.width, h)
    return valid


def write_label_raster(
    info: SceneInfo,
    labels: np.ndarray,
    uri: str,
    settings: StorageSettings,
    description: str = "0 ground, 1 building, 255 ignore",
) -> None:
    """Write a uint8 label raster on the scene grid, atomically: a cloud-optimised GeoTIFF
    (256 px tiles, deflate, nearest-neighbour overviews), nodata 255, ``description`` saying
    what its values mean. A scene without a CRS (a pixel grid: xBD's PNGs) gets a label raster
    without one."""
    profile = {
        "driver": "COG",
        "width": info.width,
        "height": info.height,
        "count": 1,
        "dtype": "uint8",
        "nodata": IGNORE,
        "blocksize": 256,
        "compress": "deflate",
        "overview_resampling": "nearest",
    }
    if info.crs:
        profile.update(crs=CRS.from_wkt(info.crs), transform=info.affine)
    with atomic_output(uri, settings, suffix=".tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(labels, 1)
        dst.set_band_description(1, description)


def make_label_raster(
    scene: SceneInfo,
    footprints: Footprints,
    out_uri: str,
    settings: StorageSettings,
    values: list[int] | None = None,
    description: str = "0 ground, 1 building, 255 ignore",
) -> LabelReport:
    """Rasterize footprints onto ``scene`` (1, or each one's own ``values``: a damage class),
    mark its no-data pixels 255 and write ``out_uri`` with ``description`` of its values."""
    burned, hits = rasterize_footprints(scene, footprints, values)
    if hits == 0:
        warn_footprints_miss(footprints.uri, scene.uri)
    valid = scene_valid_mask(scene, settings)
    if not valid.any():
        raise InputDataError(f"scene {scene.uri} has no valid pixels (all no-data)")
    burned[~valid] = IGNORE
    write_label_raster(scene, burned, out_uri, settings, description)
    return LabelReport(
        scene_uri=scene.uri,
        label_uri=out_uri,
        footprints=hits,
        building_pixels=int(((burned != GROUND) & (burned != IGNORE)).sum()),
        ignore_pixels=int((burned == IGNORE).sum()),
    )


def check_label_raster(
    scene: SceneInfo, label_uri: str, settings: StorageSettings, num_classes: int = 2
) -> SceneInfo:
    """Open a ready-made label raster and check it shares the scene's grid and holds classes
    ``0..num_classes - 1`` (0 ground, 1 building) or 255."""
    labels = open_scene(label_uri, settings, bands=[1], georeferenced=bool(scene.crs))
    problems = []
    if (labels.width, labels.height) != (scene.width, scene.height):
        problems.append(f"size {labels.width}x{labels.height} vs {scene.width}x{scene.height}")

    def name(crs: str) -> str:
        return CRS.from_wkt(crs).to_string() if crs else "none (a pixel grid)"

    if (labels.crs or scene.crs) and (
        not (labels.crs and scene.crs) or CRS.from_wkt(labels.crs) != CRS.from_wkt(scene.crs)
    ):
        problems.append(f"CRS {name(labels.crs)} vs {name(scene.crs)}")
    elif not np.allclose(labels.transform, scene.transform, rtol=0, atol=1e-6 * max(scene.resolution)):
        problems.append(f"transform {labels.transform} vs {scene.transform}")
    if problems:
        raise InputDataError(
            f"label raster {label_uri} is not on the grid of scene {scene.uri}: {'; '.join(problems)}. "
            "Rasterize footprints onto the scene instead (jobs/prepare.py --footprints) or warp the labels."
        )
    if labels.dtype != "uint8":
        raise InputDataError(f"label raster {label_uri} has dtype {labels.dtype}; expected uint8 0/1/255")
    with gdal_env(settings), open_uncached(label_uri, settings) as ds:
        seen: set[int] = set()
        for r in range(0, ds.height, 1024):
            window = rasterio.windows.Window(0, r, ds.width, min(1024, ds.height - r))
            seen |= {int(v) for v in np.unique(ds.read(1, window=window))}
    odd = sorted(seen - {*range(num_classes), IGNORE})
    if odd:
        classes = f"{GROUND} (ground), {BUILDING} (building)" if num_classes == 2 else f"0..{num_classes - 1}"
        raise InputDataError(
            f"label raster {label_uri} holds values {odd[:5]}; labels must be {classes} or {IGNORE} "
            "(ignored). Reclassify it, or give footprints instead"
        )
    return labels
