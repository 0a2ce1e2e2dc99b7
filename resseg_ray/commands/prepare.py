"""Prepare scenes for training: label rasters, normalisation statistics, tiles and manifest.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg prepare                      # build the demo set under ./data/demo
    resseg prepare --scenes s3://bucket/scenes/ --footprints s3://bucket/buildings.gpkg \\
        --test-scenes post/*.tif --test-footprints post/buildings.geojson --out s3://bucket/prepared
    resseg prepare --scenes a.tif b.tif --labels a_labels.tif b_labels.tif --out data/mine \\
        --set data.stride=100 --set data.val_fraction=0.25
    resseg prepare --scenes quake_pre.tif --post quake_post.tif --footprints quake_damage.geojson \\
        --out data/damage                # a damage data set of pre/post pairs
    resseg prepare --xbd /data/xBD/train /data/xBD/tier3 --test-xbd /data/xBD/hold --out data/xbd
"""

from __future__ import annotations

import argparse
import time

from resseg_ray.cli import (
    add_seed_option,
    add_stac_options,
    config_overrides,
    init_ray,
    scene_inputs,
)
from resseg_ray.config import Config, load_config
from resseg_ray.config.flags import add_config_options
from resseg_ray.data.prepare import DATASET_FILE, PreparedDataset, prepare_dataset
from resseg_ray.demo import prepare_damage_demo, prepare_demo
from resseg_ray.errors import ConfigError
from resseg_ray.geo.storage import StorageSettings, exists, join_uri


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scenes",
        nargs="+",
        metavar="SCENE",
        help="training scenes: URIs (/path, file://, s3://), globs (*.tif), folders or prefixes ending in / "
        "(every .tif, .tiff, .vrt, .jp2, .img below) or STAC items, collections or catalogs "
        "(default: the demo)",
    )
    p.add_argument(
        "--footprints",
        nargs="+",
        metavar="FILE",
        help="building polygons (GeoJSON, GeoPackage, Shapefile, FlatGeobuf; any CRS): one file shared by "
        "all scenes or one per scene",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        metavar="RASTER",
        help="instead of footprints: ready-made uint8 label rasters (0 ground, 1 building, 255 ignore), one "
        "per scene, on each scene's exact grid",
    )
    p.add_argument(
        "--test-scenes",
        nargs="+",
        metavar="SCENE",
        help="held-out test scenes: their labels are made, no tiles, no statistics",
    )
    p.add_argument("--test-footprints", nargs="+", metavar="FILE", help="footprints of the test scenes")
    p.add_argument("--test-labels", nargs="+", metavar="RASTER", help="label rasters of the test scenes")
    p.add_argument(
        "--post",
        nargs="+",
        metavar="SCENE",
        help="a damage data set: the post-event scene of each --scenes scene (the pre-event one), in the "
        "same order, from any sensor (read on the pre scene's grid); --footprints then carry each "
        "building's damage in --damage-field",
    )
    p.add_argument("--test-post", nargs="+", metavar="SCENE", help="the post-event scenes of --test-scenes")
    p.add_argument(
        "--xbd",
        nargs="+",
        metavar="FOLDER",
        help="a damage data set from xBD folders as published (local or s3://; e.g. its train and tier3): "
        "images/<event>_<id>_pre_disaster.png|tif with its _post_disaster image, labels/<same>.json "
        "with WKT in pixel coordinates and subtype; pairs stay pixel grids when their images have no "
        "CRS; images without their pair, and pairs without a post-event label document, are said and "
        "skipped",
    )
    p.add_argument("--test-xbd", nargs="+", metavar="FOLDER", help="xBD folders of held-out test pairs")
    p.add_argument(
        "--damage-field",
        default="subtype",
        metavar="FIELD",
        help="the footprints' field holding each building's damage: no-damage, minor-damage, major-damage, "
        "destroyed (any spelling, or 1..4), un-classified or empty for not graded (default subtype, xBD's)",
    )
    p.add_argument("--out", default="data/demo", help="output folder or s3:// prefix (default data/demo)")
    add_config_options(p, used="its storage and data sections are used")
    p.add_argument(
        "--demo-damage",
        action="store_true",
        help="build the demo's disasters instead (pre/post pairs of an earthquake, a flood and a fire to "
        "train on, a storm and an earthquake by other sensors to test on) as a damage data set",
    )
    p.add_argument(
        "--demo-scale", type=float, default=1.0, help="shrink the demo scenes: 0.05 to 4 (default 1.0)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild although dataset.json exists (otherwise a complete output is kept)",
    )
    p.add_argument("--no-ray", action="store_true", help="run everything in this process instead of on Ray")
    add_stac_options(p)
    add_seed_option(p)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)

    cfg = load_config(args.config, config_overrides(args))
    settings = StorageSettings.resolve(cfg.storage)
    if not args.force and exists(join_uri(args.out, DATASET_FILE), settings):
        print(f"{args.out} is already prepared ({DATASET_FILE} exists); --force rebuilds it")
        return
    start = time.perf_counter()
    others = args.scenes or args.post or args.footprints or args.labels or args.demo_damage
    if (args.xbd or args.test_xbd) and (others or not args.xbd):
        raise ConfigError(
            "--xbd takes the pairs and their damage from xBD folders: give --xbd FOLDER (and --test-xbd), "
            "without --scenes, --post, --footprints, --labels or --demo-damage"
        )
    if args.scenes is None and (args.footprints or args.labels or args.test_scenes):
        raise ConfigError("--footprints/--labels/--test-scenes need --scenes")
    scenes = scene_inputs(args.scenes, args, cfg, settings).uris if args.scenes else None
    tests = scene_inputs(args.test_scenes, args, cfg, settings).uris if args.test_scenes else None
    if not args.no_ray:
        init_ray()
    if args.demo_damage:
        if scenes is not None or args.post:
            raise ConfigError("--demo-damage builds the demo's own pairs: drop --scenes and --post")
        print(f"writing the demo's disasters under {join_uri(args.out, 'scenes')} and preparing them ...")
        result = prepare_damage_demo(args.out, cfg, settings, args.demo_scale)
    elif args.xbd:
        result = _prepare_xbd(args.xbd, args.test_xbd or [], args.out, cfg, settings)
    elif args.post or args.test_post:
        result = _prepare_pairs(args, scenes, tests, cfg, settings)
    elif scenes is None:
        print(
            f"writing the demo scenes under {join_uri(args.out, 'scenes')} and preparing them ...", flush=True
        )
        result = prepare_demo(args.out, cfg, settings, args.demo_scale)
    else:
        result = prepare_dataset(
            scenes,
            args.out,
            cfg,
            footprints=args.footprints,
            labels=args.labels,
            test_scenes=tests,
            test_footprints=args.test_footprints,
            test_labels=args.test_labels,
            settings=settings,
        )
    for s in result.scenes:
        extra = f", {s.footprints} footprints" if s.footprints is not None else ""
        if s.role == "train":
            print(
                f"  train {s.uri}: {s.width}x{s.height}, tiles {s.tiles_train} train / {s.tiles_val} val "
                f"(dropped {s.dropped_nodata} no-data, {s.dropped_border} on the split border){extra}"
            )
        else:
            print(f"  test  {s.uri}: {s.width}x{s.height}, labels {s.label_uri}{extra}")
    pooled = result.statistics.pooled
    print(f"  statistics {result.stats_uri}: mean {[round(m, 1) for m in pooled.mean]}")
    print(f"               std {[round(v, 1) for v in pooled.std]}")
    print(
        f"prepared {result.dataset_uri} in {time.perf_counter() - start:.1f} s "
        f"(manifest {result.manifest_uri})"
    )


def _prepare_pairs(
    args: argparse.Namespace,
    scenes: list[str] | None,
    tests: list[str] | None,
    cfg: Config,
    settings: StorageSettings,
) -> PreparedDataset:
    """``--post``: the pre/post pairs prepared as a damage data set."""
    from resseg_ray.data.pairs import DamagePair, prepare_pairs
    from resseg_ray.geo.storage import expand_uris, scene_stem

    if args.labels or args.test_labels:
        raise ConfigError("--post takes building damage from --footprints, not --labels")

    def pairs(pre: list[str] | None, post: list[str] | None, fps: list[str] | None, what: str) -> list:
        if not pre and not post:
            return []
        posts = expand_uris(post or [], settings)
        if not pre or len(posts) != len(pre):
            raise ConfigError(
                f"{what}: {len(pre or [])} pre-event scenes but {len(posts)} post-event ones; pair each"
            )
        if not fps or len(fps) not in (1, len(pre)):
            raise ConfigError(
                f"{what}: give the buildings with their damage (--footprints): one file, or one per pair"
            )
        return [
            DamagePair(
                scene_stem(a).removesuffix("_pre"),
                a,
                b,
                fps[0] if len(fps) == 1 else fps[k],
                args.damage_field,
            )
            for k, (a, b) in enumerate(zip(pre, posts, strict=True))
        ]

    train = pairs(scenes, args.post, args.footprints, "--scenes/--post")
    if not train:
        raise ConfigError("--test-post needs training pairs too: --scenes and --post")
    test = pairs(tests, args.test_post, args.test_footprints, "--test-scenes/--test-post")
    return prepare_pairs(train, args.out, cfg, test, settings)


def _prepare_xbd(
    roots: list[str], test_roots: list[str], out: str, cfg: Config, settings: StorageSettings
) -> PreparedDataset:
    """``--xbd``: the pairs of xBD folders, with their post-event label documents, prepared as a
    damage data set; what cannot be used is said on stderr, one line each."""
    import sys

    from resseg_ray.data.pairs import DamagePair, prepare_pairs
    from resseg_ray.geo.xbd import find_pairs

    seen: dict[str, str] = {}

    def pairs(folders: list[str], flag: str) -> list[DamagePair]:
        out_pairs = []
        for root in folders:
            found, skipped = find_pairs(root, settings)
            for line in skipped:
                print(f"warning: {line}", file=sys.stderr)
            for p in found:
                if p.post_labels is None:
                    print(
                        f"warning: {p.post}: no label document {p.name}_post_disaster.json under "
                        f"{join_uri(root, 'labels')}; skipped",
                        file=sys.stderr,
                    )
                    continue
                if p.name in seen:
                    raise ConfigError(
                        f"{flag}: the pair {p.name} is in {seen[p.name]} and in {root}; give each folder once"
                    )
                seen[p.name] = root
                out_pairs.append(DamagePair(p.name, p.pre, p.post, None, xbd_labels=p.post_labels))
        return out_pairs

    train = pairs(roots, "--xbd")
    if not train:
        raise ConfigError(f"--xbd {' '.join(roots)}: no pair with its post-event label document")
    test = pairs(test_roots, "--test-xbd")
    print(f"{len(train)} xBD pairs to train on, {len(test)} to test on", flush=True)
    return prepare_pairs(train, out, cfg, test, settings)
