"""Scene access: dtypes, every kind of no-data mask, boundless windows, band selection, errors."""

from __future__ import annotations

import numpy as np
import pytest

from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import open_scene, read_window
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import write_tif

LOCAL = StorageSettings()


def _ramp(dtype: str, bands: int = 3, h: int = 40, w: int = 50) -> np.ndarray:
    a = np.arange(bands * h * w).reshape(bands, h, w) % 200 + 1
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_every_supported_dtype_reads_back_exactly(tmp_path, dtype) -> None:
    data = _ramp(dtype)
    uri = write_tif(tmp_path / f"{dtype}.tif", data)
    info = open_scene(uri, LOCAL)
    assert info.dtype == dtype and info.bands == (1, 2, 3)
    pix, valid = read_window(info, LOCAL, 5, 7, 20, 10)
    assert pix.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(pix, data[:, 7:17, 5:25])
    assert valid.all()


def test_boundless_window_pads_outside_as_invalid(tmp_path) -> None:
    data = _ramp("uint16")
    info = open_scene(write_tif(tmp_path / "s.tif", data), LOCAL)
    pix, valid = read_window(info, LOCAL, -10, 30, 30, 20)  # hangs over the left and bottom edges
    assert pix.shape == (3, 20, 30)
    np.testing.assert_array_equal(pix[:, :10, 10:], data[:, 30:40, 0:20])
    assert valid[:10, 10:].all() and not valid[:, :10].any() and not valid[10:].any()
    assert (pix[:, ~valid] == 0).all()
    pix, valid = read_window(info, LOCAL, 100, 100, 8, 8)  # entirely outside
    assert not valid.any() and (pix == 0).all()


def test_nodata_value_marks_pixels_invalid(tmp_path) -> None:
    data = _ramp("uint16")
    data[:, 3, 4] = 0
    data[1, 5, 6] = 0  # one band only: the pixel is invalid (every band must be valid)
    info = open_scene(write_tif(tmp_path / "n.tif", data, nodata=0), LOCAL)
    _, valid = read_window(info, LOCAL, 0, 0, 50, 40)
    assert not valid[3, 4] and not valid[5, 6] and valid.sum() == 40 * 50 - 2


def test_internal_mask_and_alpha_band(tmp_path) -> None:
    data = _ramp("uint8")
    m = np.ones((40, 50), bool)
    m[10:20, 10:20] = False
    info = open_scene(write_tif(tmp_path / "m.tif", data, mask=m), LOCAL)
    _, valid = read_window(info, LOCAL, 0, 0, 50, 40)
    np.testing.assert_array_equal(valid, m)

    alpha = np.where(m, 255, 0)
    info = open_scene(write_tif(tmp_path / "a.tif", data, alpha=alpha), LOCAL)
    assert info.alpha_band == 4 and info.bands == (1, 2, 3)  # alpha is not a data band
    pix, valid = read_window(info, LOCAL, 0, 0, 50, 40)
    assert pix.shape[0] == 3
    np.testing.assert_array_equal(valid, m)


def test_nan_floats_are_invalid(tmp_path) -> None:
    data = _ramp("float32")
    data[2, 1, 1] = np.nan
    data[0, 2, 2] = np.inf
    info = open_scene(write_tif(tmp_path / "f.tif", data), LOCAL)
    pix, valid = read_window(info, LOCAL, 0, 0, 50, 40)
    assert not valid[1, 1] and not valid[2, 2] and valid.sum() == 40 * 50 - 2
    assert np.isfinite(pix).all()


def test_band_selection_and_order(tmp_path) -> None:
    data = _ramp("uint16", bands=4)
    uri = write_tif(tmp_path / "b.tif", data, descriptions=["blue", "green", "red", "nir"])
    info = open_scene(uri, LOCAL, bands=[3, 2, 1])
    assert info.band_names == ("red", "green", "blue")
    pix, _ = read_window(info, LOCAL, 0, 0, 50, 40)
    np.testing.assert_array_equal(pix, data[[2, 1, 0]])


def test_bad_scenes_are_clear_errors(tmp_path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputDataError, match=r"notes\.tif.*not a raster"):
        open_scene(str(text), LOCAL)
    with pytest.raises(InputDataError, match=r"missing\.tif does not exist"):
        open_scene(str(tmp_path / "missing.tif"), LOCAL)
    uri = write_tif(tmp_path / "s.tif", _ramp("uint16"))
    with pytest.raises(InputDataError, match=r"s\.tif provides 3 bands .* but 4 are expected"):
        open_scene(uri, LOCAL, expected_bands=4)
    with pytest.raises(InputDataError, match=r"has 3 bands; data\.bands asks for band\(s\) \[5\]"):
        open_scene(uri, LOCAL, bands=[1, 5])
    with pytest.raises(InputDataError, match="int32"):
        open_scene(write_tif(tmp_path / "i.tif", _ramp("int32")), LOCAL)
    with pytest.raises(InputDataError, match="no CRS"):
        open_scene(write_tif(tmp_path / "nocrs.tif", _ramp("uint8"), crs=None), LOCAL)
    vrt = tmp_path / "empty.vrt"
    vrt.write_text('<VRTDataset rasterXSize="10" rasterYSize="10"></VRTDataset>')
    with pytest.raises(InputDataError, match=r"empty\.vrt has no raster bands"):
        open_scene(str(vrt), LOCAL)


def test_rewritten_file_is_reopened(tmp_path) -> None:
    path = tmp_path / "r.tif"
    write_tif(path, _ramp("uint8"))
    info = open_scene(str(path), LOCAL)
    read_window(info, LOCAL, 0, 0, 4, 4)
    new = _ramp("uint8") + 1
    write_tif(tmp_path / "r2.tif", new)
    (tmp_path / "r2.tif").replace(path)
    pix, _ = read_window(info, LOCAL, 0, 0, 4, 4)
    np.testing.assert_array_equal(pix, new[:, :4, :4])
