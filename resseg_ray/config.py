"""Typed configuration shared by every job: dataclasses loaded from YAML + ``key=value`` overrides.

One config system for the whole project. A configuration file is YAML whose sections
mirror the dataclasses below; ``--set data.stride=100`` style overrides are applied on
top. Unknown keys and values of the wrong type are :class:`~resseg_ray.errors.ConfigError`
naming the dotted field (with a "did you mean" suggestion), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from resseg_ray.errors import ConfigError

T = TypeVar("T")

BLEND_MODES = ("flat", "linear", "cosine")
"""How overlapping windows are blended: averaged (the paper), or weighted by a linear or
raised-cosine ramp towards the window edges (the authors' code)."""
NORMALIZATIONS = ("pooled", "per_scene")
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
"""Inference runtimes (``--runtime``; :mod:`resseg_ray.runtime`)."""
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Inference precisions (``--precision``)."""
"""``pooled``: one mean/std over all training scenes (the bundle's); ``per_scene``: each
scene's own statistics."""
SPLIT_MODES = ("auto", "blocks", "scenes")
"""How ``prepare`` holds out validation: blocks of each scene, whole scenes, or ``auto``."""
PROB_DTYPES = ("uint8", "float32")
VECTOR_FORMATS = ("geojson", "parquet", "fgb")
"""Building polygon file formats: GeoJSON, GeoParquet, FlatGeobuf (``--vector-format``)."""
"""Probability raster types: ``uint8`` (0-250 = probability x 250, 255 no data) or
``float32`` (NaN no data)."""
_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,2})?")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class StorageConfig:
    """Where S3 URIs are served from. Empty fields fall back to the standard AWS_* variables."""

    endpoint_url: str | None = None
    """S3-compatible endpoint, e.g. ``http://127.0.0.1:9000``; default ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL``, else AWS itself."""
    region: str | None = None
    """Bucket region; default ``AWS_REGION`` / ``AWS_DEFAULT_REGION``."""
    anonymous: bool = False
    """Read public buckets without credentials."""


STAC_ASSETS = ("analytic", "visual", "data")
"""Assets taken from a STAC item when ``stac.asset`` is not given: the first one present."""


@dataclass(frozen=True)
class StacSection:
    """Scenes from STAC: which asset of each item, how many items, and an optional STAC API
    search. Catalogs, collections and items themselves are given where scenes are (``--scenes``)."""

    asset: str | None = None
    """Asset key of the raster to take from each item (``--stac-asset``); default the first of
    :data:`STAC_ASSETS` the item has."""
    max_items: int | None = 10_000
    """Take at most this many items in all (``--stac-max-items``; null: no limit): a bound on
    what a catalog or search that never ends can make a job read."""
    search: str | None = None
    """A STAC API (its landing page URL) to search (``--stac-search``)."""
    bbox: list[float] | None = None
    """Search area: west south east north in degrees (``--bbox``)."""
    datetime: str | None = None
    """Search time: an RFC 3339 instant or interval, open ends as ``..`` (``--datetime``)."""
    collections: list[str] | None = None
    """Search only these collections (``--collections``)."""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str, value: object) -> ConfigError:
            flag = {"asset": "--stac-asset", "max_items": "--stac-max-items", "search": "--stac-search"}.get(
                name, "--" + name
            )
            return ConfigError(f"stac.{name} ({flag}) must be {rule}, got {value!r}")

        if self.asset is not None and not re.fullmatch(r"[\w.:-]{1,128}", self.asset):
            raise bad("asset", "an asset key such as visual or analytic", self.asset)
        if self.max_items is not None and not 1 <= self.max_items <= 1_000_000:
            raise bad("max_items", "an integer from 1 to 1000000", self.max_items)
        if self.search is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.search):
            raise bad("search", "the http(s) URL of a STAC API", self.search)
        searching = (self.bbox, self.datetime, self.collections)
        if self.search is None and any(v is not None for v in searching):
            raise ConfigError(
                "--bbox, --datetime and --collections narrow a STAC API search: give --stac-search"
            )
        if self.bbox is not None:
            ok = len(self.bbox) == 4 and all(_finite(v) for v in self.bbox)
            w, s, e, n = self.bbox if ok else (0, 0, 0, 0)
            if not ok or not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
                raise bad("bbox", "west south east north in degrees (south < north)", self.bbox)
        if self.datetime is not None and not _rfc3339_interval(self.datetime):
            raise bad(
                "datetime",
                "an RFC 3339 time or interval, e.g. 2023-02-06 or 2023-02-06T00:00:00Z/..",
                self.datetime,
            )
        if self.collections is not None and (
            not self.collections or not all(re.fullmatch(r"[\w.:/-]{1,256}", c) for c in self.collections)
        ):
            raise bad("collections", "collection ids", self.collections)


def _rfc3339_interval(value: str) -> bool:
    """An instant (a date or a date-time) or an interval ``a/b`` whose open ends are ``..``/empty."""
    import datetime as dt

    parts = value.split("/")
    if len(parts) > 2 or (len(parts) == 2 and all(p in ("", "..") for p in parts)):
        return False
    for part in parts:
        if len(parts) == 2 and part in ("", ".."):
            continue
        try:
            dt.datetime.fromisoformat(part.replace("z", "Z"))
        except ValueError:
            return False
    return True


@dataclass(frozen=True)
class DataConfig:
    """How scenes become training samples (paper Sec. III-B)."""

    bands: list[int] | None = None
    """1-based band indexes of each scene, in model input order; default every non-alpha band."""
    band_names: list[str] | None = None
    """Names of the model's input bands (default: the scene's band descriptions, else band1..)."""
    tile_size: int = 364
    """Side of the training tiles cut from each scene (pixels)."""
    stride: int = 120
    """Step between neighbouring tiles (pixels)."""
    crop_size: int = 256
    """Side of the samples the network sees (random crop or rotated centre crop)."""
    split: str = "auto"
    """How validation is held out: ``blocks`` (square blocks of every scene, the paper's
    way for large scenes), ``scenes`` (whole scenes, for datasets of many small chips) or
    ``auto`` (blocks, unless they would leave a scene without a training tile or the dataset
    without a validation tile: then scenes, or smaller blocks for a single scene)."""
    val_fraction: float = 0.2
    """Fraction of the valid area held out for validation: of each scene (blocks) or of all
    scenes together (scenes)."""
    split_block: int = 728
    """Side of the square blocks the validation area is made of (pixels, at least ``tile_size``)."""
    max_nodata_fraction: float = 0.5
    """Tiles with more no-data pixels than this fraction are dropped."""
    stats_block: int = 1024
    """Side of the windows the statistics are computed over (one dask chunk each)."""
    normalization: str = "pooled"
    """``pooled`` (one mean/std over all training scenes) or ``per_scene`` (each scene its own)."""
    loader_batch: int = 32
    """Tiles read and augmented per Ray Data task call."""
    loader_num_cpus: float = 1.0
    """CPUs Ray reserves per loader task and per data-preparation task (labels, statistics,
    tiles); fractions let them share cores with training or with a service's replicas."""

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.tile_size < self.crop_size:
            raise ConfigError(
                f"data.tile_size ({self.tile_size}) must be >= data.crop_size ({self.crop_size}) >= 1"
            )
        if self.stride < 1:
            raise ConfigError(f"data.stride must be >= 1, got {self.stride}")
        if self.split not in SPLIT_MODES:
            raise ConfigError(f"data.split must be one of {', '.join(SPLIT_MODES)}, got {self.split!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.split_block < self.tile_size:
            raise ConfigError(
                f"data.split_block ({self.split_block}) must be >= data.tile_size ({self.tile_size}) "
                "so that whole validation tiles fit in a block"
            )
        if not 0.0 <= self.max_nodata_fraction <= 1.0:
            raise ConfigError(f"data.max_nodata_fraction must be in [0, 1], got {self.max_nodata_fraction}")
        if self.stats_block < 64:
            raise ConfigError(f"data.stats_block must be >= 64, got {self.stats_block}")
        if self.normalization not in ("pooled", "per_scene"):
            raise ConfigError(
                f"data.normalization must be 'pooled' or 'per_scene', got {self.normalization!r}"
            )
        if self.loader_batch < 1 or self.loader_num_cpus <= 0:
            raise ConfigError("data.loader_batch must be >= 1 and data.loader_num_cpus > 0")
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise ConfigError(f"data.bands must list 1-based band indexes, got {self.bands}")
        if self.band_names is not None and self.bands is not None and len(self.band_names) != len(self.bands):
            raise ConfigError(
                f"data.band_names has {len(self.band_names)} names for {len(self.bands)} data.bands"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Which network is trained."""

    arch: str = "prop18"
    """Registry name: prop18, prop34, prop50, prop101, prop152, prop200, unet19 or unet35."""
    pretrained: str | None = None
    """Local torchvision ResNet state dict (.pth/.safetensors) to initialise the encoder from."""
    class_names: list[str] = field(default_factory=lambda: ["ground", "building"])
    """Names of the output classes (label value i is class i)."""

    def __post_init__(self) -> None:
        if len(self.class_names) < 2:
            raise ConfigError(f"model.class_names needs at least 2 classes, got {self.class_names}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (paper Sec. III-C/D, IV-B) and what is trained on."""

    dataset: str = "data/demo"
    """Prepared dataset (``jobs/prepare.py --out``): a folder or s3:// prefix. The demo's
    (``data/demo``) is prepared on first use."""
    epochs: int = 200
    """Maximum number of epochs (early stopping usually ends training sooner)."""
    batch_size: int = 8
    """Samples per step on each worker (paper: 8)."""
    lr: float = 0.005
    """Initial learning rate of SGD (paper: 0.005)."""
    momentum: float = 0.9
    """SGD momentum (paper: 0.9)."""
    weight_decay: float = 0.0005
    """L2 penalty lambda on the weights (paper: "weight decay", value not given; 5e-4 as the
    authors' ResNet code)."""
    lr_step_epochs: int = 30
    """Divide the learning rate every this many epochs (paper: 30)."""
    lr_gamma: float = 0.2
    """Factor the learning rate is multiplied by at each step (paper: divided by 5)."""
    patience: int = 10
    """Stop after this many epochs without a decrease of the validation loss (0: never stop early)."""
    min_delta: float = 0.0
    """A decrease smaller than this does not count as one."""
    select: str = "val_loss"
    """Which kept checkpoint becomes the final model: ``val_loss`` (lowest), ``val_f1`` (highest)
    or ``last`` (the last epoch's: a fixed schedule, as the paper's refinement)."""
    time_budget_minutes: float | None = None
    """Stop once another epoch would take the time spent training and validating past this many
    minutes (start-up and checkpoints not counted, restarts included; a re-run with a larger
    budget goes on): an emergency deadline, or equal training time per architecture
    (``bench/paper_tables.py --minutes``). Default: no budget, ``epochs`` and ``patience`` decide."""
    freeze_bn: bool = False
    """Keep BatchNorm layers in inference mode while training: their running statistics stay
    the starting model's (or the scene's, after ``--adapt-bn``) instead of drifting towards the
    few batches of a small annotated area; their scale and shift are still trained."""
    freeze_encoder: bool = False
    """Train the decoder only: the encoder's weights and BatchNorm statistics stay the starting
    model's (a refinement's parent)."""
    l2sp: float = 0.0
    """L2-SP strength alpha (Li et al., 2018): a penalty ``alpha / 2 * ||w - w0||^2`` pulls the
    weights toward those training starts from (a refinement's parent) instead of
    ``weight_decay`` pulling them toward zero, which is then not applied. 0: off."""
    refine_start: str = "parent"
    """A refinement's starting weights: ``parent`` (the model as given) or ``adapted`` (the
    parent with its BatchNorm statistics re-estimated on the scene, as ``finetune --adapt-bn``,
    which also forces it)."""
    rehearsal_tiles: int = 0
    """A refinement's rehearsal: this many training tiles of the parent's own dataset (the one
    its bundle records), drawn once with ``run.seed``, trained on every epoch beside the
    annotated area's tiles, normalised as the parent saw them, so the model keeps seeing what it
    learned from. Never in the held-out blocks of the verdict. 0: off; when the parent's dataset
    cannot be read the refinement says so and goes on without."""
    train_tiles_per_epoch: int | None = None
    """Use only the first N training tiles (in the seeded order) per epoch; default all."""
    val_tiles: int | None = None
    """Validate on only the first N validation tiles; default all."""
    device: str = "auto"
    """``auto`` (the worker's GPU when scaling.use_gpu, else CPU), ``cpu`` or ``cuda``."""
    precision: str = "auto"
    """``auto`` (bf16/fp16 autocast on GPU, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``."""
    channels_last: bool = True
    """Keep activations in channels-last layout (faster on CPU and on tensor cores)."""
    quicklook_samples: int = 4
    """Validation samples drawn in the quicklook PNG logged to MLflow (0: none)."""
    min_gain: float = 0.01
    """A refinement's model ships (is registered, offered on the map page) only when its F1 on
    the annotated pixels kept out of its training beats the parent's, and the parent's with
    BatchNorm re-estimated, by at least this much (0.01 = 1 point); otherwise the better of
    those two is kept."""

    def __post_init__(self) -> None:
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr_step_epochs": self.lr_step_epochs,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {value}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"train.momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.rehearsal_tiles < 0:
            raise ConfigError(f"train.rehearsal_tiles must be >= 0, got {self.rehearsal_tiles}")
        if self.l2sp < 0:
            raise ConfigError(f"train.l2sp must be a strength >= 0, got {self.l2sp}")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"train.lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.patience < 0 or self.min_delta < 0:
            raise ConfigError("train.patience and train.min_delta must be >= 0")
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ConfigError(f"train.time_budget_minutes must be > 0, got {self.time_budget_minutes}")
        if self.refine_start not in ("parent", "adapted"):
            raise ConfigError(f"train.refine_start must be 'parent' or 'adapted', got {self.refine_start!r}")
        if self.select not in ("val_loss", "val_f1", "last"):
            raise ConfigError(f"train.select must be 'val_loss', 'val_f1' or 'last', got {self.select!r}")
        for name in ("train_tiles_per_epoch", "val_tiles"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 (or null for all), got {value}")
        if self.quicklook_samples < 0:
            raise ConfigError(f"train.quicklook_samples must be >= 0, got {self.quicklook_samples}")
        if not 0 <= self.min_gain < 1:
            raise ConfigError(f"train.min_gain must be an F1 difference in [0, 1), got {self.min_gain}")


@dataclass(frozen=True)
class ScalingSection:
    """How many Ray Train workers and what each reserves (Ray Train's ScalingConfig)."""

    num_workers: int = 1
    """Data-parallel workers (DDP processes)."""
    use_gpu: bool = False
    """One GPU per worker (NCCL backend); otherwise CPU workers (gloo backend)."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker; leave some for the Ray Data loaders."""
    torch_threads: int | None = None
    """Intra-op threads of each worker; default the worker's reserved CPUs (at least 1)."""
    worker_resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each worker reserves besides its CPUs/GPU, e.g. ``{train_slot: 1}``
    on nodes started with ``--resources='{"train_slot": 1}'`` puts one worker per node."""

    def __post_init__(self) -> None:
        for name, amount in self.worker_resources.items():
            if name in ("CPU", "GPU", "memory"):
                raise ConfigError(
                    f"scaling.worker_resources: {name} is set by scaling.cpus_per_worker / "
                    "scaling.use_gpu; list only custom resources here"
                )
            if amount <= 0:
                raise ConfigError(f"scaling.worker_resources.{name} must be a number > 0, got {amount!r}")
        if self.num_workers < 1:
            raise ConfigError(f"scaling.num_workers must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"scaling.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"scaling.torch_threads must be >= 1, got {self.torch_threads}")


@dataclass(frozen=True)
class RunSection:
    """Where a training run lives and how it survives failures (Ray Train's RunConfig)."""

    name: str | None = None
    """Run name; re-running with the same name resumes it. Default ``<arch>-<UTC time>``."""
    storage_path: str = "runs"
    """Folder or s3:// prefix for checkpoints and the final bundle (``<storage_path>/<name>/``)."""
    max_failures: int = 2
    """Worker crashes survived per run by restarting from the latest checkpoint (-1: unlimited)."""
    checkpoints_to_keep: int = 2
    """Epoch checkpoints kept (the best models travel inside each, so older ones can go)."""
    seed: int = 0
    """The one seed of everything random (``--seed`` on prepare, train, finetune and
    compare_depths): the weights' initialisation, which tiles and in which order each epoch and
    each worker sees, every augmentation draw, ``prepare``'s train/validation split, the
    placement of random and suggested annotation areas. Two runs with the same seed and
    configuration on CPU give the same metrics (to 1e-6) and weights; GPU kernels may still
    differ from run to run."""

    def __post_init__(self) -> None:
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", self.name):
            raise ConfigError(
                f"run.name {self.name!r} must be 1-128 letters, digits, '_', '.' or '-' (it names a folder)"
            )
        if self.max_failures < -1:
            raise ConfigError(f"run.max_failures must be >= -1, got {self.max_failures}")
        if self.checkpoints_to_keep < 1:
            raise ConfigError(f"run.checkpoints_to_keep must be >= 1, got {self.checkpoints_to_keep}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"run.seed (--seed) must be an integer from 0 to 2**63 - 1, got {self.seed}")


@dataclass(frozen=True)
class MlflowSection:
    """Experiment tracking."""

    tracking_uri: str | None = None
    """MLflow tracking URI; default ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
    working directory. A new experiment of a SQLite store keeps its artifacts (bundles, logged
    models) in ``mlruns/<experiment>`` beside the database file."""
    experiment: str = "resseg-ray"
    """Experiment the runs are grouped in."""
    registered_model: str | None = "resseg-buildings"
    """Model registry name the final bundle is registered under (null: do not register)."""
    alias: str = "best"
    """Registry alias moved to a new version when its validation F1 beats the aliased one."""


@dataclass(frozen=True)
class PredictSection:
    """How scenes are segmented, the one set of options of every stage that does it
    (``jobs/predict.py``, ``evaluate``, ``suggest_annotation``, ``finetune``'s scoring,
    ``compare_depths``' test scenes, the Ray actors and Serve). The jobs' flags of the same
    name (``--window``, ``--overlap``, ...) override these fields."""

    window: int = 512
    """Window side in pixels (``--window``)."""
    overlap: int = 112
    """Overlap of neighbouring windows in pixels (``--overlap``)."""
    blend: str = "flat"
    """Blending of overlapping windows: flat, linear or cosine (``--blend``)."""
    batch_size: int = 4
    """Windows per forward pass (``--batch-size``)."""
    normalization: str | None = None
    """``pooled`` or ``per_scene``; default: as the model was trained (``--normalization``)."""
    adapt_bn: bool = False
    """Re-estimate BatchNorm statistics on each scene's own windows first (``--adapt-bn``)."""
    bands: list[int] | None = None
    """1-based scene band indexes in the model's band order (``--bands``); default the
    scene's non-alpha bands."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``--device``)."""
    runtime: str = "auto"
    """What runs the network: ``torch``, ``openvino``, ``onnxruntime`` (CPU), or ``auto``: the
    fastest here whose masks agree with fp32 PyTorch, measured once per model and machine
    (PyTorch with autocast on CUDA) (``--runtime``)."""
    precision: str = "auto"
    """``fp32``, ``bf16`` (CPUs with AMX or AVX512_BF16 units, CUDA), ``fp16`` (CUDA) or ``auto``:
    bf16 where the device has bf16 units and the masks agree, else fp32 on CPU (``--precision``)."""
    prob: bool = True
    """Write the probability raster besides the mask (``--no-prob`` turns it off)."""
    prob_dtype: str = "uint8"
    """Probability raster type: uint8 or float32 (``--prob-dtype``)."""
    polygons: bool = False
    """Also write the building polygons (``--polygons``)."""
    min_area: float = 10.0
    """Drop polygons smaller than this, in CRS units squared (``--min-area``)."""
    simplify: float = 0.5
    """Polygon simplification tolerance in CRS units; 0 keeps the pixel outlines (``--simplify``)."""
    wgs84: bool = False
    """Polygons in EPSG:4326 instead of the scene's CRS (``--wgs84``)."""
    osm: bool = False
    """Also write the polygons as an OSM XML file for JOSM, never uploadable (``--osm``;
    implies ``polygons``)."""
    vector_format: str = "geojson"
    """Format of the building polygons: geojson, parquet (GeoParquet) or fgb (FlatGeobuf)
    (``--vector-format``; parquet and fgb imply ``polygons``)."""
    regularize: bool = False
    """Square the building outlines: edges aligned to each building's dominant directions,
    right angles (``--regularize``; buildingregulariser)."""
    existing: str | None = None
    """Buildings already mapped (a vector file in any CRS, e.g. an OSM extract): predicted
    buildings overlapping them are left out of the polygons (``--existing``; implies ``polygons``)."""
    existing_overlap: float = 0.3
    """A predicted building is already mapped when its overlap with the existing buildings
    exceeds this share of the smaller one's area (``--existing-overlap``)."""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str, value: object) -> ConfigError:
            flag = "--" + name.replace("_", "-")
            return ConfigError(f"predict.{name} ({flag}) must be {rule}, got {value!r}")

        if not 16 <= self.window <= 16384:
            raise bad("window", "an integer from 16 to 16384 pixels", self.window)
        if not 0 <= self.overlap < self.window:
            raise bad("overlap", f"an integer from 0 to window - 1 = {self.window - 1}", self.overlap)
        if not 1 <= self.batch_size <= 4096:
            raise bad("batch_size", "an integer from 1 to 4096", self.batch_size)
        if self.blend not in BLEND_MODES:
            raise bad("blend", "one of " + ", ".join(BLEND_MODES), self.blend)
        if self.normalization is not None and self.normalization not in NORMALIZATIONS:
            raise bad("normalization", "one of " + ", ".join(NORMALIZATIONS), self.normalization)
        if self.prob_dtype not in PROB_DTYPES:
            raise bad("prob_dtype", "one of " + ", ".join(PROB_DTYPES), self.prob_dtype)
        if self.bands is not None and (
            not self.bands or min(self.bands) < 1 or len(set(self.bands)) != len(self.bands)
        ):
            raise bad("bands", "distinct 1-based band indexes, e.g. 3 2 1 4", self.bands)
        if not _DEVICE.fullmatch(self.device):
            raise bad("device", "auto, cpu, cuda or cuda:N", self.device)
        if self.runtime not in RUNTIMES:
            raise bad("runtime", "one of " + ", ".join(RUNTIMES), self.runtime)
        if self.precision not in PRECISIONS:
            raise bad("precision", "one of " + ", ".join(PRECISIONS), self.precision)
        for name in ("min_area", "simplify"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise bad(name, "a finite number >= 0", value)
        if self.vector_format not in VECTOR_FORMATS:
            raise bad("vector_format", "one of " + ", ".join(VECTOR_FORMATS), self.vector_format)
        if not _finite(self.existing_overlap) or not 0 <= self.existing_overlap < 1:
            raise bad("existing_overlap", "a share from 0 to below 1", self.existing_overlap)
        if self.existing is not None and not self.existing.strip():
            raise bad("existing", "a vector file of buildings already mapped", self.existing)

    @property
    def wants_polygons(self) -> bool:
        """Whether building polygons are written (asked for, needed by ``osm``/``existing``, or in
        a format other than the default chosen)."""
        return self.polygons or self.osm or self.existing is not None or self.vector_format != "geojson"


@dataclass(frozen=True)
class ServeSection:
    """The segmentation service (``serve run serve_app:app``): model, request limits, batching
    and autoscaling of the model replicas."""

    model: str | None = None
    """Bundle path, s3:// bundle or ``models:/`` URI; default the ``RESSEG_MODEL`` environment
    variable, else the demo's model ``runs/demo-prop18/model.resseg.safetensors``."""
    allowed_prefixes: list[str] = field(default_factory=list)
    """``s3://bucket/prefix/`` URIs a request may name (``{"uri": ...}``); empty: none allowed."""
    max_body_mb: float = 512.0
    """Largest request body accepted (413 above)."""
    max_pixels: int = 150_000_000
    """Largest image (width x height) accepted, checked from the header before any pixel is
    decoded (413 above; guards against decompression bombs)."""
    body_idle_timeout_s: float = 10.0
    """A request body that sends nothing for this long is dropped (408), so stalled clients do
    not hold the ingress's slots."""
    body_timeout_s: float = 300.0
    """A request body must arrive within this many seconds (408 after), however it trickles."""
    max_batch_size: int = 8
    """Windows a model replica runs at once (``@serve.batch``), from any requests."""
    batch_wait_timeout_s: float = 0.02
    """How long a replica waits for a batch to fill."""
    min_replicas: int = 1
    """Model replicas kept when idle."""
    max_replicas: int = 2
    """Model replicas at most (autoscaling)."""
    target_ongoing_requests: float | None = None
    """Windows in flight per model replica the autoscaler aims at; default ``max_batch_size``."""
    max_ongoing_requests: int | None = None
    """Windows in flight per model replica at most; default ``2 x max_batch_size`` (a batch
    never exceeds it, and the autoscaler needs room above its target)."""
    max_queued_requests: int = 256
    """Windows waiting for a model replica at most; more are refused (503)."""
    ingress_replicas: int = 1
    """HTTP ingress replicas (they cut images into windows and stitch the results)."""
    ingress_max_ongoing_requests: int = 16
    """Images an ingress replica works on at once; with single-window images a model batch
    fills only when at least ``max_batch_size`` images are in flight, so keep it >= that."""
    ingress_max_queued_requests: int = 8
    """Images waiting for an ingress replica at most; more are answered 503 at once."""
    cpus_per_replica: float = 1.0
    """CPUs reserved per model replica (fractions allowed; its torch threads follow unless
    ``torch_threads`` says otherwise)."""
    torch_threads: int | None = None
    """Intra-op threads of each model replica; default its reserved CPUs (at least 1). On one
    small machine, reserve little (room for the map page's refinements) and use all cores."""
    ingress_cpus: float = 0.5
    """CPUs reserved per ingress replica."""
    use_gpu: bool = False
    """One GPU per model replica."""
    runtime: str = "auto"
    """What runs the network in the model replicas: ``torch``, ``openvino``, ``onnxruntime`` or
    ``auto`` (as ``predict.runtime``; chosen when a replica starts)."""
    precision: str = "auto"
    """The model replicas' precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (as ``predict.precision``)."""
    annotations_dir: str = "runs/annotations"
    """Where the map page's annotations are saved: ``<dir>/<scene id>/v<NNNNNN>.geojson``."""
    api_token: str | None = None
    """When set, every write (saving annotations, starting refinements) needs the header
    ``Authorization: Bearer <token>`` (401 otherwise)."""
    max_annotation_mb: float = 8.0
    """Largest annotation save accepted (413 above)."""
    map_catalogs: list[str] | None = None
    """The map page's scenes: ``catalog.json`` of ``jobs/predict.py`` output folders; default
    ``runs/demo-maps/catalog.json`` when it exists (what ``make demo`` writes), else none."""
    refine_config: str | None = None
    """YAML configuration of the refinements started from the map page (``train`` schedule,
    ``data`` tiling, ``scaling``, ``mlflow``; as ``jobs/finetune.py --config``); default
    ``configs/finetune_demo.yaml`` when it exists, else the defaults."""
    refine_dir: str = "runs/map-refinements"
    """Where the map page's refinements live: ``<dir>/<scene id>/r<N>/`` (record, inputs, run,
    refined map)."""
    max_refine_jobs: int = 1
    """Refinements running at once (all ingress replicas); one more is answered 503."""
    max_refine_epochs: int = 200
    """Most epochs a refinement from the map page may ask for."""
    scenes_dir: str = "runs/map-scenes"
    """Where scenes added at run time (``POST /v1/scenes``: uploads, s3:// URIs, STAC items) and
    their outputs are kept: ``<dir>/<scene id>/``."""
    max_added_scenes: int = 100
    """Scenes that may be added at run time at most (their images are copied to ``scenes_dir``)."""

    def __post_init__(self) -> None:
        if self.max_body_mb <= 0 or self.max_pixels < 1:
            raise ConfigError("serve.max_body_mb and serve.max_pixels must be positive")
        if not 0 < self.body_idle_timeout_s <= self.body_timeout_s:
            raise ConfigError(
                f"serve.body_idle_timeout_s ({self.body_idle_timeout_s}) must be > 0 and <= "
                f"serve.body_timeout_s ({self.body_timeout_s})"
            )
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ConfigError("serve.max_batch_size must be >= 1 and serve.batch_wait_timeout_s >= 0")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(
                f"serve.min_replicas ({self.min_replicas}) must be <= serve.max_replicas "
                f"({self.max_replicas}), and max_replicas >= 1"
            )
        if self.ongoing < self.max_batch_size:
            raise ConfigError(
                f"serve.max_ongoing_requests ({self.ongoing}) is below serve.max_batch_size "
                f"({self.max_batch_size}): batches could never fill; raise it"
            )
        if not 0 < self.target <= self.ongoing:
            raise ConfigError(
                f"serve.target_ongoing_requests ({self.target}) must be in (0, max_ongoing_requests = "
                f"{self.ongoing}]: above it the autoscaler would never see its target and never scale up"
            )
        for p in self.allowed_prefixes:
            if not p.startswith("s3://") or len(p.rstrip("/")) <= len("s3://"):
                raise ConfigError(f"serve.allowed_prefixes: {p!r} is not an s3://bucket[/prefix]")
        if self.max_added_scenes < 0:
            raise ConfigError("serve.max_added_scenes must be >= 0 (0: no scenes added at run time)")
        if self.max_refine_jobs < 0 or self.max_refine_epochs < 1:
            raise ConfigError(
                "serve.max_refine_jobs must be >= 0 (0: no refinements) and serve.max_refine_epochs >= 1"
            )
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"serve.runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"serve.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"serve.torch_threads must be >= 1, got {self.torch_threads}")
        if self.cpus_per_replica <= 0 or self.ingress_cpus < 0 or self.ingress_replicas < 1:
            raise ConfigError(
                "serve.cpus_per_replica must be > 0, serve.ingress_cpus >= 0 and serve.ingress_replicas >= 1"
            )

    @property
    def ongoing(self) -> int:
        """``max_ongoing_requests`` with its default applied."""
        return self.max_ongoing_requests or 2 * self.max_batch_size

    @property
    def target(self) -> float:
        """``target_ongoing_requests`` with its default applied."""
        return self.target_ongoing_requests or float(self.max_batch_size)


@dataclass(frozen=True)
class Config:
    """The whole configuration of a run."""

    storage: StorageConfig = field(default_factory=StorageConfig)
    stac: StacSection = field(default_factory=StacSection)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    run: RunSection = field(default_factory=RunSection)
    mlflow: MlflowSection = field(default_factory=MlflowSection)
    predict: PredictSection = field(default_factory=PredictSection)
    serve: ServeSection = field(default_factory=ServeSection)


MOVED = {"data.seed": "run.seed"}
"""Fields that moved: their old name gets an error naming the new one."""


def load_config(path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML configuration (or the defaults when ``path`` is None) and apply overrides.

    A file may start from another with ``extends: other.yaml`` (relative to the file);
    its sections are merged field by field under the file's own. ``overrides`` are
    ``dotted.key=value`` strings; values are parsed as YAML scalars or lists
    (``data.bands=[3,2,1]``).
    """
    raw: dict[str, Any] = _read_yaml(Path(path), ()) if path is not None else {}
    for item in overrides:
        apply_override(raw, item)
    return from_dict(Config, raw)


def _read_yaml(p: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    try:
        text = p.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"configuration {p} is a folder; give a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration {p} is not YAML text (binary data); give a .yaml file") from None
    if "\0" in text:
        raise ConfigError(f"configuration {p} is not YAML text (it holds NUL bytes); give a .yaml file")
    import yaml  # here: the networks and runtimes import this module where PyYAML may be absent

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise ConfigError(f"configuration {p} is not valid YAML{at}: {problem}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"configuration {p} must be a mapping of sections, got {type(loaded).__name__}")
    base = loaded.pop("extends", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"configuration {p}: 'extends' must be a file name, got {base!r}")
    base_path = (p.parent / base).resolve()
    if base_path in chain or base_path == p.resolve():
        raise ConfigError(f"configuration {p}: 'extends: {base}' forms a cycle")
    merged = _read_yaml(base_path, (*chain, p.resolve()))
    _merge(merged, loaded)
    return merged


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``raw[a][b] = value`` for an override ``a.b=value`` (in place)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.field=value, e.g. data.stride=100")
    import yaml

    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The configuration as plain data (for YAML/JSON artifacts)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and value type."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"configuration field {where or '<root>'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        moved = MOVED.get(_join(where, str(k)))
        if moved:
            raise ConfigError(
                f"configuration field {_join(where, str(k))!r} is now {moved!r}; set that instead"
            )
        close = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f"; did you mean {_join(where, close[0])!r}?" if close else f"; known: {', '.join(fields)}"
        raise ConfigError(f"unknown configuration field {_join(where, str(k))!r}{hint}")
    kwargs = {name: _coerce(hints[name], data[name], _join(where, name)) for name in fields if name in data}
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"configuration field {where} cannot be {value!r}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"configuration field {where} must be a list, got {value!r}")
        return [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"configuration field {where} must be a mapping, got {value!r}")
        return {_coerce(key_tp, k, where): _coerce(item_tp, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"configuration field {where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"configuration field {where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # no field of the project means anything by NaN or inf
                raise ConfigError(f"configuration field {where} must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"configuration field {where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"configuration field {where} must be a string, got {value!r}")
    if tp is Any:
        return value
    raise TypeError(f"unsupported configuration type {tp!r} at {where}")  # programming error
