"""jobs/evaluate.py: existing masks against labels equal hand-computed confusions; a model
evaluated on scenes gives what its predicted masks give; bad pairings are clear errors."""

from __future__ import annotations

import numpy as np

from resseg_ray.config import PredictSection
from resseg_ray.evaluation.metrics import Confusion
from resseg_ray.evaluation.scenes import evaluate_mask
from resseg_ray.geo.storage import StorageSettings
from tests.helpers import run_here, run_script
from tests.rasters import write_tif


def _pair(tmp_path, name: str, seed: int, shape=(70, 90)):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 2, size=(1, *shape)).astype(np.uint8)
    mask[0, :5] = 255  # no input data
    labels = rng.choice([0, 1, 255], size=(1, *shape), p=[0.6, 0.3, 0.1]).astype(np.uint8)
    m = write_tif(tmp_path / f"{name}_mask.tif", mask, nodata=255)
    lab = write_tif(tmp_path / f"{name}_labels.tif", labels, nodata=255)
    target = labels[0].copy()
    target[mask[0] == 255] = 255
    return m, lab, Confusion.of(mask[0], target)


def test_mask_scores_equal_hand_computed_confusions(tmp_path) -> None:
    m, lab, expected = _pair(tmp_path, "a", 0)
    score = evaluate_mask(m, lab, StorageSettings(), rows=16)
    assert np.array_equal(score.confusion.counts, expected.counts)
    assert score.name == "a"


def test_evaluate_job_masks_report(tmp_path) -> None:
    ma, la, ca = _pair(tmp_path, "a", 0)
    mb, lb, cb = _pair(tmp_path, "b", 1)
    report = tmp_path / "table.md"
    proc = run_script("evaluate.py", "--masks", ma, mb, "--labels", la, lb, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    mean_f1 = (ca.metrics()["f1"] + cb.metrics()["f1"]) / 2
    text = report.read_text()
    assert "| model | a | b | mean |" in text and f"{100 * mean_f1:.2f} / " in text


def test_evaluate_job_bad_pairings(tmp_path, capsys) -> None:
    ma, la, _ = _pair(tmp_path, "a", 0)
    mb, _, _ = _pair(tmp_path, "b", 1, shape=(50, 50))
    # in this process (the job runs as a user runs it in the tests above): no start-up per refusal
    proc = run_here("evaluate.py", "--masks", ma, "--labels", la, la, capsys=capsys)
    assert proc.returncode == 2 and "--masks matched 1 files but --labels 2" in proc.stderr
    proc = run_here("evaluate.py", "--masks", mb, "--labels", la, capsys=capsys)
    assert proc.returncode == 2 and "is not on the grid of labels" in proc.stderr
    proc = run_here("evaluate.py", capsys=capsys)
    assert proc.returncode == 2 and "nothing to evaluate" in proc.stderr


def test_model_evaluation_equals_scoring_its_predicted_masks(tmp_path) -> None:
    from resseg_ray.evaluation.scenes import evaluate_scene
    from resseg_ray.inference.batch import predict_scene
    from resseg_ray.inference.predictor import ScenePredictor
    from tests.helpers import band_bundle

    rng = np.random.default_rng(3)
    band = np.full((150, 170), 20, np.uint16)  # ground: probability ~0.17
    for _ in range(12):  # buildings: bright rectangles (probability ~0.9)
        r, c = rng.integers(0, 130), rng.integers(0, 150)
        band[r : r + rng.integers(6, 20), c : c + rng.integers(6, 20)] = 220
    band[:8] = 0  # no data
    labels = (band > 100).astype(np.uint8)[None]
    labels[0, 60:70] = 255  # ignored rows
    labels[0, 100:104, :] = 1 - labels[0, 100:104, :]  # some label errors
    scene = write_tif(tmp_path / "s.tif", np.stack([band, band]), nodata=0)
    lab = write_tif(tmp_path / "s_labels.tif", labels, nodata=255)
    settings = StorageSettings()
    predictor = ScenePredictor(band_bundle(), PredictSection(window=64, overlap=16, device="cpu"))
    by_model = evaluate_scene(predictor, scene, lab, settings, objects=True)
    mask = predict_scene(predictor, scene, str(tmp_path / "out"), settings).outputs["mask"]
    by_mask = evaluate_mask(mask, lab, settings, objects=True)
    assert np.array_equal(by_model.confusion.counts, by_mask.confusion.counts)
    assert by_model.objects == by_mask.objects
    assert by_model.objects["objects_true"] >= 5 and 0 < by_model.objects["object_f1"] < 1


def test_evaluate_job_model_with_objects(tmp_path) -> None:
    from resseg_ray.models import build_model
    from resseg_ray.models.bundle import save_bundle

    rng = np.random.default_rng(0)
    scene = write_tif(tmp_path / "a.tif", rng.integers(1, 200, size=(2, 80, 90)).astype(np.uint16), nodata=0)
    _, lab, _ = _pair(tmp_path, "a", 0, shape=(80, 90))
    bundle = tmp_path / "m.resseg.safetensors"
    save_bundle(bundle, build_model("prop18", in_bands=2), norm_mean=[100, 100], norm_std=[50, 50])
    proc = run_script(
        "evaluate.py",
        "--model",
        str(bundle),
        "--scenes",
        scene,
        "--labels",
        lab,
        "--objects",
        "--window",
        "64",
        "--overlap",
        "16",
    )
    assert proc.returncode == 0, proc.stderr
    assert "a                        objects:" in proc.stdout and "object F1" in proc.stdout
