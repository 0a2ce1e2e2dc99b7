"""Evaluate building maps against labels: per scene and mean, like the paper's Table II.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg evaluate --masks runs/predictions/*_mask.tif --labels data/demo/labels/test_*_labels.tif
    resseg evaluate --model runs/demo-prop18/model.resseg.safetensors --dataset data/demo
    resseg evaluate --model models:/resseg-buildings@best --scenes a.tif b.tif \\
        --labels a_labels.tif b_labels.tif --mlflow-run RUN_ID --report table.md
    resseg evaluate --masks runs/predictions/*_mask.tif --labels ... --report scores.json

Label rasters hold 0 (ground), 1 (building) and 255 (ignored); jobs/prepare.py writes
them. Pixels without input data or labelled 255 count for nothing.
"""

from __future__ import annotations

import argparse
import os

from resseg_ray.cli import (
    add_predictor_options,
    add_stac_options,
    bound_gdal_cache,
    json_report,
    predictor_from_args,
    scene_inputs,
)
from resseg_ray.config import load_config
from resseg_ray.config.flags import add_config_options
from resseg_ray.data.prepare import load_dataset
from resseg_ray.errors import ConfigError
from resseg_ray.evaluation.report import evaluation_json
from resseg_ray.evaluation.scenes import Evaluation, evaluate_mask, evaluate_scenes, markdown_table
from resseg_ray.geo.storage import StorageSettings, check_output_file, expand_uris, write_bytes


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--masks",
        nargs="+",
        metavar="MASK",
        help="score existing masks (0/1, 255 no data) against --labels, paired in order",
    )
    p.add_argument(
        "--model",
        help="bundle path, s3:// bundle or models:/ URI: segment --scenes (same windowing as predict) or "
        "the test scenes of --dataset first, then score",
    )
    p.add_argument(
        "--scenes",
        nargs="+",
        metavar="SCENE",
        help="scenes to segment with --model, in the order of --labels",
    )
    p.add_argument(
        "--labels", nargs="+", metavar="RASTER", help="label rasters (0/1/255), one per mask or scene"
    )
    p.add_argument(
        "--dataset", metavar="FOLDER", help="prepared dataset: --model on its test scenes and their labels"
    )
    p.add_argument("--name", help="row name in the table (default: the model's architecture, or 'masks')")
    p.add_argument(
        "--objects",
        action="store_true",
        help="object-level building F1 too, SpaceNet style: polygons of the mask and of the labels "
        "(4-connected, >= 10 m²) matched one-to-one at IoU >= 0.5, largest predictions first; with "
        "--model each predicted mask is kept in a temporary GeoTIFF for it",
    )
    add_predictor_options(p)
    add_stac_options(p)
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write the markdown table to this file or s3:// URI; a FILE ending in .json gets the "
        "report as JSON instead (format resseg-evaluation-report/1: the row's name; per scene its name, "
        "uri, metrics, confusion counts (rows: true class, columns: predicted), seconds and megapixels; "
        "the mean over scenes and the metrics pooled over all pixels; a metric of nothing is null). It "
        "may not be one of the inputs or a folder (checked before any work)",
    )
    p.add_argument(
        "--mlflow-run",
        metavar="ID",
        help="log test_<scene>_<metric> and test_mean_<metric> to this run (mlflow.tracking_uri or "
        "MLFLOW_TRACKING_URI); an unknown run id stops the job before any work",
    )
    add_config_options(p, used="its storage section is used")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    bound_gdal_cache()
    cfg = load_config(args.config, args.overrides)
    settings = StorageSettings.resolve(cfg.storage)
    if args.mlflow_run:  # checked before any work
        from mlflow.exceptions import MlflowException

        from resseg_ray.train import tracking

        uri = tracking.resolve_tracking_uri(cfg.mlflow, os.getcwd())
        tracking.check_tracking(uri)
        try:
            tracking.client(uri).get_run(args.mlflow_run)
        except MlflowException:
            raise ConfigError(
                f"--mlflow-run {args.mlflow_run}: no such run in the MLflow store at {uri}; "
                "copy the run id from the MLflow UI or the training job's output"
            ) from None
    if args.report:
        inputs = [
            *(args.masks or []),
            *(args.labels or []),
            *(args.scenes or []),
            *([args.model] if args.model else []),
        ]
        check_output_file(args.report, settings, "--report", inputs=inputs)

    if args.masks:
        if args.model or args.scenes or args.dataset:
            raise ConfigError("give either --masks with --labels, or --model with --scenes/--dataset")
        masks = expand_uris(args.masks, settings)
        labels = expand_uris(args.labels or [], settings)
        if len(labels) != len(masks):
            raise ConfigError(f"--masks matched {len(masks)} files but --labels {len(labels)}; give one each")
        ev = Evaluation(
            [
                evaluate_mask(m, lab, settings, objects=args.objects)
                for m, lab in zip(masks, labels, strict=True)
            ]
        )
        name = args.name or "masks"
    elif args.model:
        if args.dataset:
            desc = load_dataset(args.dataset, settings)
            pairs = [(s["uri"], s["label_uri"]) for s in desc.scenes("test")]
            if not pairs:
                raise ConfigError(f"{args.dataset} has no test scenes")
        else:
            scenes = scene_inputs(args.scenes or [], args, cfg, settings).uris
            labels = expand_uris(args.labels or [], settings)
            if not scenes or len(labels) != len(scenes):
                raise ConfigError(
                    f"--scenes gave {len(scenes)} scenes and --labels {len(labels)}; give one each"
                )
            pairs = list(zip(scenes, labels, strict=True))
        predictor = predictor_from_args(args, cfg, settings)
        ev = evaluate_scenes(predictor, pairs, settings, objects=args.objects)
        name = args.name or predictor.info.architecture
    else:
        raise ConfigError(
            "nothing to evaluate: give --masks and --labels, or --model with --scenes/--dataset"
        )

    print(
        f"{'scene':<24} {'precision':>9} {'recall':>7} {'F1':>7} {'IoU':>7} {'accuracy':>8} {'macro F1':>8}"
    )
    for s in ev.scenes:
        m = s.metrics
        print(
            f"{s.name:<24} {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:7.4f} {m['iou']:7.4f} "
            f"{m['accuracy']:8.4f} {m['macro_f1']:8.4f}"
        )
    for label, m in (("mean", ev.mean()), ("all pixels", ev.pooled())):
        print(
            f"{label:<24} {m['precision']:9.4f} {m['recall']:7.4f} {m['f1']:7.4f} {m['iou']:7.4f} "
            f"{m['accuracy']:8.4f} {m['macro_f1']:8.4f}"
        )
    if args.objects:
        for s in ev.scenes:
            m = s.metrics
            print(
                f"{s.name:<24} objects: {int(m['objects_pred'])} predicted, {int(m['objects_true'])} true, "
                f"precision {m['object_precision']:.4f}, recall {m['object_recall']:.4f}, "
                f"F1 {m['object_f1']:.4f}"
            )
        print(f"{'mean':<24} object F1 {ev.mean()['object_f1']:.4f}")
    table = markdown_table({name: ev})
    print()
    print(table)
    if args.report:
        text = evaluation_json(ev, name) if json_report(args.report) else table
        write_bytes(args.report, text.encode(), settings)
        print(f"wrote {args.report}")
    if args.mlflow_run:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, 0, 0) for k, v in ev.mlflow_metrics().items()]
        tracking.client(uri).log_batch(args.mlflow_run, metrics=metrics)
        print(f"logged {len(metrics)} metrics to MLflow run {args.mlflow_run} at {uri}")
