"""jobs/damage.py: a pre/post pair from two sensors (the post on its own grid) mapped by a damage
model into a class COG on the pre grid, five class probabilities, buildings with their damage
and confidence, and a summary that counts them; a building's damage is the class most of its
pixels carry; a building model, unpaired scenes or a pair that does not overlap are one error
line and no output."""

from __future__ import annotations

import json

import numpy as np
import pystac
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


def _event_collection(root, name: str, tiles: list[tuple[str, str]], date: str) -> str:
    """A STAC collection of an acquisition cut into quadkey folders whose files share a name
    (the open-data layout): ``tiles`` are (quadkey, raster); items ``<quadkey>_<name>``."""
    import datetime as dt
    import shutil

    extent = pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
    )
    collection = pystac.Collection(name, "one acquisition", extent)
    for quadkey, raster in tiles:
        folder = root / quadkey / date
        folder.mkdir(parents=True)
        tif = shutil.copy(raster, folder / f"{name}-visual.tif")
        item = pystac.Item(
            f"{quadkey}_{name}", None, None, dt.datetime.fromisoformat(f"{date}T00:00:00+00:00"), {}
        )
        item.add_asset("visual", pystac.Asset(str(tif), media_type=pystac.MediaType.COG))
        collection.add_item(item)
    collection.normalize_hrefs(str(root))
    collection.make_all_asset_hrefs_relative()
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    return str(root / "collection.json")


def _half(src_uri: str, out, right: bool, shift: float = 0.0) -> str:
    """The left or right half of a raster, as its own GeoTIFF (optionally moved ``shift`` m east)."""
    from rasterio.windows import Window

    with rasterio.open(src_uri) as src:
        w = src.width // 2
        window = Window(w if right else 0, 0, src.width - w if right else w, src.height)
        profile = {**src.profile, "width": window.width, "height": window.height}
        t = src.window_transform(window)
        profile["transform"] = rasterio.Affine(t.a, t.b, t.c + shift, t.d, t.e, t.f)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return str(out)


def test_an_event_from_two_stac_collections_is_paired_by_place(storm, tmp_path, capsys) -> None:
    """Pre and post imagery as two STAC collections of quadkey tiles whose files share a name and
    whose order differs: each pre tile is mapped with the post tile overlapping it most, named
    by its item id, its item linked to both source items and listed in catalog.json; a pre tile
    no post tile covers and a post tile over no pre tile are said, not mapped. A re-run skips
    the pairs done; a user's file under an output name, or a catalog.json of the user's, stops
    the job before any work."""
    model = _bundle(tmp_path / "damage.resseg.safetensors")
    cut = tmp_path / "cut"
    cut.mkdir()
    pre = [("120", _half(storm["pre"], cut / "pre_l.tif", False)),
           ("121", _half(storm["pre"], cut / "pre_r.tif", True)),
           ("300", _half(storm["pre"], cut / "pre_far.tif", True, shift=5e4))]  # fmt: skip
    post = [("121", _half(storm["post"], cut / "post_r.tif", True)),  # another order than pre's
            ("120", _half(storm["post"], cut / "post_l.tif", False)),
            ("200", _half(storm["post"], cut / "post_far.tif", False, shift=-5e4))]  # fmt: skip
    pre_doc = _event_collection(tmp_path / "pre", "104001008E8F1200", pre, "2022-09-01")
    post_doc = _event_collection(tmp_path / "post", "10300100D8F5C600", post, "2022-09-30")
    out = tmp_path / "out"
    proc = run_here(
        "damage.py", "--pre", pre_doc, "--post", post_doc, "--model", model, "--out", str(out),
        "--window", "128", "--overlap", "32", "--runtime", "torch", capsys=capsys,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, proc.stderr
    assert warnings[0].startswith("warning: pre scene ") and "/300/2022-09-01/" in warnings[0]
    assert warnings[0].endswith(": no --post scene overlaps it; not mapped")
    assert "/200/2022-09-30/" in warnings[1] and warnings[1].endswith(": overlaps no --pre scene; not used")
    for quadkey in ("120", "121"):
        name = f"{quadkey}_104001008E8F1200"
        item = json.loads((out / f"{name}_damage_item.json").read_text())
        assert item["properties"]["resseg_ray:post"].endswith(
            f"/post/{quadkey}/2022-09-30/10300100D8F5C600-visual.tif"
        )
        with rasterio.open(out / f"{name}_damage.tif") as c, rasterio.open(dict(pre)[quadkey]) as p:
            assert (c.transform, c.shape) == (p.transform, p.shape)  # on its pre tile's grid
        assert item["properties"]["resseg_ray:pre_item"] == name  # the items they derive from
        assert item["properties"]["resseg_ray:post_item"] == f"{quadkey}_10300100D8F5C600"
        derived = sorted(link["href"] for link in item["links"] if link["rel"] == "derived_from")
        assert len(derived) == 2 and derived[1].endswith(f"{quadkey}_104001008E8F1200.json")
    assert len(list(out.glob("*_damage.tif"))) == 2
    assert "wrote damage maps of 2 pair(s)" in proc.stdout
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))  # the pairs' items, listed
    assert sorted(i.id for i in catalog.get_items()) == [
        f"{q}_104001008E8F1200-damage" for q in ("120", "121")
    ]
    assert f"STAC: {out / 'catalog.json'} (2 items, valid)" in proc.stdout
    args = ["--pre", pre_doc, "--post", post_doc, "--model", model, "--window", "128", "--overlap", "32",
            "--runtime", "torch"]  # fmt: skip
    again = run_here("damage.py", *args, "--out", str(out), capsys=capsys)  # a re-run resumes: all done
    assert again.returncode == 0, again.stderr
    assert "120_104001008E8F1200: skipped (its maps are under" in again.stdout
    assert "wrote damage maps of 0 pair(s)" in again.stdout and "(2 skipped: done before)" in again.stdout
    (out / "catalog.json").unlink()  # as a run cut short before its catalog leaves the folder
    healed = run_here("damage.py", *args, "--out", str(out), capsys=capsys)
    assert healed.returncode == 0 and f"STAC: {out / 'catalog.json'} (2 items, valid)" in healed.stdout
    theirs = tmp_path / "theirs"  # a file of the user's under an output name: never replaced
    theirs.mkdir()
    (theirs / "121_104001008E8F1200_damage_summary.json").write_text("{}")
    proc = run_here("damage.py", *args, "--out", str(theirs), capsys=capsys)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (
        "holds files under the output names of 121_104001008E8F1200 that resseg-ray did not write"
        in proc.stderr
    )
    assert [p.name for p in theirs.iterdir()] == ["121_104001008E8F1200_damage_summary.json"]
    mine = tmp_path / "mine"  # a catalog.json of the user's in --out: refused before any work
    mine.mkdir()
    (mine / "catalog.json").write_text('{"type": "Catalog", "id": "my-event"}')
    proc = run_here("damage.py", *args, "--out", str(mine), capsys=capsys)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "catalog.json exists and is not a STAC catalog resseg-ray wrote" in proc.stderr
    assert [p.name for p in mine.iterdir()] == ["catalog.json"]


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
