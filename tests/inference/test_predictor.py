"""Stitching is exact: a model whose building score is an input band reproduces that band
over whole scenes, in every blending mode, for awkward sizes; scoring matches numpy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from resseg_ray.config import PredictSection
from resseg_ray.evaluation.metrics import Confusion
from resseg_ray.evaluation.scenes import evaluate_scene
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.windows import window_starts
from tests.helpers import band_bundle, band_probability
from tests.rasters import write_tif


@pytest.mark.parametrize("mode", ["flat", "linear", "cosine"])
@pytest.mark.parametrize(
    ("h", "w", "window", "overlap"),
    [(1, 1, 64, 20), (130, 97, 64, 20), (511, 513, 512, 112), (3000, 17, 512, 112), (300, 17, 64, 20)],
)
def test_stitching_reproduces_the_band(
    tmp_path, mode: str, h: int, w: int, window: int, overlap: int
) -> None:
    rng = np.random.default_rng(h * w)
    data = rng.integers(0, 200, size=(2, h, w)).astype(np.uint16)
    uri = write_tif(tmp_path / "s.tif", data)
    predictor = ScenePredictor(
        band_bundle(), PredictSection(window=64, overlap=20, batch_size=3, blend=mode, device="cpu")
    )
    scene = open_scene(uri, StorageSettings())
    strips = list(predictor.strips(scene, StorageSettings()))
    assert strips[0].row == 0
    prob = np.concatenate([s.probs[1] for s in strips], axis=0)
    assert prob.shape == (h, w)
    np.testing.assert_allclose(prob, band_probability(data[0]), atol=1e-5)


def test_evaluate_scene_matches_numpy(tmp_path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 200, size=(2, 150, 140)).astype(np.uint16)
    labels = rng.choice([0, 1, 255], size=(1, 150, 140), p=[0.5, 0.4, 0.1]).astype(np.uint8)
    uri = write_tif(tmp_path / "s.tif", data)
    lab = write_tif(tmp_path / "s_labels.tif", labels, nodata=255)
    predictor = ScenePredictor(band_bundle(), PredictSection(window=64, overlap=16, device="cpu"))
    score = evaluate_scene(predictor, uri, lab, StorageSettings())
    pred = (band_probability(data[0]) > 0.5).astype(np.uint8)
    assert np.array_equal(score.confusion.counts, Confusion.of(pred, labels[0]).counts)
    assert score.name == "s"


def test_per_scene_normalisation_removes_sensor_gain_and_offset(tmp_path) -> None:
    rng = np.random.default_rng(5)
    base = rng.integers(50, 150, size=(2, 90, 70)).astype(np.float32)
    a = write_tif(tmp_path / "a.tif", base)
    b = write_tif(tmp_path / "b.tif", base * 7.5 + 300)  # another sensor: gain and offset
    bundle = band_bundle()
    bundle.info.extra["normalization"] = "per_scene"
    predictor = ScenePredictor(bundle, PredictSection(window=64, overlap=16, device="cpu"))
    assert predictor.normalization == "per_scene"
    s = StorageSettings()
    pa = np.concatenate([x.probs[1] for x in predictor.strips(open_scene(a, s), s)])
    pb = np.concatenate([x.probs[1] for x in predictor.strips(open_scene(b, s), s)])
    np.testing.assert_allclose(pa, pb, atol=1e-4)
    z = (base[0] - base[0].mean()) / base[0].std()
    np.testing.assert_allclose(pa, 1 / (1 + np.exp(-z)), atol=1e-4)
    pooled = ScenePredictor(
        bundle, PredictSection(window=64, overlap=16, normalization="pooled", device="cpu")
    )
    with pytest.warns(UserWarning, match="far from the model's training statistics"):
        pc = np.concatenate([x.probs[1] for x in pooled.strips(open_scene(b, s), s)])
    assert np.abs(pc - pb).max() > 0.1


def test_band_order_is_checked_and_mappable(tmp_path) -> None:
    from resseg_ray.errors import InputDataError
    from resseg_ray.inference.batch import predict_scene

    data = np.random.default_rng(0).integers(50, 150, size=(2, 40, 40)).astype(np.uint16)
    uri = write_tif(tmp_path / "swapped.tif", data, descriptions=["b", "a"])
    predictor = ScenePredictor(band_bundle(), PredictSection(window=64, overlap=16, device="cpu"))
    s = StorageSettings()
    with pytest.raises(InputDataError, match=r"expects \['a', 'b'\]; map them with --bands 2 1"):
        list(predictor.strips(open_scene(uri, s), s))
    report = predict_scene(predictor, uri, str(tmp_path / "out"), s, bands=[2, 1])
    assert not report.skipped and report.error is None


def test_scene_far_from_training_statistics_warns(tmp_path) -> None:
    data = np.random.default_rng(0).integers(5000, 9000, size=(2, 60, 60)).astype(np.uint16)
    uri = write_tif(tmp_path / "other_sensor.tif", data)
    predictor = ScenePredictor(band_bundle(), PredictSection(window=64, overlap=16, device="cpu"))
    s = StorageSettings()
    with pytest.warns(UserWarning, match=r"band\(s\) \['a', 'b'\] are far from.*--normalization per_scene"):
        list(predictor.strips(open_scene(uri, s), s))


@pytest.mark.parametrize("mode", ["flat", "cosine"])
@pytest.mark.parametrize(("h", "count"), [(300, 2), (300, 3), (300, 40), (41, 2)])
def test_parts_of_a_scene_give_exactly_the_whole_scene_rows(tmp_path, mode: str, h: int, count: int) -> None:
    rng = np.random.default_rng(h)
    data = rng.integers(0, 200, size=(2, h, 50)).astype(np.uint16)
    uri = write_tif(tmp_path / "s.tif", data)
    s = StorageSettings()
    predictor = ScenePredictor(band_bundle(), PredictSection(window=64, overlap=40, blend=mode, device="cpu"))
    scene = open_scene(uri, s)
    whole = np.concatenate([x.probs for x in predictor.strips(scene, s)], axis=1)
    parts = predictor.row_parts(h, count)
    assert parts[0].row0 == 0 and parts[-1].row1 == h and 1 <= len(parts) <= count
    assert all(p.stop > p.first for p in parts)
    starts = window_starts(h, min(64, h), 40)
    work = [p.stop - next(j for j in range(p.first + 1) if starts[j] + 64 > starts[p.first]) for p in parts]
    assert max(work) - min(work) <= 1  # balanced, counting the rows each part re-runs
    assert all(a.row1 == b.row0 and a.stop == b.first for a, b in itertools.pairwise(parts))
    norm = predictor.scene_norm(scene, s)
    for part in parts:
        strips = list(predictor.strips(scene, s, part, norm))
        assert strips[0].row == part.row0
        got = np.concatenate([x.probs for x in strips], axis=1)
        assert np.array_equal(got, whole[:, part.row0 : part.row1])  # bit for bit
