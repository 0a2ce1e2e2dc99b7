"""Whether a refinement ships: its model against its parent on annotated pixels it never saw.

A refinement holds part of the annotated area out of training (the validation blocks of its
dataset: no training tile touches them). Before anything is registered or offered, three
candidates are scored there, each by the project's one windowing path (only the window rows
the blocks need): the parent, the parent with its BatchNorm statistics re-estimated on the
scene, and the refined model. The refined model ships only when its F1 on those pixels (a
damage network's: the xView2 score) beats both others by ``train.min_gain``; otherwise the
better of the other two is kept, and the verdict says so with the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from resseg_ray.errors import InputDataError
from resseg_ray.evaluation.metrics import IGNORE, Confusion
from resseg_ray.geo.scene import SceneInfo, open_scene, read_window
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor

__all__ = ["CANDIDATES", "Verdict", "decide", "score_held_out"]

CANDIDATES = {
    "parent": "the parent model",
    "adapted": "the parent with BatchNorm re-estimated on the scene",
    "refined": "the refined model",
}
"""The models a refinement's verdict chooses between, and how the verdict names them."""


@dataclass(frozen=True)
class Verdict:
    """Which model a refinement keeps, and the held-out figures it was chosen on."""

    chosen: str
    """``refined``, ``adapted`` or ``parent`` (:data:`CANDIDATES`)."""
    f1: dict[str, float]
    """F1 of the building class (a damage network: the xView2 score) on the held-out annotated
    pixels, per candidate."""
    accuracy: dict[str, float]
    pixels: int
    """Held-out annotated pixels scored."""
    blocks: int
    """Held-out blocks they lie in."""
    min_gain: float
    measure: str = "F1"
    """What :attr:`f1` holds, in words (:attr:`~resseg_ray.evaluation.metrics.Confusion.measure`)."""
    building_pixels: int = -1
    """Held-out annotated pixels labelled a building (any damage class); 0: the figures cannot
    tell the models apart, so the parent is kept. -1: not counted (records before it was)."""
    folds: int = 1
    """1: the blocks were kept out of the one refinement; k > 1: they were dealt into k folds,
    each kept out of one of k refinements, and the refined figure pools those refinements'
    predictions on the folds they never saw (``train.folds``)."""

    @property
    def ships(self) -> bool:
        """Whether the refined model is kept (registered, offered on the map page)."""
        return self.chosen == "refined"

    def line(self) -> str:
        """The verdict in one line, with the figures (for the CLI, the page and MLflow)."""
        f = {k: f"{100 * v:.1f}" for k, v in self.f1.items()}
        kept_out = (
            f"{self.blocks} blocks in {self.folds} folds, each kept out of one of {self.folds} refinements"
            if self.folds > 1
            else f"{self.blocks} blocks kept out of training"
        )
        where = f"{self.measure} on {self.pixels} held-out annotated pixels ({kept_out})"
        figures = f"refined {f['refined']}, parent {f['parent']}, BatchNorm re-estimated {f['adapted']}"
        if self.building_pixels == 0:
            return (
                f"kept {CANDIDATES[self.chosen]}: {where}: {figures}, but no building lies in them, so "
                "they cannot tell the models apart; annotate an area with more buildings and refine again"
            )
        if self.ships:
            return f"kept the refined model: {where}: {figures}"
        other = max(("parent", "adapted"), key=lambda k: self.f1[k])
        return (
            f"kept {CANDIDATES[self.chosen]}, not the refined model: {where}: {figures}; the refined "
            f"model must beat {f[other]} by {100 * self.min_gain:.1f} points (train.min_gain) to ship"
        )

    def to_dict(self) -> dict[str, object]:
        """Plain data for records and MLflow."""
        return {
            "chosen": self.chosen,
            "f1": dict(self.f1),
            "accuracy": dict(self.accuracy),
            "pixels": self.pixels,
            "blocks": self.blocks,
            "min_gain": self.min_gain,
            "measure": self.measure,
            "building_pixels": self.building_pixels,
            "folds": self.folds,
            "line": self.line(),
        }


def score_held_out(
    predictor: ScenePredictor,
    scene_uri: str,
    label_uri: str,
    blocks: Sequence[Sequence[int]],
    settings: StorageSettings,
    bands: Sequence[int] | None = None,
) -> Confusion:
    """Segment the rows of a scene that the held-out ``blocks`` (``[col, row, w, h]`` pixel
    windows) need and count the model's pixels against the labels inside the blocks."""
    if not blocks:
        raise InputDataError(f"{scene_uri}: the refinement kept no annotated block out of training")
    scene = open_scene(scene_uri, settings, bands=bands, expected_bands=predictor.info.in_bands)
    labels = open_scene(label_uri, settings, bands=[1])
    inside = _block_mask(scene, blocks)
    r0 = min(b[1] for b in blocks)
    r1 = max(b[1] + b[3] for b in blocks)
    confusion = Confusion.for_model(predictor.info.architecture, predictor.info.num_classes)
    for strip in predictor.strips(scene, settings, predictor.rows_part(scene.height, r0, r1)):
        h = strip.probs.shape[1]
        lab, lvalid = read_window(labels, settings, 0, strip.row, scene.width, h)
        target = lab[0].copy()
        target[~(strip.valid & lvalid & inside[strip.row : strip.row + h])] = IGNORE
        confusion.add(strip.probs.argmax(0), target)
    return confusion


def _block_mask(scene: SceneInfo, blocks: Sequence[Sequence[int]]) -> np.ndarray:
    inside = np.zeros((scene.height, scene.width), bool)
    for c, r, w, h in blocks:
        inside[max(r, 0) : r + h, max(c, 0) : c + w] = True
    return inside


def decide(scores: dict[str, Confusion], blocks: int, min_gain: float, folds: int = 1) -> Verdict:
    """The refined model when its held-out F1 (a damage network: xView2 score) beats the
    parent's and the re-estimated parent's by ``min_gain``; else the better of those two (the
    parent on a tie: nothing changed). Held-out pixels without a building tell nothing: the
    parent. ``folds``: how many refinements the held-out blocks were kept out of (one each)."""
    metrics = {k: c.metrics() for k, c in scores.items()}
    f1 = {k: float(m["f1"]) for k, m in metrics.items()}
    accuracy = {k: float(m["accuracy"]) for k, m in metrics.items()}
    pixels = scores["refined"].pixels
    if pixels == 0:
        raise InputDataError("the held-out annotated blocks hold no labelled pixel to choose a model on")
    buildings = int(scores["refined"].counts[1:, :].sum())  # truth rows: any class but ground
    best_other = max(f1["parent"], f1["adapted"])
    if buildings == 0:
        chosen = "parent"
    elif f1["refined"] >= best_other + min_gain:
        chosen = "refined"
    else:
        chosen = "adapted" if f1["adapted"] > f1["parent"] else "parent"
    measure = scores["refined"].measure
    return Verdict(chosen, f1, accuracy, pixels, blocks, min_gain, measure, buildings, folds)
