"""What a training run checks before any worker starts: the architecture, the data set
against the configuration it was prepared with, the task (a damage network on a damage data
set), and every scene and label raster (headers only)."""

from __future__ import annotations

import difflib

from resseg_ray.config import Config, to_dict
from resseg_ray.data.prepare import DATASET_FILE, DatasetDescription
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings, join_uri

#: Data settings that must equal the ones the dataset was prepared with.
TILING_FIELDS = (
    "tile_size",
    "stride",
    "split",
    "val_fraction",
    "split_block",
    "max_nodata_fraction",
    "bands",
)


def check_arch(name: str) -> None:
    """A clear error naming model.arch when it is not a registered architecture."""
    from resseg_ray.models.registry import list_models

    known = list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"model.arch {name!r} is not an architecture; {hint}known: {', '.join(known)}")


def check_data_config(cfg: Config, desc: DatasetDescription) -> None:
    prepared = desc.raw.get("data", {})
    ours = to_dict(cfg.data)
    for name in TILING_FIELDS:
        if name == "bands" and ours[name] is None:
            continue
        if name in prepared and prepared[name] != ours[name]:
            raise ConfigError(
                f"data.{name}={ours[name]!r} but {join_uri(desc.root, DATASET_FILE)} was prepared with "
                f"{prepared[name]!r}; use the configuration the dataset was prepared with, or re-run "
                "jobs/prepare.py --force with this one"
            )
    tiles = desc.raw.get("tiles", {})
    if "val" in tiles and not int(tiles["val"] or 0) and cfg.train.select != "last":
        raise ConfigError(
            f"{desc.root} holds no validation tiles (data.val_fraction=0), so no epoch can be chosen "
            f"on them (train.select={cfg.train.select}): set train.select=last, or prepare it with "
            "a data.val_fraction above 0"
        )
    # every worker drops its last incomplete batch: fewer tiles than one batch per worker
    # would train nothing at all, silently
    n_train = int(desc.raw.get("tiles", {}).get("train", 0) or 0)
    if cfg.train.train_tiles_per_epoch:
        n_train = min(n_train, cfg.train.train_tiles_per_epoch)
    per_worker = n_train // cfg.scaling.num_workers
    if per_worker < cfg.train.batch_size:
        raise InputDataError(
            f"{desc.root} holds {n_train} training tiles, {per_worker} per worker: fewer than one batch "
            f"(train.batch_size={cfg.train.batch_size}), so nothing would be trained. Give more data "
            "(a larger annotated area), or lower data.tile_size / data.stride or train.batch_size"
        )


def check_task(cfg: Config, desc: DatasetDescription) -> None:
    """A damage network trains on a damage data set (pre and post bands, the damage classes);
    ``model.init_from`` starts only a damage network."""
    from resseg_ray.data.pairs import CLASS_NAMES
    from resseg_ray.models.registry import model_task

    arch = cfg.model.arch
    if model_task(arch) != "damage":
        if cfg.model.init_from:
            raise ConfigError(
                f"model.init_from starts a damage network from a building model; {arch} is a building "
                "network: choose model.arch=damage-prop<depth>, or drop model.init_from"
            )
        return
    if list(cfg.model.class_names) != CLASS_NAMES:
        raise ConfigError(f"{arch} maps damage: model.class_names must be {CLASS_NAMES}")
    names = desc.band_names
    half = len(names) // 2
    if len(names) % 2 or not all(n.startswith("pre:") for n in names[:half]):
        raise InputDataError(
            f"train.dataset {desc.root} is not a damage data set (its bands are {names}); a damage network "
            "trains on pre/post pairs prepared as one (resseg_ray.data.pairs.prepare_pairs)"
        )


def check_scenes(desc: DatasetDescription, settings: StorageSettings) -> None:
    """Open every training scene and label raster (headers only): missing or unreadable
    files fail here, not in a loader task minutes into training."""
    for scene in desc.scenes("train"):  # prepared: georeferenced, or pixel grids on purpose (xBD)
        open_scene(scene["uri"], settings, bands=desc.bands, georeferenced=False)
        open_scene(scene["label_uri"], settings, bands=[1], georeferenced=False)
