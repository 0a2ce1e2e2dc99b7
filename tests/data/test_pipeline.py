"""The Ray Data pipeline: manifest -> windowed reads -> augmentation -> normalisation -> batches."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from resseg_ray.config import load_config
from resseg_ray.data.pipeline import (
    build_datasets,
    epoch_rows,
    epoch_streams,
    iter_torch,
    loader_dataset,
    prefetched_samples,
    read_manifest,
    sample_spec,
    split_rows,
    steps_per_epoch,
    stream_rows,
    worker_rows,
)
from resseg_ray.data.prepare import load_dataset, prepare_dataset
from resseg_ray.geo.scene import open_scene, read_window
from resseg_ray.geo.storage import StorageSettings, filesystem
from tests.helpers import SMALL_DATA

LOCAL = StorageSettings()
CFG = load_config(None, SMALL_DATA)


def _all(ds) -> dict[str, np.ndarray]:
    parts = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in ("image", "label")}


def test_prepared_dataset_layout(small_demo) -> None:
    desc = load_dataset(small_demo.root, LOCAL)
    table = read_manifest(desc, LOCAL)
    assert set(table.column("split").to_pylist()) == {"train", "val"}
    assert table.schema.names[:4] == ["tile_id", "scene_id", "scene_uri", "label_uri"]
    assert pq.read_schema(desc.manifest_uri).names == table.schema.names
    assert desc.band_names == ["blue", "green", "red", "nir"]
    assert len(desc.scenes("train")) == 3 and len(desc.scenes("test")) == 1
    for s in desc.raw["scenes"]:
        labels = open_scene(s["label_uri"], LOCAL, bands=[1])
        assert labels.same_grid(open_scene(s["uri"], LOCAL))


def test_validation_batches_are_normalised_centre_crops(small_demo) -> None:
    desc = load_dataset(small_demo.root, LOCAL)
    ds = build_datasets(desc, CFG.data, LOCAL, splits=("val",))["val"]
    got = _all(ds)
    rows = read_manifest(desc, LOCAL).to_pylist()
    val_rows = [r for r in rows if r["split"] == "val"]
    assert got["image"].shape == (len(val_rows), 4, 64, 64) and got["image"].dtype == np.float32
    assert got["label"].shape == (len(val_rows), 64, 64) and got["label"].dtype == np.uint8
    # Recompute one sample by hand: centre crop of the tile, pooled normalisation.
    mean = np.asarray(desc.statistics.pooled.mean, np.float32)[:, None, None]
    std = np.asarray(desc.statistics.pooled.std, np.float32)[:, None, None]
    expected = []
    for r in val_rows:
        info = open_scene(r["scene_uri"], LOCAL)
        pix, valid = read_window(info, LOCAL, r["col_off"] + 16, r["row_off"] + 16, 64, 64)
        img = (pix.astype(np.float32) - mean) / std
        img[:, ~valid] = 0
        expected.append(img)
    key = lambda a: np.round(a.reshape(len(a), -1).sum(1), 2)  # noqa: E731 - order-free comparison
    np.testing.assert_allclose(np.sort(key(got["image"])), np.sort(key(np.stack(expected))), rtol=1e-5)
    # Normalised images of valid pixels are about zero-mean, unit-variance per band.
    v = got["image"].transpose(1, 0, 2, 3).reshape(4, -1)
    assert np.all(np.abs(v.mean(1)) < 1.0) and np.all((v.std(1) > 0.3) & (v.std(1) < 3))
    assert set(np.unique(got["label"])) <= {0, 1, 255} and (got["label"] == 1).any()


def test_augmentation_is_redrawn_every_epoch_and_follows_the_seed(small_demo) -> None:
    """Each epoch draws new augmentation and a new order; the same (seed, epoch) gives the
    same samples in the same order, however often the dataset is read; another seed differs."""
    desc = load_dataset(small_demo.root, LOCAL)

    def epoch(e: int, seed: int = 0) -> dict[str, np.ndarray]:
        return _all(
            build_datasets(desc, CFG.data, LOCAL, seed=seed, splits=("train",), limit=16, epoch=e)["train"]
        )

    a, b = epoch(1), epoch(2)
    assert a["image"].shape == (16, 4, 64, 64) and a["label"].shape == (16, 64, 64)
    sums = lambda x: np.sort(x["image"].reshape(16, -1).sum(1))  # noqa: E731
    assert not np.allclose(sums(a), sums(b)), "two epochs drew the same augmentation"
    again = epoch(1)
    np.testing.assert_array_equal(a["image"], again["image"])  # same order, same pixels
    np.testing.assert_array_equal(a["label"], again["label"])
    assert not np.array_equal(a["image"], epoch(1, seed=1)["image"])


def test_a_stream_of_epochs_gives_each_epoch_as_its_own_dataset_would(small_demo) -> None:
    """Consecutive epochs in one loader dataset (one executor for the run): each epoch's samples
    are those of that epoch's own dataset, in order, cut to whole batches; a worker's share
    likewise."""
    desc = load_dataset(small_demo.root, LOCAL)
    rows = split_rows(desc, LOCAL, 0, {"train": 21})["train"]
    spec = sample_spec(desc, CFG.data, LOCAL, augment=True, seed=3)
    ((epochs, stream),) = epoch_streams(rows, spec, [1, 2], 0, 1, 8, 5, 0.5)
    assert epochs == [1, 2] and steps_per_epoch(21, 1, 8) == 2
    got = _all(stream)
    assert got["image"].shape[0] == 2 * 16  # 21 tiles: two whole batches of 8 an epoch
    for e in (1, 2):
        own = _all(loader_dataset(stream_rows(rows, 3, [e], 0, 1, 1), spec, 5, 0.5))  # the whole epoch
        np.testing.assert_array_equal(got["image"][16 * (e - 1) : 16 * e], own["image"][:16])
        np.testing.assert_array_equal(got["label"][16 * (e - 1) : 16 * e], own["label"][:16])
    share = stream_rows(rows, 3, [2], 1, 2, 4)  # worker 1 of 2: 10 of its tiles, 2 batches of 4
    assert (
        share.column("tile_id").to_pylist() == epoch_rows(rows, 3, 2, 1, 2).column("tile_id").to_pylist()[:8]
    )
    assert set(share.column("epoch").to_pylist()) == {2}


def test_validation_read_in_the_worker_equals_the_loader_dataset(small_demo) -> None:
    """What a training worker validates on (``prefetched_samples``, read in its own process)
    is what a Ray Data loader of the same rows gives: the same centre crops in the same order,
    in batches of the given size with a short last one."""
    desc = load_dataset(small_demo.root, LOCAL)
    rows = worker_rows(split_rows(desc, LOCAL, 0, {})["val"], 1, 2)
    assert rows.num_rows > 4
    spec = sample_spec(desc, CFG.data, LOCAL, augment=False, seed=0)
    batches = list(prefetched_samples(rows, spec, 4))
    assert [len(b["image"]) for b in batches] == [4] * (rows.num_rows // 4) + (
        [rows.num_rows % 4] if rows.num_rows % 4 else []
    )
    want = _all(loader_dataset(rows, spec, 5, 0.5))
    for key in ("image", "label"):
        np.testing.assert_array_equal(np.concatenate([b[key] for b in batches]), want[key])
    stopped = prefetched_samples(rows, spec, 1, ahead=3)  # left early: its reader thread ends
    next(stopped)
    stopped.close()
    assert list(prefetched_samples(rows.slice(0, 0), spec, 4)) == []


def test_torch_batches_and_worker_shares(small_demo) -> None:
    desc = load_dataset(small_demo.root, LOCAL)
    ds = build_datasets(desc, CFG.data, LOCAL, splits=("train",), limit=24)["train"]
    images, labels = next(iter_torch(ds, batch_size=8))
    assert images.dtype == torch.float32 and images.shape == (8, 4, 64, 64)
    assert labels.dtype == torch.int64 and labels.shape == (8, 64, 64)
    # DDP workers: equal, disjoint shares of the epoch's tiles, dealt anew every epoch
    rows = split_rows(desc, LOCAL, 0, {"train": 25})["train"]
    for e in (1, 2):
        shares = [epoch_rows(rows, 0, e, rank, 2).column("tile_id").to_pylist() for rank in (0, 1)]
        assert [len(x) for x in shares] == [12, 12] and not set(shares[0]) & set(shares[1])
    assert epoch_rows(rows, 0, 1, 0, 2).column("tile_id") != epoch_rows(rows, 0, 2, 0, 2).column("tile_id")
    val = split_rows(desc, LOCAL, 0)["val"]
    parts = [worker_rows(val, r, 2).column("tile_id").to_pylist() for r in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(val.column("tile_id").to_pylist())


def test_scenes_footprints_and_outputs_on_s3(small_demo, s3_bucket, s3_settings) -> None:
    desc = load_dataset(small_demo.root, LOCAL)
    fs = filesystem(s3_bucket, s3_settings)
    scene = desc.scenes("train")[0]["uri"]
    fp = scene.replace(".tif", "_buildings.geojson")
    fs.put_file(scene, f"{s3_bucket}/raw/a.tif")
    fs.put_file(fp, f"{s3_bucket}/raw/a.geojson")
    out = prepare_dataset(
        [f"{s3_bucket}/raw/a.tif"],
        f"{s3_bucket}/prepared",
        CFG,
        footprints=[f"{s3_bucket}/raw/a.geojson"],
        settings=s3_settings,
    )
    assert fs.exists(f"{s3_bucket}/prepared/labels/a_labels.tif")
    remote = load_dataset(out.root, s3_settings)
    local_stats = desc.statistics.scenes[scene]
    assert remote.statistics.scenes[f"{s3_bucket}/raw/a.tif"].mean == pytest.approx(local_stats.mean)
    val = _all(build_datasets(remote, CFG.data, s3_settings, splits=("val",))["val"])
    assert val["image"].shape[1:] == (4, 64, 64) and len(val["image"]) > 0


POISONED = """
import sys

class HalfImported:  # what a torch import interrupted earlier in this process leaves
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise {error}

sys.modules.pop("torch", None)
sys.meta_path.insert(0, HalfImported())
from resseg_ray.data.pipeline import loader_torch
loader_torch()
print("went on")
"""


@pytest.mark.parametrize(
    ("error", "said"),
    [  # both seen in Ray's worker logs after a failed pipeline's tasks were cancelled
        ('RuntimeError("Only a single TORCH_LIBRARY can be used")', "Only a single TORCH_LIBRARY"),
        ("AttributeError(\"module 'torch' has no attribute '_logging'\")", "module 'torch' has no attribute"),
    ],
)
def test_a_loader_process_that_cannot_import_torch_again_ends(error: str, said: str) -> None:
    """A loader process whose torch import was cut off (a task cancelled mid-import) ends with
    LOADER_LEFT and says why, so that Ray Data runs its task in a new process, instead of
    failing every task it is given after."""
    import subprocess
    import sys

    from resseg_ray.data.pipeline import LOADER_LEFT
    from tests.helpers import ROOT

    proc = subprocess.run([sys.executable, "-c", POISONED.format(error=error)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == LOADER_LEFT and "went on" not in proc.stdout, proc.stderr[-2000:]
    assert f"this loader process cannot import torch again ({said}" in proc.stderr, proc.stderr[-2000:]
