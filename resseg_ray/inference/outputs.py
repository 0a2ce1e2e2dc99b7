"""Per-scene outputs: mask and probability rasters written strip by strip, published atomically.

Strips from :class:`~resseg_ray.inference.predictor.ScenePredictor` are written into
local temporary tiled GeoTIFFs (memory stays bounded by GDAL's block cache), converted
to cloud-optimised GeoTIFFs with overviews, and only then published to their final
local or s3:// names (rename / single PUT). A job killed mid-scene leaves no file under
a final name; the mask is published last, so a scene counts as complete when its mask
(and, when asked for, its probability raster) exists.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.shutil

from resseg_ray.errors import ConfigError
from resseg_ray.geo.scene import SceneInfo
from resseg_ray.geo.storage import StorageSettings, atomic_output, exists, join_uri
from resseg_ray.inference.predictor import Strip
from resseg_ray.inference.vectorize import PolygonOptions, mask_polygons, write_geojson

NODATA = 255
"""No-data value of the uint8 mask and probability rasters."""
PROB_SCALE = 250
"""uint8 probabilities are ``round(p * 250)``: 0..250, leaving 255 for no data."""
PROB_DTYPES = ("uint8", "float32")


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
    """Also write ``<stem>_buildings.geojson`` (building polygons) with these options."""

    def __post_init__(self) -> None:
        if self.prob_dtype not in PROB_DTYPES:
            raise ConfigError(f"prob dtype {self.prob_dtype!r} is not one of {', '.join(PROB_DTYPES)}")
        if self.block < 16 or self.block % 16:
            raise ConfigError(f"output block size {self.block} must be a multiple of 16")


def scene_stem(uri: str) -> str:
    """File stem of a scene URI (``.../D12.tif`` -> ``D12``)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".tiff", ".tif", ".TIFF", ".TIF"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_uris(out_dir: str, scene_uri: str, options: OutputOptions) -> dict[str, str]:
    """Final URIs of a scene's outputs: ``mask`` and (optionally) ``prob``."""
    stem = scene_stem(scene_uri)
    uris = {"mask": join_uri(out_dir, f"{stem}_mask.tif")}
    if options.prob:
        uris["prob"] = join_uri(out_dir, f"{stem}_prob.tif")
    if options.polygons is not None:
        uris["buildings"] = join_uri(out_dir, f"{stem}_buildings.geojson")
    return uris


def outputs_complete(out_dir: str, scene_uri: str, options: OutputOptions, settings: StorageSettings) -> bool:
    """Whether every output of a scene is already published (a re-run may skip it)."""
    return all(exists(u, settings) for u in output_uris(out_dir, scene_uri, options).values())


class SceneWriter:
    """Collects a scene's strips into temporary GeoTIFFs and publishes COGs on :meth:`publish`."""

    def __init__(self, scene: SceneInfo, options: OutputOptions) -> None:
        self.scene = scene
        self.options = options
        self.tmp = tempfile.mkdtemp(prefix="resseg-out-")
        profile = {
            "driver": "GTiff",
            "width": scene.width,
            "height": scene.height,
            "count": 1,
            "crs": scene.crs,
            "transform": scene.affine,
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

    def write(self, strip: Strip) -> None:
        """Write one strip of final rows."""
        h = strip.probs.shape[1]
        window = rasterio.windows.Window(0, strip.row, self.scene.width, h)
        mask = strip.probs.argmax(0).astype(np.uint8)
        mask[~strip.valid] = NODATA
        self._mask.write(mask, 1, window=window)
        if self._prob is not None:
            p = strip.probs[1] if strip.probs.shape[0] > 1 else strip.probs[0]
            if self.options.prob_dtype == "float32":
                out = p.astype(np.float32)
                out[~strip.valid] = np.nan
            else:
                out = np.rint(np.clip(p, 0, 1) * PROB_SCALE).astype(np.uint8)
                out[~strip.valid] = NODATA
            self._prob.write(out, 1, window=window)

    def publish(self, uris: dict[str, str], settings: StorageSettings) -> None:
        """Convert to COGs with overviews and move them to ``uris`` (probability and polygons
        first, mask last)."""
        self._close()
        if "buildings" in uris and self.options.polygons is not None:
            prob = os.path.join(self.tmp, "prob.tif") if self.options.prob else None
            collection = mask_polygons(os.path.join(self.tmp, "mask.tif"), prob, self.options.polygons)
            with atomic_output(uris["buildings"], settings, suffix=".geojson") as dst:
                write_geojson(collection, dst)
        for key, resampling in (("prob", "average"), ("mask", "nearest")):
            if key not in uris:
                continue
            src = os.path.join(self.tmp, f"{key}.tif")
            with atomic_output(uris[key], settings, suffix=".tif") as dst:
                rasterio.shutil.copy(
                    src,
                    dst,
                    driver="COG",
                    compress="DEFLATE",
                    predictor="2" if key == "mask" or self.options.prob_dtype == "uint8" else "3",
                    blocksize=str(self.options.block),
                    overview_resampling=resampling,
                    bigtiff="IF_SAFER",
                )

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
