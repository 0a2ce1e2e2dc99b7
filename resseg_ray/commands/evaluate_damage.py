"""Score damage maps as the xView2 challenge does: localization F1, damage F1, score.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg evaluate-damage --pred runs/damage/event_damage.tif --truth data/event_damage_truth.tif
    resseg evaluate-damage --pred 'runs/damage/*_damage.tif' --truth 'labels/*_damage.tif' \\
        --report scores.json

Rasters hold 0 (background), 1 no-damage, 2 minor-damage, 3 major-damage, 4 destroyed and 255
(no data, counted for nothing); a prediction and its truth share one grid. Counts are summed
over all pairs before the F1s are taken, as the challenge's scorer does: the localization F1
(building against background, per pixel), the damage F1 (the harmonic mean of the four
classes' F1 on the truth's building pixels) and the score 0.3 x localization + 0.7 x damage.
Per building, each truth footprint takes the damage class most of its predicted building
pixels carry.
"""

from __future__ import annotations

import argparse
import sys

from resseg_ray.config import load_config
from resseg_ray.config.flags import add_config_options
from resseg_ray.errors import ConfigError
from resseg_ray.evaluation.damage import MAX_BUILDING_PIXELS, DamageEvaluation, score_pairs
from resseg_ray.evaluation.damage_report import damage_json
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES
from resseg_ray.geo.storage import (
    RASTER_SUFFIXES,
    StorageSettings,
    check_output_file,
    expand_uris,
    write_bytes,
)

SUFFIXES = (*RASTER_SUFFIXES, ".png")
"""What a folder or glob of damage rasters yields (xView2's masks are PNG)."""


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--pred",
        nargs="+",
        metavar="RASTER",
        required=True,
        help="predicted damage rasters (files, globs, folders or s3:// URIs), paired in order with --truth",
    )
    p.add_argument(
        "--truth",
        nargs="+",
        metavar="RASTER",
        required=True,
        help="true damage rasters on the predictions' grids (georeferenced, or both plain pixel grids)",
    )
    p.add_argument(
        "--no-buildings",
        dest="buildings",
        action="store_false",
        help="skip the per-building damage accuracy (footprints are found on each whole truth raster; "
        f"pairs over {MAX_BUILDING_PIXELS // 1_000_000} million pixels are skipped anyway)",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="also write the scores as JSON to this file or s3:// URI (format resseg-damage-report/1: "
        "per pair and in total the metrics, the 5 x 5 pixel confusion (rows: true value 0..4, columns: "
        "predicted) and the 4 x 5 building confusion (rows: true class, columns: predicted, 0 missed), "
        "and the classes absent from the truth). It may not be one of the inputs or a folder",
    )
    add_config_options(p, used="its storage section is used")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    settings = StorageSettings.resolve(cfg.storage)
    if args.report:
        check_output_file(args.report, settings, "--report", inputs=[*args.pred, *args.truth])
    preds = expand_uris(args.pred, settings, SUFFIXES)
    truths = expand_uris(args.truth, settings, SUFFIXES)
    if not preds or len(preds) != len(truths):
        raise ConfigError(
            f"--pred matched {len(preds)} rasters but --truth {len(truths)}; give one truth each"
        )
    ev = score_pairs(list(zip(preds, truths, strict=True)), settings, buildings=args.buildings)
    print(summary(ev))
    absent = ev.total().absent()
    if absent:
        print(
            f"warning: no truth pixel of {', '.join(absent)}: each such class's F1 is 0 as the xView2 scorer "
            "takes it, which pulls the damage F1 to about 0; score a set of pairs that holds every class",
            file=sys.stderr,
        )
    if args.report:
        write_bytes(args.report, damage_json(ev).encode(), settings)
        print(f"wrote {args.report}")


def summary(ev: DamageEvaluation) -> str:
    """A table: per pair and in total, localization F1, damage F1, score, each class's F1 and
    the per-building accuracy (in %)."""
    short = {"no-damage": "none", "minor-damage": "minor", "major-damage": "major", "destroyed": "destr."}
    head = f"{'pair':<28} {'loc F1':>7} {'dmg F1':>7} {'score':>7} " + " ".join(
        f"{short[c]:>7}" for c in DAMAGE_CLASSES
    )
    lines = [head + f" {'bldg acc':>8} {'bldgs':>6}"]
    rows = [(p.name, p.counts) for p in ev.pairs]
    if len(ev.pairs) > 1:
        rows.append(("all pairs", ev.total()))
    for name, counts in rows:
        m = counts.metrics()
        cells = [m["localization_f1"], m["damage_f1"], m["score"], *(m[f"f1_{c}"] for c in DAMAGE_CLASSES)]
        acc, n = m["building_accuracy"], m["buildings"]
        lines.append(
            f"{name[:28]:<28} "
            + " ".join(f"{100 * float(v or 0):7.2f}" for v in cells)
            + f" {'-' if acc is None else f'{100 * acc:.2f}':>8} {'-' if n is None else int(n):>6}"
        )
    return "\n".join(lines)
