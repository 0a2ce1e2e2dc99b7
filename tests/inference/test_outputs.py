"""Scene outputs: COGs on the input's grid, nodata propagated, probabilities scaled."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio

from resseg_ray.config import PredictSection
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.batch import predict_scene
from resseg_ray.inference.outputs import OutputOptions
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.vectorize import PolygonOptions
from tests.helpers import assert_cogs, band_bundle, band_probability
from tests.rasters import two_band_scene

LOCAL = StorageSettings()


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_outputs_keep_the_grid_and_nodata(tmp_path, dtype: str) -> None:
    uri, data = two_band_scene(tmp_path)
    predictor = ScenePredictor(band_bundle(), PredictSection(window=64, overlap=16, device="cpu"))
    options = OutputOptions(prob_dtype=dtype, polygons=PolygonOptions(min_area=0.0))
    report = predict_scene(predictor, uri, str(tmp_path / "out"), LOCAL, options)
    assert not report.skipped and set(report.outputs) == {"mask", "prob", "buildings"}
    polygons = json.loads(open(report.outputs["buildings"]).read())["features"]
    assert sum(f["properties"]["area"] for f in polygons) == pytest.approx(
        0.25 * (band_probability(data[0])[data[0] != 0] > 0.5).sum()
    )
    expected = band_probability(data[0])
    nodata = data[0] == 0
    with (
        rasterio.open(uri) as src,
        rasterio.open(report.outputs["mask"]) as m,
        rasterio.open(report.outputs["prob"]) as p,
    ):
        assert m.crs == src.crs == p.crs and m.transform == src.transform == p.transform
        assert m.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        mask, prob = m.read(1), p.read(1)
        assert m.nodata == 255 and (mask[nodata] == 255).all()
        assert np.array_equal(mask[~nodata], (expected[~nodata] > 0.5).astype(np.uint8))
        if dtype == "uint8":
            assert (prob[nodata] == 255).all()
            assert np.abs(prob[~nodata].astype(int) - np.rint(expected[~nodata] * 250)).max() <= 1
        else:
            assert np.isnan(prob[nodata]).all()
            np.testing.assert_allclose(prob[~nodata], expected[~nodata], atol=1e-5)
    assert oct(os.stat(report.outputs["mask"]).st_mode & 0o777) != "0o600"
    assert_cogs(report.outputs["mask"], report.outputs["prob"])
    again = predict_scene(predictor, uri, str(tmp_path / "out"), LOCAL, options)
    assert again.skipped
