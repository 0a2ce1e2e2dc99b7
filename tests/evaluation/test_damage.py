"""jobs/evaluate_damage.py: xView2's localization F1, damage F1 and score, and the per-building
accuracy, equal figures computed by hand; counts summed over pairs before the F1s; georeferenced
rasters and plain PNG masks alike; bad input is one error line and no report."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio

from resseg_ray.evaluation.damage import DamageCounts, building_counts, score_pair
from resseg_ray.geo.damage_labels import damage_value
from resseg_ray.geo.storage import StorageSettings
from tests.helpers import run_here
from tests.rasters import write_tif

X = 255  # no data
TRUTH_A = [
    [0, 0, 1, 1, 0, 0],
    [0, 0, 1, 1, 0, 3],
    [2, 2, 0, 0, 0, 3],
    [2, 2, 0, X, 4, 4],
]
PRED_A = [
    [0, 1, 1, 1, 0, 0],
    [0, 0, 1, 2, 0, 3],
    [2, 0, 0, 0, 0, 4],
    [2, 2, 0, 4, 4, 4],
]
TRUTH_B = [
    [1, 1, 0, 0],
    [0, 0, 0, 4],
    [0, 0, 0, 4],
]
PRED_B = [
    [0, 0, 0, 0],
    [0, 0, 1, 3],
    [0, 0, 0, 3],
]
# By hand. Pair A: 12 valid truth building pixels, 11 predicted buildings, 1 ground pixel
# predicted one: localization 2*11 / (2*11 + 1 + 1). On the building pixels, class 1: TP 3,
# FN 1 (one predicted 2); class 2: TP 3, FP 1, FN 1 (one predicted background); class 3: TP 1,
# FN 1 (predicted 4); class 4: TP 2, FP 1. Every footprint's majority is right (class 3's
# is a tie of 3 and 4: the milder, 3).
A = {
    "localization_f1": 22 / 24,
    "f1_no-damage": 6 / 7,
    "f1_minor-damage": 6 / 8,
    "f1_major-damage": 2 / 3,
    "f1_destroyed": 4 / 5,
    "building_accuracy": 1.0,
    "buildings": 4.0,
    "buildings_missed": 0.0,
}
# Pair A + B, counts summed: localization TP 13, FP 2, FN 3; class 1 TP 3, FN 3; class 2 as A;
# class 3 TP 1, FP 2, FN 1; class 4 TP 2, FP 1, FN 2. B's class-1 footprint is missed, its
# destroyed one predicted major: 4 of 6 footprints right.
TOTAL = {
    "localization_f1": 26 / 31,
    "f1_no-damage": 6 / 9,
    "f1_minor-damage": 6 / 8,
    "f1_major-damage": 2 / 5,
    "f1_destroyed": 4 / 7,
    "building_accuracy": 4 / 6,
    "buildings": 6.0,
    "buildings_missed": 1.0,
}


def _harmonic(m: dict) -> float:
    f1s = [m[f"f1_{c}"] for c in ("no-damage", "minor-damage", "major-damage", "destroyed")]
    return 4 / sum(1 / (f + 1e-6) for f in f1s)


def _write(tmp_path, name: str, rows, georeferenced: bool = True) -> str:
    data = np.array([rows], dtype=np.uint8)
    if georeferenced:
        return write_tif(tmp_path / f"{name}.tif", data, nodata=255)
    path = tmp_path / f"{name}.png"
    profile = {"driver": "PNG", "width": data.shape[2], "height": data.shape[1], "count": 1, "dtype": "uint8"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return str(path)


def _check(metrics: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    assert metrics["damage_f1"] == pytest.approx(_harmonic(expected), abs=1e-9)
    assert metrics["score"] == pytest.approx(0.3 * expected["localization_f1"] + 0.7 * _harmonic(expected))


@pytest.mark.parametrize("georeferenced", [True, False], ids=["geotiff", "png"])
def test_a_pair_scores_as_computed_by_hand(tmp_path, georeferenced) -> None:
    pred = _write(tmp_path, "a_damage", PRED_A, georeferenced)
    truth = _write(tmp_path, "a_truth", TRUTH_A, georeferenced)
    score = score_pair(pred, truth, StorageSettings(), rows=3)  # strips that cut a footprint
    assert score.name == "a"
    m = score.counts.metrics()
    _check(m, A)
    assert m["score"] == pytest.approx(0.3 * 22 / 24 + 0.7 * 4 / (7 / 6 + 8 / 6 + 3 / 2 + 5 / 4), abs=1e-5)


def test_building_counts_by_true_class_and_predicted_value() -> None:
    got = building_counts(np.array(PRED_B, np.uint8), np.array(TRUTH_B, np.uint8))
    expected = np.zeros((4, 5), np.int64)
    expected[0, 0] = 1  # the no-damage footprint: missed
    expected[3, 3] = 1  # the destroyed one: predicted major-damage
    assert np.array_equal(got, expected)
    # a footprint whose pixels all lack a prediction is not counted; two footprints of a class
    truth = np.array([[1, 0, 1], [0, 0, 0]], np.uint8)
    pred = np.array([[X, 0, 2], [0, 0, 0]], np.uint8)
    assert building_counts(pred, truth)[0].tolist() == [0, 0, 1, 0, 0]


def test_counts_add_over_pairs_before_the_f1s(tmp_path) -> None:
    settings = StorageSettings()
    a = score_pair(_write(tmp_path, "a_damage", PRED_A), _write(tmp_path, "a_truth", TRUTH_A), settings)
    b = score_pair(_write(tmp_path, "b_damage", PRED_B), _write(tmp_path, "b_truth", TRUTH_B), settings)
    total = a.counts + b.counts
    _check(total.metrics(), TOTAL)
    mean_of_scores = (a.counts.metrics()["score"] + b.counts.metrics()["score"]) / 2
    assert total.metrics()["score"] != pytest.approx(mean_of_scores)  # summed, not averaged
    assert b.counts.absent() == ["minor-damage", "major-damage"]
    assert b.counts.metrics()["damage_f1"] < 1e-5  # an absent class's F1 is 0, as xView2 takes it
    assert DamageCounts(a.counts.pixels, None).metrics()["building_accuracy"] is None


def test_evaluate_damage_job_prints_and_reports_the_total(tmp_path, capsys) -> None:
    for name, pred, truth in (("a", PRED_A, TRUTH_A), ("b", PRED_B, TRUTH_B)):
        _write(tmp_path, f"{name}_damage", pred)
        (tmp_path / "truth").mkdir(exist_ok=True)
        _write(tmp_path / "truth", name, truth)
    report = tmp_path / "scores.json"
    proc = run_here(
        "evaluate_damage.py", "--pred", str(tmp_path / "*_damage.tif"), "--truth", str(tmp_path / "truth"),
        "--report", str(report), capsys=capsys,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["pair", "loc", "F1", "dmg"]
    assert lines[1].startswith("a ") and lines[2].startswith("b ") and lines[3].startswith("all pairs ")
    total = [float(v) for v in lines[3].split()[2:5]]
    expected = [26 / 31, _harmonic(TOTAL), 0.3 * 26 / 31 + 0.7 * _harmonic(TOTAL)]
    assert total == pytest.approx([100 * v for v in expected], abs=0.006)
    assert lines[3].split()[-2:] == ["66.67", "6"]
    assert proc.stderr == ""  # every class is in the truth of the two pairs together
    doc = json.loads(report.read_text())
    assert doc["format"] == "resseg-damage-report/1"
    assert doc["classes"] == ["no-damage", "minor-damage", "major-damage", "destroyed"]
    assert [p["name"] for p in doc["pairs"]] == ["a", "b"] and doc["total"]["absent"] == []
    _check(doc["total"]["metrics"], TOTAL)
    assert doc["total"]["buildings"][0] == [1, 1, 0, 0, 0]  # no-damage footprints: A's right, B's missed
    assert np.array(doc["total"]["pixels"]).sum() == 23 + 12  # valid pixels of both pairs


def test_a_class_absent_from_the_truth_is_said(tmp_path, capsys) -> None:
    pred, truth = _write(tmp_path, "b_damage", PRED_B, False), _write(tmp_path, "b_truth", TRUTH_B, False)
    proc = run_here("evaluate_damage.py", "--pred", pred, "--truth", truth, "--no-buildings", capsys=capsys)
    assert proc.returncode == 0
    assert proc.stderr.startswith("warning: no truth pixel of minor-damage, major-damage: ")
    assert proc.stderr.count("\n") == 1  # PNG masks without a CRS: nothing else said
    assert proc.stdout.splitlines()[1].split()[-2:] == ["-", "-"]  # buildings not scored


def test_bad_damage_input_is_one_error_line_and_no_report(tmp_path, capsys) -> None:
    pred, truth = _write(tmp_path, "a_damage", PRED_A), _write(tmp_path, "a_truth", TRUTH_A)
    odd = _write(tmp_path, "odd", [[0, 7, 1, 1, 0, 0], *TRUTH_A[1:]])
    small = _write(tmp_path, "small", TRUTH_B)
    report = tmp_path / "r.json"
    cases = [
        (["--pred", pred, "--truth", odd], f"truth {odd} holds values [7]; a damage raster holds 0"),
        (["--pred", pred, "--truth", small], f"prediction {pred} (6x4) is not on the grid of the truth"),
        (["--pred", pred, "--truth", truth, small], "--pred matched 1 rasters but --truth 2"),
        (["--pred", pred, "--truth", truth, "--report", truth], f"--report {truth} is also an input"),
        (["--pred", pred, "--truth", _write(tmp_path, "none", [[X] * 6] * 4)], "no pixel to score"),
    ]
    for args, message in cases:
        if "--report" not in args:
            args = [*args, "--report", str(report)]
        proc = run_here("evaluate_damage.py", *args, capsys=capsys)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr, proc.stderr
        assert not report.exists()


def test_xbd_subtypes_map_to_raster_values() -> None:
    names = ("no-damage", "minor-damage", "major-damage", "destroyed")
    assert [damage_value(s) for s in names] == [1, 2, 3, 4]
    assert damage_value("un-classified") == 255
    with pytest.raises(ValueError, match="unknown damage subtype 'flooded'"):
        damage_value("flooded")


def test_an_xbd_size_pair_scores_the_same_in_any_strips(tmp_path) -> None:
    """1024 x 1024 (an xBD image): 300 footprints of every class; the prediction equal to the
    truth scores 1, and a prediction that grades one district wrong gives the same counts read
    in strips of 1024 or 100 rows."""
    rng = np.random.default_rng(0)
    truth = np.zeros((1024, 1024), np.uint8)
    for _ in range(300):
        r, c = rng.integers(0, 1000, 2)
        h, w = rng.integers(6, 24, 2)
        truth[r : r + h, c : c + w] = rng.integers(1, 5)
    truth[1000:] = X
    t = _write(tmp_path, "t", truth)
    perfect = score_pair(_write(tmp_path, "p", truth), t, StorageSettings()).counts.metrics()
    assert perfect["localization_f1"] == 1.0 and perfect["building_accuracy"] == 1.0
    assert perfect["score"] == pytest.approx(1.0, abs=1e-5)
    wrong = truth.copy()
    district = wrong[:400, :400]
    district[(district > 0) & (district < 4)] += 1  # one grade worse than it is
    p = _write(tmp_path, "w", wrong)
    whole = score_pair(p, t, StorageSettings(), rows=1024).counts
    strips = score_pair(p, t, StorageSettings(), rows=100).counts
    assert np.array_equal(whole.pixels, strips.pixels) and np.array_equal(whole.buildings, strips.buildings)
    by_strips = score_pair(p, t, StorageSettings(), rows=100, buildings=False).counts  # read in strips
    assert np.array_equal(by_strips.pixels, whole.pixels) and by_strips.buildings is None
    assert whole.metrics()["localization_f1"] == 1.0 and 0.3 < whole.metrics()["building_accuracy"] < 1.0


def test_models_are_chosen_on_the_grades_present() -> None:
    """On held-out blocks where some grades are absent, the scorer's F1 of 0 for each of them
    makes the damage F1 ~0 for any model; what chooses between models (``f1``) leaves them out,
    and is the score itself when every grade is present."""
    from resseg_ray.evaluation.damage import damage_metrics

    counts = np.zeros((5, 5), np.int64)
    counts[0, 0], counts[0, 1] = 90, 2  # background: 2 pixels taken for no-damage
    counts[1, 1], counts[1, 2] = 6, 2  # no-damage: 6 right, 2 called minor
    counts[2, 2], counts[2, 0] = 3, 1  # minor: 3 right, 1 missed; major and destroyed absent
    m = damage_metrics(counts)
    loc = 2 * 11 / (2 * 11 + 2 + 1)
    f_no, f_minor = 2 * 6 / (12 + 0 + 2), 2 * 3 / (6 + 2 + 1)  # minor: 2 false positives, 1 missed
    assert m["localization_f1"] == pytest.approx(loc)
    assert m["f1_no-damage"] == pytest.approx(f_no) and m["f1_minor-damage"] == pytest.approx(f_minor)
    assert m["damage_f1"] < 1e-5 and m["score"] == pytest.approx(0.3 * loc, abs=1e-5)
    present = 2 / (1 / (f_no + 1e-6) + 1 / (f_minor + 1e-6))
    assert m["f1"] == pytest.approx(0.3 * loc + 0.7 * present, abs=1e-6)
    counts[3, 3] = counts[4, 4] = 5  # every grade present: the same as the score
    m = damage_metrics(counts)
    assert m["f1"] == pytest.approx(m["score"])
