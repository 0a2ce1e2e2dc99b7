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
from resseg_ray.config.flags import add_config_options
from resseg_ray.geo.storage import StorageSettings, check_output_file, write_bytes
from resseg_ray.train.report import report_json, summary_lines
from resseg_ray.train.trainer import run_training


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_config_options(p, os.path.join(CONFIGS, "demo.yaml"))
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write the run's report as JSON (format resseg-train-report/1) to this file or s3:// "
        "URI: run name, resumed or not, seconds, the progress with every epoch's metrics and the best "
        "epochs (a value not yet finite is null), bundle, checkpoints, MLflow run and registered version. "
        "A folder or the configuration file itself is refused before any work",
    )
    add_seed_option(p)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    cfg = load_config(args.config, config_overrides(args))
    settings = StorageSettings.resolve(cfg.storage)
    if args.report:
        check_output_file(args.report, settings, "--report", inputs=[args.config])
    init_ray()
    r = run_training(cfg)
    for line in summary_lines(r, cfg.mlflow.alias):
        print(line)
    if args.report:
        write_bytes(args.report, report_json(r).encode(), settings)
        print(f"wrote {args.report}")
