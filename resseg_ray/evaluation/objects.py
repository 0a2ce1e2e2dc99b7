"""Object-level building F1 (as SpaceNet): predicted and true building polygons matched
one-to-one at IoU >= 0.5."""

from __future__ import annotations

from collections.abc import Sequence

from shapely import STRtree
from shapely.geometry import shape

from resseg_ray.inference.vectorize import PolygonOptions, mask_polygons


def match_polygons(pred: Sequence, truth: Sequence, threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives): each predicted polygon, largest
    first, takes the unmatched true polygon it overlaps most if their IoU >= ``threshold``."""
    tp = len(matched_ious(pred, truth, threshold))
    return tp, len(pred) - tp, len(truth) - tp


def matched_ious(pred: Sequence, truth: Sequence, threshold: float = 0.5) -> list[float]:
    """The IoU of each matched pair of :func:`match_polygons`' one-to-one matching."""
    tree = STRtree(list(truth))
    used: set[int] = set()
    ious: list[float] = []
    for p in sorted(pred, key=lambda g: -g.area):
        best, best_iou = None, threshold
        for i in tree.query(p):
            i = int(i)
            if i in used:
                continue
            t = truth[i]
            inter = p.intersection(t).area
            iou = inter / (p.area + t.area - inter) if inter else 0.0
            if iou >= best_iou:
                best, best_iou = i, iou
        if best is not None:
            used.add(best)
            ious.append(best_iou)
    return ious


def object_scores(mask_path: str, label_path: str, min_area: float = 10.0) -> dict[str, float]:
    """Object precision, recall and F1 of a mask against a label raster (value 1 = building);
    polygons smaller than ``min_area`` (CRS units²) are left out on both sides."""
    options = PolygonOptions(min_area=min_area, simplify=0.0)
    pred = [shape(f["geometry"]) for f in mask_polygons(mask_path, None, options)["features"]]
    truth = [shape(f["geometry"]) for f in mask_polygons(label_path, None, options)["features"]]
    tp, fp, fn = match_polygons(pred, truth)
    precision = tp / (tp + fp) if tp + fp else 1.0 if not truth else 0.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {
        "object_precision": precision,
        "object_recall": recall,
        "object_f1": f1,
        "objects_true": float(len(truth)),
        "objects_pred": float(len(pred)),
    }
