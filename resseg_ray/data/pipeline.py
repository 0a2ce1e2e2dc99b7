"""Ray Data pipelines: manifest -> windowed reads from storage -> augmentation -> normalisation.

No chip archive is written: every epoch, Ray Data tasks read each tile's window straight
from the scene and label rasters (local or s3://), augment it as the paper does (redrawn
every epoch), normalise it and hand batches of float32 ``(N, D, crop, crop)`` images and
labels (uint8 in the object store, int64 when iterated as torch batches) to training. The
datasets shard across Ray Train workers (``ray.train.get_dataset_shard``).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from resseg_ray.config import DataConfig
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
    epoch: int | None
    settings: StorageSettings

    def norm(self, scene_uri: str) -> Norm:
        """The normalisation (mean, 1/std) applied to a scene's pixels."""
        return norm_arrays(self.mean.get(scene_uri, self.mean[""]), self.std.get(scene_uri, self.std[""]))


_scene_infos: dict[tuple[str, tuple[int, ...], StorageSettings], SceneInfo] = {}


def _info(uri: str, bands: tuple[int, ...], settings: StorageSettings) -> SceneInfo:
    key = (uri, bands, settings)
    info = _scene_infos.get(key)
    if info is None:
        info = open_scene(uri, settings, bands=list(bands))
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


def read_tiles(batch: dict[str, np.ndarray], spec: SampleSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read and normalise whole tiles of manifest rows: float32 ``(N, D, T, T)``, uint8 labels."""
    n = len(batch["tile_id"])
    th, tw = int(batch["height"][0]), int(batch["width"][0])
    images = np.empty((n, len(spec.bands), th, tw), np.float32)
    labels = np.empty((n, th, tw), np.uint8)
    for i in range(n):
        images[i], labels[i] = _reader({k: v[i] for k, v in batch.items()}, spec)(0, 0, tw, th)
    return images, labels


def _rng_for(spec: SampleSpec, tile_ids: np.ndarray) -> np.random.Generator:
    if spec.epoch is None:
        return np.random.default_rng()  # fresh OS entropy: redrawn every epoch
    digest = hashlib.sha256("|".join(map(str, tile_ids)).encode()).digest()
    return np.random.default_rng([spec.seed, spec.epoch, int.from_bytes(digest[:8], "little")])


def load_samples(batch: dict[str, np.ndarray], spec: SampleSpec) -> dict[str, np.ndarray]:
    """Ray Data UDF: manifest rows -> ``{"image", "label"}`` training samples.

    Training samples are augmented as the paper does, reading only the window each needs;
    validation samples are the centre crop of their tile.
    """
    import torch

    torch.set_num_threads(1)  # one loader task per core; no oversubscription
    n = len(batch["tile_id"])
    crop = spec.crop_size
    tile = int(batch["width"][0])
    images = np.empty((n, len(spec.bands), crop, crop), np.float32)
    labels = np.empty((n, crop, crop), np.uint8)
    params = draw_params(n, tile, crop, _rng_for(spec, batch["tile_id"])) if spec.augment else None
    for i in range(n):
        read = _reader({k: v[i] for k, v in batch.items()}, spec)
        if params is not None:
            images[i], labels[i] = augment_sample(read, tile, crop, params[i])
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
    cfg: DataConfig,
    settings: StorageSettings,
    augment: bool,
    epoch: int | None = None,
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
        seed=cfg.seed,
        epoch=epoch,
        settings=settings,
    )


def build_datasets(
    desc: DatasetDescription,
    cfg: DataConfig,
    settings: StorageSettings,
    splits: tuple[str, ...] = SPLITS,
    epoch: int | None = None,
    limit: int | Mapping[str, int | None] | None = None,
    norm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, Dataset]:
    """Ray datasets of training samples per split (``train`` augmented, ``val`` centre crops).

    ``epoch=None`` redraws augmentation every time a dataset is iterated; an integer makes
    the draws a function of (seed, epoch, tiles) for exact reproduction. ``limit`` keeps
    the first N tiles of each split (after the seeded shuffle), for quick runs; a mapping
    gives each split its own limit (``{"train": 500, "val": None}``).
    """
    import ray

    table = read_manifest(desc, settings)
    # Ray Data's per-operator resource reservation let only one loader task run at a time on
    # a 2-CPU node (measured: 280 -> 490 samples/s with it off); loaders are the only heavy
    # operator here, so let them use every free CPU.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = False
    out: dict[str, Dataset] = {}
    for split in splits:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {SPLITS}")
        rows = table.filter(pa.compute.equal(table["split"], split))
        if rows.num_rows == 0:
            raise InputDataError(f"{desc.manifest_uri} has no {split} tiles; check data.val_fraction")
        order = np.random.default_rng(cfg.seed).permutation(rows.num_rows)
        rows = rows.take(pa.array(order))
        n = limit.get(split) if isinstance(limit, Mapping) else limit
        if n is not None:
            rows = rows.slice(0, n)
        # One block of `loader_batch` manifest rows per loader task, built here (no repartition
        # step re-executed every epoch). from_blocks reads the blocks' metadata here, where
        # from_arrow runs a task per block reserving a whole CPU: beside a service that holds
        # most of a small machine's CPUs (the map page's refinements) those tasks never start.
        step = cfg.loader_batch
        ds: Dataset = ray.data.from_blocks([rows.slice(i, step) for i in range(0, rows.num_rows, step)])
        if split == "train":
            ds = ds.randomize_block_order(seed=None if epoch is None else cfg.seed * 100003 + epoch)
        spec = sample_spec(desc, cfg, settings, augment=(split == "train"), epoch=epoch, norm=norm)
        out[split] = ds.map_batches(
            load_samples,  # type: ignore[arg-type]  # Ray's signature omits fn_kwargs' parameters
            fn_kwargs={"spec": spec},
            batch_size=cfg.loader_batch,
            batch_format="numpy",
            num_cpus=cfg.loader_num_cpus,
            zero_copy_batch=True,
        )
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
