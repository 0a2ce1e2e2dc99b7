"""jobs/damage.py: a pre/post pair from two sensors (the post on its own grid) mapped by a damage
model into a class COG on the pre grid, five class probabilities, buildings with their damage
and confidence, and a summary that counts them; a building's damage is the class most of its
pixels carry; a building model, unpaired scenes or a pair that does not overlap are one error
line and no output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from resseg_ray.data.pairs import CLASS_NAMES
from resseg_ray.demo.events import default_events, write_event
from resseg_ray.inference.damage import damage_polygons
from resseg_ray.inference.vectorize import PolygonOptions
from resseg_ray.models import build_model, save_bundle
from tests.helpers import assert_cogs, randomize_batchnorm, run_here
from tests.rasters import ORIGIN, write_tif

BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    """The demo's storm (a test event) at a small scale: pre and post on two sensors' grids."""
    root = tmp_path_factory.mktemp("storm")
    _, test = default_events(0.2)
    return write_event(test[0], str(root))


def _bundle(path, arch: str = "damage-prop18", classes=CLASS_NAMES) -> str:
    torch_bands = 8 if arch.startswith("damage") else 4
    model = randomize_batchnorm(build_model(arch, in_bands=torch_bands, num_classes=len(classes)))
    names = [f"{w}:{b}" for w in ("pre", "post") for b in BANDS] if torch_bands == 8 else BANDS
    norm = {"norm_mean": [300.0] * torch_bands, "norm_std": [100.0] * torch_bands}
    save_bundle(
        path, model, **norm, band_names=names, class_names=classes, extra={"normalization": "per_scene"}
    )
    return str(path)


def test_a_pair_is_mapped_into_damage_outputs_on_the_pre_grid(storm, tmp_path, capsys) -> None:
    model = _bundle(tmp_path / "damage.resseg.safetensors")
    out = tmp_path / "out"
    proc = run_here(
        "damage.py", "--pre", storm["pre"], "--post", storm["post"], "--model", model, "--out", str(out),
        "--window", "128", "--overlap", "32", "--runtime", "torch", "--min-area", "2", capsys=capsys,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    name = "storm_01"
    classes, probs = out / f"{name}_damage.tif", out / f"{name}_damage_prob.tif"
    assert_cogs(classes, probs)
    with rasterio.open(storm["pre"]) as pre, rasterio.open(classes) as c, rasterio.open(probs) as p:
        assert (c.crs, c.transform, c.shape) == (pre.crs, pre.transform, pre.shape)  # the pre grid
        values = c.read(1)
        assert set(np.unique(values).tolist()) <= {0, 1, 2, 3, 4, 255} and (values < 255).mean() > 0.9
        assert p.count == 5 and p.descriptions[4] == "P(destroyed) x 250"
        q = p.read().astype(int)
        valid = values < 255
        assert (np.abs(q[:, valid].sum(axis=0) - 250) <= 3).all()  # probabilities of each pixel sum to 1
        assert (q[:, valid].argmax(axis=0) == values[valid]).mean() > 0.99
    doc = json.loads((out / f"{name}_damage_buildings.geojson").read_text())
    summary = json.loads((out / f"{name}_damage_summary.json").read_text())
    damage = [f["properties"]["damage"] for f in doc["features"]]
    assert summary["buildings"] == {c: damage.count(c) for c in CLASS_NAMES[1:]}
    assert summary["total"] == len(damage) and summary["model"] == "damage-prop18"
    assert all(0 <= f["properties"]["confidence"] <= 1 for f in doc["features"])
    assert f"{name}: {len(damage)} buildings (" in proc.stdout
    item = json.loads((out / f"{name}_damage_item.json").read_text())  # validated when written
    assert set(item["assets"]) == {"damage", "probability", "buildings", "summary"}
    assert item["assets"]["damage"]["href"] == f"./{name}_damage.tif"
    assert item["properties"]["resseg_ray:buildings"] == summary["buildings"]
    assert item["properties"]["resseg_ray:post"] == storm["post"]
    assert item["assets"]["probability"]["raster:bands"][0]["scale"] == pytest.approx(1 / 250)


def test_an_xbd_pair_of_plain_pngs_is_mapped(tmp_path, capsys) -> None:
    """xBD as published: 1024 px RGB PNGs without a CRS, named <event>_<id>_pre|post_disaster."""
    import warnings

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for when in ("pre", "post"):
        profile = {"driver": "PNG", "width": 1024, "height": 1024, "count": 3, "dtype": "uint8"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(
                images / f"hurricane-harvey_00000012_{when}_disaster.png", "w", **profile
            ) as dst:
                dst.write(rng.integers(0, 256, (3, 1024, 1024), dtype=np.uint8))
    model = tmp_path / "rgb.resseg.safetensors"
    net = randomize_batchnorm(build_model("damage-prop18", in_bands=6, num_classes=5))
    import torch

    with torch.no_grad():  # mostly background: a random network's noise would be thousands of "buildings"
        net.classifier.bias[0] += 4.0
    names = [f"{w}:{b}" for w in ("pre", "post") for b in ("red", "green", "blue")]
    save_bundle(
        model, net, norm_mean=[128.0] * 6, norm_std=[64.0] * 6, band_names=names, class_names=CLASS_NAMES
    )
    out = tmp_path / "out"
    pre, post = (str(images / f"hurricane-harvey_00000012_{w}_disaster.png") for w in ("pre", "post"))
    args = ["--pre", pre, "--post", post, "--model", str(model), "--out", str(out), "--runtime", "torch"]
    proc = run_here(
        "damage.py", *args, "--window", "256", "--overlap", "32", "--min-area", "4", capsys=capsys
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # a plain pixel grid is what xBD is: nothing to say
    name = "hurricane-harvey_00000012"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(out / f"{name}_damage.tif") as c:
            assert c.shape == (1024, 1024) and c.crs is None and (c.read(1) < 255).all()
    assert (out / f"{name}_damage_summary.json").exists()
    assert not (out / f"{name}_damage_item.json").exists()  # no place on Earth: no STAC item


def test_a_buildings_damage_is_the_class_most_of_its_pixels_carry(tmp_path) -> None:
    classes = np.zeros((40, 60), np.uint8)
    classes[5:15, 5:15] = 3
    classes[5:15, 5:8] = 2  # 30 of 100 pixels minor, 70 major: major
    classes[20:30, 30:40] = 2
    classes[20:30, 35:40] = 4  # a tie: the milder, minor
    probs = np.zeros((5, 40, 60), np.uint8)
    probs[0] = 250
    probs[:, classes > 0] = 0
    for v in (2, 3, 4):
        probs[v][classes == v] = 200
        probs[0][classes == v] = 50
    c = write_tif(tmp_path / "c.tif", classes[None], nodata=255)
    p = write_tif(tmp_path / "p.tif", probs, nodata=255)
    collection, _ = damage_polygons(c, p, PolygonOptions(min_area=1, simplify=0), str(tmp_path))
    got = sorted((f["properties"]["damage"], f["properties"]["confidence"]) for f in collection["features"])
    # major: 70 pixels at 0.8 and 30 at 0.0 (their P(major) is 0); minor: 50 at 0.8, 50 at 0
    assert got == [("major-damage", pytest.approx(0.56)), ("minor-damage", pytest.approx(0.4))]
    assert ORIGIN[0] <= collection["features"][0]["geometry"]["coordinates"][0][0][0] <= ORIGIN[0] + 30


def test_bad_damage_runs_are_one_error_line_and_no_output(storm, tmp_path, capsys) -> None:
    damage = _bundle(tmp_path / "d.resseg.safetensors")
    buildings = _bundle(tmp_path / "b.resseg.safetensors", "prop18", ["ground", "building"])
    far = write_tif(
        tmp_path / "far.tif", np.ones((4, 40, 40), np.uint16), origin=(ORIGIN[0] + 9e5, ORIGIN[1])
    )
    out = tmp_path / "out"
    cases = [
        (
            ["--model", buildings],
            "is a prop18 model of classes ['ground', 'building']; damage maps need a damage",
        ),
        (["--model", damage, "--post", storm["post"], storm["post"]], "--pre matched 1 scenes but --post 2"),
        (["--model", damage, "--out", storm["pre"]], "is one of the input scenes"),
        (["--model", damage, "--post", far], "does not overlap pre scene"),
    ]
    for extra, message in cases:
        args = {"--pre": [storm["pre"]], "--post": [storm["post"]], "--out": [str(out)]}
        flags = [a for a in extra if a.startswith("--")]
        for f in flags:
            args.pop(f, None)
        argv = [*[x for k, v in args.items() for x in (k, *v)], *extra]
        proc = run_here("damage.py", *argv, capsys=capsys)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr, proc.stderr
        assert not out.exists() or not any(out.iterdir())


def test_pairs_on_a_ray_actor_pool_give_the_maps_of_one_process(storm, tmp_path, capsys, ray_session) -> None:
    """``--actors 2``: each pair mapped by an actor that loaded the model once, the same maps as
    in this process; a pair that fails (no overlap) is said with its name, the others are
    written, and the job ends with one error line and exit 2."""
    import shutil

    model = _bundle(tmp_path / "damage.resseg.safetensors")
    shutil.copy(storm["pre"], tmp_path / "again_pre.tif")
    shutil.copy(storm["post"], tmp_path / "again_post.tif")
    shutil.copy(storm["pre"], tmp_path / "far_pre.tif")
    far = write_tif(tmp_path / "far_post.tif", np.ones((4, 40, 40), np.uint16),
                    origin=(ORIGIN[0] + 50_000, ORIGIN[1]))  # fmt: skip
    common = ["--model", model, "--window", "128", "--overlap", "32", "--runtime", "torch", "--no-stac"]
    one = ["--pre", storm["pre"], "--post", storm["post"], "--out", str(tmp_path / "one")]
    proc = run_here("damage.py", *one, *common, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    proc = run_here(
        "damage.py", "--pre", storm["pre"], str(tmp_path / "again_pre.tif"), str(tmp_path / "far_pre.tif"),
        "--post", storm["post"], str(tmp_path / "again_post.tif"), str(far),
        "--out", str(tmp_path / "pool"), "--actors", "2", *common, capsys=capsys,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "mapping 3 pairs on Ray: 2 actors x 0 GPU, 1 CPU" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 1 of 3 pairs failed (far: "), proc.stderr[-3000:]
    assert "warning:" not in proc.stderr  # no library's deprecation notes passed on as the pairs' warnings
    with rasterio.open(tmp_path / "one" / "storm_01_damage.tif") as one:
        expected = one.read()
    for name in ("storm_01", "again"):
        with rasterio.open(tmp_path / "pool" / f"{name}_damage.tif") as pooled:
            assert (pooled.read() == expected).all()
        assert f"{name}: " in proc.stdout
    assert not list((tmp_path / "pool").glob("far_*"))
