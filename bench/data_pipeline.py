"""Data pipeline throughput: training samples per second per CPU core, local disk and S3.

Measures the paper's training samples (364 px tiles, random 256 crop or rotated centre
crop, flips, normalisation; float32 4 x 256 x 256 images and labels) produced:

1. in one process, no Ray (``load_samples`` on manifest rows): the per-core cost itself;
2. through the Ray Data pipeline consumed as torch batches, with every core loading, for
   two epochs (the first with cold GDAL block caches in fresh workers), from local disk;
3. the same with scenes and labels on an S3 endpoint (a moto server on 127.0.0.1, so
   this measures the S3 code path and HTTP overhead, not a WAN).

    python -m bench.data_pipeline                        # demo data (prepared if absent)
    python -m bench.data_pipeline --dataset data/demo --samples 1200 --no-s3

Prints a table and writes JSON (default bench/results/data_pipeline.json). Goal of issue
3: >= 150 samples/s per core from local disk. Figures only: nothing passes or fails here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request

from resseg_ray.config import load_config
from resseg_ray.data.pipeline import build_datasets, iter_torch, load_samples, read_manifest, sample_spec
from resseg_ray.data.prepare import DATASET_FILE, load_dataset, prepare_dataset
from resseg_ray.demo import default_demo, write_demo_scenes
from resseg_ray.device import ray_runtime_env
from resseg_ray.geo.storage import StorageSettings, exists, filesystem, join_uri


def in_process(desc, cfg, settings, samples: int) -> float:
    """Samples/s of load_samples in this process (one core)."""
    import torch

    torch.set_num_threads(1)
    table = read_manifest(desc, settings).to_pandas()
    rows = table[table.split == "train"].sample(frac=1.0, random_state=0).assign(epoch=1)
    spec = sample_spec(desc, cfg.data, settings, augment=True, seed=cfg.run.seed)
    batch = cfg.data.loader_batch

    def run(start: int, n: int) -> int:
        done = 0
        for i in range(start, start + n, batch):
            part = rows.iloc[i % len(rows) : i % len(rows) + batch]
            done += len(load_samples({k: part[k].to_numpy() for k in part.columns}, spec)["image"])
        return done

    run(0, batch)  # warm-up: opens the files
    t = time.perf_counter()
    n = run(batch, samples)
    return n / (time.perf_counter() - t)


def through_ray(desc, cfg, settings, samples: int, epochs: int = 2) -> list[float]:
    """Samples/s per epoch of the Ray Data pipeline consumed as torch batches."""
    out = []
    for epoch in range(1, epochs + 1):
        ds = build_datasets(desc, cfg.data, settings, cfg.run.seed, ("train",), epoch, limit=samples)["train"]
        t = time.perf_counter()
        n = sum(len(images) for images, _ in iter_torch(ds, batch_size=8))
        out.append(n / (time.perf_counter() - t))
    return out


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset", default="data/demo", help="prepared dataset (prepared from the demo if absent)"
    )
    p.add_argument("--samples", type=int, default=800, help="training samples per measurement")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs given to Ray")
    p.add_argument("--no-s3", action="store_true", help="skip the S3 measurement")
    p.add_argument("--out", default="bench/results/data_pipeline.json")
    p.add_argument("--in-process-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.in_process_only:  # child run under another GDAL_CACHEMAX
        local = StorageSettings()
        print(in_process(load_dataset(args.dataset, local), load_config(), local, args.samples))
        return

    import ray

    local = StorageSettings()
    cfg = load_config()
    if not args.no_s3:  # the local moto endpoint takes any key; Ray workers inherit these
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env=ray_runtime_env(),
    )
    if not exists(join_uri(args.dataset, DATASET_FILE), local):
        print(f"preparing the demo data under {args.dataset} ...", flush=True)
        summary = write_demo_scenes(join_uri(args.dataset, "scenes"), default_demo(), local)
        prepare_dataset(
            [s["scene"] for s in summary["train"]],
            args.dataset,
            cfg,
            footprints=[s["footprints"] for s in summary["train"]],
            settings=local,
        )
    desc = load_dataset(args.dataset, local)
    results: dict = {
        "machine": platform.processor() or platform.machine(),
        "cpus": args.cpus,
        "samples": args.samples,
        "tile": cfg.data.tile_size,
        "crop": cfg.data.crop_size,
        "bands": len(desc.bands),
    }
    print(f"in-process, 1 core ({args.samples} samples) ...", flush=True)
    results["in_process_samples_per_s"] = in_process(desc, cfg, local, args.samples)
    print("in-process, 1 core, GDAL block cache 8 MB (every read decompresses) ...", flush=True)
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--in-process-only",
            "--dataset",
            args.dataset,
            "--samples",
            str(args.samples),
        ],
        env={**os.environ, "GDAL_CACHEMAX": "8"},
        capture_output=True,
        text=True,
        check=True,
    )
    results["in_process_small_cache_samples_per_s"] = float(child.stdout.strip().splitlines()[-1])
    print(f"Ray Data, {args.cpus} CPUs, local disk ...", flush=True)
    results["local_samples_per_s"] = through_ray(desc, cfg, local, args.samples)

    if not args.no_s3:
        proc, url = _moto()
        try:
            s3 = StorageSettings(endpoint_url=url, region="us-east-1")
            import s3fs

            s3fs.S3FileSystem(endpoint_url=url).mkdir("bench")
            fs = filesystem("s3://bench", s3)
            scenes, footprints = [], []
            for sc in desc.scenes("train"):
                name = os.path.basename(sc["uri"])
                fs.put_file(sc["uri"], f"s3://bench/scenes/{name}")
                fs.put_file(
                    sc["uri"].replace(".tif", "_buildings.geojson"), f"s3://bench/scenes/{name}.geojson"
                )
                scenes.append(f"s3://bench/scenes/{name}")
                footprints.append(f"s3://bench/scenes/{name}.geojson")
            print("preparing on S3 ...", flush=True)
            prepare_dataset(scenes, "s3://bench/prepared", cfg, footprints=footprints, settings=s3)
            remote = load_dataset("s3://bench/prepared", s3)
            print(f"Ray Data, {args.cpus} CPUs, S3 (moto on 127.0.0.1) ...", flush=True)
            results["s3_samples_per_s"] = through_ray(remote, cfg, s3, args.samples)
        finally:
            proc.terminate()

    per_core = {
        k: [v / args.cpus for v in results[k]]
        for k in ("local_samples_per_s", "s3_samples_per_s")
        if k in results
    }
    results["per_core"] = per_core
    print()
    print(f"{'path':<34}{'epoch 1':>12}{'epoch 2':>12}   samples/s (per core)")
    print(f"{'in-process, no Ray, 1 core':<34}{results['in_process_samples_per_s']:>12.0f}")
    print(f"{'  same, GDAL cache 8 MB':<34}{results['in_process_small_cache_samples_per_s']:>12.0f}")
    for key, label in (
        ("local_samples_per_s", "Ray Data, local disk"),
        ("s3_samples_per_s", "Ray Data, S3 endpoint"),
    ):
        if key in results:
            v, c = results[key], per_core[key]
            print(
                f"{label + f', {args.cpus} CPUs':<34}"
                + "".join(f"{x:>7.0f} ({y:>3.0f})" for x, y in zip(v, c, strict=True))
            )
    print(
        "goal: >= 150 samples/s per core from local disk; best epoch: "
        f"{max(per_core['local_samples_per_s']):.0f}"
    )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
