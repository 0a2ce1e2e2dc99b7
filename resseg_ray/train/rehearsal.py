"""A refinement's rehearsal: a few training tiles of the parent's own dataset trained beside
the annotated area's, so the refined model keeps seeing what its parent learned from
(``train.rehearsal_tiles``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pyarrow as pa

from resseg_ray.config import Config
from resseg_ray.data.pipeline import SampleSpec, sample_spec, split_rows
from resseg_ray.data.prepare import DatasetDescription, load_dataset
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.storage import StorageSettings

__all__ = ["add_rehearsal"]


def add_rehearsal(
    rows: dict[str, pa.Table], spec: SampleSpec, cfg: Config, desc: DatasetDescription,
    settings: StorageSettings, source: str | None, log: Callable[[str], None],
) -> tuple[dict[str, pa.Table], SampleSpec]:  # fmt: skip
    """``rows`` (of dataset ``desc``) with ``train.rehearsal_tiles`` training tiles of the
    parent's dataset ``source`` added to the training split (drawn with ``run.seed``; tile ids
    prefixed ``rehearsal-``), and ``spec`` normalising them as the parent saw them; unchanged,
    said in one line, when that dataset cannot be used."""
    skipped = "rehearsal skipped (training on the annotated area alone): the parent's dataset"
    if not source:
        log(f"{skipped} is not recorded in its bundle")
        return rows, spec
    try:
        parent = load_dataset(source, settings)
    except (InputDataError, ConfigError) as exc:
        log(f"{skipped} {source} cannot be read ({exc})")
        return rows, spec
    if tuple(parent.bands) != tuple(desc.bands):
        log(f"{skipped} {source} reads bands {list(parent.bands)}, this scene {list(desc.bands)}")
        return rows, spec
    k = cfg.train.rehearsal_tiles
    extra = split_rows(parent, settings, cfg.run.seed, {"train": k}, splits=("train",))["train"]
    ids = pa.array([f"rehearsal-{t}" for t in extra["tile_id"].to_pylist()], pa.string())
    extra = extra.set_column(extra.schema.get_field_index("tile_id"), "tile_id", ids)
    train = pa.concat_tables([rows["train"], extra.select(rows["train"].column_names)])
    if cfg.data.normalization == "per_scene":  # the parent's scenes with their own statistics
        theirs = sample_spec(parent, cfg.data, settings, augment=True, seed=cfg.run.seed)
        spec = replace(spec, mean={**theirs.mean, **spec.mean}, std={**theirs.std, **spec.std})
    log(
        f"rehearsal: {extra.num_rows} training tiles of the parent's dataset {source} beside the "
        f"area's {rows['train'].num_rows} (train.rehearsal_tiles)"
    )
    return {**rows, "train": train}, spec
