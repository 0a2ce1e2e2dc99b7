"""Whole-scene segmentation: end-to-end seconds and Mpx/s against model-only throughput, and
peak resident memory for a D12-size scene and a scene 4x larger.

The scenes are 4-band uint16 GeoTIFFs (tiled, DEFLATE) written into a temporary folder:
6000 x 4500 pixels (the paper's D12 size) and, with ``--big``, 2x that on each side.
Each scene is segmented by ``jobs/predict.py``'s code path (ScenePredictor -> COG
writer) in a fresh subprocess, whose peak RSS is read from the kernel. Model-only
throughput runs the same network on the same number of 512 px windows of random data
in this process (no reading, no stitching, no writing).

    python -m bench.predict_scene                        # prop18, D12 size and 4x, this device
    python -m bench.predict_scene --arch prop152 --no-big --device cuda
    python -m bench.predict_scene --no-big --actors 2      # also: one scene split across 2 actors
    python -m bench.predict_scene --no-big --engines torch:fp32 openvino:fp32 openvino:bf16 auto:auto

With ``--actors N`` the D12-size scene is also segmented on a local Ray instance by
``jobs/predict.py --actors``'s code path: once by one actor holding all CPUs (the scene
whole), once split into N parts for N actors sharing the CPUs (GPUs: one each when
present); both wall-clock times (planning, actors, assembly) are reported.

Prints a table and writes JSON (default bench/results/predict_scene.json). Goals of
issue 5: end-to-end >= 85 % of model-only; peak memory of the 4x scene <= 1.2x the
D12-size one; prop18 on this CPU faster than the paper's 110 s (prop152, TitanX).
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
from resseg_ray.device import DevicePolicy, ray_runtime_env
from resseg_ray.inference.windows import window_starts
from resseg_ray.models import build_model
from resseg_ray.models.bundle import load_bundle, save_bundle
from resseg_ray.runtime.select import Choice, EngineFactory

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from resseg_ray.cli import bound_gdal_cache
bound_gdal_cache()  # as jobs/predict.py
from resseg_ray.config import PredictSection
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.batch import predict_scene
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models.bundle import load_bundle
options = PredictSection(window={window}, overlap={overlap}, batch_size={batch}, normalization="pooled",
                         device={device!r}, runtime={runtime!r}, precision={precision!r})
p = ScenePredictor(load_bundle({bundle!r}), options)
t = time.perf_counter()
engine = p.engine.describe()  # chosen (auto: measured once per model and machine, then cached) and built
setup = time.perf_counter() - t
t = time.perf_counter()
r = predict_scene(p, {scene!r}, {out!r}, StorageSettings(), overwrite=True)
seconds = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "setup_s": setup, "engine": engine, "maxrss_mb": rss}}))
"""


def write_scene(path: str, width: int, height: int) -> None:
    """A 4-band uint16 scene with smooth structure plus noise, written in 512-row strips."""
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": rasterio.Affine(0.5, 0, 452000, 0, -0.5, 5043000),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "nodata": 0,
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, height, 512):
            h = min(512, height - r)
            yy, xx = np.mgrid[r : r + h, 0:width]
            base = 400 + 200 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
            data = np.stack([base * (1 + 0.2 * b) + rng.normal(0, 30, base.shape) for b in range(4)])
            dst.write(
                np.clip(data, 1, 65535).astype(np.uint16), window=rasterio.windows.Window(0, r, width, h)
            )


def model_only(bundle_path: str, device: str, engine: dict, window: int, batch: int, n_windows: int) -> float:
    """Seconds the network alone needs for ``n_windows`` windows, run by the engine the scene ran
    on (``engine``: its runtime and precision; BN folded, same device policy)."""
    policy = DevicePolicy.resolve(device)
    net = load_bundle(bundle_path).model
    run = EngineFactory(net, policy).build(Choice(engine["runtime"], engine["precision"]))
    x = np.random.default_rng(0).standard_normal((batch, 4, window, window), np.float32)
    run.forward(x)
    reps = max(3, min(12, n_windows // batch))
    t = time.perf_counter()
    for _ in range(reps):
        run.forward(x)  # returns host arrays: synchronised
    per_window = (time.perf_counter() - t) / (reps * batch)
    return per_window * n_windows


def on_actors(bundle: str, scene: str, out: str, actors: int, window: int, overlap: int, batch: int) -> dict:
    """Wall seconds for the scene on Ray: one actor (whole) vs ``actors`` actors (split)."""
    import shutil

    import ray

    from resseg_ray.geo.storage import StorageSettings
    from resseg_ray.inference.batch import predict_scenes_on_ray

    cpus = os.cpu_count() or 1
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env=ray_runtime_env(),
    )
    gpus = int(ray.cluster_resources().get("GPU", 0))
    with open(bundle, "rb") as f:
        data = f.read()
    from resseg_ray.config import PredictSection

    predict = PredictSection(window=window, overlap=overlap, batch_size=batch, normalization="pooled")
    result = {"cpus": cpus, "gpus": gpus, "actors": actors}
    for n in (1, actors):
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        (report,) = predict_scenes_on_ray(
            data,
            predict,
            [scene],
            out,
            StorageSettings(),
            actors=n,
            gpus_per_actor=1 if gpus >= n else 0,
            cpus_per_actor=cpus / n,
            split_mpx=64.0 if n > 1 else 0,
        )
        if report.error:
            raise RuntimeError(report.error)
        result[f"wall_s_{n}_actors"] = time.perf_counter() - t
    ray.shutdown()
    result["speedup"] = result["wall_s_1_actors"] / result[f"wall_s_{actors}_actors"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="prop18")
    p.add_argument("--width", type=int, default=6000)
    p.add_argument("--height", type=int, default=4500)
    p.add_argument("--no-big", dest="big", action="store_false", help="skip the 4x scene")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--overlap", type=int, default=112)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--actors", type=int, default=0, help="also time the D12 scene split across N Ray actors")
    p.add_argument(
        "--engines",
        nargs="+",
        default=["auto:auto"],
        metavar="RUNTIME:PRECISION",
        help="segment the D12-size scene with each (e.g. torch:fp32 openvino:bf16 auto:auto; default "
        "auto:auto); the 4x scene and --actors use the first",
    )
    p.add_argument("--out", default=os.path.join(ROOT_DIR, "bench", "results", "predict_scene.json"))
    args = p.parse_args()
    engines = [tuple(e.split(":", 1)) if ":" in e else (e, "auto") for e in args.engines]
    rows = []
    ray_split = None
    with tempfile.TemporaryDirectory(prefix="resseg-bench-") as tmp:
        bundle = os.path.join(tmp, "m.resseg.safetensors")
        torch.manual_seed(0)
        save_bundle(
            bundle,
            build_model(args.arch, in_bands=4),
            norm_mean=[400, 480, 560, 640],
            norm_std=[150, 170, 190, 210],
            band_names=["blue", "green", "red", "nir"],
        )
        sizes = [(args.width, args.height)] + ([(2 * args.width, 2 * args.height)] if args.big else [])
        for w, h in sizes:
            scene = os.path.join(tmp, f"scene_{w}x{h}.tif")
            t = time.perf_counter()
            write_scene(scene, w, h)
            print(f"wrote {w}x{h} test scene in {time.perf_counter() - t:.0f} s", flush=True)
            n_windows = len(window_starts(h, min(args.window, h), args.overlap)) * len(
                window_starts(w, min(args.window, w), args.overlap)
            )
            mpx = w * h / 1e6
            for k, (runtime, precision) in enumerate(engines if (w, h) == sizes[0] else engines[:1]):
                out = os.path.join(tmp, f"out-{w}x{h}-{k}")
                code = CHILD.format(
                    root=ROOT_DIR,
                    bundle=bundle,
                    device=args.device,
                    runtime=runtime,
                    precision=precision,
                    window=args.window,
                    overlap=args.overlap,
                    batch=args.batch,
                    scene=scene,
                    out=out,
                )
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{runtime}:{precision} failed: {proc.stderr.strip().splitlines()[-1]}", flush=True)
                    continue
                child = json.loads(proc.stdout.strip().splitlines()[-1])
                model_s = model_only(bundle, args.device, child["engine"], args.window, args.batch, n_windows)
                stem = os.path.splitext(os.path.basename(scene))[0]
                rows.append(
                    {
                        "width": w,
                        "height": h,
                        "megapixels": mpx,
                        "windows": n_windows,
                        "asked": f"{runtime}:{precision}",
                        "engine": child["engine"],
                        "setup_s": child["setup_s"],
                        "end_to_end_s": child["seconds"],
                        "end_to_end_mpx_s": mpx / child["seconds"],
                        "model_only_s": model_s,
                        "model_only_mpx_s": mpx / model_s,
                        "ratio": model_s / child["seconds"],
                        "peak_rss_mb": child["maxrss_mb"],
                        "mask": os.path.join(out, f"{stem}_mask.tif"),
                    }
                )
                print(f"{runtime}:{precision} -> {child['engine']}: {child['seconds']:.1f} s", flush=True)
            reference = next((r for r in rows if r["asked"] == "torch:fp32" and r["width"] == w), None)
            here = [r for r in rows if r["width"] == w]
            if reference is not None:
                with rasterio.open(reference["mask"]) as src:
                    want = src.read(1)
                for r in here:
                    with rasterio.open(r["mask"]) as src:
                        r["mask_agreement_with_torch_fp32"] = float((src.read(1) == want).mean())
                    r["speedup_over_torch_fp32"] = reference["end_to_end_s"] / r["end_to_end_s"]
            if args.actors > 1 and (w, h) == (args.width, args.height):
                ray_split = on_actors(
                    bundle,
                    scene,
                    os.path.join(tmp, "out-ray"),
                    args.actors,
                    args.window,
                    args.overlap,
                    args.batch,
                )
            os.remove(scene)
    for r in rows:
        r.pop("mask", None)
    policy = DevicePolicy.resolve(args.device)
    print(
        f"\n{args.arch}, window {args.window}, overlap {args.overlap}, batch {args.batch}, "
        f"{policy.device}, CPU {machine()['cpu']['model']}"
    )
    print(
        f"{'scene':>12} {'engine':>17} {'setup s':>7} {'end-to-end s':>12} {'Mpx/s':>6} {'model-only s':>12} "
        f"{'Mpx/s':>6} {'ratio':>6} {'speed-up':>8} {'mask agree':>10} {'peak RSS MB':>11}"
    )
    for r in rows:
        e = f"{r['engine']['runtime']} {r['engine']['precision']}"
        up = f"{r['speedup_over_torch_fp32']:>7.2f}x" if "speedup_over_torch_fp32" in r else f"{'-':>8}"
        agree = r.get("mask_agreement_with_torch_fp32")
        agree_s = f"{100 * agree:>9.3f}%" if agree is not None else f"{'-':>10}"
        print(
            f"{r['width']:>5}x{r['height']:<6} {e:>17} {r['setup_s']:>7.1f} {r['end_to_end_s']:>12.1f} "
            f"{r['end_to_end_mpx_s']:>6.3f} {r['model_only_s']:>12.1f} {r['model_only_mpx_s']:>6.3f} "
            f"{100 * r['ratio']:>5.1f}% {up} {agree_s} {r['peak_rss_mb']:>11.0f}"
        )
    big = [r for r in rows if r["width"] == 2 * args.width]
    if big:
        first = rows[0]
        print(
            f"peak memory 4x scene / D12-size scene: {big[0]['peak_rss_mb'] / first['peak_rss_mb']:.2f} "
            "(goal <= 1.2)"
        )
    if rows:
        print(
            f"D12-size scene end to end: {rows[0]['end_to_end_s']:.1f} s (paper, prop152 on a TitanX: 110 s)"
        )
    if ray_split:
        n, rs = ray_split["actors"], ray_split
        print(
            f"on Ray ({rs['cpus']} CPUs, {rs['gpus']} GPUs): one actor {rs['wall_s_1_actors']:.1f} s, "
            f"split across {n} actors {rs[f'wall_s_{n}_actors']:.1f} s (speed-up {rs['speedup']:.2f}x)"
        )
    summary = {
        "machine": machine(),
        "arch": args.arch,
        "window": args.window,
        "overlap": args.overlap,
        "batch": args.batch,
        "engines": args.engines,
        "rows": rows,
        "ray_split": ray_split,
    }
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
