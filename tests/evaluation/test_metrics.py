"""Metrics equal hand-computed confusion matrices; ignored pixels count for nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resseg_ray.evaluation.metrics import Confusion, confusion_counts, confusion_counts_torch


def test_hand_computed_confusion_and_metrics() -> None:
    target = np.array([[1, 1, 0, 0], [1, 0, 0, 255]])
    pred = np.array([[1, 0, 0, 1], [1, 0, 1, 1]])
    # valid pixels: 7; tp=2 (0,0),(1,0); fn=1 (0,1); fp=2 (0,3),(1,2); tn=2 (0,2),(1,1)
    c = Confusion.of(pred, target)
    assert c.counts.tolist() == [[2, 2], [1, 2]]
    m = c.metrics()
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert m["iou"] == pytest.approx(2 / 5)
    assert m["accuracy"] == pytest.approx(4 / 7)
    f1_ground = 2 * 2 / (2 * 2 + 1 + 2)
    assert m["macro_f1"] == pytest.approx((m["f1"] + f1_ground) / 2)


def test_confusions_add_exactly_and_torch_agrees() -> None:
    rng = np.random.default_rng(0)
    target = rng.choice([0, 1, 255], size=(3, 50, 50), p=[0.6, 0.3, 0.1])
    pred = rng.integers(0, 2, size=(3, 50, 50))
    whole = Confusion.of(pred, target)
    parts = Confusion.empty()
    for i in range(3):
        parts.add(pred[i], target[i])
    assert np.array_equal(whole.counts, parts.counts)
    assert whole.pixels == int((target != 255).sum())
    t = confusion_counts_torch(torch.from_numpy(pred), torch.from_numpy(target), 2)
    assert np.array_equal(t.numpy(), whole.counts)


def test_absent_class_scores_one_missed_class_zero() -> None:
    ground = np.zeros((4, 4), np.uint8)
    assert Confusion.of(ground, ground).metrics()["f1"] == 1.0
    missed = Confusion.of(ground, np.ones((4, 4), np.uint8)).metrics()
    assert missed["f1"] == 0.0 and missed["recall"] == 0.0 and missed["precision"] == 0.0


def test_bad_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="label values"):
        confusion_counts(np.zeros(3), np.array([0, 1, 7]), 2)
