"""What squaring the building outlines (``--regularize``) does to their accuracy.

Each scene is segmented once by ``jobs/predict.py``'s code path; its mask becomes polygons
three ways: the pixel outline, the default output (simplified 0.5 CRS units) and the
regularized outline (buildingregulariser). Each is matched one-to-one to the true
buildings (the footprint vectors, reprojected to the scene; else the polygons of the label
raster) at IoU >= 0.5 as in SpaceNet: object
precision, recall, F1, and the mean IoU of the matched pairs. Also: the share of corners
within 5 degrees of a right angle (how square the outlines are), vertices per building, the
IoU of each regularized building with its unregularized outline, and seconds per scene.
(A pixel outline's staircase counts as right angles: its vertex count tells it apart.)

    python -m bench.regularize                   # the demo model on the demo's test scenes
    python -m bench.regularize --model m.resseg.safetensors --scenes a.tif --labels a_labels.tif

Prints a table and writes JSON (default bench/results/regularize.json).
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np
from shapely.geometry import shape

from bench.results_io import machine, write_results
from resseg_ray.config import PredictSection
from resseg_ray.evaluation.objects import matched_ious
from resseg_ray.geo.storage import StorageSettings, scene_stem
from resseg_ray.inference.batch import predict_scene
from resseg_ray.inference.outputs import OutputOptions
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.vectorize import PolygonOptions, mask_polygons
from resseg_ray.models.bundle import load_bundle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAYS = {
    "pixel outline": PolygonOptions(min_area=10.0, simplify=0.0),
    "simplified (default)": PolygonOptions(min_area=10.0),
    "regularized": PolygonOptions(min_area=10.0, regularize=True),
}


def corners(polygon) -> list[float]:
    """Corner angles (degrees) of a polygon's exterior rings, nearly straight vertices left out."""
    out = []
    for part in getattr(polygon, "geoms", [polygon]):
        pts = np.asarray(part.exterior.coords)[:-1]
        for i in range(len(pts)):
            u, v = pts[i - 1] - pts[i], pts[(i + 1) % len(pts)] - pts[i]
            norm = np.linalg.norm(u) * np.linalg.norm(v)
            if norm == 0:
                continue
            angle = float(np.degrees(np.arccos(np.clip(np.dot(u, v) / norm, -1, 1))))
            if angle < 170:
                out.append(angle)
    return out


def polygons(path: str, options: PolygonOptions) -> tuple[list, float]:
    start = time.perf_counter()
    fc = mask_polygons(path, None, options)
    return [shape(f["geometry"]) for f in fc["features"]], time.perf_counter() - start


def default_truth(scene: str) -> str:
    """The scene's footprint vectors beside it, else the demo's label raster of the scene."""
    vectors = os.path.join(os.path.dirname(scene), f"{scene_stem(scene)}_buildings.geojson")
    return (
        vectors
        if os.path.exists(vectors)
        else os.path.join(ROOT, "data/demo/labels", f"{scene_stem(scene)}_labels.tif")
    )


def true_buildings(uri: str, mask: str, settings: StorageSettings) -> list:
    """True building polygons in the mask's CRS, at least 10 units² like the predictions."""
    import rasterio
    import rasterio.warp

    from resseg_ray.geo.labels import read_footprints

    if uri.lower().endswith((".tif", ".tiff")):
        return polygons(uri, PolygonOptions(min_area=10.0, simplify=0.0))[0]
    footprints = read_footprints(uri, settings)
    with rasterio.open(mask) as ds:
        crs, bounds = ds.crs, ds.bounds
    geoms = [shape(g) for g in rasterio.warp.transform_geom(footprints.crs, crs, footprints.geometries)]
    from shapely.geometry import box

    inside = box(*bounds)
    return [g for g in geoms if g.area >= 10.0 and g.intersects(inside)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.path.join(ROOT, "runs/demo-prop18/model.resseg.safetensors"))
    p.add_argument(
        "--scenes", nargs="+", default=sorted(glob.glob(os.path.join(ROOT, "data/demo/scenes/test/*.tif")))
    )
    p.add_argument(
        "--truth",
        nargs="+",
        help="true footprints (vector files) or label rasters in the order of --scenes "
        "(default: <stem>_buildings.geojson beside each scene, else the demo's label rasters)",
    )
    p.add_argument("--out", default=os.path.join(ROOT, "bench/results/regularize.json"))
    args = p.parse_args()
    labels = args.truth or [default_truth(s) for s in args.scenes]
    if not os.path.exists(args.model) or not args.scenes:
        sys.exit("error: needs a model and scenes: run `make demo` first (or give --model and --scenes)")
    predictor = ScenePredictor(load_bundle(args.model), PredictSection(device="cpu"))
    settings = StorageSettings()
    per_scene: dict[str, dict] = {}
    totals = {
        way: {"tp": 0, "fp": 0, "fn": 0, "ious": [], "angles": [], "vertices": [], "seconds": 0.0}
        for way in WAYS
    }
    vs_unregularized: list[float] = []
    with tempfile.TemporaryDirectory(prefix="resseg-bench-") as tmp:
        for scene, label in zip(args.scenes, labels, strict=True):
            report = predict_scene(predictor, scene, tmp, settings, OutputOptions(prob=False), overwrite=True)
            truth = true_buildings(label, report.outputs["mask"], settings)
            row: dict[str, dict] = {}
            shapes: dict[str, list] = {}
            for way, options in WAYS.items():
                pred, secs = polygons(report.outputs["mask"], options)
                shapes[way] = pred
                ious = matched_ious(pred, truth)
                tp, fp, fn = len(ious), len(pred) - len(ious), len(truth) - len(ious)
                t = totals[way]
                t["tp"], t["fp"], t["fn"] = t["tp"] + tp, t["fp"] + fp, t["fn"] + fn
                t["ious"] += ious
                t["seconds"] += secs
                for g in pred:
                    t["angles"] += corners(g)
                    t["vertices"].append(
                        sum(len(part.exterior.coords) - 1 for part in getattr(g, "geoms", [g]))
                    )
                row[way] = {
                    "object_f1": 2 * tp / max(2 * tp + fp + fn, 1),
                    "mean_iou": float(np.mean(ious)) if ious else 0.0,
                    "buildings": len(pred),
                    "seconds": round(secs, 3),
                }
            for a, b in zip(shapes["regularized"], shapes["simplified (default)"], strict=False):
                vs_unregularized.append(a.intersection(b).area / max(a.union(b).area, 1e-9))
            per_scene[scene_stem(scene)] = {"true_buildings": len(truth), **row}
            print(
                f"{scene_stem(scene)}: {len(truth)} true buildings, "
                + ", ".join(f"{w} F1 {r['object_f1']:.3f}" for w, r in row.items()),
                flush=True,
            )
    summary: dict[str, dict] = {}
    print(
        f"\n{'outline':<22} {'obj P':>6} {'obj R':>6} {'obj F1':>7} {'mean IoU':>9} {'square':>7} "
        f"{'vertices':>9} {'s':>6}"
    )
    for way, t in totals.items():
        tp, fp, fn = t["tp"], t["fp"], t["fn"]
        angles = np.asarray(t["angles"])
        s = {
            "object_precision": tp / max(tp + fp, 1),
            "object_recall": tp / max(tp + fn, 1),
            "object_f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "mean_matched_iou": float(np.mean(t["ious"])) if t["ious"] else 0.0,
            "right_angle_share": float(np.mean(np.abs(angles - 90) <= 5)) if angles.size else 0.0,
            "mean_vertices": float(np.mean(t["vertices"])) if t["vertices"] else 0.0,
            "seconds": round(t["seconds"], 2),
        }
        summary[way] = s
        print(
            f"{way:<22} {s['object_precision']:6.3f} {s['object_recall']:6.3f} {s['object_f1']:7.3f} "
            f"{s['mean_matched_iou']:9.3f} {s['right_angle_share']:7.1%} {s['mean_vertices']:9.1f} "
            f"{s['seconds']:6.2f}"
        )
    iou = float(np.mean(vs_unregularized)) if vs_unregularized else 0.0
    print(f"IoU of each regularized building with its simplified outline: mean {iou:.3f}")
    write_results(
        args.out,
        {
            "machine": machine(),
            "args": vars(args),
            "summary": summary,
            "scenes": per_scene,
            "regularized_vs_simplified_iou": iou,
        },
    )


if __name__ == "__main__":
    main()
