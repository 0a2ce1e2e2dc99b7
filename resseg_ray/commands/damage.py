"""Map which buildings are damaged, and how badly, from pre- and post-event scenes.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg damage --pre before.tif --post after.tif --model runs/damage-prop18/model.resseg.safetensors \\
        --out runs/damage
    resseg damage --pre a_pre.tif b_pre.tif --post a_post.tif b_post.tif --model models:/resseg-damage@best \\
        --out s3://bucket/event/damage --wgs84 --vector-format parquet
    resseg damage --pre event/pre/collection.json --post event/post/collection.json \\
        --model models:/resseg-damage@best --out runs/event-damage

Each pre scene is paired, in order, with a post scene of the same place (from any sensor: it is
read on the pre scene's grid). Scenes from STAC (an item, or a collection or catalog per event,
e.g. its tiles in quadkey folders) are paired by place instead: each pre scene with the post
scene that overlaps it most; scenes left without a partner are said and not mapped. Per pair
``<name>`` (the pre scene's file name less ``_pre``, or its STAC item id) it
writes ``<name>_damage.tif`` (0 background, 1 no-damage, 2 minor, 3 major, 4 destroyed, 255 no
data; a COG), ``<name>_damage_prob.tif`` (each class's probability x 250, five bands),
``<name>_damage_buildings.geojson`` (each building with its ``damage`` and ``confidence``) and
``<name>_damage_summary.json`` (buildings per class), and prints the buildings per class.
With ``--actors N`` the pairs are mapped on Ray by N actors, each loading the model once; a
pair that fails is said and the others go on. Pairs whose maps are all there are skipped (a
re-run resumes; ``--overwrite`` maps them again).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from resseg_ray.cli import (
    ENGINE_FIELDS,
    PREDICTOR_FIELDS,
    ActorPool,
    add_actor_options,
    bound_gdal_cache,
    init_ray,
    predict_options,
)
from resseg_ray.config import PredictSection, load_config
from resseg_ray.config.flags import add_config_options, add_flags
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.event_pairs import pair_event_scenes
from resseg_ray.geo.stac import SceneInputs, is_stac_uri, resolve_scenes
from resseg_ray.geo.storage import StorageSettings, check_writable, expand_uris, normalize_uri
from resseg_ray.progress import Progress, tenths

if TYPE_CHECKING:  # the inference modules load torch: imported where the job runs
    from resseg_ray.inference.damage import DamageReport
    from resseg_ray.inference.vectorize import PolygonOptions

POLYGON_FIELDS = ("min_area", "simplify", "wgs84", "vector_format")
"""The ``predict`` fields of the buildings' polygons that ``damage`` takes."""


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--pre", nargs="+", metavar="SCENE", required=True,
        help="pre-event scenes (files, globs, folders, s3://, STAC items, collections or catalogs)",
    )  # fmt: skip
    p.add_argument(
        "--post", nargs="+", metavar="SCENE", required=True,
        help="post-event scenes (any sensor, CRS or grid): files one per --pre scene in the same order; "
        "from STAC, each --pre scene gets the one overlapping it most",
    )  # fmt: skip
    p.add_argument(
        "--model", required=True,
        help="a damage model (damage-prop<depth>): bundle path, s3:// bundle or models:/ URI",
    )  # fmt: skip
    p.add_argument("--out", required=True, metavar="FOLDER", help="output folder or s3:// prefix")
    p.add_argument(
        "--no-stac",
        dest="stac",
        action="store_false",
        help="write no STAC item per pair (<name>_damage_item.json: the outputs as assets, the pre and "
        "post scenes, the model and the buildings per class; none for pairs without a CRS) and no "
        "catalog.json of them",
    )
    p.add_argument("--overwrite", action="store_true", help="map again the pairs whose maps are there")
    add_actor_options(p, "pair")
    fields = [f for f in PREDICTOR_FIELDS if f != "bands"]
    add_flags(p, PredictSection, [*fields, *ENGINE_FIELDS, *POLYGON_FIELDS])
    add_config_options(p, used="its predict and storage sections are used")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    from resseg_ray.inference.damage import (
        check_damage_model,
        pair_name,
        summary_line,
    )
    from resseg_ray.inference.damage_stac import damage_item_uri, write_damage_catalog, write_damage_item
    from resseg_ray.inference.stac_items import check_documents
    from resseg_ray.inference.vectorize import PolygonOptions
    from resseg_ray.models.bundle import bundle_info_from_bytes
    from resseg_ray.models.source import fetch_bundle_bytes

    args = parser(prog).parse_args(argv)
    bound_gdal_cache()
    cfg = load_config(args.config, args.overrides)
    settings = StorageSettings.resolve(cfg.storage)
    options = predict_options(args, cfg)
    if any(is_stac_uri(u) for u in (*args.pre, *args.post)):
        stac = cfg.stac.model_copy(update={"search": None})  # each side is what its flag names
        pre_in, post_in = resolve_scenes(args.pre, settings, stac), resolve_scenes(args.post, settings, stac)
    else:  # files, paired in the order given (a file named twice is a pair too many)
        pre_in = SceneInputs(uris=expand_uris(args.pre, settings))
        post_in = SceneInputs(uris=expand_uris(args.post, settings))
    out = normalize_uri(args.out)
    if out in {normalize_uri(u) for u in (*pre_in.uris, *post_in.uris)}:
        raise ConfigError(f"--out {args.out} is one of the input scenes; give a folder")
    event = pair_event_scenes(pre_in, post_in, settings)
    pre, post = [a for a, _ in event.pairs], [b for _, b in event.pairs]
    check_writable(out, settings, "--out")
    ids = pre_in.output_names()  # STAC scenes by item id (collection and id where ids repeat)
    names = [ids[normalize_uri(u)] if u in pre_in.items else pair_name(u) for u in pre]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"--pre scenes share file names ({names}); their outputs would overwrite each other"
        )
    if args.stac:  # no STAC document the user has is replaced (nothing written yet)
        check_documents(out, [damage_item_uri(out, n) for n in names], settings)
    pool = ActorPool.of(args)
    bundle_bytes = fetch_bundle_bytes(args.model, settings)  # once: the pool's actors take these bytes
    check_damage_model(bundle_info_from_bytes(bundle_bytes, args.model), args.model)
    polygons = PolygonOptions(min_area=options.min_area, simplify=options.simplify, wgs84=options.wgs84)
    todo = _pairs_to_map(list(zip(names, pre, post, strict=True)), out, options.vector_format, args.overwrite,
                         settings)  # fmt: skip
    for line in [*pre_in.skipped, *post_in.skipped, *event.left_out]:  # once every check has passed
        print(f"warning: {line}", file=sys.stderr)

    sources = {**pre_in.items, **post_in.items}
    items = []

    def finished(report: DamageReport) -> str:
        """Write the pair's STAC item; its line."""
        if args.stac:
            item = write_damage_item(report, out, args.model, settings, sources)
            items.extend([item] if item is not None else [])
        return f"{summary_line(report)}, {report.megapixels:.1f} Mpx in {report.seconds:.0f} s"

    try:
        _map(todo, pool, bundle_bytes, options, out, settings, polygons, finished, args.model)
    finally:  # the pairs mapped, also when one failed: listed in <out>/catalog.json
        written = write_damage_catalog(out, items, names, settings) if args.stac else None
        if written is not None:
            print(f"STAC: {written[0]} ({written[1]} items, valid)", flush=True)
    skipped = f" ({len(names) - len(todo)} skipped: done before)" if len(todo) < len(names) else ""
    print(f"wrote damage maps of {len(todo)} pair(s) under {out}{skipped}")


def _map(
    todo: list[tuple[str, str, str]],
    pool: ActorPool,
    bundle_bytes: bytes,
    options: PredictSection,
    out: str,
    settings: StorageSettings,
    polygons: PolygonOptions,
    finished: Callable[[DamageReport], str],
    model: str,
) -> None:
    """Map the ``todo`` pairs, in this process or on the actor pool, each said as ``finished``
    (which writes its STAC item) says it; a pair that failed on the pool is an InputDataError
    once the others are done."""
    from resseg_ray.inference.damage import map_damage
    from resseg_ray.inference.damage_pool import map_pairs_on_ray
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.models.bundle import load_bundle_bytes

    if not todo:
        return  # every pair was mapped before: nothing to load or start
    if pool.actors:
        init_ray()
        gpus = pool.gpus_on()
        print(
            f"mapping {len(todo)} pairs on Ray: {pool.actors} actors x {gpus:g} GPU, {pool.cpus:g} CPU",
            flush=True,
        )
        outcomes = map_pairs_on_ray(
            bundle_bytes, options, todo, out, settings, polygons, options.vector_format, pool.actors, gpus,
            pool.cpus,
        )  # fmt: skip
        for o in outcomes:
            for line in filter(None, o.warnings.splitlines()):
                print(f"warning: {o.name}: {line}", file=sys.stderr)
            print(
                f"{o.name}: {finished(o.report)}" if o.report else f"{o.name}: failed: {o.error}", flush=True
            )
        failed = [o for o in outcomes if o.report is None]
        if failed:
            why = "; ".join(f"{o.name}: {o.error}" for o in failed)
            raise InputDataError(
                f"{len(failed)} of {len(todo)} pairs failed ({why}); the other maps are under {out}"
            )
    else:
        predictor = ScenePredictor(load_bundle_bytes(bundle_bytes, model), options)
        with Progress("pair", len(todo)) as bar:
            for name, a, b in todo:
                report = map_damage(
                    predictor, a, b, out, settings, name, polygons, options.vector_format, tenths(a)
                )  # fmt: skip
                bar.step(finished(report))


def _pairs_to_map(
    pairs: list[tuple[str, str, str]],
    out: str,
    vector_format: str,
    overwrite: bool,
    settings: StorageSettings,
) -> list[tuple[str, str, str]]:
    """The (name, pre, post) pairs to map: those whose maps are not all under ``out`` already
    (each said), every one with ``overwrite``. A file under a pair's output name that resseg-ray
    did not write for that pair is a ConfigError before any work: it is never replaced."""
    from resseg_ray.inference.damage import damage_state

    states = {name: damage_state(out, name, a, b, vector_format, settings) for name, a, b in pairs}
    foreign = [name for name, state in states.items() if state == "foreign"]
    if foreign:
        raise ConfigError(
            f"--out {out} holds files under the output names of {', '.join(foreign)} that resseg-ray did not "
            "write for those pairs: move them away or choose another --out (nothing was written)"
        )
    if overwrite:
        return pairs
    for name in (n for n, state in states.items() if state == "done"):
        print(f"{name}: skipped (its maps are under {out}; --overwrite maps it again)", flush=True)
    return [p for p in pairs if states[p[0]] != "done"]
