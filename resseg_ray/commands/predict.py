"""Segment whole scenes with a trained model: mask and probability COGs per scene.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg predict --model runs/demo-prop18/model.resseg.safetensors \\
        --scenes data/demo/scenes/test/ --out runs/predictions
    resseg predict --model models:/resseg-buildings@best --scenes s3://bucket/post/*.tif \\
        --out s3://bucket/maps --window 512 --overlap 112 --blend linear

Scenes whose outputs are complete are skipped (re-running resumes); a scene that fails
is reported and the others go on; the exit status is 2 when any scene failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from resseg_ray.cli import (
    ActorPool,
    add_actor_options,
    add_predictor_options,
    add_stac_options,
    bound_gdal_cache,
    init_ray,
    predict_options,
    scene_inputs,
)
from resseg_ray.config import load_config
from resseg_ray.config.flags import add_config_options
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.conflation import existing_buildings
from resseg_ray.geo.storage import StorageSettings, check_output_file, write_bytes
from resseg_ray.inference.batch import predict_scenes, predict_scenes_on_ray
from resseg_ray.inference.outputs import check_destination, output_options
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.report import PredictReport
from resseg_ray.inference.stac_items import ModelProvenance, check_catalog_destination, write_run_catalog
from resseg_ray.models.bundle import load_bundle_bytes
from resseg_ray.models.source import fetch_bundle_bytes


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        required=True,
        help="bundle path, s3:// bundle, or an MLflow models:/NAME@ALIAS, models:/NAME/VERSION or "
        "runs:/ID/model (tracking server from MLFLOW_TRACKING_URI)",
    )
    p.add_argument(
        "--scenes",
        nargs="+",
        default=[],
        metavar="SCENE",
        help="scene URIs, globs, folders or s3:// prefixes, and STAC items, collections or catalogs "
        "(.json files, s3:// or http(s):// URLs; see Scenes from STAC); required unless --stac-search",
    )
    p.add_argument("--out", required=True, metavar="FOLDER", help="output folder or s3:// prefix")
    add_predictor_options(p, outputs=True)
    add_stac_options(p)
    p.add_argument("--overwrite", action="store_true", help="redo scenes whose outputs exist")
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write the run's report as JSON (format resseg-predict-report/1) to this file or s3:// "
        "URI: per scene its outputs, megapixels, seconds, Mpx/s, runtime, buildings, already mapped, "
        "error and status (done, skipped, failed), and the run's totals and catalog. Written even when "
        "a scene failed (the exit status is still 2); a folder, an input or an unwritable place is "
        "refused before any work",
    )
    p.add_argument(
        "--no-stac",
        dest="stac",
        action="store_false",
        help="do not write the STAC items (<stem>_item.json) and catalog.json of the outputs",
    )
    add_actor_options(p)
    p.add_argument(
        "--split-mpx",
        type=float,
        default=64.0,
        help="with --actors: split scenes larger than this many megapixels (and every scene when "
        "there are fewer scenes than actors) into row ranges segmented by different actors "
        "(default 64; 0 never splits)",
    )
    add_config_options(p, used="its storage and predict sections are used")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    bound_gdal_cache()
    cfg = load_config(args.config, args.overrides)
    settings = StorageSettings.resolve(cfg.storage)
    predict = predict_options(args, cfg)
    pool = ActorPool.of(args)
    if not (math.isfinite(args.split_mpx) and args.split_mpx >= 0):
        raise ConfigError(f"--split-mpx must be a finite number >= 0 (0: never split), got {args.split_mpx}")
    if not args.scenes and args.stac_search is None and cfg.stac.search is None:
        raise ConfigError("give the scenes: --scenes (files, folders, STAC documents) and/or --stac-search")
    inputs = scene_inputs(args.scenes, args, cfg, settings)
    scenes = inputs.uris
    # scenes that share a file name (an acquisition cut into quadkey folders) get distinct names
    options = dataclasses.replace(output_options(predict, settings), names=inputs.output_names())
    check_destination(args.out, scenes, options, settings)
    if args.report:
        check_output_file(args.report, settings, "--report", inputs=[*scenes, args.model])
    if args.stac:
        check_catalog_destination(args.out, scenes, options, settings)
    if predict.existing is not None:  # read (and checked) once, before any scene is segmented
        mapped = existing_buildings(predict.existing, settings)
        print(f"{len(mapped.geometries)} buildings already mapped in {predict.existing}", flush=True)
    bundle_bytes = fetch_bundle_bytes(args.model, settings)
    bundle = load_bundle_bytes(bundle_bytes, args.model)
    model = ModelProvenance.of(args.model, bundle_bytes, bundle.info)
    if args.actors:
        init_ray()
        gpus = pool.gpus_on()
        print(
            f"segmenting {len(scenes)} scenes on Ray: {args.actors} actors x {gpus:g} GPU, "
            f"{args.cpus_per_actor:g} CPU",
            flush=True,
        )
        reports = predict_scenes_on_ray(
            bundle_bytes,
            predict,
            scenes,
            args.out,
            settings,
            args.overwrite,
            actors=args.actors,
            gpus_per_actor=gpus,
            cpus_per_actor=args.cpus_per_actor,
            split_mpx=args.split_mpx,
            options=options,
        )
    else:
        reports = predict_scenes(
            ScenePredictor(bundle, predict), scenes, args.out, settings, options, overwrite=args.overwrite
        )
    catalog, items = None, 0
    if args.stac:
        finished = [(r.uri, r.buildings, r.already_mapped, r.engine) for r in reports if r.error is None]
        if finished:
            catalog, items = write_run_catalog(args.out, finished, options, predict, model, inputs, settings)
    report = PredictReport(reports, args.out, predict.wants_polygons, predict.existing, catalog, items)
    for line in report.lines():
        print(line)
    if args.report:
        write_bytes(args.report, report.to_json().encode(), settings)
        print(f"wrote {args.report}")
    failed = report.of("failed")
    if failed:
        raise InputDataError(
            f"{len(failed)} of {len(reports)} scenes failed: "
            + "; ".join(f"{r.uri}: {r.error}" for r in failed)
        )
