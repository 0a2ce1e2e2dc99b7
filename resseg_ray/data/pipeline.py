"""Ray Data pipelines: manifest -> windowed reads from storage -> augmentation -> normalisation.

No chip archive is written: every epoch, Ray Data tasks (for a small epoch, at most
``data.local_loader_tiles`` per worker: a thread of the training worker) read each tile's
window straight from the scene and label rasters (local or s3://), augment it as the paper
does (redrawn every epoch), normalise it and hand batches of float32 ``(N, D, crop, crop)``
images and labels (uint8 in the object store, int64 as torch batches) to training.

Everything random is a function of ``run.seed``: which tiles a limited epoch uses, each
epoch's order and its share per DDP worker (:func:`epoch_rows`), and each sample's
augmentation (seeded by the seed, the epoch and the tile id). Datasets keep their order
(``preserve_order``), so two runs with the same seed see the same batches.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from resseg_ray.config import DataSection
from resseg_ray.data.augment import augment_sample, draw_params
from resseg_ray.data.prepare import DatasetDescription
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.labels import IGNORE
from resseg_ray.geo.scene import SceneInfo, open_scene, read_window
from resseg_ray.geo.stats import Norm, norm_arrays, normalize
from resseg_ray.geo.storage import StorageSettings, read_bytes

if TYPE_CHECKING:  # Ray Data is imported where datasets are built, not with this module
    from ray.data import Dataset

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SampleSpec:
    """Everything a loader task needs to turn manifest rows into samples (picklable)."""

    bands: tuple[int, ...]
    mean: dict[str, tuple[float, ...]]  # scene URI -> per-band mean ("" = pooled default)
    std: dict[str, tuple[float, ...]]
    crop_size: int
    augment: bool
    seed: int
    """``run.seed``: with a row's ``epoch`` and its tile id, it fixes every augmentation draw."""
    settings: StorageSettings

    def norm(self, scene_uri: str) -> Norm:
        """The normalisation (mean, 1/std) applied to a scene's pixels."""
        return norm_arrays(self.mean.get(scene_uri, self.mean[""]), self.std.get(scene_uri, self.std[""]))


_scene_infos: dict[tuple[str, tuple[int, ...], StorageSettings], SceneInfo] = {}


def _info(uri: str, bands: tuple[int, ...], settings: StorageSettings) -> SceneInfo:
    key = (uri, bands, settings)
    info = _scene_infos.get(key)
    if info is None:
        info = open_scene(uri, settings, bands=list(bands), georeferenced=False)  # prepared: checked then
        _scene_infos[key] = info
    return info


def _reader(row: dict, spec: SampleSpec):
    """A ``read(x0, y0, w, h)`` over one manifest tile: normalised pixels and labels.

    Invalid image pixels become 0 (the mean) and label 255; so do pixels past the scene edge.
    """
    scene = _info(str(row["scene_uri"]), spec.bands, spec.settings)
    label = _info(str(row["label_uri"]), (1,), spec.settings)
    norm = spec.norm(scene.uri)
    c0, r0 = int(row["col_off"]), int(row["row_off"])

    def read(x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        pix, valid = read_window(scene, spec.settings, c0 + x0, r0 + y0, w, h)
        lab, lvalid = read_window(label, spec.settings, c0 + x0, r0 + y0, w, h)
        img = normalize(pix, valid, norm)
        out = lab[0]
        out[~(valid & lvalid)] = IGNORE
        return img, out

    return read


def _rng_for(spec: SampleSpec, tile_id: str, epoch: int) -> np.random.Generator:
    """The augmentation draws of one tile in one epoch: a function of the seed, the epoch and
    the tile id only (not of which task or batch reads it)."""
    digest = hashlib.sha256(str(tile_id).encode()).digest()
    return np.random.default_rng([spec.seed, epoch, int.from_bytes(digest[:8], "little")])


def load_samples(batch: dict[str, np.ndarray], spec: SampleSpec) -> dict[str, np.ndarray]:
    """Ray Data UDF: manifest rows -> ``{"image", "label"}`` samples (:func:`read_samples`),
    in a loader task of its own core."""
    loader_torch().set_num_threads(1)  # one loader task per core; no oversubscription
    return read_samples(batch, spec)


LOADER_LEFT = 75
"""Exit status of a loader process that can no longer import torch (:func:`loader_torch`)."""


def loader_torch():
    """torch, in a loader process that can still import it.

    When a failed pipeline's other tasks are cancelled (Ray Data does), a task cancelled while
    its process was importing torch leaves half of torch registered there, and every later
    import in that process fails ("Only a single TORCH_LIBRARY can be used to register the
    namespace prims", or "partially initialized module 'torch' has no attribute '_logging'"):
    the next training whose loader Ray gives that process would fail with it. A healthy
    process never fails to import torch, so such a process ends instead; Ray Data runs the task
    again in a new one."""
    try:
        import torch
    except Exception as exc:
        sys.stderr.write(f"resseg-ray: this loader process cannot import torch again ({exc}); it ends\n")
        sys.stderr.flush()
        os._exit(LOADER_LEFT)
    return torch


def read_samples(batch: dict[str, np.ndarray], spec: SampleSpec) -> dict[str, np.ndarray]:
    """Manifest rows -> ``{"image", "label"}`` samples, in the calling process.

    Training samples are augmented as the paper does, reading only the window each needs;
    validation samples are the centre crop of their tile.
    """
    n = len(batch["tile_id"])
    crop = spec.crop_size
    tile = int(batch["width"][0])
    images = np.empty((n, len(spec.bands), crop, crop), np.float32)
    labels = np.empty((n, crop, crop), np.uint8)
    for i in range(n):
        read = _reader({k: v[i] for k, v in batch.items()}, spec)
        if spec.augment:  # training rows carry their epoch (:func:`stream_rows`)
            epoch = int(batch["epoch"][i])
            (params,) = draw_params(1, tile, crop, _rng_for(spec, batch["tile_id"][i], epoch))
            images[i], labels[i] = augment_sample(read, tile, crop, params)
        else:
            off = (tile - crop) // 2
            images[i], labels[i] = read(off, off, crop, crop)
    return {"image": images, "label": labels}


def read_manifest(desc: DatasetDescription, settings: StorageSettings) -> pa.Table:
    """The tile manifest of a prepared dataset."""
    data = read_bytes(desc.manifest_uri, settings)
    digest = hashlib.sha256(data).hexdigest()
    if digest != desc.raw.get("manifest_sha256"):
        raise InputDataError(
            f"{desc.manifest_uri} does not match its dataset.json (sha256 {digest[:12]}...); "
            "re-run jobs/prepare.py"
        )
    return pq.read_table(io.BytesIO(data))


def sample_spec(
    desc: DatasetDescription,
    cfg: DataSection,
    settings: StorageSettings,
    augment: bool,
    seed: int,
    norm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> SampleSpec:
    """The loader settings of a prepared dataset under a data configuration; ``norm`` (mean,
    std) replaces the dataset's statistics (a refinement keeps its parent's)."""
    stats = desc.statistics
    mean = {"": tuple(stats.pooled.mean)}
    std = {"": tuple(stats.pooled.std)}
    if norm is not None:
        mean, std = {"": tuple(norm[0])}, {"": tuple(norm[1])}
    elif cfg.normalization == "per_scene":
        for uri, s in stats.scenes.items():
            mean[uri], std[uri] = tuple(s.mean), tuple(s.std)
    elif cfg.normalization != "pooled":
        raise ConfigError(f"data.normalization must be 'pooled' or 'per_scene', got {cfg.normalization!r}")
    return SampleSpec(
        bands=tuple(desc.bands),
        mean=mean,
        std=std,
        crop_size=cfg.crop_size,
        augment=augment,
        seed=seed,
        settings=settings,
    )


def split_rows(
    desc: DatasetDescription,
    settings: StorageSettings,
    seed: int,
    limit: Mapping[str, int | None] | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, pa.Table]:
    """The manifest rows of each split in a seeded order; ``limit`` keeps the first N of a
    split (``{"train": 500, "val": None}``): the same N tiles every epoch. A dataset prepared
    with ``data.val_fraction`` 0 has an empty ``val`` split; any other empty split is an error."""
    table = read_manifest(desc, settings)
    out = {}
    unvalidated = desc.raw.get("data", {}).get("val_fraction") == 0
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {SPLITS}")
        rows = table.filter(pa.compute.equal(table["split"], split))
        if rows.num_rows == 0 and not (split == "val" and unvalidated):
            raise InputDataError(f"{desc.manifest_uri} has no {split} tiles; check data.val_fraction")
        rows = rows.take(pa.array(np.random.default_rng(seed).permutation(rows.num_rows)))
        n = (limit or {}).get(split)
        out[split] = rows if n is None else rows.slice(0, n)
    return out


def epoch_rows(rows: pa.Table, seed: int, epoch: int, rank: int = 0, world: int = 1) -> pa.Table:
    """One DDP worker's training rows of one epoch: the split's rows in an order drawn from
    (seed, epoch), dealt round-robin to ``world`` workers, each the same count (so every
    worker takes the same number of steps)."""
    order = np.random.default_rng([seed, epoch]).permutation(rows.num_rows)
    per_worker = rows.num_rows // world
    return rows.take(pa.array(order[rank::world][:per_worker]))


STREAM_ROWS = 50_000
"""At most this many rows of consecutive epochs go into one loader dataset (:func:`epoch_streams`)."""


def stream_rows(
    rows: pa.Table, seed: int, epochs: Sequence[int], rank: int, world: int, batch_size: int
) -> pa.Table:
    """One DDP worker's training rows of ``epochs``, one epoch after another, each cut to whole
    batches of ``batch_size`` (the steps :func:`steps_per_epoch` gives; a last partial batch is
    never trained on), with an ``epoch`` column for the augmentation draws."""
    n = steps_per_epoch(rows.num_rows, world, batch_size) * batch_size
    parts = []
    for epoch in epochs:
        share = epoch_rows(rows, seed, epoch, rank, world).slice(0, n)
        parts.append(share.append_column("epoch", pa.array(np.full(share.num_rows, epoch, np.int32))))
    return pa.concat_tables(parts) if parts else rows.slice(0, 0)


def steps_per_epoch(train_rows: int, world: int, batch_size: int) -> int:
    """Training steps of each worker in each epoch: the whole batches of its equal share."""
    return (train_rows // world) // batch_size


def reads_in_worker(train_rows: int, world: int, batch_size: int, local_tiles: int) -> bool:
    """Whether each of ``world`` training workers reads its epochs itself (at most
    ``local_tiles``, ``data.local_loader_tiles``, an epoch) instead of through Ray Data loaders."""
    return steps_per_epoch(train_rows, world, batch_size) * batch_size <= local_tiles


def epoch_streams(
    rows: pa.Table,
    spec: SampleSpec,
    epochs: Sequence[int],
    rank: int,
    world: int,
    batch_size: int,
    loader_batch: int,
    num_cpus: float,
) -> Iterator[tuple[Sequence[int], Dataset]]:
    """The loader datasets of one worker's training epochs: consecutive epochs share one
    dataset (up to :data:`STREAM_ROWS` rows), so one Ray Data executor serves them in turn
    instead of one started per epoch, and the next epoch's first batches load while the
    previous one validates. Each epoch is its own order and augmentation (:func:`stream_rows`)."""
    per_epoch = max(1, steps_per_epoch(rows.num_rows, world, batch_size) * batch_size)
    chunk = max(1, STREAM_ROWS // per_epoch)
    for i in range(0, len(epochs), chunk):
        part = list(epochs[i : i + chunk])
        table = stream_rows(rows, spec.seed, part, rank, world, batch_size)
        yield part, loader_dataset(table, spec, loader_batch, num_cpus)


def worker_rows(rows: pa.Table, rank: int = 0, world: int = 1) -> pa.Table:
    """One worker's share of the validation rows (every row validated once across workers)."""
    return rows.take(pa.array(np.arange(rank, rows.num_rows, world)))


def prefetched_samples(
    rows: pa.Table, spec: SampleSpec, batch_size: int, ahead: int = 2
) -> Iterator[dict[str, np.ndarray]]:
    """The samples of ``rows`` in their order, ``batch_size`` at a time, read in this process
    by a background thread that keeps up to ``ahead`` batches ready (GDAL reads release the
    GIL, so reading overlaps the caller's forward passes).

    Validation reads this way: its rows are few and the same every epoch, and training is
    paused while it runs, so a Ray Data executor (an actor started per worker, an execution
    per epoch) would cost more than it overlaps."""
    from concurrent.futures import ThreadPoolExecutor

    parts = [rows.slice(i, batch_size) for i in range(0, rows.num_rows, batch_size)]

    def read(part: pa.Table) -> dict[str, np.ndarray]:
        return read_samples({k: part[k].to_numpy(zero_copy_only=False) for k in part.column_names}, spec)

    with ThreadPoolExecutor(1, thread_name_prefix="resseg-val") as pool:
        pending = [pool.submit(read, p) for p in parts[:ahead]]
        for i in range(len(parts)):
            batch = pending.pop(0).result()
            if i + ahead < len(parts):
                pending.append(pool.submit(read, parts[i + ahead]))
            yield batch


def loader_dataset(rows: pa.Table, spec: SampleSpec, loader_batch: int, num_cpus: float) -> Dataset:
    """A Ray dataset of the samples of ``rows``, in their order (``augment``: the paper's
    augmentation of each row's ``epoch``: :func:`stream_rows`; else the centre crops)."""
    import ray

    from resseg_ray.data.idle_pause import install

    ctx = ray.data.DataContext.get_current()
    install(ctx)  # the executor (in the SplitCoordinator with Ray Train) pauses when idle
    # Ray Data's per-operator resource reservation let only one loader task run at a time on
    # a 2-CPU node (measured: 280 -> 490 samples/s with it off); loaders are the only heavy
    # operator here, so let them use every free CPU.
    ctx.op_resource_reservation_enabled = False
    ctx.execution_options.preserve_order = True  # the same batches in the same order every run
    # One block of `loader_batch` manifest rows per loader task, built here (no repartition
    # step re-executed every epoch). from_blocks reads the blocks' metadata here, where
    # from_arrow runs a task per block reserving a whole CPU: beside a service that holds
    # most of a small machine's CPUs (the map page's refinements) those tasks never start.
    blocks = [rows.slice(i, loader_batch) for i in range(0, rows.num_rows, loader_batch)]
    ds: Dataset = ray.data.from_blocks(blocks or [rows])
    return ds.map_batches(
        load_samples,  # type: ignore[arg-type]  # Ray's signature omits fn_kwargs' parameters
        fn_kwargs={"spec": spec},
        batch_size=loader_batch,
        batch_format="numpy",
        num_cpus=num_cpus,
        zero_copy_batch=True,
    )


def build_datasets(
    desc: DatasetDescription,
    cfg: DataSection,
    settings: StorageSettings,
    seed: int = 0,
    splits: tuple[str, ...] = SPLITS,
    epoch: int = 1,
    limit: int | Mapping[str, int | None] | None = None,
    norm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, Dataset]:
    """Whole-split Ray datasets of one epoch (``train`` augmented and in that epoch's order,
    ``val`` centre crops), for inspection and benchmarks; training builds each worker's share
    per epoch (:func:`epoch_rows`). ``limit`` keeps the first N tiles of each split (after the
    seeded order), or per split with a mapping (``{"train": 500, "val": None}``)."""
    limits = limit if isinstance(limit, Mapping) else {s: limit for s in SPLITS}
    rows = split_rows(desc, settings, seed, limits, splits)
    out: dict[str, Dataset] = {}
    for split in splits:
        train = split == "train"
        spec = sample_spec(desc, cfg, settings, augment=train, seed=seed, norm=norm)
        part = stream_rows(rows[split], seed, [epoch], 0, 1, 1) if train else rows[split]
        out[split] = loader_dataset(part, spec, cfg.loader_batch, cfg.loader_num_cpus)
    return out


def iter_torch(dataset, batch_size: int, drop_last: bool = False, device: str = "cpu") -> Iterator[tuple]:
    """Iterate a dataset (or a Ray Train shard) as ``(float32 images, int64 labels)`` torch batches."""
    import torch

    for batch in dataset.iter_torch_batches(
        batch_size=batch_size,
        dtypes={"image": torch.float32, "label": torch.int64},
        device=device,
        drop_last=drop_last,
    ):
        yield batch["image"], batch["label"]
