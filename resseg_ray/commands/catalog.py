"""Write a static STAC catalog of GeoTIFF scenes, shaped as the open-data event catalogs.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg catalog --scenes data/demo/scenes/test --out data/demo/stac \\
        --collection demo-event --rgb 3 2 1
    resseg catalog --scenes s3://bucket/post/*.tif --out s3://bucket/stac --collection quake

``<out>/catalog.json`` -> ``<out>/<collection>/collection.json`` -> one item per scene in
``<out>/<collection>/<stem>/``, with the scene as a cloud-optimised ``analytic`` asset and,
with ``--rgb``, an 8-bit true-colour ``visual`` COG; projection and raster extensions; all
checked with pystac's validate_all. Every job that takes scenes then takes the catalog.
"""

from __future__ import annotations

import argparse
import datetime as dt

from resseg_ray.config import load_config
from resseg_ray.config.flags import add_config_options
from resseg_ray.errors import ConfigError
from resseg_ray.geo.stac_write import check_scene_catalog_destination, validate_catalog, write_scene_catalog
from resseg_ray.geo.storage import StorageSettings, expand_uris


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scenes",
        nargs="+",
        required=True,
        metavar="SCENE",
        help="scene URIs, globs, folders or s3:// prefixes",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FOLDER",
        help="folder or s3:// prefix of the catalog (not the scenes' own)",
    )
    p.add_argument(
        "--collection",
        default="event",
        metavar="ID",
        help="id of the collection (letters, digits, - and _), e.g. the event's name (default event)",
    )
    p.add_argument(
        "--rgb",
        nargs=3,
        type=int,
        metavar=("R", "G", "B"),
        help="also an 8-bit true-colour visual COG of these 1-based bands (each stretched between its "
        "2nd and 98th percentile)",
    )
    p.add_argument("--datetime", help="acquisition time of the items, ISO 8601 (default: now, UTC)")
    add_config_options(p, used="its storage section is used")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    settings = StorageSettings.resolve(cfg.storage)
    when = None
    if args.datetime:
        try:
            when = dt.datetime.fromisoformat(args.datetime)
        except ValueError:
            raise ConfigError(
                f"--datetime {args.datetime!r} is not an ISO 8601 time, e.g. 2023-02-07T08:00Z"
            ) from None
        when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    if not args.collection.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"--collection {args.collection!r}: use letters, digits, - and _ only")
    if args.rgb is not None and min(args.rgb) < 1:
        raise ConfigError(f"--rgb {args.rgb}: band indexes start at 1")
    scenes = expand_uris(args.scenes, settings)
    check_scene_catalog_destination(args.out, scenes, settings, args.collection)
    href = write_scene_catalog(scenes, args.out, settings, args.collection, rgb=args.rgb, when=when)
    count = validate_catalog(href, settings)
    print(f"wrote {href}: {len(scenes)} items in collection {args.collection} ({count} STAC objects, valid)")
