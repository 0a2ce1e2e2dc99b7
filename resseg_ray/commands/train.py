"""Train a segmentation network on Ray Train (DDP), tracked in MLflow.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg train                                   # the demo: prop18 on data/demo, CPU
    resseg train --config configs/paper_prop152.yaml --set train.dataset=s3://bucket/prepared
    resseg train --set model.arch=unet19 --set run.name=unet19-demo
    RAY_AUTH_MODE=token ray job submit --working-dir . -- resseg train --config configs/demo.yaml

Re-running with the same run.name resumes the run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import os

from resseg_ray.cli import CONFIGS, add_seed_option, config_overrides, init_ray
from resseg_ray.config import load_config
from resseg_ray.train.trainer import run_training


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config",
        default=os.path.join(CONFIGS, "demo.yaml"),
        help="YAML configuration (default configs/demo.yaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override, e.g. train.lr=0.001 (repeatable)",
    )
    add_seed_option(p)
    args = p.parse_args(argv)
    cfg = load_config(args.config, config_overrides(args))
    init_ray()
    r = run_training(cfg)
    done = r.progress
    print(
        f"run {r.run_name}: {done.epochs_done} epochs ({done.stop_reason}), "
        f"best val loss {done.best_val_loss:.4f} (epoch {done.best_val_loss_epoch}), "
        f"best val F1 {done.best_val_f1:.4f} (epoch {done.best_val_f1_epoch}), {r.seconds:.0f} s"
    )
    print(f"  model bundle: {r.bundle_uri}")
    print(f"  checkpoints:  {r.run_dir}")
    print(f"  MLflow run:   {r.mlflow_run_id} at {r.tracking_uri}")
    if r.registered_version:
        alias = f", alias '{cfg.mlflow.alias}' now points to it" if r.alias_moved else ""
        print(f"  registered:   {r.registered_model} version {r.registered_version}{alias}")


SUPERVISE = True
"""Whether the job runs under :func:`~resseg_ray.cli.run_job`'s supervisor (it uses Ray)."""
