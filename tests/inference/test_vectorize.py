"""Building polygons from masks: exact areas, pieces split by row bands merged, min area,
mean probability, EPSG:4326 output."""

from __future__ import annotations

import numpy as np
import pytest

from resseg_ray.inference.vectorize import PolygonOptions, mask_polygons
from tests.rasters import write_tif


@pytest.fixture
def mask_and_prob(tmp_path):
    mask = np.zeros((1, 100, 80), np.uint8)
    mask[0, 10:20, 10:30] = 1  # 200 px = 50 m² at 0.5 m
    mask[0, 25:75, 40:50] = 1  # crosses the band edges at rows 32 and 64: 500 px = 125 m²
    mask[0, 90:92, 5:7] = 1  # 4 px = 1 m²: below min_area
    mask[0, :, 70:] = 255  # no data
    prob = np.where(mask == 1, 200, 25).astype(np.uint8)  # 0.8 inside, 0.1 outside
    prob[0, 25:50, 40:50] = 150  # the tall building: half 0.6, half 0.8 -> mean 0.7
    return (
        write_tif(tmp_path / "m.tif", mask, nodata=255),
        write_tif(tmp_path / "p.tif", prob, nodata=255),
    )


@pytest.mark.parametrize("rows", [32, 1000])
def test_polygons_exact_and_merged_across_bands(mask_and_prob, rows: int) -> None:
    m, p = mask_and_prob
    fc = mask_polygons(m, p, PolygonOptions(min_area=2.0, simplify=0.0), rows=rows)
    areas = sorted(f["properties"]["area"] for f in fc["features"])
    assert areas == [50.0, 125.0]
    means = {f["properties"]["area"]: f["properties"]["mean_probability"] for f in fc["features"]}
    assert means == {50.0: pytest.approx(0.8), 125.0: pytest.approx(0.7)}
    assert [f["properties"]["id"] for f in fc["features"]] == [0, 1]
    assert "32633" in fc["crs"]["properties"]["name"]


def test_polygons_in_wgs84(mask_and_prob) -> None:
    m, _ = mask_and_prob
    fc = mask_polygons(m, None, PolygonOptions(min_area=0.0, wgs84=True))
    assert len(fc["features"]) == 3 and "crs" not in fc
    lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0]
    assert 14 < lon < 15 and 45 < lat < 46  # UTM 33N near 452000 E, 5043000 N
