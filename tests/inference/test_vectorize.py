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


def _corner_angles(polygon) -> list[float]:
    """Interior corner angles (degrees) of a polygon's exterior, collinear vertices left out."""
    pts = np.asarray(polygon.exterior.coords)[:-1]
    out = []
    for i in range(len(pts)):
        a, b, c = pts[i - 1], pts[i], pts[(i + 1) % len(pts)]
        u, v = a - b, c - b
        cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
        angle = float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        if angle < 175:
            out.append(angle)
    return out


def test_regularized_outlines_are_square_and_keep_the_building(tmp_path) -> None:
    """``regularize``: a rotated rectangular building, jagged as its pixel staircase, comes out
    with four right angles and nearly the area it had; the simplified outline has neither."""
    from shapely.geometry import Polygon, shape

    yy, xx = np.mgrid[0:120, 0:120]
    c, s = np.cos(np.radians(27)), np.sin(np.radians(27))
    u, v = (xx - 60) * c + (yy - 60) * s, -(xx - 60) * s + (yy - 60) * c
    mask = ((np.abs(u) < 36) & (np.abs(v) < 18)).astype(np.uint8)[None]
    path = write_tif(tmp_path / "rot.tif", mask, nodata=255)

    def outline(**kw: object):
        return shape(mask_polygons(path, None, PolygonOptions(min_area=0.0, **kw))["features"][0]["geometry"])

    pixel, simple = outline(simplify=0.0), outline()
    fc = mask_polygons(path, None, PolygonOptions(min_area=0.0, regularize=True))
    assert len(fc["features"]) == 1
    square = shape(fc["features"][0]["geometry"])
    assert isinstance(square, Polygon) and square.is_valid
    angles = _corner_angles(square)
    assert len(angles) == 4 and all(abs(a - 90) < 1 for a in angles), angles
    assert len(_corner_angles(simple)) > 4  # the staircase is still there without regularization
    iou = square.intersection(pixel).area / square.union(pixel).area
    assert iou > 0.95
    assert fc["features"][0]["properties"]["area"] == pytest.approx(pixel.area)  # of the pixel outline
