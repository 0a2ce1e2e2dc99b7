"""Damage maps: how long a D12-size pair takes against building segmentation of the same size,
and what label-free BatchNorm adaptation gives on the demo's unseen events.

``time``: a pre scene of 6000 x 4500 pixels (4-band uint16, the paper's D12 size) and a post
scene of the same place from another grid, in a temporary folder: random (the post at 0.55 m
against 0.5 m), or with ``--event`` a demo event's pre and post scenes repeated to that size.
In fresh subprocesses, with ``--runtime auto`` and each model's own normalisation: ``resseg
predict``'s code path segments the pre scene (mask and probabilities, then again with
outlines), ``resseg damage``'s maps the pair. The networks are random (seeded) unless
``--models`` gives trained ones: a random network's map, and so the time to outline it,
depends on its draw. Issue 31's goal: the damage map in at most 2.2x the segmentation's time.

``scores``: the demo's damage model (``make demo-damage``) maps the held-out events of
``data/demo-damage`` as it is and with its BatchNorm statistics re-estimated on each pair
(``--adapt-bn``, label-free), scored as xView2 does.

``refine``: the demo's damage model refined on 7 % of each held-out event (``resseg finetune
--pre --post`` with ``configs/finetune_damage_demo.yaml``: the block at the top-left corner,
and blocks at random places), the parent, the parent with BatchNorm re-estimated and the
refined model scored on the rest of the pair, and the model the verdict kept (chosen on the
annotated blocks kept out of training, never on the rest).

    python -m bench.damage time                      # D12 size on this machine
    python -m bench.damage time --event data/demo-damage/scenes/storm_01 --models BUILDINGS DAMAGE
    python -m bench.damage scores                    # after make demo-damage
    python -m bench.damage refine                    # after make demo-damage

Prints a table and writes JSON (default bench/results/damage_<part>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import rasterio
import torch

from bench.results_io import machine, write_results

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from resseg_ray.cli import bound_gdal_cache
bound_gdal_cache()
from resseg_ray.config import PredictSection
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models.bundle import load_bundle
options = PredictSection(runtime="auto", polygons={polygons!r})  # the bundle's normalisation
p = ScenePredictor(load_bundle({bundle!r}), options)
t = time.perf_counter()
engine = p.engine.describe()
setup = time.perf_counter() - t
t = time.perf_counter()
if {post!r}:
    from resseg_ray.inference.damage import map_damage
    map_damage(p, {pre!r}, {post!r}, {out!r}, StorageSettings())
else:
    from resseg_ray.inference.batch import predict_scene
    predict_scene(p, {pre!r}, {out!r}, StorageSettings(), overwrite=True)
seconds = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "setup_s": setup, "engine": engine, "maxrss_mb": rss}}))
"""


def write_scene(path: str, width: int, height: int, res: float, seed: int) -> None:
    """A 4-band uint16 scene with smooth structure plus noise over one place (UTM 33N)."""
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 4, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": rasterio.Affine(res, 0, 452000, 0, -res, 5043000),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate", "nodata": 0,
    }  # fmt: skip
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, height, 512):
            h = min(512, height - r)
            yy, xx = np.mgrid[r : r + h, 0:width] * res
            base = 400 + 200 * np.sin(xx / 18.0) * np.cos(yy / 26.0)
            data = np.stack([base * (1 + 0.2 * b) + rng.normal(0, 30, base.shape) for b in range(4)])
            window = rasterio.windows.Window(0, r, width, h)
            dst.write(np.clip(data, 1, 65535).astype(np.uint16), window=window)


def _child(bundle: str, pre: str, post: str, out: str, polygons: bool = False) -> dict:
    code = CHILD.format(root=ROOT_DIR, bundle=bundle, pre=pre, post=post, out=out, polygons=polygons)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mosaic(src: str, dst: str, width: int, height: int) -> None:
    """``src`` repeated over a ``width`` x ``height`` grid of its resolution from its origin (a
    demo event's pre or post scene as a D12-size one: the places repeat, the pixels are real)."""
    with rasterio.open(src) as s:
        data = s.read()
        profile = {**s.profile, "width": width, "height": height, "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "compress": "deflate"}  # fmt: skip
        profile.pop("photometric", None)
        reps = (1, -(-height // s.height), -(-width // s.width))
    with rasterio.open(dst, "w", **profile) as out:
        out.write(np.tile(data, reps)[:, :height, :width])


def time_part(width: int, height: int, event: str | None = None, models: list[str] | None = None) -> dict:
    """Seconds of building segmentation and of a damage map of one pair of this size: random
    scenes and networks, or (``event``, ``models``) a demo event's pair repeated to this size and
    the trained building and damage networks, whose maps (and so their outlines) are real."""
    from resseg_ray.data.pairs import CLASS_NAMES
    from resseg_ray.models import build_model, save_bundle

    with tempfile.TemporaryDirectory(prefix="resseg-bench-damage-") as d:
        pre, post = os.path.join(d, "event_pre.tif"), os.path.join(d, "event_post.tif")
        if event:
            with rasterio.open(f"{event}_pre.tif") as a, rasterio.open(f"{event}_post.tif") as b:
                scale = a.res[0] / b.res[0]
            mosaic(f"{event}_pre.tif", pre, width, height)
            mosaic(f"{event}_post.tif", post, round(width * scale), round(height * scale))
        else:
            write_scene(pre, width, height, 0.5, 0)
            write_scene(post, round(width * 0.5 / 0.55), round(height * 0.5 / 0.55), 0.55, 1)
        if models:
            b, dmg = models
        else:
            torch.manual_seed(0)
            bands = ["blue", "green", "red", "nir"]
            b, dmg = os.path.join(d, "b.resseg.safetensors"), os.path.join(d, "d.resseg.safetensors")
            save_bundle(
                b, build_model("prop18", 4), norm_mean=[500.0] * 4, norm_std=[200.0] * 4, band_names=bands
            )
            save_bundle(
                dmg, build_model("damage-prop18", 8, num_classes=5), norm_mean=[500.0] * 8,
                norm_std=[200.0] * 8, band_names=[f"{w}:{n}" for w in ("pre", "post") for n in bands],
                class_names=CLASS_NAMES,
            )  # fmt: skip
        seg = _child(b, pre, "", os.path.join(d, "seg"))
        outlined = _child(b, pre, "", os.path.join(d, "outlined"), polygons=True)
        damage = _child(dmg, pre, post, os.path.join(d, "damage"))
        for r, folder in ((seg, "seg"), (outlined, "outlined"), (damage, "damage")):  # what was vectorised
            found = [f for f in os.listdir(os.path.join(d, folder)) if f.endswith(".geojson")]
            r["buildings"] = None  # predict writes outlines only when asked (--polygons)
            for name in found:
                with open(os.path.join(d, folder, name)) as f:
                    r["buildings"] = len(json.load(f)["features"])
    ratio = damage["seconds"] / seg["seconds"]
    print(f"{'':<24} {'seconds':>8} {'setup s':>8} {'peak MB':>8} {'outlines':>8}  engine")
    for name, r in (("buildings", seg), ("buildings + outlines", outlined), ("damage", damage)):
        outlines = "-" if r["buildings"] is None else r["buildings"]
        figures = f"{r['seconds']:8.1f} {r['setup_s']:8.1f} {r['maxrss_mb']:8.0f} {outlines:>8}"
        print(f"{name:<24} {figures}  {r['engine']}")
    with_outlines = damage["seconds"] / outlined["seconds"]
    print(f"damage / buildings: {ratio:.2f}x (goal: at most 2.2x); "
          f"damage / buildings with outlines (damage always writes them): {with_outlines:.2f}x")  # fmt: skip
    return {"size": [width, height], "event": event, "models": models, "buildings": seg,
            "buildings_outlined": outlined, "damage": damage, "ratio": ratio,
            "ratio_to_outlined": with_outlines, "goal": 2.2}  # fmt: skip


def scores_part(model: str, data: str) -> dict:
    """The demo model's xView2 scores on the held-out pairs, as it is and with --adapt-bn."""
    from resseg_ray.config import PredictSection
    from resseg_ray.evaluation.damage import score_pairs
    from resseg_ray.geo.storage import StorageSettings
    from resseg_ray.inference.damage import map_damage
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.models.bundle import load_bundle

    settings = StorageSettings()
    with open(os.path.join(data, "dataset.json")) as f:
        tests = [s for s in json.load(f)["scenes"] if s["role"] == "test"]
    names = [os.path.basename(s["uri"]).removesuffix("_pair.tif") for s in tests]
    bundle = load_bundle(model)
    out: dict = {"model": model, "pairs": names}
    print(f"{'':<14} {'loc F1':>7} {'dmg F1':>7} {'score':>7} {'bldg acc':>8}")
    for label, adapt in (("as trained", False), ("adapt-bn", True)):
        p = ScenePredictor(bundle, PredictSection(adapt_bn=adapt, runtime="torch"))
        with tempfile.TemporaryDirectory(prefix="resseg-bench-damage-") as d:
            pairs = []
            for name, s in zip(names, tests, strict=True):
                pre = os.path.join(data, "scenes", f"{name}_pre.tif")
                post = os.path.join(data, "scenes", f"{name}_post.tif")
                r = map_damage(p, pre, post, d, settings, name)
                pairs.append((r.outputs["damage"], s["label_uri"]))
            m = score_pairs(pairs, settings).total().metrics()
        out[label] = m
        acc = m["building_accuracy"] or 0.0
        cells = [100 * float(m[k] or 0.0) for k in ("localization_f1", "damage_f1", "score")]
        print(f"{label:<14} " + " ".join(f"{v:7.2f}" for v in cells) + f" {100 * acc:8.2f}")
    return out


def refine_part(
    model: str, data: str, fraction: float, seeds: list[int], config: str, sets: list[str] | None = None
) -> dict:
    """The demo model refined on ``fraction`` of each held-out pair, at the top-left corner and
    at a random place per seed; xView2 figures on the rest of the pair, and the verdict."""
    from resseg_ray.adapt.refine import AreaSpec, refine_scene
    from resseg_ray.cli import init_ray
    from resseg_ray.config import load_config
    from resseg_ray.errors import InputDataError

    with open(os.path.join(data, "dataset.json")) as f:
        tests = [s for s in json.load(f)["scenes"] if s["role"] == "test"]
    names = [os.path.basename(s["uri"]).removesuffix("_pair.tif") for s in tests]
    cases = [("contiguous", 0)] + [("random", s) for s in seeds]
    keys = ("score", "localization_f1", "damage_f1")
    rows = []
    os.environ.setdefault("RAY_ADDRESS", "local")
    init_ray()
    with tempfile.TemporaryDirectory(prefix="resseg-bench-refine-damage-") as d:
        base = load_config(
            config,
            [f"run.storage_path={d}/runs", f"mlflow.tracking_uri=sqlite:///{d}/mlflow.db", *(sets or [])],
        )
        for name in names:
            pre, post, graded = (os.path.join(data, "scenes", f"{name}_{x}") for x in
                                 ("pre.tif", "post.tif", "damage.geojson"))  # fmt: skip
            for placement, seed in cases:
                cfg = base.replace(run=base.run.replace(name=f"{name}-{placement}-{seed}", seed=seed))
                area = AreaSpec(fraction=fraction, placement=placement, seed=seed)
                start = time.perf_counter()
                try:
                    r = refine_scene(cfg, model, pre, area, footprints=graded, post=post, log=lambda _: None)
                except InputDataError as exc:  # an area too small to train on: said, not measured
                    print(f"{name:<9} {placement:<10} {seed:>2} refused: {exc}")
                    rows.append({"pair": name, "placement": placement, "seed": seed, "refused": str(exc)})
                    continue
                seconds = time.perf_counter() - start
                assert r.verdict is not None and r.before and r.adapted and r.after
                scored = {"parent": r.before, "adapted": r.adapted, "refined": r.after}
                rest = {k: {m: s.metrics[m] for m in keys} for k, s in scored.items()}
                row = {
                    "pair": name, "placement": placement, "seed": seed, "area_fraction": r.area.fraction,
                    "rest": rest, "kept": r.verdict.chosen, "heldout": r.verdict.to_dict(),
                    "shipped_score": rest[r.verdict.chosen]["score"], "seconds": seconds,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{name:<9} {placement:<10} {seed:>2} {100 * rest['parent']['score']:7.2f} "
                    f"{100 * rest['adapted']['score']:7.2f} {100 * rest['refined']['score']:7.2f} "
                    f"{r.verdict.chosen:>8} {100 * row['shipped_score']:7.2f} {seconds:6.0f} s"
                )
    done = [r for r in rows if "refused" not in r]
    gains = [r["shipped_score"] - r["rest"]["parent"]["score"] for r in done]
    refined = [r["rest"]["refined"]["score"] - r["rest"]["parent"]["score"] for r in done]
    summary = {
        "mean_gain_shipped": float(np.mean(gains)), "worst_gain_shipped": float(np.min(gains)),
        "mean_gain_refined": float(np.mean(refined)), "worst_gain_refined": float(np.min(refined)),
        "mean_shipped_score": float(np.mean([r["shipped_score"] for r in done])),
        "refused": len(rows) - len(done),
    }  # fmt: skip
    print(
        f"score on the rest of the pair, shipped - parent: mean {100 * summary['mean_gain_shipped']:+.2f}, "
        f"worst {100 * summary['worst_gain_shipped']:+.2f} points; the refined model's own: mean "
        f"{100 * summary['mean_gain_refined']:+.2f}, worst {100 * summary['worst_gain_refined']:+.2f}"
    )
    return {"model": model, "config": config, "set": sets or [], "fraction": fraction, "cases": rows,
            "summary": summary}  # fmt: skip


def main() -> None:
    """Run one part and write its JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=["time", "scores", "refine"])
    p.add_argument("--size", nargs=2, type=int, default=[6000, 4500], metavar=("W", "H"))
    p.add_argument(
        "--event", help="time: a demo event's scenes (<prefix>_pre.tif, <prefix>_post.tif) repeated"
    )
    p.add_argument("--models", nargs=2, metavar=("BUILDINGS", "DAMAGE"), help="time: trained bundles")
    p.add_argument("--model", default="runs/demo-damage-prop18/model.resseg.safetensors")
    p.add_argument("--data", default="data/demo-damage")
    p.add_argument("--fraction", type=float, default=0.07, help="refine: the annotated share of each pair")
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2], help="refine: seeds of the random places")
    p.add_argument("--config", default="configs/finetune_damage_demo.yaml", help="refine: its configuration")
    p.add_argument(
        "--set", dest="sets", action="append", metavar="KEY=VALUE", help="refine: a config override"
    )
    p.add_argument("--out", help="JSON path (default bench/results/damage_<part>.json)")
    args = p.parse_args()
    if args.part == "time":
        result = time_part(*args.size, args.event, args.models)
    elif args.part == "scores":
        result = scores_part(args.model, args.data)
    else:
        print(f"{'pair':<9} {'placement':<10} {'seed':>2} {'parent':>7} {'BN':>7} {'refined':>7} {'kept':>8} "
              f"{'shipped':>7}  (xView2 score on the rest of the pair)")  # fmt: skip
        result = refine_part(args.model, args.data, args.fraction, args.seeds, args.config, args.sets)
    out = args.out or os.path.join(ROOT_DIR, "bench", "results", f"damage_{args.part}.json")
    write_results(out, {"machine": machine(), **result})


if __name__ == "__main__":
    main()
