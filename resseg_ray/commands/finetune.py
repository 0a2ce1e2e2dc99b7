"""Refine a trained model on a hand-annotated part of a new scene (the paper's Table III).

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg finetune --model runs/demo-prop18/model.resseg.safetensors \\
        --scene data/demo/scenes/test/test_01.tif --labels data/demo/labels/test_01_labels.tif \\
        --fraction 0.07
    resseg finetune --model models:/resseg-buildings@best --scene s3://bucket/post/D12.tif \\
        --area annotated_area.geojson --footprints annotated_buildings.geojson \\
        --config configs/finetune_demo.yaml --set train.epochs=100 --adapt-bn --report refine.json
    resseg finetune --model runs/demo-damage-prop18/model.resseg.safetensors \\
        --pre data/demo-damage/scenes/storm_01_pre.tif --post data/demo-damage/scenes/storm_01_post.tif \\
        --footprints data/demo-damage/scenes/storm_01_damage.geojson --fraction 0.15 \\
        --config configs/finetune_damage_demo.yaml

Trains only on tiles wholly inside the annotated area, evaluates the model before and
after on the rest of the scene only, prints a Table III-style table, logs it to the
refinement's MLflow run and registers the refined model as a new version (alias
refined-<scene>) only when it beats its parent on annotated pixels kept out of training. A
damage network refines on a pair (--pre, --post) with each building's damage, scored by
the xView2 score.
"""

from __future__ import annotations

import argparse
import os

from resseg_ray.adapt.refine import AreaSpec, refine_scene
from resseg_ray.adapt.report import refine_json
from resseg_ray.cli import (
    CONFIGS,
    ENGINE_FIELDS,
    add_engine_options,
    add_seed_option,
    add_stac_options,
    bound_gdal_cache,
    config_overrides,
    init_ray,
    json_report,
    one_scene,
)
from resseg_ray.config import PredictSection, load_config
from resseg_ray.config.flags import add_config_options, given
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.geo.storage import StorageSettings, check_output_file, write_bytes
from resseg_ray.runtime import candidates


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the parent: bundle path, s3:// bundle or models:/ URI")
    p.add_argument(
        "--scene",
        help="the new scene (local, s3://, or a STAC item; see --stac-asset); a damage network: --pre",
    )
    p.add_argument(
        "--pre",
        metavar="SCENE",
        help="a damage network (damage-prop<depth>), instead of --scene: the scene before the event",
    )
    p.add_argument(
        "--post",
        metavar="SCENE",
        help="with --pre: the scene after the event, from any sensor (read on the pre scene's grid)",
    )
    p.add_argument(
        "--area",
        metavar="FILE",
        help="polygons of the annotated area (GeoJSON, GeoPackage, Shapefile; any CRS)",
    )
    p.add_argument(
        "--fraction",
        type=float,
        metavar="F",
        help="experiments, instead of --area: a square block holding F of the scene's valid pixels "
        "(the paper: 0.07 small, 0.15 large)",
    )
    p.add_argument(
        "--placement",
        choices=("contiguous", "random"),
        default="contiguous",
        help="with --fraction: the block at the top-left corner (contiguous), or at a random place drawn "
        "from --seed",
    )
    p.add_argument(
        "--footprints",
        metavar="FILE",
        help="building footprints drawn in the area (any CRS); footprints not touching the area are "
        "ignored with a warning",
    )
    p.add_argument(
        "--labels",
        metavar="RASTER",
        help="or a label raster of the scene (0/1/255; a pair's: 0 background, 1..4 damage, 255, on the pre "
        "scene's grid); only its pixels inside the area are used",
    )
    p.add_argument(
        "--damage-field",
        default="subtype",
        metavar="FIELD",
        help="with --pre/--post and --footprints: the field holding each building's damage: no-damage, "
        "minor-damage, major-damage, destroyed (any spelling, or 1..4), un-classified or empty for not "
        "graded (default subtype, xBD's)",
    )
    p.add_argument(
        "--adapt-bn",
        action="store_true",
        help="refine from the parent with BatchNorm statistics re-estimated on the scene "
        "(train.refine_start=adapted, already the default of configs/finetune_demo.yaml; the "
        "re-estimated parent is always scored as its own row)",
    )
    p.add_argument(
        "--alias",
        help="registry alias of the refined version (default refined-<scene>; the parent's best is "
        "never moved)",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write the table to this markdown file or s3:// URI; a FILE ending in .json gets the "
        "report as JSON instead (format resseg-refine-report/1: scene; parent, the --model given; area, "
        "the fraction and pixels of the label rasters written; verdict: chosen, ships, the held-out f1 "
        "and accuracy per candidate, pixels, blocks, min_gain, line; rest_of_scene, the metrics per "
        "model scored there: parent, adapted, refined; bundle_uri, mlflow_run_id, "
        "registered_version). A folder, an input or an unwritable place is refused before the training",
    )
    add_config_options(p, os.path.join(CONFIGS, "finetune_demo.yaml"))
    add_engine_options(p)  # what runs the before/after scoring (predict.runtime, predict.precision)
    add_stac_options(p)
    add_seed_option(p)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    bound_gdal_cache()
    cfg = load_config(args.config, config_overrides(args))
    engine = {k: v for k, v in given(args, PredictSection).items() if k in ENGINE_FIELDS}
    cfg = cfg.replace(predict=cfg.predict.replace(**engine))
    # the scoring's runtime and precision must run here: refused now, not after the training
    candidates(cfg.predict.runtime, cfg.predict.precision, DevicePolicy.resolve(cfg.predict.device).device)
    area = AreaSpec(args.area, args.fraction, args.placement, cfg.run.seed)
    settings = StorageSettings.resolve(cfg.storage)
    if (args.scene is None) == (args.pre is None) or (args.pre is None) != (args.post is None):
        raise ConfigError(
            "give the scene to refine on as --scene SCENE (a building network) or as --pre SCENE --post "
            "SCENE (a damage network), one of the two"
        )
    if args.report:  # before the training, not after it
        scenes = (args.scene, args.pre, args.post, args.area, args.footprints, args.labels)
        inputs = [args.config, args.model, *filter(None, scenes)]
        check_output_file(args.report, settings, "--report", inputs=inputs)
    scene = one_scene(args.scene or args.pre, args, cfg, settings, "--scene" if args.scene else "--pre")
    post = one_scene(args.post, args, cfg, settings, "--post") if args.post else None
    init_ray()
    r = refine_scene(
        cfg,
        args.model,
        scene,
        area,
        footprints=args.footprints,
        labels=args.labels,
        adapt_bn=args.adapt_bn,
        alias=args.alias,
        post=post,
        damage_field=args.damage_field,
    )
    table = r.table()
    print()
    print(table)
    if args.report:
        text = refine_json(r, args.model) if json_report(args.report) else table
        write_bytes(args.report, text.encode(), settings)
    verdict = r.verdict  # its line was said as the refinement went (refine_scene's log)
    assert verdict is not None
    if verdict.ships:
        print(f"refined model: {r.bundle_uri}")
    else:  # the refined bundle stays in its run folder, unregistered, for inspection
        use = "--adapt-bn with " if verdict.chosen == "adapted" else ""
        print(f"not registered: keep mapping this scene with {use}{args.model}")
        print(f"refined bundle (for inspection): {r.bundle_uri}")
    print(
        f"MLflow run:    {r.mlflow_run_id}"
        + (f", registered version {r.registered_version}" if r.registered_version else ", nothing registered")
    )
