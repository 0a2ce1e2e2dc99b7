"""How scenes become training samples (``data``)."""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from resseg_ray.config.base import Section
from resseg_ray.config.choices import Normalization, SplitMode
from resseg_ray.errors import ConfigError


class DataSection(Section):
    """How scenes become training samples (paper Sec. III-B)."""

    section = "data"

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
    split: SplitMode = "auto"
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
    normalization: Normalization = "pooled"
    """``pooled`` (one mean/std over all training scenes) or ``per_scene`` (each scene its own)."""
    loader_batch: int = 32
    """Tiles read and augmented per Ray Data task call."""
    loader_num_cpus: float = 1.0
    """CPUs Ray reserves per loader task and per data-preparation task (labels, statistics,
    tiles); fractions let them share cores with training or with a service's replicas."""
    local_loader_tiles: int = 256
    """Training epochs of at most this many tiles per worker are read inside the training
    worker by a background thread (as validation is) instead of by a Ray Data pipeline, whose
    executor actor and loader tasks cost seconds of process start-up and several CPU-seconds
    per run: most of a small refinement's training time. The tiles, their order and their
    augmentation are the same either way. 0: always Ray Data."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.crop_size < 1 or self.tile_size < self.crop_size:
            raise ConfigError(
                f"data.tile_size ({self.tile_size}) must be >= data.crop_size ({self.crop_size}) >= 1"
            )
        if self.stride < 1:
            raise self.bad("stride", ">= 1", self.stride)
        if not 0.0 <= self.val_fraction < 1.0:
            raise self.bad("val_fraction", "in [0, 1)", self.val_fraction)
        if self.split_block < self.tile_size:
            raise ConfigError(
                f"data.split_block ({self.split_block}) must be >= data.tile_size ({self.tile_size}) "
                "so that whole validation tiles fit in a block"
            )
        if not 0.0 <= self.max_nodata_fraction <= 1.0:
            raise self.bad("max_nodata_fraction", "in [0, 1]", self.max_nodata_fraction)
        if self.stats_block < 64:
            raise self.bad("stats_block", ">= 64", self.stats_block)
        if self.local_loader_tiles < 0:
            raise self.bad("local_loader_tiles", ">= 0", self.local_loader_tiles)
        if self.loader_batch < 1 or self.loader_num_cpus <= 0:
            raise ConfigError("data.loader_batch must be >= 1 and data.loader_num_cpus > 0")
        if self.bands is not None and (not self.bands or min(self.bands) < 1):
            raise self.bad("bands", "1-based band indexes", self.bands)
        if self.band_names is not None and self.bands is not None and len(self.band_names) != len(self.bands):
            raise ConfigError(
                f"data.band_names has {len(self.band_names)} names for {len(self.bands)} data.bands"
            )
        return self
