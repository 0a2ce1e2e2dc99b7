"""jobs/prepare.py as a user runs it (a subprocess; the quick refusals in this process): one-line
errors, exit 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from resseg_ray.errors import InputDataError
from tests.helpers import SMALL_DATA, assert_cogs, run_here, run_script
from tests.rasters import write_tif

SMALL = [a for o in SMALL_DATA for a in ("--set", o)]


def _prepare(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return run_script("prepare.py", *args, env=env)


@pytest.fixture(scope="module")
def scene_and_footprints(small_demo) -> tuple[str, str]:
    s = small_demo.scenes[0].uri
    return s, s.replace(".tif", "_buildings.geojson")


def test_demo_run_on_its_own_ray_instance(tmp_path) -> None:
    out = tmp_path / "demo"
    proc = _prepare("--out", str(out), "--demo-scale", "0.2", *SMALL, env={"RAY_ADDRESS": "local"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    desc = json.loads((out / "dataset.json").read_text())
    assert desc["tiles"]["train"] > 0 and desc["tiles"]["val"] > 0
    assert len([s for s in desc["scenes"] if s["role"] == "train"]) == 6
    assert len([s for s in desc["scenes"] if s["role"] == "test"]) == 3
    assert "prepared" in proc.stdout and "statistics" in proc.stdout
    again = _prepare("--out", str(out), "--no-ray")
    assert again.returncode == 0 and "already prepared" in again.stdout


def _fails(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in line, line


def _nothing_written(out: Path) -> None:
    assert not (out / "dataset.json").exists() and not (out / "manifest.parquet").exists()
    assert not [p for p in out.rglob("*") if ".part" in p.name]


def test_bad_inputs_are_one_line_errors(tmp_path, scene_and_footprints, capsys) -> None:
    def _prepare(*args: str) -> subprocess.CompletedProcess[str]:
        return run_here("prepare.py", *args, capsys=capsys)

    scene, fp = scene_and_footprints
    out = tmp_path / "out"
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    _fails(
        _prepare("--scenes", str(text), "--footprints", fp, "--out", str(out), "--no-ray"),
        "notes.tif",
        "raster",
    )
    vrt = tmp_path / "empty.vrt"
    vrt.write_text('<VRTDataset rasterXSize="10" rasterYSize="10"></VRTDataset>')
    _fails(
        _prepare("--scenes", str(vrt), "--footprints", fp, "--out", str(out), "--no-ray"),
        "empty.vrt",
        "bands",
    )
    _fails(
        _prepare(
            "--scenes",
            scene,
            "--footprints",
            fp,
            "--out",
            str(out),
            "--no-ray",
            "--set",
            "data.bands=[1,2,3,4,5]",
        ),
        "train_01.tif has 4 bands",
        "[5]",
    )
    three = write_tif(tmp_path / "three.tif", np.ones((3, 400, 400), np.uint16), origin=(452000.0, 5043000.0))
    _fails(
        _prepare("--scenes", scene, three, "--footprints", fp, "--out", str(out), "--no-ray"),
        "different band counts",
    )
    _fails(_prepare("--scenes", scene, "--out", str(out), "--no-ray"), "--footprints")
    _fails(
        _prepare("--scenes", str(tmp_path / "none.tif"), "--footprints", fp, "--out", str(out), "--no-ray"),
        "does not exist",
    )
    _fails(_prepare("--out", str(out), "--no-ray", "--set", "data.strid=3"), "data.strid", "data.stride")
    _nothing_written(out)


def test_label_raster_on_another_grid(tmp_path, scene_and_footprints, capsys) -> None:
    def _prepare(*args: str) -> subprocess.CompletedProcess[str]:
        return run_here("prepare.py", *args, capsys=capsys)

    scene, _ = scene_and_footprints
    labels = write_tif(tmp_path / "labels.tif", np.zeros((1, 100, 100), np.uint8), crs="EPSG:32633")
    out = tmp_path / "out"
    _fails(
        _prepare("--scenes", scene, "--labels", labels, "--out", str(out), "--no-ray"),
        "labels.tif is not on the grid of",
        "size",
    )
    _nothing_written(out)


def test_footprints_missing_the_scene_warn_and_scene_without_data_fails(
    tmp_path, scene_and_footprints
) -> None:
    scene, _ = scene_and_footprints
    far = tmp_path / "far.geojson"
    far.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[0, 0], [0, 0.001], [0.001, 0.001], [0, 0]]],
                        },
                    }
                ],
            }
        )
    )
    out = tmp_path / "out"
    proc = _prepare("--scenes", scene, "--footprints", str(far), "--out", str(out), "--no-ray", *SMALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: no footprint of" in proc.stderr and "all ground" in proc.stderr
    empty = write_tif(tmp_path / "empty.tif", np.zeros((4, 300, 300), np.uint16), nodata=0)
    out2 = tmp_path / "out2"
    _fails(
        _prepare("--scenes", empty, "--footprints", str(far), "--out", str(out2), "--no-ray"),
        "empty.tif has no valid pixels",
    )
    _nothing_written(out2)


def test_missing_s3_object_and_credentials(tmp_path, s3_bucket, moto_endpoint, scene_and_footprints) -> None:
    _, fp = scene_and_footprints
    out = tmp_path / "out"
    s3 = ["--set", f"storage.endpoint_url={moto_endpoint}", "--no-ray"]
    _fails(
        _prepare("--scenes", f"{s3_bucket}/missing.tif", "--footprints", fp, "--out", str(out), *s3),
        "missing.tif does not exist",
    )
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    proc = _prepare(
        "--scenes", f"{s3_bucket}/missing.tif", "--footprints", fp, "--out", str(out), *s3, env=env
    )
    _fails(proc, "credentials")
    _nothing_written(out)


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> list[dict]:
    """Nine chips as SpaceNet ships them: eight of 900x900 px (0.5 m, 450 m a side) and one
    of 300x280 px, smaller than a training tile, each with its footprints."""
    from resseg_ray.demo.scenes import write_scene
    from resseg_ray.demo.specs import SceneSpec

    root = tmp_path_factory.mktemp("chips")
    specs = [
        SceneSpec(f"chip_{k:02d}", ("urban", "suburban", "village")[k % 3], "alpha", 450, 450, 32633,
                  (452000.0 + 500 * k, 5043000.0), 300 + k)
        for k in range(8)
    ] + [SceneSpec("chip_small", "urban", "alpha", 150, 140, 32633, (460000.0, 5043000.0), 399)]  # fmt: skip
    return [write_scene(s, str(root / f"{s.name}.tif"), str(root / f"{s.name}.geojson")) for s in specs]


def test_a_chip_dataset_holds_out_whole_chips(chips, tmp_path, ray_session) -> None:
    """With the defaults (364 px tiles, 728 px validation blocks) a 900 px chip's one
    validation block would take it all; auto holds out whole chips instead (20 % of the
    pixels: two of the eight large chips), every label raster is written, the chip smaller
    than a tile gives one padded tile (tests/data/test_chip_sets.py trains on such sets)."""
    from resseg_ray.config import load_config
    from resseg_ray.data.prepare import prepare_dataset

    scenes, footprints = [c["scene"] for c in chips], [c["footprints"] for c in chips]
    cfg = load_config()
    assert (cfg.data.split, cfg.data.tile_size, cfg.data.split_block) == ("auto", 364, 728)
    out = tmp_path / "prepared"
    result = prepare_dataset(scenes, str(out), cfg, footprints=footprints)
    desc = json.loads((out / "dataset.json").read_text())
    assert desc["split"]["mode"] == "scenes" and "without a training tile" in desc["split"]["reason"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(
        f"{Path(s).stem}_labels.tif" for s in scenes
    )
    assert_cogs(*scenes, *(out / "labels").iterdir())  # the demo's chips and the label rasters
    by_uri = {s.uri: s for s in result.scenes}
    held = [s for s in result.scenes if s.tiles_val]
    assert all(s.tiles_train == 0 for s in held) and all(
        s.tiles_val == 0 for s in result.scenes if s.tiles_train
    )
    assert len(held) == 2 and all(s.width == 900 for s in held)
    small = by_uri[next(u for u in scenes if "chip_small" in u)]
    assert small.tiles_train + small.tiles_val == 1  # padded, not dropped
    assert desc["tiles"]["train"] > 0

    # the same chips split by blocks: the error says what became of the tiles and what to do
    blocks = load_config(None, ["data.split=blocks"])
    with pytest.warns(UserWarning, match=r"left 8 of 9 scenes \(e.g. 900x900 px\) without a training tile"):
        prepare_dataset(scenes, str(tmp_path / "blocks9"), blocks, footprints=footprints)  # 1 tile left
    with pytest.raises(InputDataError) as e:  # without the small chip, none
        prepare_dataset(scenes[:8], str(tmp_path / "blocks"), blocks, footprints=footprints[:8])
    msg = str(e.value)
    assert msg.startswith("no training tiles: of the ") and "lie in the validation blocks" in msg
    assert "lower data.split_block (728 px" in msg and "data.split=scenes" in msg
    assert not (tmp_path / "blocks").exists() or not list((tmp_path / "blocks").rglob("*.tif"))


def test_a_dataset_prepared_from_a_stac_catalog_over_http(
    tmp_path, scene_and_footprints, small_demo, capsys
) -> None:
    """``--scenes`` as a STAC catalog served over HTTP: the items' COGs are read in place
    (labels on their grid, statistics, tiles), one footprint file per item."""
    from resseg_ray.geo.stac_write import write_scene_catalog
    from resseg_ray.geo.storage import StorageSettings
    from tests.stac_servers import static_server

    scenes = [s.uri for s in small_demo.scenes[:2]]
    write_scene_catalog(scenes, str(tmp_path / "stac"), StorageSettings(), "event")
    footprints = [s.replace(".tif", "_buildings.geojson") for s in scenes]
    out = tmp_path / "out"
    with static_server(str(tmp_path / "stac")) as base:
        proc = run_here("prepare.py", "--scenes", f"{base}/catalog.json", "--footprints", *footprints,
                        "--out", str(out), "--no-ray", *SMALL, capsys=capsys)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    desc = json.loads((out / "dataset.json").read_text())
    assert [s["uri"] for s in desc["scenes"]] == [
        f"{base}/event/{Path(s).stem}/{Path(s).stem}-analytic.tif" for s in scenes
    ]
    assert desc["tiles"]["train"] > 0
    assert_cogs(*(s["label_uri"] for s in desc["scenes"]))
