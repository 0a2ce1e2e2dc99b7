"""What the serving tests share: the service's windowing, its application name, test images."""

from __future__ import annotations

import numpy as np

from tests.rasters import write_tif

WINDOW, OVERLAP = ["predict.window=128", "predict.overlap=32"], (128, 32)
APP = "resseg-test"
TOKEN = "test-token-7f3a"
"""serve.api_token of the test service: writes need ``Authorization: Bearer <TOKEN>``."""
BANDS = ["blue", "green", "red", "nir"]


def image(path, h=300, w=260, bands=4, seed=0, descriptions: list[str] | None = None) -> str:
    """A uint16 GeoTIFF of noise with a corner of no data."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 3000, size=(bands, h, w)).astype(np.uint16)
    data[:, :20, :30] = 0  # a corner of no data
    return write_tif(path, data, nodata=0, descriptions=descriptions)
