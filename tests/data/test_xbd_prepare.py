"""xBD folders as training data, as published: ``resseg prepare --xbd`` turns 1024 px PNG
pairs (no CRS) and their label documents into a damage data set of pixel grids (a pre image
without its post image, and a pair without a post-event label document, said and skipped),
and a damage network trains one epoch on it; bad folders and bad documents are one-line
errors with nothing written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from resseg_ray.config import load_config
from resseg_ray.data.pairs import CLASS_NAMES
from tests.helpers import run_here, small_train_overrides

SIZE = 1024  # every xBD image
GRADES = ["no-damage", "minor-damage", "major-damage", "destroyed", "un-classified"]
SETS = ["data.tile_size=128", "data.stride=128", "data.crop_size=96", "data.split_block=256",
        "data.stats_block=512"]  # fmt: skip


def _square(x: float, y: float, s: float) -> str:
    return f"POLYGON (({x} {y}, {x + s} {y}, {x + s} {y + s}, {x} {y + s}, {x} {y}))"


def _pair(root, stem: str, seed: int, labels: bool = True, post: bool = True) -> list[tuple[str, int]]:
    """An xBD pair: RGB PNGs of bright roofs on a dark ground (the post image's roofs darkened
    by their damage) and its label documents; the buildings as (WKT, grade index)."""
    rng = np.random.default_rng(seed)
    buildings = []
    pre = np.full((3, SIZE, SIZE), 60, np.uint8) + rng.integers(0, 20, (3, SIZE, SIZE), dtype=np.uint8)
    after = pre.copy()
    for k in range(40):
        x, y = (int(v) for v in rng.integers(10, SIZE - 60, 2))
        grade = k % len(GRADES)
        pre[:, y : y + 40, x : x + 40] = 200
        after[:, y : y + 40, x : x + 40] = 200 - 40 * min(grade, 3)
        buildings.append((_square(x, y, 40), grade))
    for when, data in (("pre", pre), ("post", after)):
        if when == "post" and not post:
            continue
        profile = {"driver": "PNG", "width": SIZE, "height": SIZE, "count": 3, "dtype": "uint8"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(root / "images" / f"{stem}_{when}_disaster.png", "w", **profile) as dst:
                dst.write(data)
        if labels:
            xy = [{"properties": {"feature_type": "building", "uid": f"{stem}-{i}",
                                  **({"subtype": GRADES[g]} if when == "post" else {})}, "wkt": w}
                  for i, (w, g) in enumerate(buildings)]  # fmt: skip
            meta = {"width": SIZE, "height": SIZE, "disaster": stem.split("_")[0], "gsd": 2.0}
            doc = {"features": {"xy": xy, "lng_lat": []}, "metadata": meta}
            (root / "labels" / f"{stem}_{when}_disaster.json").write_text(json.dumps(doc))
    return buildings


def _roofs(seed: int) -> np.ndarray:
    """The centre pixel (row, column) of each roof of the pair of ``seed``, by grade order."""
    rng = np.random.default_rng(seed)
    rng.integers(0, 20, (3, SIZE, SIZE), dtype=np.uint8)
    centres = [tuple(int(v) + 20 for v in rng.integers(10, SIZE - 60, 2))[::-1] for _ in range(40)]
    return np.array(centres).T


@pytest.fixture(scope="module")
def xbd(tmp_path_factory):
    """An xBD-shaped folder: three complete pairs, a pre image without its post image, a pair
    without label documents."""
    root = tmp_path_factory.mktemp("xbd")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i, stem in enumerate(["hurricane-harvey_00000012", "socal-fire_00001400", "palu-tsunami_00000181"]):
        _pair(root, stem, i)
    _pair(root, "midwest-flooding_00000001", 7, post=False)
    _pair(root, "joplin-tornado_00000003", 8, labels=False)
    return root


def test_an_xbd_folder_prepares_as_a_damage_data_set_and_trains(
    xbd, tmp_path, mlflow_server, ray_session, capsys
) -> None:
    from resseg_ray.train.trainer import run_training

    out = tmp_path / "ds"
    sets = [x for s in SETS for x in ("--set", s)]
    proc = run_here("prepare.py", "--xbd", str(xbd), "--out", str(out), "--no-ray", *sets, capsys=capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = proc.stderr.strip().splitlines()
    assert len(warned) == 2 and all(w.startswith("warning: ") for w in warned)
    assert "no post-disaster image of midwest-flooding_00000001" in proc.stderr
    assert "no label document joplin-tornado_00000003_post_disaster.json" in proc.stderr
    assert "3 xBD pairs to train on, 0 to test on" in proc.stdout
    desc = json.loads((out / "dataset.json").read_text())
    assert desc["band_names"] == [f"{w}:band{b}" for w in ("pre", "post") for b in (1, 2, 3)]
    assert len(desc["scenes"]) == 3 and all(s["crs"] == "" for s in desc["scenes"])  # pixel grids
    assert all(s["tiles_train"] > 0 and s["tiles_val"] > 0 for s in desc["scenes"])
    stacked = out / "pairs" / "socal-fire_00001400_pair.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        labels = out / "labels" / "socal-fire_00001400_pair_labels.tif"
        with rasterio.open(stacked) as ds, rasterio.open(labels) as lab:
            assert ds.crs is None and (ds.width, ds.height, ds.count) == (SIZE, SIZE, 6)
            assert lab.crs is None and (lab.width, lab.height) == (SIZE, SIZE)
            values = lab.read(1)
    # every grade burned where the document puts it (un-classified as no data)
    assert set(np.unique(values).tolist()) == {0, 1, 2, 3, 4, 255}
    roof = values[tuple(_roofs(1))]
    assert set(np.unique(roof).tolist()) == {1, 2, 3, 4, 255}

    overrides = small_train_overrides(
        str(out), str(tmp_path / "runs"), mlflow_server, "xbd",
        **{"train.epochs": 1, "scaling.num_workers": 1, "scaling.cpus_per_worker": 1,
           "scaling.in_process": True,  # the data set's shape is tested, not Ray Train's workers
           "mlflow.registered_model": "null", "train.train_tiles_per_epoch": 8, "train.val_tiles": 4},
    )  # fmt: skip
    damage = [f"model.class_names={CLASS_NAMES}", "model.arch=damage-prop18"]
    cfg = load_config(None, [*overrides, *SETS, *damage])
    result = run_training(cfg, log=lambda _: None)
    assert result.progress.epochs_done == 1 and result.bundle_uri


def test_bad_xbd_inputs_are_one_line_errors_and_nothing_is_written(xbd, tmp_path, capsys) -> None:
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "labels").mkdir()
    _pair(bad, "guatemala-volcano_00000001", 3)
    doc = json.loads((bad / "labels" / "guatemala-volcano_00000001_post_disaster.json").read_text())
    doc["features"]["xy"][0]["properties"]["subtype"] = "flattened"
    (bad / "labels" / "guatemala-volcano_00000001_post_disaster.json").write_text(json.dumps(doc))
    outside = tmp_path / "outside"
    (outside / "images").mkdir(parents=True)
    (outside / "labels").mkdir()
    _pair(outside, "santa-rosa-wildfire_00000009", 4)
    name = outside / "labels" / "santa-rosa-wildfire_00000009_post_disaster.json"
    doc = json.loads(name.read_text())
    doc["features"]["xy"][1]["wkt"] = _square(3000, 3000, 40)
    name.write_text(json.dumps(doc))
    cases = [
        (["--xbd", str(tmp_path / "nowhere")], "is not an xBD folder"),
        (["--xbd", str(bad)], "feature 0: "),
        (["--xbd", str(outside)], "lies outside the 1024x1024 image"),
        (["--xbd", str(xbd), "--scenes", str(xbd / "images")], "--xbd takes the pairs"),
        (["--xbd", str(xbd), "--test-xbd", str(xbd)], "is in "),
    ]
    for args, said in cases:
        out = tmp_path / "out"
        proc = run_here("prepare.py", *args, "--out", str(out), "--no-ray", capsys=capsys)
        assert proc.returncode == 2 and said in proc.stderr, (args, proc.stderr[-2000:])
        error = [line for line in proc.stderr.splitlines() if not line.startswith("warning: ")]
        assert len(error) == 1 and error[0].startswith("error: "), proc.stderr
        assert not out.exists()  # checked before anything is written
