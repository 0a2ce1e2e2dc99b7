"""Batches of scenes: the predict job goes on after a bad scene, resumes, leaves nothing
complete when killed; the Ray actor pool, scenes split across actors exactly and resumably,
and a split scene whose assembly fails reported as failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from resseg_ray.config import PredictSection
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.batch import plan_scene
from resseg_ray.inference.outputs import output_options
from resseg_ray.inference.predictor import ScenePredictor
from tests.helpers import ROOT, assert_cogs, run_script
from tests.rasters import two_band_scene, write_tif

LOCAL = StorageSettings()


def test_predict_job_goes_on_after_a_bad_scene_and_resumes(tmp_path, bundle_path) -> None:
    a, _ = two_band_scene(tmp_path, name="a.tif")
    b, _ = two_band_scene(tmp_path, name="b.tif")
    (tmp_path / "broken.tif").write_bytes(b"not a raster")
    out = tmp_path / "out"
    args = [
        "--model",
        bundle_path,
        "--scenes",
        str(tmp_path / "*.tif"),
        "--out",
        str(out),
        "--window",
        "64",
        "--overlap",
        "16",
    ]
    refused = run_script("predict.py", *args, "--report", str(tmp_path))  # a folder: before any work
    assert refused.returncode == 2 and "--report" in refused.stderr and "is a folder" in refused.stderr
    assert not out.exists()
    report = tmp_path / "report.json"
    proc = run_script("predict.py", *args, "--report", str(report))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "1 of 3 scenes failed" in proc.stderr and "broken.tif" in proc.stderr
    assert "2 segmented" in proc.stdout
    doc = json.loads(report.read_text())  # the typed report, failures included
    assert doc["format"] == "resseg-predict-report/1" and (doc["segmented"], doc["failed"]) == (2, 1)
    by_name = {os.path.basename(s["uri"]): s for s in doc["scenes"]}
    assert by_name["broken.tif"]["status"] == "failed" and by_name["broken.tif"]["error"]
    assert by_name["a.tif"]["status"] == "done" and by_name["a.tif"]["outputs"]["mask"].endswith("a_mask.tif")
    assert doc["catalog"].endswith("catalog.json") and doc["catalog_items"] == 2
    rasters = ["a_mask.tif", "a_prob.tif", "b_mask.tif", "b_prob.tif"]
    stac = ["a_item.json", "b_item.json", "catalog.json"]  # the finished scenes only
    assert sorted(p.name for p in out.iterdir()) == sorted(rasters + stac)
    again = run_script("predict.py", *args[:3], a, b, *args[4:])
    assert again.returncode == 0 and "2 skipped" in again.stdout


def test_predict_job_killed_mid_scene_leaves_nothing_complete(tmp_path, bundle_path) -> None:
    rng = np.random.default_rng(2)
    big = write_tif(tmp_path / "big.tif", rng.integers(1, 200, size=(2, 1500, 1500)).astype(np.uint16))
    out = tmp_path / "out"
    args = [
        str(ROOT / "jobs" / "predict.py"),
        "--model",
        bundle_path,
        "--scenes",
        big,
        "--out",
        str(out),
        "--window",
        "256",
        "--overlap",
        "64",
    ]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:  # wait for the first finished strip, then kill
        if "%" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with rasterio.open(out / "big_mask.tif") as m:
        assert m.shape == (1500, 1500)


def test_scenes_on_a_ray_actor_pool(tmp_path, bundle_path, ray_session) -> None:
    from pathlib import Path

    from resseg_ray.inference.batch import predict_scenes_on_ray

    a, _ = two_band_scene(tmp_path, name="a.tif")
    b, _ = two_band_scene(tmp_path, name="b.tif")
    (tmp_path / "broken.tif").write_bytes(b"not a raster")
    out = tmp_path / "out"
    reports = predict_scenes_on_ray(
        Path(bundle_path).read_bytes(),
        PredictSection(window=64, overlap=16),
        [a, str(tmp_path / "broken.tif"), b],
        str(out),
        LOCAL,
        actors=2,
        cpus_per_actor=0.5,
    )
    assert [r.error is None for r in reports] == [True, False, True]
    assert "broken.tif" in reports[1].error
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.tif", "a_prob.tif", "b_mask.tif", "b_prob.tif"]
    with rasterio.open(out / "a_mask.tif") as m:
        assert m.shape == (150, 130)


def _read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_a_huge_scene_is_split_across_actors_exactly_and_resumably(
    tmp_path, bundle_path, ray_session
) -> None:
    from pathlib import Path

    from resseg_ray.inference.batch import predict_scenes_on_ray
    from resseg_ray.inference.outputs import SceneWriter, part_uris

    uri, _ = two_band_scene(tmp_path, h=700, w=90, name="big.tif")
    data = Path(bundle_path).read_bytes()
    predict = PredictSection(window=64, overlap=16, normalization="per_scene", polygons=True, min_area=0.0)
    options = output_options(predict)

    def run(out: str, split_mpx: float, overwrite: bool = False):
        return predict_scenes_on_ray(
            data,
            predict,
            [uri],
            out,
            LOCAL,
            overwrite,
            actors=2,
            cpus_per_actor=0.5,
            split_mpx=split_mpx,
        )

    whole = run(str(tmp_path / "whole"), split_mpx=0)[0]
    split = run(str(tmp_path / "split"), split_mpx=0.01)[0]  # 0.063 Mpx -> 7 parts (15 window rows)
    assert whole.error is None and split.error is None
    assert split.megapixels == pytest.approx(0.063)
    for key in ("mask", "prob"):  # bit for bit the same as one pass over the scene
        assert np.array_equal(_read(split.outputs[key]), _read(whole.outputs[key]))
    assert json.loads(open(split.outputs["buildings"]).read()) == json.loads(
        open(whole.outputs["buildings"]).read()
    )
    with rasterio.open(split.outputs["mask"]) as m, rasterio.open(uri) as src:
        assert m.transform == src.transform and m.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [
        "big_buildings.geojson",
        "big_mask.tif",
        "big_prob.tif",
    ]

    # a part staged by an earlier (interrupted) run is reused, not recomputed
    out = str(tmp_path / "resumed")
    plan = _plan_split(uri, bundle_path, predict, out, split_mpx=0.01)
    assert len(plan.parts) == 7 and plan.norm is not None
    first = plan.parts[0]

    with SceneWriter(open_scene(uri, LOCAL), options, first) as writer:
        rows = first.row1 - first.row0
        writer.write_rows(first.row0, np.full((rows, 90), 1, np.uint8), np.full((rows, 90), 7, np.uint8))
        writer.publish_part(part_uris(plan.staging, first, options), LOCAL)
    resumed = run(out, split_mpx=0.01)[0]
    prob = _read(resumed.outputs["prob"])
    assert_cogs(resumed.outputs["prob"], resumed.outputs["mask"])  # assembled from parts
    assert (prob[: first.row1] == 7).all()
    assert np.array_equal(prob[first.row1 :], _read(whole.outputs["prob"])[first.row1 :])
    assert not (tmp_path / "resumed" / ".resseg-parts").exists()
    again = run(out, split_mpx=0.01)[0]
    assert again.skipped


def _plan_split(uri: str, bundle_path: str, predict, out: str, split_mpx: float):
    """``plan_scene`` as ``jobs/predict.py --split-mpx`` plans a scene (no overwrite, at least
    one part), keyed by the bundle's and the options' fingerprint."""
    from pathlib import Path

    from resseg_ray.inference.batch import parts_fingerprint
    from resseg_ray.models.bundle import read_bundle_info

    key = parts_fingerprint(Path(bundle_path).read_bytes(), predict)
    return plan_scene(uri, read_bundle_info(bundle_path), predict, out, LOCAL, False, split_mpx, 1, key)


def test_a_split_scene_whose_assembly_fails_is_reported_failed(tmp_path, bundle_path, ray_session) -> None:
    """All parts staged, then one lost before assembly (a full disk, a deleted file): the scene
    is reported failed with the reason, never as segmented, and it has no outputs."""
    from pathlib import Path

    from resseg_ray.inference.batch import collect_reports, predict_part
    from resseg_ray.models.bundle import load_bundle

    uri, _ = two_band_scene(tmp_path, h=300, w=90, name="big.tif")
    predict = PredictSection(window=64, overlap=16, device="cpu")
    options = output_options(predict)
    out = str(tmp_path / "out")
    plan = _plan_split(uri, bundle_path, predict, out, split_mpx=0.005)
    assert len(plan.parts) >= 2 and plan.norm is not None
    predictor = ScenePredictor(load_bundle(bundle_path), predict)
    rows = []
    for k, part in enumerate(plan.parts):
        r = predict_part(predictor, uri, part, plan.norm, plan.staging, LOCAL, options)
        rows.append({"uri": uri, "part": k, "seconds": r.seconds, "megapixels": r.megapixels,
                     "skipped": False, "error": "", "start": 0.0, "end": 1.0})  # fmt: skip
    staged = sorted(Path(plan.staging).glob("*_mask.tif"))
    staged[1].unlink()
    (report,) = collect_reports({uri: plan}, rows, out, LOCAL, options)
    assert report.error is not None and staged[1].name in report.error, report
    assert report.outputs == {}
    assert not (tmp_path / "out" / "big_mask.tif").exists()
