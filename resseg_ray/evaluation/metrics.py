"""Segmentation metrics from a confusion matrix, with no-data / ignore pixels left out.

Every metric in the project (validation during training, test-scene evaluation, the
paper's tables) comes from one :class:`Confusion`: a ``C x C`` count matrix with rows =
true class and columns = predicted class. Confusions add, so per-window, per-worker and
per-scene counts combine exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resseg_ray.geo.labels import IGNORE


def confusion_counts(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = IGNORE
) -> np.ndarray:
    """``C x C`` int64 counts of (true, predicted) class pairs over pixels whose label is not ``ignore``."""
    pred = np.asarray(pred).ravel()
    target = np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels but the labels {target.size}")
    keep = target != ignore
    t = target[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if t.size and (t.max() >= num_classes or t.min() < 0):
        raise ValueError(f"label values must be < {num_classes} or {ignore}, found {int(t.max())}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def confusion_counts_torch(pred, target, num_classes: int, ignore: int = IGNORE):
    """Like :func:`confusion_counts` for torch tensors, computed on their device (int64 tensor)."""
    import torch

    keep = target != ignore
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class Confusion:
    """Counts of (true class, predicted class) pixels; ``positive`` is the building class."""

    counts: np.ndarray
    positive: int = 1
    damage: bool = False
    """Whether the classes are a damage network's (background, then the four grades): its
    :meth:`metrics` are then the xView2 score's (:func:`~resseg_ray.evaluation.damage.damage_metrics`)."""

    @classmethod
    def empty(cls, num_classes: int = 2, positive: int = 1, damage: bool = False) -> Confusion:
        """A confusion with no pixels."""
        return cls(np.zeros((num_classes, num_classes), np.int64), positive, damage)

    @classmethod
    def for_model(cls, architecture: str, num_classes: int) -> Confusion:
        """An empty confusion scored as the network ``architecture``'s task is scored."""
        from resseg_ray.models.registry import list_models

        return cls.empty(num_classes, damage=architecture in list_models("damage"))

    @classmethod
    def of(cls, pred: np.ndarray, target: np.ndarray, num_classes: int = 2, positive: int = 1) -> Confusion:
        """The confusion of a predicted class map against labels (255 ignored)."""
        return cls(confusion_counts(pred, target, num_classes), positive)

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.counts + other.counts, self.positive, self.damage)

    def add(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Accumulate another block of pixels in place."""
        self.counts += confusion_counts(pred, target, self.counts.shape[0])

    @property
    def pixels(self) -> int:
        """Pixels counted (ignored ones excluded)."""
        return int(self.counts.sum())

    @property
    def measure(self) -> str:
        """What ``metrics()["f1"]`` is, in words: the building class's F1, or the xView2 score
        over the damage grades present in the truth (:func:`~resseg_ray.evaluation.damage.damage_metrics`)."""
        return "xView2 score of the grades present" if self.damage else "F1"

    def metrics(self) -> dict[str, float]:
        """Building-class precision, recall, F1 and IoU; pixel accuracy; macro F1 over classes.

        A class absent from both labels and prediction scores 1 (nothing to find, nothing
        wrongly found); a class that is only missed or only hallucinated scores 0. For a damage
        network, the xView2 metrics instead (``f1``: the score over the grades present).
        """
        if self.damage:
            from resseg_ray.evaluation.damage import damage_metrics

            return damage_metrics(self.counts)
        cm = self.counts.astype(np.float64)
        total = cm.sum()
        per_class = [_prf(cm, c) for c in range(cm.shape[0])]
        p, r, f1, iou = per_class[self.positive]
        return {
            "precision": p,
            "recall": r,
            "f1": f1,
            "iou": iou,
            "accuracy": float(np.trace(cm) / total) if total else float("nan"),
            "macro_f1": float(np.mean([c[2] for c in per_class])),
        }


def _prf(cm: np.ndarray, c: int) -> tuple[float, float, float, float]:
    tp = cm[c, c]
    fp = cm[:, c].sum() - tp
    fn = cm[c, :].sum() - tp
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn)
    iou = tp / (tp + fp + fn)
    return float(precision), float(recall), float(f1), float(iou)
