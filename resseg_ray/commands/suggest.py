"""Suggest where to annotate a scene first: the regions where the model is least certain.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg suggest --model runs/demo-prop18/model.resseg.safetensors \\
        --scene data/demo/scenes/test/test_01.tif --fraction 0.07 --out suggested.geojson
    resseg finetune --model ... --scene ... --area suggested.geojson --footprints drawn.geojson

Writes a GeoJSON of square regions (rank 1 = most uncertain: highest mean predictive
entropy), together holding the requested fraction of the scene's valid pixels.
"""

from __future__ import annotations

import argparse
import json

from resseg_ray.adapt.suggest import suggest_regions
from resseg_ray.cli import (
    add_predictor_options,
    add_stac_options,
    bound_gdal_cache,
    one_scene,
    predictor_from_args,
)
from resseg_ray.config import load_config
from resseg_ray.config.flags import add_config_options
from resseg_ray.geo.scene import PREDICT_BANDS, open_scene
from resseg_ray.geo.storage import StorageSettings, check_output_file, write_bytes
from resseg_ray.progress import tenths


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="bundle path, s3:// bundle or models:/ URI")
    p.add_argument("--scene", required=True, help="the scene to annotate (local, s3://, or a STAC item)")
    p.add_argument(
        "--fraction", type=float, default=0.07, help="share of the scene to suggest (default 0.07)"
    )
    p.add_argument(
        "--region", type=int, default=256, help="side of the square regions in pixels (default 256)"
    )
    p.add_argument("--out", required=True, help="GeoJSON to write (local or s3://)")
    p.add_argument("--wgs84", action="store_true", help="coordinates in EPSG:4326 instead of the scene's CRS")
    add_predictor_options(p)
    add_stac_options(p)
    add_config_options(p, used="its storage section is used")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    bound_gdal_cache()
    cfg = load_config(args.config, args.overrides)
    settings = StorageSettings.resolve(cfg.storage)
    check_output_file(args.out, settings, "--out", inputs=[args.scene, args.model])
    uri = one_scene(args.scene, args, cfg, settings)
    predictor = predictor_from_args(args, cfg, settings)
    bands = predictor.options.bands
    scene = open_scene(
        uri, settings, bands=bands, expected_bands=predictor.info.in_bands, bands_option=PREDICT_BANDS
    )
    collection = suggest_regions(
        predictor, scene, settings, args.fraction, args.region, args.wgs84, tenths(uri)
    )
    write_bytes(args.out, json.dumps(collection, indent=1).encode(), settings)
    print(f"{'rank':>4} {'mean entropy (bits)':>19} {'share of scene':>14}  rows x cols")
    for f in collection["features"]:
        q = f["properties"]
        print(
            f"{q['rank']:>4} {q['mean_entropy_bits']:>19.4f} {100 * q['scene_fraction']:>13.2f}%  "
            f"{q['rows'][0]}-{q['rows'][1]} x {q['cols'][0]}-{q['cols'][1]}"
        )
    total = sum(f["properties"]["scene_fraction"] for f in collection["features"])
    print(f"{len(collection['features'])} regions, {100 * total:.1f} % of the scene; wrote {args.out}")
