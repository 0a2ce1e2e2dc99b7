"""Compare architectures like the paper's Table II: train each, evaluate on the test scenes.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg compare-depths --config configs/demo.yaml --archs prop18 prop34 unet19 --report table2.json
    resseg compare-depths --config configs/paper.yaml --set train.dataset=s3://bucket/prepared
    ray job submit --working-dir . -- resseg compare-depths --config configs/paper.yaml

Every architecture is a training run named <prefix>-<arch> in one MLflow experiment,
nested under a parent run <prefix> holding the table; re-running resumes.
"""

from __future__ import annotations

import argparse
import os

from resseg_ray.cli import (
    CONFIGS,
    add_seed_option,
    config_overrides,
    init_ray,
    predict_options,
)
from resseg_ray.config import PredictSection, load_config
from resseg_ray.config.flags import add_config_options, add_flags
from resseg_ray.experiments.compare_depths import PAPER_ARCHS, compare_architectures
from resseg_ray.experiments.report import comparison_json
from resseg_ray.geo.storage import StorageSettings, check_output_file, write_bytes
from resseg_ray.train import tracking
from resseg_ray.train.checks import check_arch


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_config_options(p, os.path.join(CONFIGS, "demo.yaml"))
    p.add_argument(
        "--archs",
        nargs="+",
        default=list(PAPER_ARCHS),
        metavar="ARCH",
        help=f"architectures to train and compare (default all eight: {' '.join(PAPER_ARCHS)})",
    )
    p.add_argument(
        "--prefix",
        default="compare",
        help="run names are <prefix>-<arch>; the parent run holding the table is <prefix> (default compare)",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write the comparison as JSON (format resseg-comparison-report/1) to this file or s3:// "
        "URI: the MLflow tracking_uri, experiment_id and parent_run_id; per architecture under archs its "
        "training run (as train --report writes it) and its test scores (as evaluate --report FILE.json "
        "writes them); the Table II markdown as table. A folder or the configuration file is refused "
        "before any work",
    )
    add_flags(p, PredictSection, ["window", "overlap"])  # the test scenes' segmentation
    add_seed_option(p)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    cfg = load_config(args.config, config_overrides(args))
    for arch in args.archs:
        check_arch(arch)
    settings = StorageSettings.resolve(cfg.storage)
    if args.report:
        check_output_file(args.report, settings, "--report", inputs=[args.config])
    init_ray()
    cfg = cfg.replace(predict=predict_options(args, cfg))
    result = compare_architectures(cfg, args.archs, args.prefix)
    print()
    print(result.table)
    print(f"MLflow: experiment {cfg.mlflow.experiment!r}, parent run {result.parent_run_id}")
    for arch, run in result.runs.items():
        print(f"  {arch:<8} run {run.mlflow_run_id}  bundle {run.bundle_uri}")
    url = tracking.experiment_url(result.tracking_uri, result.experiment_id)
    if url is None:  # a local store: the UI is one command away
        url = tracking.experiment_url("http://127.0.0.1:5000", result.experiment_id)
        print(f"MLflow UI: mlflow ui --backend-store-uri {result.tracking_uri}, then open")
    print(f"  {url}")
    if args.report:
        write_bytes(args.report, comparison_json(result).encode(), settings)
        print(f"wrote {args.report}")
