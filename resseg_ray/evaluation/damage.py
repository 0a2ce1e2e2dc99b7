"""Damage maps scored as the xView2 challenge scores them.

A prediction and its truth are damage rasters on one grid (0 background, 1..4 the classes
of :data:`~resseg_ray.geo.damage_labels.DAMAGE_CLASSES`, 255 no data). Counts are summed over
every pair before any F1 is taken, as the challenge's scorer does:

- localization F1: building (1..4) against background (0), pixel by pixel, over the pixels
  valid in both rasters;
- damage F1: the harmonic mean ``4 / sum(1 / (F1_c + 1e-6))`` of the four classes' F1, on
  the pixels that are buildings in the truth (a building pixel predicted as background is
  missed by its class);
- score: ``0.3 * localization F1 + 0.7 * damage F1``.

An F1 whose precision or recall is 0 is 0 (the challenge's convention), so a class that is
absent from the truth gives a damage F1 near 0: :meth:`DamageCounts.absent` names such
classes so a report can say so. Per building, each truth footprint (a 4-connected region of
one class) takes the damage class that most of its pixels predicted as a building carry
(ties: the milder class), or is missed when none is predicted a building.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from resseg_ray.errors import InputDataError
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES, IGNORE, NUM_DAMAGE_VALUES
from resseg_ray.geo.scene import SceneInfo, open_scene, read_window
from resseg_ray.geo.storage import StorageSettings, scene_stem

LOCALIZATION_WEIGHT = 0.3
"""The localization F1's weight in the score (the damage F1 has the rest)."""
EPSILON = 1e-6
"""Added to each class F1 in the harmonic mean, as the challenge's scorer does."""
MAX_BUILDING_PIXELS = 150_000_000
"""The largest pair (pixels) whose buildings are scored one by one: the truth's footprints are
found on the whole raster at once (about 6 bytes a pixel). Larger pairs are scored by pixels."""

_N = NUM_DAMAGE_VALUES


def _f1(tp: float, fp: float, fn: float) -> float:
    """F1 as the xView2 scorer takes it: 0 when precision or recall is 0 (or undefined)."""
    return 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0


@dataclass
class DamageCounts:
    """What a damage map got right, as counts that add over pairs.

    ``pixels``: ``5 x 5`` counts of (true value, predicted value) over pixels valid in both
    rasters. ``buildings``: ``4 x 5`` counts of truth footprints by (true class 1..4, predicted
    value), predicted 0 meaning missed; None when the buildings were not scored."""

    pixels: np.ndarray = field(default_factory=lambda: np.zeros((_N, _N), np.int64))
    buildings: np.ndarray | None = field(default_factory=lambda: np.zeros((_N - 1, _N), np.int64))

    def __add__(self, other: DamageCounts) -> DamageCounts:
        both = None if self.buildings is None or other.buildings is None else self.buildings + other.buildings
        return DamageCounts(self.pixels + other.pixels, both)

    def localization(self) -> tuple[int, int, int]:
        """(true positive, false positive, false negative) building pixels."""
        cm = self.pixels
        return int(cm[1:, 1:].sum()), int(cm[0, 1:].sum()), int(cm[1:, 0].sum())

    def damage(self, value: int) -> tuple[int, int, int]:
        """(true positive, false positive, false negative) pixels of damage class ``value``
        (1..4), among the truth's building pixels."""
        on_buildings = self.pixels[1:]
        tp = int(on_buildings[value - 1, value])
        return tp, int(on_buildings[:, value].sum()) - tp, int(on_buildings[value - 1].sum()) - tp

    def absent(self) -> list[str]:
        """The damage classes with no pixel in the truth (each F1 of them is 0)."""
        return [name for v, name in enumerate(DAMAGE_CLASSES, 1) if self.pixels[v].sum() == 0]

    def metrics(self) -> dict[str, float | None]:
        """``localization_f1`` (with its precision and recall), ``f1_<class>`` for each damage
        class, ``damage_f1``, ``score``; per building ``building_accuracy``, ``buildings`` and
        ``buildings_missed`` (None when not scored, or no footprint)."""
        tp, fp, fn = self.localization()
        loc = _f1(tp, fp, fn)
        out: dict[str, float | None] = {
            "localization_f1": loc,
            "localization_precision": tp / (tp + fp) if tp + fp else 0.0,
            "localization_recall": tp / (tp + fn) if tp + fn else 0.0,
        }
        f1s = [_f1(*self.damage(v)) for v in range(1, _N)]
        for name, f in zip(DAMAGE_CLASSES, f1s, strict=True):
            out[f"f1_{name}"] = f
        damage = len(f1s) / sum(1.0 / (f + EPSILON) for f in f1s)
        out["damage_f1"] = damage
        out["score"] = LOCALIZATION_WEIGHT * loc + (1 - LOCALIZATION_WEIGHT) * damage
        b = self.buildings
        total = int(b.sum()) if b is not None else 0
        correct = sum(int(b[v - 1, v]) for v in range(1, _N)) if b is not None else 0
        out["building_accuracy"] = correct / total if total else None
        out["buildings"] = float(total) if b is not None else None
        out["buildings_missed"] = float(b[:, 0].sum()) if b is not None else None
        return out


def damage_metrics(counts: np.ndarray) -> dict[str, float]:
    """A damage network's metrics from its ``5 x 5`` pixel confusion: the xView2 ``score``,
    ``localization_f1``, ``damage_f1``, each class's ``f1_<class>``, pixel ``accuracy``, and
    ``f1``, what choosing between models takes (``train.select=val_f1``, early stopping, a
    refinement's verdict): the xView2 score over the damage grades present in the truth.

    The two are equal when every grade is present (a data set's validation blocks). On a few
    held-out blocks of a refinement some grades are absent, and the scorer's F1 of 0 for each
    of them (harmonic mean: damage F1 ~0 whatever the model) would leave the choice to
    localization alone; leaving them out keeps the grades in it."""
    counts = np.asarray(counts)
    m = DamageCounts(counts, None).metrics()
    total = float(counts.sum())
    out = {k: float(v) for k, v in m.items() if v is not None and not k.startswith("building")}
    present = [float(out[f"f1_{name}"]) for v, name in enumerate(DAMAGE_CLASSES, 1) if counts[v].sum()]
    damage = len(present) / sum(1.0 / (f + EPSILON) for f in present) if present else 0.0
    out["damage_f1_present"] = damage
    out["f1"] = LOCALIZATION_WEIGHT * out["localization_f1"] + (1 - LOCALIZATION_WEIGHT) * damage
    out["accuracy"] = float(np.trace(counts)) / total if total else 0.0
    return out


@dataclass
class PairScore:
    """One pair's counts: the prediction's and truth's URIs, its name and the time it took."""

    name: str
    pred_uri: str
    truth_uri: str
    counts: DamageCounts
    seconds: float


@dataclass
class DamageEvaluation:
    """Several pairs' scores; :meth:`total` sums their counts (the challenge's score)."""

    pairs: list[PairScore]

    def total(self) -> DamageCounts:
        """Every pair's counts summed."""
        out = DamageCounts()
        for p in self.pairs:
            out = out + p.counts
        return out


def _checked(values: np.ndarray, valid: np.ndarray, uri: str, role: str) -> np.ndarray:
    """A copy of a block of damage values with invalid pixels set to 255; refused unless each
    value is 0..4 or 255."""
    odd = np.setdiff1d(np.unique(values[valid]), [*range(_N), IGNORE])
    if odd.size:
        raise InputDataError(
            f"{role} {uri} holds values {odd[:5].tolist()}; a damage raster holds 0 (background), "
            f"1..4 ({', '.join(DAMAGE_CLASSES)}) or {IGNORE} (no data)"
        )
    out = values.astype(np.uint8)
    out[~valid] = IGNORE
    return out


def _open_pair(pred_uri: str, truth_uri: str, settings: StorageSettings) -> tuple[SceneInfo, SceneInfo]:
    pred = open_scene(pred_uri, settings, bands=[1], georeferenced=False)
    truth = open_scene(truth_uri, settings, bands=[1], georeferenced=False)
    if not pred.same_grid(truth):
        raise InputDataError(
            f"prediction {pred_uri} ({pred.width}x{pred.height}) is not on the grid of the truth {truth_uri} "
            f"({truth.width}x{truth.height}); pair each prediction with the truth of its scene"
        )
    return pred, truth


def _strips(
    pred: SceneInfo, truth: SceneInfo, settings: StorageSettings, rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The pair's checked values, ``rows`` rows at a time."""
    for r in range(0, truth.height, rows):
        h = min(rows, truth.height - r)
        yield (
            _checked(*_band(pred, settings, r, h), pred.uri, "prediction"),
            _checked(*_band(truth, settings, r, h), truth.uri, "truth"),
        )


def _pixel_counts(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    keep = (p != IGNORE) & (t != IGNORE)
    return np.bincount(t[keep].astype(np.int64) * _N + p[keep], minlength=_N * _N).reshape(_N, _N)


def _band(info: SceneInfo, settings: StorageSettings, row: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    values, valid = read_window(info, settings, 0, row, info.width, height)
    return values[0], valid


def building_counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``4 x 5`` counts of the truth's footprints by (true class, predicted value) for two
    damage arrays (255 no data): a footprint is a 4-connected region of one class; it is
    predicted as the damage class that most of its pixels predicted as a building carry
    (ties: the milder class), or 0 (missed) when none is predicted a building. A footprint whose every pixel
    lacks a prediction is not counted."""
    from scipy import ndimage

    out = np.zeros((_N - 1, _N), np.int64)
    for value in range(1, _N):
        regions, n = ndimage.label(truth == value)
        if n == 0:
            continue
        keep = (regions > 0) & (pred != IGNORE)
        votes = np.bincount(regions[keep].astype(np.int64) * _N + pred[keep], minlength=(n + 1) * _N).reshape(
            n + 1, _N
        )[1:]
        seen = votes.sum(axis=1) > 0
        damage_votes = votes[seen, 1:]
        predicted = np.where(damage_votes.sum(axis=1) > 0, damage_votes.argmax(axis=1) + 1, 0)
        out[value - 1] += np.bincount(predicted, minlength=_N)
    return out


def score_pair(
    pred_uri: str, truth_uri: str, settings: StorageSettings, rows: int = 1024, buildings: bool = True
) -> PairScore:
    """Score one damage prediction against its truth (same grid; georeferenced or not): pixel
    counts ``rows`` rows at a time, or, with ``buildings``, each footprint too from the whole
    rasters read once (pairs of at most :data:`MAX_BUILDING_PIXELS` pixels; larger ones are
    read in strips and get ``buildings=None``)."""
    start = time.perf_counter()
    pred, truth = _open_pair(pred_uri, truth_uri, settings)
    whole = buildings and truth.width * truth.height <= MAX_BUILDING_PIXELS
    counts = DamageCounts(np.zeros((_N, _N), np.int64), None)
    for p, t in _strips(pred, truth, settings, truth.height if whole else rows):
        counts.pixels += _pixel_counts(p, t)
        if whole:
            counts.buildings = building_counts(p, t)
    if counts.pixels.sum() == 0:
        raise InputDataError(
            f"{pred_uri}: no pixel to score: the prediction and the truth {truth_uri} share no valid "
            f"pixel (one of them is no data, or {IGNORE}, everywhere); check the pair"
        )
    name = scene_stem(pred_uri).removesuffix(".png")
    for suffix in ("_damage", "_pred", "_prediction"):
        name = name.removesuffix(suffix)
    return PairScore(name, pred_uri, truth_uri, counts, time.perf_counter() - start)


def score_pairs(
    pairs: Sequence[tuple[str, str]], settings: StorageSettings, buildings: bool = True
) -> DamageEvaluation:
    """Score ``(prediction URI, truth URI)`` pairs (:func:`score_pair`)."""
    return DamageEvaluation([score_pair(p, t, settings, buildings=buildings) for p, t in pairs])
