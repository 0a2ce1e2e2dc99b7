"""Helpers that write small real GeoTIFFs with rasterio for the tests."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

UTM = "EPSG:32633"
ORIGIN = (452000.0, 5043000.0)


def transform(res: float = 0.5, origin: tuple[float, float] = ORIGIN) -> rasterio.Affine:
    """North-up geotransform with square pixels."""
    return rasterio.Affine(res, 0, origin[0], 0, -res, origin[1])


def write_tif(
    path,
    data: np.ndarray,
    crs: str | None = UTM,
    res: float = 0.5,
    nodata: float | None = None,
    mask: np.ndarray | None = None,
    alpha: np.ndarray | None = None,
    descriptions: list[str] | None = None,
    origin: tuple[float, float] = ORIGIN,
) -> str:
    """Write ``data`` (B, H, W) as a tiled GeoTIFF; optional internal mask or alpha band."""
    data = np.asarray(data)
    count = data.shape[0] + (1 if alpha is not None else 0)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": count,
        "dtype": data.dtype.name,
        "transform": transform(res, origin),
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = CRS.from_user_input(crs)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(data, indexes=list(range(1, data.shape[0] + 1)))
        if alpha is not None:
            dst.write(alpha.astype(data.dtype), count)
            dst.colorinterp = [ColorInterp.gray] * data.shape[0] + [ColorInterp.alpha]
        if mask is not None:
            dst.write_mask(mask.astype(np.uint8) * 255)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return str(path)


def two_band_scene(tmp_path, h: int = 150, w: int = 130, name: str = "s.tif") -> tuple[str, np.ndarray]:
    """A 2-band uint16 scene (values 1-199, a no-data corner) and its pixels."""
    rng = np.random.default_rng(1)
    data = rng.integers(1, 200, size=(2, h, w)).astype(np.uint16)
    data[:, :20, :30] = 0  # no data
    return write_tif(tmp_path / name, data, nodata=0), data
