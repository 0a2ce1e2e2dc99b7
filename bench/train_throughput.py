"""Training throughput: samples/s per worker and the share of step time spent waiting for data.

Runs a short real training (Ray Train, the Ray Data pipeline, MLflow into a temporary
SQLite store, no registration) and reads the figures the training loop itself measures
every epoch: ``samples_per_s_per_worker`` and ``data_wait_fraction`` (time blocked on the
next batch / time of the training epoch). The first epoch includes pipeline start-up; the
later ones are the steady state.

    python -m bench.train_throughput                                  # demo config, prop18, this device
    python -m bench.train_throughput --set model.arch=prop50 --set data.crop_size=256
    python -m bench.train_throughput --set scaling.use_gpu=true --set scaling.cpus_per_worker=4

Prints a table and writes JSON (default bench/results/train_throughput.json). Goal of
issue 4: data wait below 10 % of the step time. Figures only: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench.results_io import machine, write_results
from resseg_ray.cli import init_ray
from resseg_ray.config import load_config
from resseg_ray.train.trainer import run_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--tiles", type=int, default=240, help="training tiles per epoch")
    p.add_argument("--val-tiles", default="32", help="validation tiles per epoch ('null': all)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "train_throughput.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="resseg-bench-") as tmp:
        overrides = [
            f"train.epochs={args.epochs}",
            f"train.train_tiles_per_epoch={args.tiles}",
            f"train.val_tiles={args.val_tiles}",
            "train.patience=0",
            "train.quicklook_samples=0",
            f"run.name=bench-{os.getpid()}",
            f"run.storage_path={tmp}/runs",
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            "mlflow.registered_model=null",
            *args.overrides,
        ]
        cfg = load_config(args.config, overrides)
        init_ray()
        start = time.perf_counter()
        result = run_training(cfg, log=lambda _: None)
        wall = time.perf_counter() - start

    rows = [
        {
            "epoch": int(h["epoch"]),
            "samples_per_s_per_worker": h["samples_per_s_per_worker"],
            "samples_per_s": h["samples_per_s"],
            "data_wait_fraction": h["data_wait_fraction"],
            "val_seconds": h.get("val_seconds"),
        }
        for h in result.progress.history
    ]
    steady = rows[1:] or rows
    summary = {
        "machine": machine(),
        "arch": cfg.model.arch,
        "crop": cfg.data.crop_size,
        "batch_per_worker": cfg.train.batch_size,
        "workers": cfg.scaling.num_workers,
        "use_gpu": cfg.scaling.use_gpu,
        "val_tiles": args.val_tiles,
        "run_seconds": wall,
        "epochs": rows,
        "steady_samples_per_s_per_worker": sum(r["samples_per_s_per_worker"] for r in steady) / len(steady),
        "steady_data_wait_fraction": sum(r["data_wait_fraction"] for r in steady) / len(steady),
    }
    print(
        f"{cfg.model.arch}, crop {cfg.data.crop_size}, batch {cfg.train.batch_size} x "
        f"{cfg.scaling.num_workers} worker(s), {'GPU' if cfg.scaling.use_gpu else 'CPU'}"
    )
    print(f"{'epoch':>5} {'samples/s/worker':>17} {'data wait':>10} {'validation':>11}")
    for r in rows:
        print(
            f"{r['epoch']:>5} {r['samples_per_s_per_worker']:>17.2f} {100 * r['data_wait_fraction']:>9.1f}% "
            f"{r['val_seconds'] or 0:>9.2f} s"
        )
    print(f"whole run (start-up, {len(rows)} epochs, checkpoints): {wall:.1f} s")
    print(
        f"steady state: {summary['steady_samples_per_s_per_worker']:.2f} samples/s per worker, "
        f"data wait {100 * summary['steady_data_wait_fraction']:.1f}% of step time (goal < 10%)"
    )
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
