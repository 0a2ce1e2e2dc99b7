"""Scene outputs: COGs on the input's grid, nodata propagated, probabilities scaled."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def _noise_scene_and_model(tmp_path) -> tuple[str, str]:
    """A 96 px 4-band noise scene and a random prop18 bundle whose mask has many buildings."""
    import torch

    from resseg_ray.models import build_model
    from resseg_ray.models.bundle import save_bundle
    from tests.helpers import randomize_batchnorm
    from tests.rasters import write_tif

    bands = ["blue", "green", "red", "nir"]
    data = np.random.default_rng(0).integers(1, 2000, size=(4, 96, 96)).astype(np.uint16)
    uri = write_tif(tmp_path / "s.tif", data, nodata=0, descriptions=bands)
    torch.manual_seed(0)
    model = str(tmp_path / "m.resseg.safetensors")
    net = randomize_batchnorm(build_model("prop18", in_bands=4))
    save_bundle(model, net, norm_mean=[1000.0] * 4, norm_std=[300.0] * 4, band_names=bands)
    return uri, model


def test_predict_writes_a_josm_file_of_its_buildings(tmp_path, capsys) -> None:
    """``--osm``: the polygons as ``<stem>_buildings.osm`` (implies ``--polygons``), one way per
    building of the GeoJSON, in EPSG:4326, upload="false"; a re-run takes it as complete, and
    a user's .osm under that name is refused, not replaced."""
    import xml.etree.ElementTree as ET

    from tests.helpers import run_here

    uri, model = _noise_scene_and_model(tmp_path)
    out = tmp_path / "out"
    args = ("--model", model, "--scenes", uri, "--out", str(out), "--osm",
            "--window", "64", "--overlap", "16", "--min-area", "0", "--device", "cpu")  # fmt: skip
    proc = run_here("predict.py", *args, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    stem = Path(uri).stem
    buildings = json.loads((out / f"{stem}_buildings.geojson").read_text())["features"]
    root = ET.parse(out / f"{stem}_buildings.osm").getroot()
    assert root.get("upload") == "false" and root.get("resseg_ray_source") == uri
    ways = root.findall("way") + [r for r in root.findall("relation")]
    tagged = [w for w in ways if any(t.get("k") == "building" for t in w.iter("tag"))]
    assert len(tagged) == sum(len(f["geometry"]["coordinates"]) if f["geometry"]["type"] == "MultiPolygon"
                              else 1 for f in buildings) > 0  # fmt: skip
    lats = [float(n.get("lat")) for n in root.iter("node")]
    assert all(40 < lat < 50 for lat in lats)  # degrees, not UTM metres
    again = run_here("predict.py", *args, capsys=capsys)
    assert again.returncode == 0 and "skipped" in again.stdout
    (out / f"{stem}_buildings.osm").write_text("<osm version='0.6'/>")  # the user's own file
    refused = run_here("predict.py", *args, capsys=capsys)
    assert (
        refused.returncode == 2
        and f"{stem}_buildings.osm exists and was not written by resseg-ray" in refused.stderr
    )


def test_buildings_already_mapped_are_left_out_of_the_geoparquet(tmp_path) -> None:
    """``existing`` (in another CRS) with ``regularize`` and ``vector_format="parquet"``: of six
    predicted buildings the three mapped ones are left out and counted, the others written
    as squared GeoParquet polygons with the provenance that makes a re-run skip the scene."""
    import geopandas as gpd
    from shapely.geometry import box

    from resseg_ray.inference.outputs import output_options, outputs_complete
    from tests.rasters import ORIGIN, write_tif

    data = np.ones((2, 128, 128), np.uint16)
    data[1] = np.random.default_rng(0).integers(50, 150, size=(128, 128))  # as the model expects
    rects = [(r, c) for r in (10, 70) for c in (10, 50, 90)]  # 20 x 30 px buildings
    for r, c in rects:
        data[0, r : r + 20, c : c + 30] = 199
    uri = write_tif(tmp_path / "s.tif", data, nodata=0)
    x0, y0 = ORIGIN
    boxes = [box(x0 + c * 0.5, y0 - (r + 20) * 0.5, x0 + (c + 30) * 0.5, y0 - r * 0.5) for r, c in rects]
    mapped = gpd.GeoDataFrame(geometry=boxes[::2], crs="EPSG:32633").to_crs("EPSG:4326")
    mapped.to_file(tmp_path / "mapped.geojson")
    predict = PredictSection(window=64, overlap=16, device="cpu", polygons=True, vector_format="parquet",
                             regularize=True, existing=str(tmp_path / "mapped.geojson"))  # fmt: skip
    options = output_options(predict, LOCAL)
    out = str(tmp_path / "out")
    report = predict_scene(ScenePredictor(band_bundle(), predict), uri, out, LOCAL, options)
    assert (report.buildings, report.already_mapped) == (3, 3)
    left = gpd.read_parquet(report.outputs["buildings"])
    assert report.outputs["buildings"].endswith("s_buildings.parquet") and left.crs.to_epsg() == 32633
    assert sorted(left.geometry.area.round(1)) == [150.0] * 3  # 15 x 10 m, squared exactly
    assert all(any(g.symmetric_difference(b).area < 0.01 for b in boxes[1::2]) for g in left.geometry)
    assert outputs_complete(out, uri, options, LOCAL)


def test_predict_counts_buildings_already_mapped_and_refuses_a_file_without_polygons(
    tmp_path, capsys
) -> None:
    """``jobs/predict.py --existing``: the count of buildings left out is printed; a file with
    no polygons is refused (exit 2) before anything is written."""
    import geopandas as gpd

    from tests.helpers import points_geojson, run_here

    uri, model = _noise_scene_and_model(tmp_path)
    common = ("--model", model, "--scenes", uri, "--window", "64", "--overlap", "16", "--device", "cpu")
    first = run_here("predict.py", *common, "--out", str(tmp_path / "a"), "--polygons", "--vector-format",
                     "fgb", capsys=capsys)  # fmt: skip
    assert first.returncode == 0, first.stderr
    predicted = gpd.read_file(tmp_path / "a" / f"{Path(uri).stem}_buildings.fgb")
    predicted.to_crs("EPSG:4326").to_file(tmp_path / "mapped.geojson")
    again = run_here("predict.py", *common, "--out", str(tmp_path / "b"), "--existing",
                     str(tmp_path / "mapped.geojson"), capsys=capsys)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"{len(predicted)} buildings already mapped in" in again.stdout
    assert f"{len(predicted)} predicted buildings left out as already mapped" in again.stdout
    points = points_geojson(tmp_path / "points.geojson")
    refused = run_here("predict.py", *common, "--out", str(tmp_path / "c"), "--existing", points,
                       capsys=capsys)  # fmt: skip
    assert refused.returncode == 2 and "points.geojson holds no polygons" in refused.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
