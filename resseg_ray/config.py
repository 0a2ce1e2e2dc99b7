"""Typed configuration shared by every job: dataclasses loaded from YAML + ``key=value`` overrides.

One config system for the whole project. A configuration file is YAML whose sections
mirror the dataclasses below; ``--set data.stride=100`` style overrides are applied on
top. Unknown keys and values of the wrong type are :class:`~resseg_ray.errors.ConfigError`
naming the dotted field (with a "did you mean" suggestion), never silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from resseg_ray.errors import ConfigError

T = TypeVar("T")


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
    val_fraction: float = 0.2
    """Fraction of each scene's valid area held out for validation, as whole blocks."""
    split_block: int = 728
    """Side of the square blocks the validation area is made of (pixels)."""
    max_nodata_fraction: float = 0.5
    """Tiles with more no-data pixels than this fraction are dropped."""
    seed: int = 0
    """Seed of the train/validation split and of the augmentation draws."""
    stats_block: int = 1024
    """Side of the windows the statistics are computed over (one dask chunk each)."""
    normalization: str = "pooled"
    """``pooled`` (one mean/std over all training scenes) or ``per_scene`` (each scene its own)."""
    loader_batch: int = 32
    """Tiles read and augmented per Ray Data task call."""
    loader_num_cpus: float = 1.0
    """CPUs Ray reserves per loader task (fractions let loaders share cores with training)."""

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.tile_size < self.crop_size:
            raise ConfigError(
                f"data.tile_size ({self.tile_size}) must be >= data.crop_size ({self.crop_size}) >= 1"
            )
        if self.stride < 1:
            raise ConfigError(f"data.stride must be >= 1, got {self.stride}")
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
class Config:
    """The whole configuration of a run."""

    storage: StorageConfig = field(default_factory=StorageConfig)
    data: DataConfig = field(default_factory=DataConfig)


def load_config(path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML configuration (or the defaults when ``path`` is None) and apply overrides.

    ``overrides`` are ``dotted.key=value`` strings; values are parsed as YAML scalars or
    lists (``data.bands=[3,2,1]``).
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {p}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration {p} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration {p} must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides:
        apply_override(raw, item)
    return from_dict(Config, raw)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``raw[a][b] = value`` for an override ``a.b=value`` (in place)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.field=value, e.g. data.stride=100")
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
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"configuration field {where} must be a list, got {value!r}")
        return [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
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
            return float(value)
        raise ConfigError(f"configuration field {where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"configuration field {where} must be a string, got {value!r}")
    if tp is Any:
        return value
    raise TypeError(f"unsupported configuration type {tp!r} at {where}")  # programming error
