"""Segment whole scenes with a trained model: mask and probability COGs per scene.

    python jobs/predict.py --model runs/demo-prop18/model.resseg.safetensors \\
        --scenes data/demo/scenes/test/ --out runs/predictions
    python jobs/predict.py --model models:/resseg-buildings@best --scenes s3://bucket/post/*.tif \\
        --out s3://bucket/maps --window 512 --overlap 112 --blend linear

Scenes whose outputs are complete are skipped (re-running resumes); a scene that fails
is reported and the others go on; the exit status is 2 when any scene failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resseg_ray.cli import add_predictor_options, bound_gdal_cache, init_ray, run_job
from resseg_ray.config import load_config
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.storage import StorageSettings, expand_uris
from resseg_ray.inference.batch import predict_scenes, predict_scenes_on_ray
from resseg_ray.inference.outputs import PROB_DTYPES, OutputOptions
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.vectorize import PolygonOptions
from resseg_ray.inference.windows import BLEND_MODES
from resseg_ray.models.bundle import load_bundle
from resseg_ray.models.source import resolve_bundle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="bundle path, s3:// bundle, or models:/NAME@ALIAS")
    p.add_argument("--scenes", nargs="+", required=True, help="scene URIs, globs or folders/prefixes")
    p.add_argument("--out", required=True, help="output folder or s3:// prefix")
    add_predictor_options(p)
    p.add_argument("--blend", choices=BLEND_MODES, default="flat", help="blending of overlaps (default flat)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    p.add_argument("--prob-dtype", choices=PROB_DTYPES, default="uint8", help="probability raster type")
    p.add_argument("--no-prob", action="store_true", help="write only the masks")
    p.add_argument("--polygons", action="store_true", help="also write <stem>_buildings.geojson")
    p.add_argument(
        "--min-area", type=float, default=10.0, help="drop smaller polygons (CRS units², default 10)"
    )
    p.add_argument(
        "--simplify", type=float, default=0.5, help="simplification tolerance (CRS units, default 0.5)"
    )
    p.add_argument("--wgs84", action="store_true", help="polygons in EPSG:4326 instead of the scene's CRS")
    p.add_argument(
        "--bands",
        nargs="+",
        type=int,
        help="1-based scene band indexes in the model's band order, e.g. 3 2 1 4",
    )
    p.add_argument("--overwrite", action="store_true", help="redo scenes whose outputs exist")
    p.add_argument(
        "--actors",
        type=int,
        help="segment on Ray: a Ray Data actor pool of this many actors (default: in-process)",
    )
    p.add_argument("--gpus-per-actor", type=float, help="default 1 when the Ray cluster has GPUs, else 0")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per actor (default 1)")
    p.add_argument(
        "--split-mpx",
        type=float,
        default=64.0,
        help="with --actors: split scenes larger than this many megapixels (and every scene when "
        "there are fewer scenes than actors) into row ranges segmented by different actors "
        "(default 64; 0 never splits)",
    )
    p.add_argument("--config", help="YAML configuration (its storage section is used)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="configuration override")
    args = p.parse_args()
    bound_gdal_cache()
    cfg = load_config(args.config, args.overrides)
    settings = StorageSettings.resolve(cfg.storage)
    polygons = PolygonOptions(args.min_area, args.simplify, args.wgs84) if args.polygons else None
    options = OutputOptions(prob=not args.no_prob, prob_dtype=args.prob_dtype, polygons=polygons)
    scenes = expand_uris(args.scenes, settings)
    with tempfile.TemporaryDirectory(prefix="resseg-model-") as tmp:
        path = resolve_bundle(args.model, tmp, settings)
        bundle = load_bundle(path)
        with open(path, "rb") as f:
            bundle_bytes = f.read()
    kwargs = {
        "window": args.window,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "blend": args.blend,
        "normalization": args.normalization,
        "adapt_bn": args.adapt_bn,
    }
    ScenePredictor.check_options(**kwargs)
    if args.actors:
        if args.actors < 1:
            raise ConfigError(f"--actors must be >= 1, got {args.actors}")
        if args.split_mpx < 0:
            raise ConfigError(f"--split-mpx must be >= 0 (0: never split), got {args.split_mpx}")
        import ray

        init_ray()
        gpus = args.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        print(
            f"segmenting {len(scenes)} scenes on Ray: {args.actors} actors x {gpus:g} GPU, "
            f"{args.cpus_per_actor:g} CPU",
            flush=True,
        )
        reports = predict_scenes_on_ray(
            bundle_bytes,
            kwargs,
            scenes,
            args.out,
            settings,
            options,
            args.overwrite,
            args.bands,
            actors=args.actors,
            gpus_per_actor=gpus,
            cpus_per_actor=args.cpus_per_actor,
            split_mpx=args.split_mpx,
        )
    else:
        predictor = ScenePredictor(bundle, DevicePolicy.resolve(args.device), **kwargs)
        reports = predict_scenes(
            predictor, scenes, args.out, settings, options, args.overwrite, bands=args.bands
        )
    done = [r for r in reports if r.error is None and not r.skipped]
    failed = [r for r in reports if r.error is not None]
    print(f"\n{'scene':<48} {'Mpx':>7} {'s':>8} {'Mpx/s':>7}  status")
    for r in reports:
        status = "failed" if r.error else "skipped" if r.skipped else "done"
        print(f"{r.uri[-48:]:<48} {r.megapixels:7.2f} {r.seconds:8.1f} {r.mpx_per_s:7.2f}  {status}")
    mpx, secs = sum(r.megapixels for r in done), sum(r.seconds for r in done)
    print(
        f"{len(done)} segmented ({mpx:.1f} Mpx in {secs:.1f} s), {len(reports) - len(done) - len(failed)} "
        f"skipped, {len(failed)} failed; outputs under {args.out}"
    )
    if failed:
        raise InputDataError(
            f"{len(failed)} of {len(reports)} scenes failed: "
            + "; ".join(f"{r.uri}: {r.error}" for r in failed)
        )


if __name__ == "__main__":
    run_job(main)
