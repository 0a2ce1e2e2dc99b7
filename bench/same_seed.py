"""Reproducibility on the demo configuration: two trainings with the same ``run.seed`` and one
with another, each a real Ray Train run of ``configs/demo.yaml`` (all its tiles, its 2 DDP
workers, MLflow into a temporary SQLite store, no registration), for a few epochs.

    python -m bench.same_seed                    # 2 epochs, seeds 0, 0 and 1 (~6 min on 2 cores)
    python -m bench.same_seed --epochs 3 --seed 7

Reports, per epoch, the largest difference between the two same-seed runs' validation metrics
(loss, F1, accuracy, training loss) and whether the final bundles' weights are equal tensor
for tensor; and how far the other seed's run is from the first. The suite's seed test
(tests/train/test_training.py) asserts the same on the small demo; this is the demo's own
configuration at full size. Figures only; prints them and writes JSON (default
bench/results/same_seed.json).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench.results_io import machine, write_results
from resseg_ray.cli import init_ray
from resseg_ray.config import load_config
from resseg_ray.models.bundle import load_bundle
from resseg_ray.train.trainer import TrainResult, run_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("train_loss", "val_loss", "val_f1", "val_accuracy")


def _train(config: str, tmp: str, name: str, seed: int, epochs: int, extra: list[str]) -> TrainResult:
    overrides = [
        f"train.epochs={epochs}",
        "train.patience=0",
        "train.quicklook_samples=0",
        f"run.seed={seed}",
        f"run.name={name}",
        f"run.storage_path={tmp}/runs",
        f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
        "mlflow.registered_model=null",
        *extra,
    ]
    return run_training(load_config(config, overrides), log=print)


def _history(result: TrainResult) -> list[dict[str, float]]:
    return [{k: float(h[k]) for k in KEYS} for h in result.progress.history]


def _weights_equal(a: TrainResult, b: TrainResult) -> tuple[bool, float]:
    """Whether two runs' final bundles hold equal weights, and the largest difference."""
    wa, wb = load_bundle(a.bundle_uri).model.state_dict(), load_bundle(b.bundle_uri).model.state_dict()
    if wa.keys() != wb.keys():
        return False, float("inf")
    diff = max(float((wa[k].double() - wb[k].double()).abs().max()) if wa[k].numel() else 0.0 for k in wa)
    return all(bool((wa[k] == wb[k]).all()) for k in wa), diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "demo.yaml"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="the seed of the two equal runs (the third: seed + 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "same_seed.json"))
    args = p.parse_args()
    init_ray()
    runs: dict[str, TrainResult] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="resseg-bench-seed-") as tmp:
        for name, seed in (("first", args.seed), ("again", args.seed), ("other", args.seed + 1)):
            t0 = time.perf_counter()
            runs[name] = _train(args.config, tmp, f"same-seed-{name}", seed, args.epochs, args.overrides)
            seconds[name] = time.perf_counter() - t0
        h = {name: _history(r) for name, r in runs.items()}
        equal, diff = _weights_equal(runs["first"], runs["again"])
        other_equal, other_diff = _weights_equal(runs["first"], runs["other"])
    per_epoch = []
    for e, (a, b, c) in enumerate(zip(h["first"], h["again"], h["other"], strict=True), start=1):
        per_epoch.append(
            {
                "epoch": e,
                "first": a,
                "same_seed_max_abs_diff": max(abs(a[k] - b[k]) for k in KEYS),
                "other_seed_max_abs_diff": max(abs(a[k] - c[k]) for k in KEYS),
            }
        )
    cfg = load_config(args.config, args.overrides)
    summary = {
        "machine": machine(),
        "config": os.path.relpath(args.config, ROOT),
        "arch": cfg.model.arch,
        "workers": cfg.scaling.num_workers,
        "seed": args.seed,
        "epochs": per_epoch,
        "same_seed_weights_equal": equal,
        "same_seed_weights_max_abs_diff": diff,
        "other_seed_weights_equal": other_equal,
        "other_seed_weights_max_abs_diff": other_diff,
        "seconds": seconds,
    }
    print(f"{summary['config']}: {cfg.model.arch}, {cfg.scaling.num_workers} workers, {args.epochs} epochs")
    print(f"| epoch | val F1 (seed {args.seed}) | same seed: max diff | seed {args.seed + 1}: max diff |")
    print("|---|---|---|---|")
    for row in per_epoch:
        print(
            f"| {row['epoch']} | {row['first']['val_f1']:.6f} | {row['same_seed_max_abs_diff']:.2e} | "
            f"{row['other_seed_max_abs_diff']:.2e} |"
        )
    print(
        f"weights: same seed {'equal' if equal else f'differ (max {diff:.2e})'}; "
        f"seed {args.seed + 1} {'equal' if other_equal else f'differs (max {other_diff:.2e})'}"
    )
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
