"""Scenes: open multi-band GeoTIFFs by URI, select bands, read windows with their validity mask.

Every window read returns the pixels *and* a boolean mask of valid pixels, which folds in
the nodata value, an internal (per-dataset) mask or alpha band, non-finite floats, and
everything outside the scene (reads are boundless: a window may hang over any edge).
Opened datasets are cached per process and thread, so a worker reading thousands of
windows from one cloud-optimised GeoTIFF opens it once.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from resseg_ray.errors import InputDataError
from resseg_ray.geo.storage import (
    StorageSettings,
    explain_s3_error,
    gdal_env,
    gdal_path,
    is_http,
    is_remote,
    is_s3,
)

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32", "float64")

# A raster without a CRS is refused where a place is needed (open_scene) and wanted where not (a
# mask to score, xBD's PNG pairs): rasterio's warning on opening one says nothing to a user either
# way. Ignored for the whole process: warnings.catch_warnings() swaps the filters of every thread,
# so a local filter fails when windows are read by threads at once (statistics, tiling).
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


@dataclass(frozen=True)
class SceneInfo:
    """What a scene is: its grid, data type, no-data convention and the bands used."""

    uri: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    bands: tuple[int, ...]
    band_names: tuple[str, ...]
    alpha_band: int | None

    @property
    def affine(self) -> rasterio.Affine:
        """The geotransform as an :class:`affine.Affine`."""
        return rasterio.Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Left, bottom, right, top in the scene's CRS units (pixels without one)."""
        a = self.affine
        xs, ys = zip(a @ (0, 0), a @ (self.width, self.height), strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units."""
        a = self.affine
        return (abs(a.a), abs(a.e))

    def same_grid(self, other: SceneInfo) -> bool:
        """True when both rasters share CRS (or both have none), size and (to 1e-6 pixel)
        transform."""
        if (self.width, self.height) != (other.width, other.height):
            return False
        if not self.crs or not other.crs:
            if self.crs or other.crs:
                return False
        elif rasterio.crs.CRS.from_user_input(self.crs) != rasterio.crs.CRS.from_user_input(other.crs):
            return False
        tol = 1e-6 * max(self.resolution)
        return bool(np.allclose(self.transform, other.transform, rtol=0, atol=tol))


_CACHE_SIZE = 32
_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


def cached_handle(key: tuple, opener: Callable[[], Any]) -> Any:
    """The handle (anything with ``close()`` and ``closed``) that ``opener`` opens for ``key``,
    opened once per process and thread: one GDAL dataset must not be read from two threads at
    once (dask's threaded scheduler, loader threads). The least recently used of more than
    :data:`_CACHE_SIZE` are closed."""
    key = (*key, threading.get_ident())
    with _cache_lock:
        handle = _cache.get(key)
        if handle is not None and not handle.closed:
            _cache.move_to_end(key)
            return handle
    handle = opener()
    with _cache_lock:
        _cache[key] = handle
        while len(_cache) > _CACHE_SIZE:
            _, old = _cache.popitem(last=False)
            old.close()
    return handle


def open_dataset(uri: str, settings: StorageSettings) -> rasterio.io.DatasetReader:
    """The rasterio dataset of ``uri``, opened once per process and thread (cached; do not
    close it): what :func:`read_window` reads, for readers of another kind (a warped VRT)."""
    # Local files are keyed by (mtime, size) too: a file rewritten by another process is reopened.
    version: tuple = ()
    if not is_remote(uri):
        try:
            st = os.stat(gdal_path(uri))
            version = (st.st_mtime_ns, st.st_size)
        except OSError:
            version = ()
    return cached_handle((uri, settings, version), lambda: open_uncached(uri, settings))


def open_uncached(uri: str, settings: StorageSettings) -> rasterio.io.DatasetReader:
    """Open ``uri`` as a new rasterio dataset (the caller closes it); a clear error when it cannot."""
    try:
        # a raster without a CRS is refused (open_scene) or wanted (a plain mask to score):
        # rasterio's warning about it says nothing to a user either way (ignored here too for
        # callers whose own filters turn warnings into errors)
        with gdal_env(settings), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(gdal_path(uri), driver=settings.driver)
    except RasterioIOError as exc:
        raise InputDataError(_explain_open_error(uri, exc)) from None


def forget(uri: str | None = None) -> None:
    """Close cached datasets (all, or those of one URI), e.g. after a file was rewritten."""
    with _cache_lock:
        for key in [k for k in _cache if uri is None or k[0] == uri]:
            _cache.pop(key).close()


def _explain_open_error(uri: str, exc: Exception) -> str:
    text = str(exc)
    if is_s3(uri):
        return explain_s3_error(uri, exc)
    low = text.lower()
    if is_http(uri) and ("404" in low or "no such file" in low or "does not exist" in low):
        return f"{uri} does not exist (HTTP 404)"
    if is_http(uri) and ("http" in low or "curl" in low):
        return f"{uri} cannot be read over HTTP: {text}"
    if "no such file" in low or "does not exist" in low:
        return f"{uri} does not exist"
    if "band" in low and ("missing" in low or "no " in low):
        return f"{uri} has no raster bands ({text})"
    if "not recognized as" in low or "not a supported file format" in low:
        return f"{uri} is not a raster GDAL can read (expected a GeoTIFF)"
    return f"cannot open {uri} as a raster: {text}"


PREDICT_BANDS = "--bands (predict.bands)"
"""How the jobs that segment scenes name the band selection in errors."""


def open_scene(
    uri: str,
    settings: StorageSettings,
    bands: Sequence[int] | None = None,
    band_names: Sequence[str] | None = None,
    expected_bands: int | None = None,
    bands_option: str = "data.bands",
    georeferenced: bool = True,
) -> SceneInfo:
    """Open a scene and describe it; check dtype, band selection and band count.

    ``bands`` are 1-based indexes in model input order (default: every non-alpha band), as
    the user gave them with ``bands_option`` (named in errors, e.g. ``--bands``).
    ``expected_bands`` is the band count the configuration or model expects. A raster
    without a CRS is refused unless not ``georeferenced`` is asked (a pixel grid only, e.g.
    a PNG mask to score: its CRS is then ``""``).
    """
    ds = open_dataset(uri, settings)
    if ds.count < 1:
        raise InputDataError(f"{uri} has no bands")
    dtype = ds.dtypes[0]
    if len(set(ds.dtypes)) > 1:
        raise InputDataError(f"{uri} mixes band data types {sorted(set(ds.dtypes))}; convert it to one type")
    if dtype not in SUPPORTED_DTYPES:
        raise InputDataError(
            f"{uri} has data type {dtype}; supported are {', '.join(SUPPORTED_DTYPES)} "
            "(convert with gdal_translate -ot)"
        )
    alpha = next((i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha), None)
    if bands is None:
        selected = tuple(i for i in range(1, ds.count + 1) if i != alpha)
    else:
        selected = tuple(int(b) for b in bands)
        bad = [b for b in selected if not 1 <= b <= ds.count]
        if bad:
            raise InputDataError(
                f"{uri} has {ds.count} bands; {bands_option} asks for band(s) {bad} (1-based indexes "
                f"from 1 to {ds.count})"
            )
    if not selected:
        raise InputDataError(f"{uri} has no data bands (only an alpha band)")
    if expected_bands is not None and len(selected) != expected_bands:
        if bands is None and alpha is not None and len(selected) + 1 == expected_bands:
            every = list(range(1, ds.count + 1))
            raise InputDataError(
                f"{uri} has {ds.count} bands but band {alpha} is tagged as alpha (transparency), which "
                f"GDAL does by default for {ds.count}-band {dtype} GeoTIFFs, so {len(selected)} are used and "
                f"{expected_bands} expected. If band {alpha} holds data (e.g. NIR), use it: --bands "
                f"{' '.join(map(str, every))} (data.bands={every} when preparing data)"
            )
        order = " ".join(map(str, range(1, expected_bands + 1)))
        raise InputDataError(
            f"{uri} provides {len(selected)} bands {list(selected)} but {expected_bands} are expected; "
            f"pick {expected_bands} of them in the model's band order, e.g. --bands {order} "
            f"(data.bands=[{order.replace(' ', ', ')}] when preparing data)"
        )
    if band_names is not None:
        names = tuple(band_names)
        if len(names) != len(selected):
            raise InputDataError(f"{uri}: {len(names)} band names given for {len(selected)} bands")
    else:
        names = tuple(ds.descriptions[b - 1] or f"band{b}" for b in selected)
    if ds.crs is None and georeferenced:
        raise InputDataError(f"{uri} has no CRS; georeference it (e.g. gdal_edit.py -a_srs)")
    return SceneInfo(
        uri=uri,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=dtype,
        crs=ds.crs.to_wkt() if ds.crs is not None else "",
        transform=tuple(ds.transform)[:6],
        nodata=ds.nodata,
        bands=selected,
        band_names=names,
        alpha_band=alpha,
    )


def read_window(
    info: SceneInfo,
    settings: StorageSettings,
    col_off: int,
    row_off: int,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``info.bands`` over a window that may extend past the scene's edges.

    Returns ``(pixels, valid)``: pixels ``(B, height, width)`` in the scene's dtype (zero
    outside the scene and wherever invalid), valid a ``(height, width)`` bool array.
    """
    data = np.zeros((len(info.bands), height, width), dtype=info.dtype)
    valid = np.zeros((height, width), dtype=bool)
    c0, r0 = max(col_off, 0), max(row_off, 0)
    c1, r1 = min(col_off + width, info.width), min(row_off + height, info.height)
    if c1 <= c0 or r1 <= r0:
        return data, valid
    win = Window(c0, r0, c1 - c0, r1 - r0)
    ys, xs = slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off)
    ds = open_dataset(info.uri, settings)
    try:
        with gdal_env(settings):
            inner = ds.read(list(info.bands), window=win)
            ok = _valid_mask(ds, info, win, inner)
    except RasterioIOError as exc:
        raise InputDataError(f"reading {info.uri} window {tuple(win.flatten())} failed: {exc}") from None
    inner[:, ~ok] = 0
    data[:, ys, xs] = inner
    valid[ys, xs] = ok
    return data, valid


def _valid_mask(
    ds: rasterio.io.DatasetReader, info: SceneInfo, win: Window, pixels: np.ndarray
) -> np.ndarray:
    flags = [ds.mask_flag_enums[b - 1] for b in info.bands]
    if all(f == [MaskFlags.all_valid] for f in flags):
        ok = np.ones(pixels.shape[1:], dtype=bool)
    elif all(MaskFlags.per_dataset in f for f in flags):
        ok = ds.read_masks(info.bands[0], window=win) > 0
    else:
        ok = np.all(ds.read_masks(list(info.bands), window=win) > 0, axis=0)
    if pixels.dtype.kind == "f":
        ok &= np.all(np.isfinite(pixels), axis=0)
    return ok
