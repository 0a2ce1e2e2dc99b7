"""Annotated areas: fractions as asked, polygons in any CRS, clear errors; refinement tiles
lie inside the area and evaluation labels exclude it."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.warp import transform_geom

from resseg_ray.adapt.area import (
    FootprintsOutsideArea,
    area_from_polygons,
    contiguous_area,
    footprints_in_area,
    random_area,
    write_area_labels,
)
from resseg_ray.config import load_config
from resseg_ray.data.prepare import prepare_dataset
from resseg_ray.errors import InputDataError
from resseg_ray.geo.labels import read_footprints, scene_valid_mask
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import ORIGIN, UTM, write_tif

S = StorageSettings()


def _scene(tmp_path, h=240, w=300):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 200, size=(2, h, w)).astype(np.uint16)
    data[:, :, :20] = 0  # no data on the left
    uri = write_tif(tmp_path / "s.tif", data, nodata=0)
    return open_scene(uri, S), data[0] != 0


def _polygon_file(tmp_path, name: str, boxes_px: list[tuple[int, int, int, int]], crs: str = "EPSG:4326"):
    """GeoJSON of pixel boxes (row0, col0, row1, col1) of the test grid, written in ``crs``."""
    feats = []
    for r0, c0, r1, c1 in boxes_px:
        x0, x1 = ORIGIN[0] + 0.5 * c0, ORIGIN[0] + 0.5 * c1
        y0, y1 = ORIGIN[1] - 0.5 * r0, ORIGIN[1] - 0.5 * r1
        geom = {"type": "Polygon", "coordinates": [[(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]]}
        feats.append({"type": "Feature", "properties": {}, "geometry": transform_geom(UTM, crs, geom)})
    path = tmp_path / name
    doc = {"type": "FeatureCollection", "features": feats}
    if crs != "EPSG:4326":
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("fraction", [0.07, 0.15])
def test_contiguous_and_random_blocks_hold_the_fraction(tmp_path, fraction: float) -> None:
    _, valid = _scene(tmp_path)
    block = contiguous_area(valid, fraction)
    assert abs(block.fraction(valid) - fraction) < 0.01
    rows, cols = np.nonzero(block.mask)
    assert rows.min() == 0 and cols.min() == 0  # a corner block
    assert block.mask.sum() == (rows.max() + 1) * (cols.max() + 1)  # one rectangle
    a, b = random_area(valid, fraction, seed=1), random_area(valid, fraction, seed=1)
    assert np.array_equal(a.mask, b.mask) and abs(a.fraction(valid) - fraction) < 0.01
    assert not np.array_equal(a.mask, random_area(valid, fraction, seed=2).mask)
    with pytest.raises(InputDataError, match="between 0 and 1"):
        contiguous_area(valid, 1.5)


def test_polygons_in_another_crs_and_bad_areas(tmp_path) -> None:
    scene, _ = _scene(tmp_path)
    area = area_from_polygons(scene, _polygon_file(tmp_path, "a.geojson", [(10, 40, 60, 120)]), S)
    rows, cols = np.nonzero(area.mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 59, 40, 119)
    far = _polygon_file(tmp_path, "far.geojson", [(-5000, -5000, -4000, -4000)])
    with pytest.raises(InputDataError, match="lies outside scene"):
        area_from_polygons(scene, far, S)
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputDataError, match="holds no polygon"):
        area_from_polygons(scene, str(empty), S)
    everything = area_from_polygons(scene, _polygon_file(tmp_path, "all.geojson", [(-10, -10, 300, 400)]), S)
    labels = np.zeros((scene.height, scene.width), np.uint8)
    out = tmp_path / "out"
    with pytest.raises(InputDataError, match="nothing is left to evaluate"):
        write_area_labels(scene, labels, everything, str(out / "r.tif"), str(out / "e.tif"), S)
    assert not out.exists()  # nothing written on failure


def test_refinement_tiles_lie_inside_the_area_and_evaluation_excludes_it(tmp_path) -> None:
    scene, valid = _scene(tmp_path)
    # the area holds the no-data strip on the left
    area = area_from_polygons(scene, _polygon_file(tmp_path, "a.geojson", [(0, 0, 190, 260)]), S)
    buildings = _polygon_file(
        tmp_path, "b.geojson", [(20, 120, 40, 150), (150, 200, 170, 230), (200, 30, 220, 60)], crs=UTM
    )
    with pytest.warns(FootprintsOutsideArea, match="1 of 3 footprints"):
        labels = footprints_in_area(scene, read_footprints(buildings, S), area)
    written = write_area_labels(
        scene, labels, area, str(tmp_path / "r.tif"), str(tmp_path / "e.tif"), S, str(tmp_path / "a.tif")
    )
    with rasterio.open(written.refine_uri) as r, rasterio.open(written.evaluate_uri) as e:
        refine, evaluate = r.read(1), e.read(1)
    assert (refine[~area.mask] == 255).all() and (evaluate[area.mask] == 255).all()
    usable = valid & (np.where(area.mask, refine, evaluate) != 255)
    assert usable.sum() == valid.sum()  # every valid pixel is in exactly one of the two
    assert (refine == 1).sum() == 20 * 30 * 2  # both footprints touching the area
    assert written.refine_pixels == (area.mask & valid).sum()

    cfg = load_config(
        None,
        [
            "data.tile_size=64",
            "data.stride=16",
            "data.crop_size=32",
            "data.split_block=64",
            "data.max_nodata_fraction=0.5",
        ],
    )
    ds = prepare_dataset(
        [scene.uri], str(tmp_path / "ds"), cfg, labels=[written.refine_uri], settings=S,
        regions=[written.area_uri],
    )  # fmt: skip
    tiles = pq.read_table(ds.manifest_uri).to_pylist()
    assert len(tiles) > 10 and {"train", "val"} == {t["split"] for t in tiles}
    for t in tiles:  # no training or validation tile reads a pixel outside the area
        r, c = t["row_off"], t["col_off"]
        assert area.mask[r : r + 64, c : c + 64].all()
    # no data inside the area is allowed as anywhere else (data.max_nodata_fraction)
    assert any(t["col_off"] == 0 for t in tiles)
    assert ds.scenes[0].dropped_outside > 0
    assert valid.sum() == scene_valid_mask(scene, S).sum()
