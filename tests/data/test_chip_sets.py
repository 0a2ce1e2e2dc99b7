"""Chip datasets as the public building data sets ship them, prepared with the defaults.

SpaceNet 2-5 cut their AOIs into 650 px chips (SpaceNet 4: 900 px), xBD into 1024 px, the
Inria set into 5000 px tiles; small-object sets use 64 px crops. Each set below is written as
real GeoTIFFs with their real file names and label rasters, prepared with the default
configuration (364 px tiles, 728 px validation blocks, ``data.split: auto``) and trained for
one epoch; a single scene too small for any validation block is refused with the reason.

The two split modes (whole chips held out, 6 x 650 px; shrunk blocks, 1 x 900 px) train on Ray
Train as a job does. The other sets train their epoch in this process, through the loader's own
sample function (the Ray Data UDF) and the training step, on the tiles a training's epoch takes
(``train.train_tiles_per_epoch``: the first 48 of the seeded order): what differs between chip
sets is their tiles, and a Ray Train start costs ~20 CPU-seconds here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resseg_ray.errors import InputDataError
from tests.rasters import write_tif


def _chip(root: Path, name: str, w: int, h: int, seed: int, k: int) -> tuple[str, str]:
    """A 3-band uint8 chip of bright roofs on textured ground, and its label raster (0/1)."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((3, h, w), dtype=np.float32) * 12 + 70  # float32: the 5000 px chip
    lab = np.zeros((h, w), np.uint8)
    for _ in range(max(1, w * h // 6000)):
        bw, bh = (int(v) for v in rng.integers(6, 24, size=2))
        x, y = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        lab[y : y + bh, x : x + bw] = 1
        img[:, y : y + bh, x : x + bw] += rng.uniform(60, 110)
    origin = (452000.0 + 3000.0 * k, 5043000.0)
    scene = write_tif(root / name, np.clip(img, 1, 255).astype(np.uint8), nodata=0, origin=origin)
    labels = write_tif(root / f"{Path(name).stem}_mask.tif", lab[None], crs="EPSG:32633", origin=origin)
    return scene, labels


def _names(kind: str, n: int) -> list[str]:
    if kind == "spacenet":
        return [f"RGB-PanSharpen_AOI_2_Vegas_img{1000 + i}.tif" for i in range(n)]
    if kind == "xbd":
        return [f"hurricane-harvey_{i:08d}_post_disaster.tif" for i in range(n)]
    if kind == "inria":
        return [f"austin{i + 1}.tif" for i in range(n)]
    return [f"chip_{i:05d}.tif" for i in range(n)]


# (set, file-name family, chip sides in px)
CHIP_SETS = {
    "6x650": ("spacenet", [650] * 6),
    "4x450": ("spacenet", [450] * 4),
    "3x1024": ("xbd", [1024] * 3),
    "mixed": ("inria", [300, 650, 900, 1024, 2000, 5000]),
    "200x64": ("small", [64] * 200),
    "1x900": ("spacenet", [900]),
}


RUN_TRAINING = {"6x650", "1x900"}
"""The sets trained by the training job's own path (``run_training``: its checks, plan, loop,
MLflow run and bundle), one per split mode; in this process (``scaling.in_process``, Ray
Train's local mode), as a shape of data is what is tested here, not Ray Train's workers."""
TILES = 48
"""Tiles of each split the other sets train and score on."""


def _train_one_epoch_here(root: str, desc: dict) -> None:
    """One epoch on the first :data:`TILES` training tiles of a prepared set (augmented, as the
    loader's UDF makes them), then as many validation tiles scored: finite losses, labelled
    pixels in both."""
    import torch

    from resseg_ray.config import load_config
    from resseg_ray.data.pipeline import load_samples, sample_spec, split_rows, stream_rows
    from resseg_ray.data.prepare import load_dataset
    from resseg_ray.device import DevicePolicy
    from resseg_ray.evaluation.metrics import IGNORE
    from resseg_ray.geo.storage import StorageSettings
    from resseg_ray.models import build_model
    from resseg_ray.train.loop import train_epoch

    data, settings = load_config(None, ["data.crop_size=64"]).data, StorageSettings()
    dataset = load_dataset(root, settings)
    rows = split_rows(dataset, settings, seed=0, limit={"train": TILES, "val": TILES})
    counts = {split: min(TILES, desc["tiles"][split]) for split in ("train", "val")}

    def batches(table, augment: bool) -> list[dict]:
        spec = sample_spec(dataset, data, settings, augment=augment, seed=0)
        if augment:
            table = stream_rows(table, 0, [1], 0, 1, 1)
        cols = {k: np.asarray(v) for k, v in table.to_pydict().items()}
        out = []
        for i in range(0, table.num_rows, 8):
            s = load_samples({k: v[i : i + 8] for k, v in cols.items()}, spec)
            out.append({"image": torch.from_numpy(s["image"]), "label": torch.from_numpy(s["label"]).long()})
        return out

    train, val = batches(rows["train"], True), batches(rows["val"], False)
    assert sum(len(b["image"]) for b in train) == counts["train"]
    assert sum(len(b["image"]) for b in val) == counts["val"]
    assert any((b["label"] != IGNORE).any() for b in train) and any((b["label"] != IGNORE).any() for b in val)
    torch.manual_seed(0)
    policy = DevicePolicy.resolve("cpu")
    net = policy.prepare_model(build_model("prop18", in_bands=3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.005, momentum=0.9)
    done = train_epoch(net, train, optimizer, policy.grad_scaler(), policy)
    assert done["samples"] == counts["train"] and np.isfinite(done["loss_sum"])
    net.eval()
    with torch.inference_mode():
        for b in val:
            loss = torch.nn.functional.cross_entropy(net(policy.prepare_batch(b["image"])), b["label"],
                                                     ignore_index=IGNORE)  # fmt: skip
            assert torch.isfinite(loss)


def _write_set(root: Path, key: str) -> tuple[list[str], list[str]]:
    kind, sides = CHIP_SETS[key]
    root.mkdir(parents=True, exist_ok=True)
    names = _names(kind, len(sides))
    pairs = [
        _chip(root, n, s, s, 17 * i + len(sides), i)
        for i, (n, s) in enumerate(zip(names, sides, strict=True))
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.mark.parametrize(
    ("key", "mode", "block"),
    [
        ("6x650", "scenes", None),
        ("4x450", "scenes", None),
        ("3x1024", "scenes", None),
        ("mixed", "scenes", None),  # blocks would starve the 900 and 1024 px scenes
        ("200x64", "scenes", None),
        ("1x900", "blocks", 484),  # one scene: blocks shrunk until a training tile fits beside one
    ],
)
def test_chip_set_prepares_with_the_defaults_and_trains(
    key, mode, block, tmp_path, ray_session, mlflow_server
) -> None:
    from resseg_ray.config import load_config
    from resseg_ray.data.prepare import prepare_dataset
    from resseg_ray.train.trainer import run_training
    from tests.helpers import small_train_overrides

    scenes, labels = _write_set(tmp_path / "chips", key)
    cfg = load_config()
    out = tmp_path / "prepared"
    result = prepare_dataset(scenes, str(out), cfg, labels=labels)
    desc = json.loads((out / "dataset.json").read_text())
    assert desc["split"]["mode"] == mode, desc["split"]
    assert desc["split"]["block"] == block
    assert desc["data"]["split_block"] == 728  # the configuration as given: training checks it
    assert desc["tiles"]["train"] > 0 and desc["tiles"]["val"] > 0
    if mode == "scenes":
        held = [s for s in result.scenes if s.tiles_val]
        assert held and all(s.tiles_train == 0 for s in held)
        assert all(s.tiles_train + s.tiles_val > 0 for s in result.scenes)  # no chip dropped
    if key == "200x64":  # a chip smaller than a tile: one tile centred on it, padded as no data
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "manifest.parquet").to_pylist()
        assert len(rows) == 200
        assert {(r["col_off"], r["row_off"], r["width"]) for r in rows} == {(-150, -150, 364)}

    if key not in RUN_TRAINING:
        _train_one_epoch_here(str(out), desc)
        return
    # one set tracked in a SQLite store of its own (created in ~2 s), the other on the server
    store = f"sqlite:///{tmp_path / 'mlflow.db'}" if key == "6x650" else mlflow_server
    overrides = small_train_overrides(
        str(out), str(tmp_path / "runs"), store, f"chips-{key}",
        **{"train.epochs": 1, "scaling.num_workers": 1, "scaling.cpus_per_worker": 1,
           "scaling.in_process": True, "data.tile_size": 364, "data.stride": 120, "data.split_block": 728,
           "data.crop_size": 64,
           "train.train_tiles_per_epoch": 8, "train.val_tiles": 4, "train.quicklook_samples": 0,
           "mlflow.registered_model": "null"},
    )  # fmt: skip
    trained = run_training(load_config(None, overrides), log=lambda _: None)
    assert trained.progress.epochs_done == 1
    if store.startswith("sqlite:"):  # artifacts beside the store, not in the job's folder
        run_id = trained.mlflow_run_id
        assert list((tmp_path / "mlruns").glob(f"*/{run_id}/artifacts/config.yaml"))
        assert not list(Path.cwd().glob(f"mlruns/*/{run_id}"))


def test_a_single_scene_too_small_for_any_block_says_why(tmp_path, ray_session) -> None:
    """One 650 px scene: no validation block of 728, 724, 604, 484 or 364 px leaves it a training
    tile; the error names the scene, its size, the blocks tried and what to do, and nothing is
    left behind."""
    from resseg_ray.config import load_config
    from resseg_ray.data.prepare import prepare_dataset

    (tmp_path / "one").mkdir()
    scene, label = _chip(tmp_path / "one", "RGB-PanSharpen_AOI_2_Vegas_img1000.tif", 650, 650, 1, 0)
    out = tmp_path / "prepared"
    with pytest.raises(InputDataError) as e:
        prepare_dataset([scene], str(out), load_config(), labels=[label])
    msg = str(e.value)
    assert (
        msg.startswith("no validation tiles: ")
        and "RGB-PanSharpen_AOI_2_Vegas_img1000.tif (650x650 px)" in msg
    )
    assert "728, 724, 604, 484, 364 px" in msg and "data.val_fraction=0" in msg
    assert not out.exists() or not list(out.rglob("*"))
