"""Damage data sets: each demo event's pair stacked on the pre grid (pre bands then post bands,
valid where both have data) with its damage labels, then tiled, split and described as scenes
are; a configuration whose classes are not the damage classes is refused."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from resseg_ray.config import load_config
from resseg_ray.data.pairs import CLASS_NAMES, DamagePair, prepare_pairs
from resseg_ray.demo.events import default_events, write_event

SMALL = ["data.tile_size=128", "data.stride=64", "data.crop_size=96", "data.split_block=256"]


def _pairs(events, folder) -> list[DamagePair]:
    out = []
    for ev in events:
        s = write_event(ev, str(folder))
        out.append(DamagePair(ev.name, s["pre"], s["post"], s["damage"]))
    return out


def test_demo_events_prepare_as_a_damage_data_set(tmp_path) -> None:
    train, test = default_events(0.3)
    cfg = load_config(None, [f"model.class_names={CLASS_NAMES}", "model.arch=damage-prop18", *SMALL])
    ds = prepare_pairs(
        _pairs(train, tmp_path / "scenes"), str(tmp_path / "ds"), cfg, _pairs(test[:1], tmp_path / "scenes")
    )
    roles = [(s.role, s.uri.rsplit("/", 1)[-1].removesuffix("_pair.tif")) for s in ds.scenes]
    assert roles == [("train", "quake_01"), ("train", "flood_01"), ("train", "fire_01"), ("test", "storm_01")]
    assert sum(s.tiles_train for s in ds.scenes) > 0 and sum(s.tiles_val for s in ds.scenes) > 0
    desc = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    names = ["blue", "green", "red", "nir"]
    assert desc["band_names"] == [f"pre:{n}" for n in names] + [f"post:{n}" for n in names]
    storm = ds.scenes[-1]
    with rasterio.open(storm.uri) as stacked, rasterio.open(tmp_path / "scenes" / "storm_01_pre.tif") as pre:
        assert stacked.count == 8 and stacked.crs == pre.crs and stacked.transform == pre.transform
        data, mask = stacked.read(), stacked.read_masks(1) > 0
        assert np.array_equal(data[:4][:, mask], pre.read()[:, mask])  # the pre bands as they were
        assert (data[4:][:, mask] > 0).all() and mask.mean() > 0.9
        assert stacked.tags()["reprojected"] == "True"  # the post sensor's grid is another
    with rasterio.open(storm.label_uri) as labels:
        values = set(np.unique(labels.read(1)).tolist())
    assert values <= {0, 1, 2, 3, 4, 255} and len(values & {1, 2, 3, 4}) >= 3


def test_prepare_takes_pairs_from_the_command_line(tmp_path, capsys) -> None:
    from tests.helpers import run_here

    train, _ = default_events(0.25)
    a, b = (write_event(ev, str(tmp_path / "scenes")) for ev in train[:2])
    sets = [x for s in SMALL for x in ("--set", s)]
    out = tmp_path / "ds"
    base = ["--scenes", a["pre"], b["pre"], "--post", a["post"], b["post"], "--no-ray", *sets]
    proc = run_here(
        "prepare.py", *base, "--footprints", a["damage"], b["damage"], "--out", str(out), capsys=capsys
    )
    assert proc.returncode == 0, proc.stderr
    desc = json.loads((out / "dataset.json").read_text())
    assert [s["uri"].rsplit("/", 1)[-1] for s in desc["scenes"]] == ["quake_01_pair.tif", "flood_01_pair.tif"]
    assert len(desc["band_names"]) == 8 and desc["band_names"][4] == "post:blue"
    bad = [
        (
            ["--scenes", a["pre"], "--post", a["post"], b["post"], "--footprints", a["damage"]],
            "1 pre-event scenes but 2",
        ),
        (
            [*base, "--labels", a["pre"], b["pre"]],
            "--post takes building damage from --footprints, not --labels",
        ),
        ([*base[:6], "--footprints", a["damage"], a["damage"], a["damage"]], "one file, or one per pair"),
    ]
    for args, message in bad:
        proc = run_here("prepare.py", *args, "--out", str(tmp_path / "bad"), "--no-ray", capsys=capsys)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "bad").exists()


def test_the_demo_disasters_prepare_as_a_damage_data_set(tmp_path, capsys) -> None:
    from tests.helpers import run_here

    sets = [x for s in SMALL for x in ("--set", s)]
    out = tmp_path / "demo-damage"
    args = ["--demo-damage", "--demo-scale", "0.2", "--out", str(out), "--no-ray", *sets]
    proc = run_here("prepare.py", *args, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    desc = json.loads((out / "dataset.json").read_text())
    roles = {s["uri"].rsplit("/", 1)[-1].removesuffix("_pair.tif"): s["role"] for s in desc["scenes"]}
    assert roles == {
        "quake_01": "train",
        "flood_01": "train",
        "fire_01": "train",
        "storm_01": "test",
        "quake_02": "test",
    }
    assert (out / "scenes" / "storm_01_post.tif").exists() and (
        out / "labels" / "storm_01_pair_labels.tif"
    ).exists()
