"""Per-scene outputs: mask and probability rasters written strip by strip, published atomically.

Strips from :class:`~resseg_ray.inference.predictor.ScenePredictor` are written into
local temporary tiled GeoTIFFs (memory stays bounded by GDAL's block cache), converted
to cloud-optimised GeoTIFFs with overviews, and only then published to their final
local or s3:// names (rename / single PUT). A job killed mid-scene leaves no file under
a final name; the mask is published last, so a scene counts as complete when its mask
(and, when asked for, its probability raster) exists.

A scene segmented in parts (row ranges, by different actors) stages each part's rasters
under ``<out>/.resseg-parts/`` (:func:`part_uris`, :meth:`SceneWriter.publish_part`);
one writer then copies the parts into the whole scene's rasters and publishes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
import rasterio.shutil

from resseg_ray import __version__
from resseg_ray.config import PROB_DTYPES, VECTOR_FORMATS, PredictSection
from resseg_ray.errors import ConfigError, InputDataError, ResSegError
from resseg_ray.geo.cog import write_cog
from resseg_ray.geo.osm import osm_provenance, osm_xml
from resseg_ray.geo.scene import SceneInfo
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
    scene_stem,
    write_bytes,
)
from resseg_ray.geo.vectors import read_provenance, vector_suffix, write_vector
from resseg_ray.inference.predictor import RowPart, Strip
from resseg_ray.inference.vectorize import Buildings, PolygonOptions, building_polygons
from resseg_ray.scratch import make_scratch_dir

SOURCE_TAG = "RESSEG_RAY_SOURCE"
"""Provenance of every output: the URI of the scene it was written for (a GeoTIFF tag, a
GeoJSON member). Only files carrying it count as finished results."""
VERSION_TAG = "RESSEG_RAY_VERSION"

NODATA = 255
"""No-data value of the uint8 mask and probability rasters."""
PROB_SCALE = 250
"""uint8 probabilities are ``round(p * 250)``: 0..250, leaving 255 for no data."""


@dataclass(frozen=True)
class OutputOptions:
    """What is written per scene."""

    prob: bool = True
    """Write ``<stem>_prob.tif`` besides ``<stem>_mask.tif``."""
    prob_dtype: str = "uint8"
    """``uint8`` (0-250 = probability x 250, 255 no data) or ``float32`` (NaN no data)."""
    block: int = 512
    """Tile side of the output COGs."""
    polygons: PolygonOptions | None = None
    """Also write ``<stem>_buildings.<format>`` (building polygons) with these options."""
    vector_format: str = "geojson"
    """Format of the building polygons: one of :data:`~resseg_ray.config.VECTOR_FORMATS`."""
    osm: bool = False
    """Also write the polygons as ``<stem>_buildings.osm`` for JOSM (needs ``polygons``)."""
    provenance: bool = True
    """Record the source scene in every output (:data:`SOURCE_TAG`); off for answers to a
    client (Serve), whose scene is a temporary file of the server."""
    names: Mapping[str, str] = field(default_factory=dict)
    """Output stem per scene (normalised URI -> stem), e.g. :meth:`SceneInputs.output_names
    <resseg_ray.geo.stac.SceneInputs.output_names>` for scenes that share a file name; a scene
    not listed is named by its file name."""

    def stem(self, scene_uri: str) -> str:
        """The name a scene's outputs start with: ``<stem>_mask.tif``, ``<stem>_item.json``..."""
        return self.names.get(normalize_uri(scene_uri)) or scene_stem(scene_uri)

    def __post_init__(self) -> None:
        if self.prob_dtype not in PROB_DTYPES:
            raise ConfigError(f"prob dtype {self.prob_dtype!r} is not one of {', '.join(PROB_DTYPES)}")
        if self.block < 16 or self.block % 16:
            raise ConfigError(f"output block size {self.block} must be a multiple of 16")
        if self.osm and self.polygons is None:
            raise ConfigError("the OSM output is made of the polygons: it needs polygon options")
        if self.vector_format not in VECTOR_FORMATS:
            raise ConfigError(
                f"vector format {self.vector_format!r} is not one of {', '.join(VECTOR_FORMATS)}"
            )


def output_options(options: PredictSection, settings: StorageSettings | None = None) -> OutputOptions:
    """What :class:`~resseg_ray.config.PredictSection` options ask to be written per scene
    (``settings``: how the ``existing`` buildings are read)."""
    polygons = None
    if options.wants_polygons:
        polygons = PolygonOptions(
            options.min_area,
            options.simplify,
            options.wgs84,
            regularize=options.regularize,
            existing=options.existing,
            existing_overlap=options.existing_overlap,
            storage=settings or StorageSettings(),
        )
    return OutputOptions(
        prob=options.prob,
        prob_dtype=options.prob_dtype,
        polygons=polygons,
        vector_format=options.vector_format,
        osm=options.osm,
    )


def output_uris(out_dir: str, scene_uri: str, options: OutputOptions) -> dict[str, str]:
    """Final URIs of a scene's outputs: ``mask`` and (optionally) ``prob``."""
    stem = options.stem(scene_uri)
    uris = {"mask": join_uri(out_dir, f"{stem}_mask.tif")}
    if options.prob:
        uris["prob"] = join_uri(out_dir, f"{stem}_prob.tif")
    if options.polygons is not None:
        uris["buildings"] = join_uri(out_dir, f"{stem}_buildings{vector_suffix(options.vector_format)}")
    if options.osm:
        uris["osm"] = join_uri(out_dir, f"{stem}_buildings.osm")
    return uris


PARTS_DIR = ".resseg-parts"
"""Hidden folder under the output folder where parts of split scenes are staged."""


def staging_dir(out_dir: str, stem: str, key: str) -> str:
    """Where the parts of one split scene (named ``stem``) are staged; ``key`` fingerprints
    everything that makes the parts (model, options, split), so a re-run reuses only parts it
    would redo identically."""
    return join_uri(out_dir, PARTS_DIR, f"{stem}-{key}")


def part_uris(staging: str, part: RowPart, options: OutputOptions) -> dict[str, str]:
    """Staged rasters of one part: ``mask`` and (optionally) ``prob``."""
    name = f"{part.index:04d}-of-{part.count:04d}"
    uris = {"mask": join_uri(staging, f"{name}_mask.tif")}
    if options.prob:
        uris["prob"] = join_uri(staging, f"{name}_prob.tif")
    return uris


def output_source(uri: str, settings: StorageSettings) -> str | None:
    """The scene an output file was written for, read from its provenance (a GeoTIFF tag, a
    GeoJSON member); None when the file is not one resseg-ray wrote (or cannot be read)."""
    try:
        if uri.endswith((".geojson", ".parquet", ".fgb")):
            source = read_provenance(uri, read_bytes(uri, settings)).get(SOURCE_TAG)
        elif uri.endswith(".osm"):
            source = osm_provenance(read_bytes(uri, settings))
        else:
            with gdal_env(settings), rasterio.open(gdal_path(uri), driver="GTiff") as ds:
                source = ds.tags().get(SOURCE_TAG)
    except (OSError, ValueError, ResSegError, rasterio.errors.RasterioError):
        return None
    return source if isinstance(source, str) else None


def outputs_complete(out_dir: str, scene_uri: str, options: OutputOptions, settings: StorageSettings) -> bool:
    """Whether every output of a scene is already published by resseg-ray for this scene (a
    re-run may skip it); a user's file under an output's name does not count."""
    return all(
        exists(u, settings) and _same_scene(output_source(u, settings), scene_uri)
        for u in output_uris(out_dir, scene_uri, options).values()
    )


def _same_scene(source: str | None, scene_uri: str) -> bool:
    return source is not None and normalize_uri(source) == normalize_uri(scene_uri)


def check_destination(
    out_dir: str, scene_uris: Sequence[str], options: OutputOptions, settings: StorageSettings
) -> None:
    """Before any work: ``out_dir`` can be written, and no output would replace something the
    user has (an input scene, another scene's output of the same name, a file resseg-ray did
    not write for that scene), nor land among the scenes (the next run would take it for one)."""
    check_writable(out_dir, settings, "--out")
    out = normalize_uri(out_dir).rstrip("/")
    scenes = {normalize_uri(u) for u in scene_uris}
    if any(u.rsplit("/", 1)[0] == out for u in scenes):
        raise ConfigError(
            f"--out {out_dir} is the folder of the input scenes: the outputs would be taken for scenes "
            "by the next run; write them to another folder"
        )
    by_stem: dict[str, list[str]] = {}
    for u in scene_uris:
        by_stem.setdefault(options.stem(u), []).append(u)
    same = {stem: uris for stem, uris in by_stem.items() if len(uris) > 1}
    if same:  # the names given (OutputOptions.names) must tell every scene apart
        stem, uris = next(iter(same.items()))
        raise ConfigError(
            f"{len(uris)} scenes would be named {stem!r} ({', '.join(uris)}): their outputs would replace "
            "each other in one --out folder; segment each group (e.g. pre- and post-event) into its own --out"
        )
    for u in scene_uris:
        for key, target in output_uris(out_dir, u, options).items():
            if normalize_uri(target) in scenes:
                raise ConfigError(
                    f"the {key} output of {u} would replace the input {target}; choose another --out"
                )
            if exists(target, settings) and not _same_scene(output_source(target, settings), u):
                raise ConfigError(
                    f"{target} exists and was not written by resseg-ray for {u}: move it away or choose "
                    "another --out (nothing was written)"
                )


class SceneWriter:
    """Collects a scene's strips into temporary GeoTIFFs and publishes COGs on :meth:`publish`
    (or, for one ``part`` of a scene, its rows as staged GeoTIFFs on :meth:`publish_part`)."""

    def __init__(self, scene: SceneInfo, options: OutputOptions, part: RowPart | None = None) -> None:
        self.scene = scene
        self.options = options
        self.row0 = part.row0 if part is not None else 0
        self.height = part.row1 - part.row0 if part is not None else scene.height
        self.tmp = make_scratch_dir("out")
        profile = {
            "driver": "GTiff",
            "width": scene.width,
            "height": self.height,
            "count": 1,
            "crs": scene.crs,
            "transform": scene.affine @ rasterio.Affine.translation(0, self.row0),
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        self._mask = rasterio.open(
            os.path.join(self.tmp, "mask.tif"), "w", dtype="uint8", nodata=NODATA, **profile
        )
        self._prob = None
        if options.prob:
            f32 = options.prob_dtype == "float32"
            self._prob = rasterio.open(
                os.path.join(self.tmp, "prob.tif"),
                "w",
                dtype=options.prob_dtype,
                nodata=float("nan") if f32 else NODATA,
                **profile,
            )
        for ds in (self._mask, self._prob):
            if ds is not None and options.provenance:  # only files the project wrote count as finished
                ds.update_tags(**{SOURCE_TAG: scene.uri, VERSION_TAG: __version__})

    def write(self, strip: Strip) -> None:
        """Write one strip of final rows."""
        mask = strip.probs.argmax(0).astype(np.uint8)
        mask[~strip.valid] = NODATA
        out = None
        if self._prob is not None:
            p = strip.probs[1] if strip.probs.shape[0] > 1 else strip.probs[0]
            if self.options.prob_dtype == "float32":
                out = p.astype(np.float32)
                out[~strip.valid] = np.nan
            else:
                out = np.rint(np.clip(p, 0, 1) * PROB_SCALE).astype(np.uint8)
                out[~strip.valid] = NODATA
        self.write_rows(strip.row, mask, out)

    def write_rows(self, row: int, mask: np.ndarray, prob: np.ndarray | None = None) -> None:
        """Write output values (mask, probability in the output type) of scene rows from ``row``."""
        window = rasterio.windows.Window(0, row - self.row0, self.scene.width, mask.shape[0])
        self._mask.write(mask, 1, window=window)
        if self._prob is not None and prob is not None:
            self._prob.write(prob, 1, window=window)

    def copy_part(
        self, part: RowPart, uris: dict[str, str], settings: StorageSettings, rows: int = 512
    ) -> None:
        """Copy a staged part (:meth:`publish_part`) into this whole-scene writer."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(gdal_env(settings))
            srcs = {k: stack.enter_context(rasterio.open(gdal_path(u))) for k, u in uris.items()}
            height = part.row1 - part.row0
            for k, src in srcs.items():
                if src.shape != (height, self.scene.width):
                    raise InputDataError(
                        f"staged part {uris[k]} is {src.shape[0]}x{src.shape[1]}, expected "
                        f"{height}x{self.scene.width}; delete it and re-run"
                    )
            for off in range(0, height, rows):
                window = rasterio.windows.Window(0, off, self.scene.width, min(rows, height - off))
                prob = srcs["prob"].read(1, window=window) if "prob" in srcs else None
                self.write_rows(part.row0 + off, srcs["mask"].read(1, window=window), prob)

    def publish_part(self, uris: dict[str, str], settings: StorageSettings) -> None:
        """Stage this part's rasters (compressed GeoTIFFs) at ``uris`` (:func:`part_uris`),
        the probability first, the mask last (a part counts as done when its mask exists)."""
        self._close()
        for key in ("prob", "mask"):
            if key in uris:
                with atomic_output(uris[key], settings, suffix=".tif") as dst:
                    rasterio.shutil.copy(
                        os.path.join(self.tmp, f"{key}.tif"),
                        dst,
                        driver="GTiff",
                        tiled=True,
                        compress="DEFLATE",
                        bigtiff="IF_SAFER",
                    )

    def publish(self, uris: dict[str, str], settings: StorageSettings) -> Buildings | None:
        """Convert to COGs with overviews and move them to ``uris`` (probability and polygons
        first, mask last); the buildings written, when polygons were asked for."""
        local = self.finish()
        buildings = None
        if "buildings" in uris and self.options.polygons is not None:
            buildings = building_polygons(local["mask"], local.get("prob"), self.options.polygons)
            provenance = {SOURCE_TAG: self.scene.uri} if self.options.provenance else {}
            suffix = vector_suffix(self.options.vector_format)
            with atomic_output(uris["buildings"], settings, suffix=suffix) as dst:
                write_vector(buildings.collection, buildings.crs, dst, provenance)
            if "osm" in uris:
                source = f"resseg-ray building segmentation of {self.options.stem(self.scene.uri)}"
                xml = osm_xml(
                    buildings.collection, buildings.crs or self.scene.crs, source, provenance.get(SOURCE_TAG)
                )
                write_bytes(uris["osm"], xml, settings)
        for key, resampling in (("prob", "average"), ("mask", "nearest")):
            if key not in uris:
                continue
            src = local[key]
            with atomic_output(uris[key], settings, suffix=".tif") as dst:
                write_cog(
                    src,
                    dst,
                    predictor="2" if key == "mask" or self.options.prob_dtype == "uint8" else "3",
                    blocksize=self.options.block,
                    resampling=resampling,
                    bigtiff="IF_SAFER",
                )
        return buildings

    def finish(self) -> dict[str, str]:
        """Close the temporary rasters and return their local paths (``mask``, and ``prob``
        when written), valid until :meth:`close`; e.g. to score the mask without publishing."""
        self._close()
        paths = {"mask": os.path.join(self.tmp, "mask.tif")}
        if self._prob is not None:
            paths["prob"] = os.path.join(self.tmp, "prob.tif")
        return paths

    def _close(self) -> None:
        for ds in (self._mask, self._prob):
            if ds is not None and not ds.closed:
                ds.close()

    def close(self) -> None:
        """Drop the temporary files (after :meth:`publish`, or on failure)."""
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> SceneWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
