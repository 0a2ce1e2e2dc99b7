"""A refinement's held-out pixels by k-fold cross-validation (``train.folds``).

One held-out share of a small annotated area holds few buildings, so the verdict
(:mod:`resseg_ray.adapt.gate`) would judge on a handful of them. With ``train.folds`` k > 1 the
area's blocks (``data.split_block``) are dealt into k folds
(:func:`~resseg_ray.data.tiling.fold_blocks`: each fold gets its share of the blocks with
buildings), the refinement runs k times, each keeping one fold out of its training and choosing
its epoch there, and the refined model's figure pools each run's predictions on the fold it
never saw: every annotated block is held out once. The model that may ship is refined once
more, on every block, for the median of the k chosen epochs (its dataset has no validation
tiles, so ``train.select: last``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from resseg_ray.adapt.area import AreaLabels
from resseg_ray.config import Config
from resseg_ray.data.prepare import load_dataset, prepare_dataset
from resseg_ray.errors import InputDataError
from resseg_ray.evaluation.metrics import Confusion
from resseg_ray.geo.storage import StorageSettings, normalize_uri
from resseg_ray.models.bundle import ModelBundle, load_bundle_bytes
from resseg_ray.models.source import fetch_bundle_bytes

if TYPE_CHECKING:
    from resseg_ray.train.fit import TrainResult

__all__ = [
    "CrossValidation",
    "cross_validate",
    "every_block",
    "held_out_blocks",
    "prepare_folds",
]


@dataclass
class CrossValidation:
    """The k refinements of a cross-validated refinement, scored on the folds they never saw."""

    confusion: Confusion
    """Their predictions on their own held-out fold, counted together."""
    blocks: list[list[int]]
    """Every fold's blocks (``[col, row, w, h]``): each annotated block that can be held out whole."""
    epochs: list[int]
    """The epoch each run chose on its fold (``train.select``)."""

    @property
    def final_epochs(self) -> int:
        """Epochs of the refinement on every block: the median of the chosen ones, rounded up."""
        return max(1, math.ceil(statistics.median(self.epochs)))


def fold_dataset(rcfg: Config, fold: int) -> str:
    """Where fold ``fold`` (1-based) of a refinement keeps its dataset: beside ``train.dataset``."""
    return f"{rcfg.train.dataset}-fold{fold}"


def every_block(rcfg: Config, epochs: int | None = None) -> Config:
    """The configuration of the last refinement, on every annotated block: no validation share,
    the last epoch kept, no early stopping; ``epochs`` when known (after the folds)."""
    train = rcfg.train.replace(select="last", patience=0, **({"epochs": epochs} if epochs else {}))
    return rcfg.replace(data=rcfg.data.replace(val_fraction=0.0), train=train)


def prepare_folds(
    rcfg: Config, scene_uri: str, written: AreaLabels, area: np.ndarray, settings: StorageSettings
) -> None:
    """Prepare the ``train.folds`` datasets of the annotated ``area`` (a mask on the scene grid),
    fold ``i`` held out in the ``i``-th: an area too small for them is refused here, before
    anything is trained."""
    k, block = rcfg.train.folds, rcfg.data.split_block
    n = _whole_blocks(area, block)
    if n < k:
        raise InputDataError(
            f"train.folds={k}: the annotated area holds {n} whole data.split_block ({block} px) "
            f"blocks, fewer than one per fold: annotate a larger area, or lower train.folds (to at "
            f"most {n}; 1 holds data.val_fraction of the area out once)"
        )
    for i in range(k):
        try:
            prepare_dataset(
                [scene_uri], fold_dataset(rcfg, i + 1), rcfg, labels=[written.refine_uri], settings=settings,
                regions=[written.area_uri] if written.area_uri else None, fold=(k, i),
            )  # fmt: skip
        except InputDataError as exc:
            raise InputDataError(f"train.folds={k}: fold {i + 1}: {exc}; or lower train.folds") from None


def _whole_blocks(mask: np.ndarray, block: int) -> int:
    """How many blocks of the ``block`` px grid lie wholly inside ``mask``."""
    h, w = mask.shape[0] // block, mask.shape[1] // block
    return int(mask[: h * block, : w * block].reshape(h, block, w, block).all(axis=(1, 3)).sum())


def cross_validate(
    rcfg: Config,
    scene_uri: str,
    settings: StorageSettings,
    train: Callable[[Config, dict[str, str]], TrainResult],
    score: Callable[[ModelBundle, list[list[int]]], Confusion],
    log: Callable[[str], None],
) -> CrossValidation:
    """Refine on each fold's dataset (:func:`prepare_folds`) with ``train`` and ``score`` each
    refined model on the blocks its run kept out; the runs are ``<run.name>-fold<i>``, tagged
    ``resseg.fold`` ``<i>/<k>``."""
    k = rcfg.train.folds
    pooled: Confusion | None = None
    blocks: list[list[int]] = []
    epochs: list[int] = []
    for i in range(1, k + 1):
        dataset = fold_dataset(rcfg, i)
        cfg = rcfg.replace(
            train=rcfg.train.replace(dataset=dataset), run=rcfg.run.replace(name=f"{rcfg.run.name}-fold{i}")
        )
        held = held_out_blocks(dataset, scene_uri, settings)
        log(f"fold {i} of {k}: refining without its {len(held)} held-out blocks (train.folds)")
        try:
            result = train(cfg, {"resseg.fold": f"{i}/{k}"})
        except InputDataError as exc:  # e.g. too few training tiles around this fold
            raise InputDataError(f"train.folds={k}: fold {i}: {exc}; or lower train.folds") from None
        model = load_bundle_bytes(fetch_bundle_bytes(result.bundle_uri, settings), result.bundle_uri)
        log(f"fold {i} of {k}: scoring the refined model on its held-out blocks ...")
        counts = score(model, held)
        pooled = counts if pooled is None else pooled + counts
        blocks += held
        epochs.append(int(model.info.extra.get("epoch", result.progress.epochs_done)))
    assert pooled is not None
    return CrossValidation(pooled, blocks, epochs)


def held_out_blocks(dataset: str, scene_uri: str, settings: StorageSettings) -> list[list[int]]:
    """The validation blocks (``[col, row, w, h]``) of a refinement's dataset: annotated pixels
    no training tile touched."""
    desc = load_dataset(dataset, settings)
    (record,) = [s for s in desc.scenes("train") if normalize_uri(s["uri"]) == normalize_uri(scene_uri)]
    return [list(b) for b in record.get("val_blocks", [])]
