"""Object-level F1: one-to-one matching at IoU >= 0.5, from masks and label rasters."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from resseg_ray.evaluation.objects import match_polygons, object_scores
from tests.rasters import write_tif


def test_matching_is_one_to_one_at_iou_half() -> None:
    truth = [box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)]
    pred = [
        box(0, 0, 10, 8),  # IoU 0.8 with truth 0: match
        box(0, 0, 10, 7),  # also overlaps truth 0, which is taken: false positive
        box(20, 0, 24, 10),  # IoU 0.4 with truth 1: false positive
        box(100, 0, 110, 10),  # nothing: false positive
    ]
    assert match_polygons(pred, truth) == (1, 3, 2)


def test_object_scores_from_rasters(tmp_path) -> None:
    labels = np.zeros((1, 60, 60), np.uint8)
    labels[0, 5:15, 5:15] = 1
    labels[0, 30:40, 30:40] = 1
    pred = np.zeros_like(labels)
    pred[0, 5:15, 6:15] = 1  # IoU 0.9: found
    pred[0, 45:55, 45:55] = 1  # hallucinated
    m = write_tif(tmp_path / "m.tif", pred)
    lab = write_tif(tmp_path / "l.tif", labels)
    s = object_scores(m, lab, min_area=1.0)
    assert (s["objects_pred"], s["objects_true"]) == (2, 2)
    assert s["object_precision"] == pytest.approx(0.5) and s["object_recall"] == pytest.approx(0.5)
    assert s["object_f1"] == pytest.approx(0.5)
