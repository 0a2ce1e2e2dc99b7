"""Write a model bundle as a portable ONNX model: for QGIS's Deepness plugin, ONNX Runtime or
any tool that reads ONNX. Checked in ONNX Runtime against PyTorch before it is written.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg export-onnx --model runs/demo-prop18/model.resseg.safetensors --out prop18.onnx
    resseg export-onnx --model models:/buildings/3 --out b.onnx --input unit --resolution-cm 50
    resseg export-onnx --model s3://models/p18.resseg.safetensors --out p18.onnx --window 256
"""

from __future__ import annotations

import argparse
import hashlib
import os
import warnings

import numpy as np

from resseg_ray.config import PredictSection, load_config
from resseg_ray.config.flags import add_config_options
from resseg_ray.errors import ConfigError
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stats import compute_statistics
from resseg_ray.geo.storage import StorageSettings, check_output_file
from resseg_ray.inference.onnx_model import ONNX_INPUTS, check_onnx_options, export_onnx_model
from resseg_ray.models.bundle import load_bundle_bytes
from resseg_ray.models.source import fetch_bundle_bytes


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    d = PredictSection()
    p = argparse.ArgumentParser(
        prog=prog, description="Write a model bundle as an ONNX model (QGIS Deepness, ONNX Runtime)."
    )
    p.add_argument("--model", required=True, help="bundle path, s3:// bundle or models:/ URI")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="the .onnx file; an existing file is kept unless --overwrite",
    )
    p.add_argument(
        "--window",
        type=int,
        default=d.window,
        help="tile side in pixels: Deepness's tile_size, the graph's fixed height and width "
        f"(default {d.window})",
    )
    p.add_argument(
        "--overlap",
        type=int,
        help=f"overlap of neighbouring tiles, recorded for Deepness as tiles_overlap in percent (default "
        f"{d.overlap} of {d.window}, the same share of other windows)",
    )
    p.add_argument(
        "--input",
        choices=ONNX_INPUTS,
        default="raw",
        help="what the model takes: raw, the scene's band values (the default; normalisation folded in); "
        "unit, 8-bit values divided by 255 as QGIS Deepness feeds them (x 255 and normalisation folded "
        "in; for 8-bit imagery); or normalized, values already normalised (the statistics in the metadata)",
    )
    p.add_argument(
        "--resolution-cm",
        type=float,
        help="ground resolution of the training imagery in cm per pixel (Deepness's resolution)",
    )
    p.add_argument(
        "--stats-from",
        metavar="SCENE",
        help="fold this scene's own band statistics in instead of the bundle's training ones: for a model "
        "trained with per-scene normalisation (the demo's), a model of that scene; without it such a "
        "model is exported with a warning",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_config_options(p, used="its storage section is used")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    if args.overlap is None:
        d = PredictSection()
        args.overlap = round(args.window * d.overlap / d.window)
    check_onnx_options(args.window, args.overlap, args.input, args.resolution_cm)
    if not args.out.endswith(".onnx"):
        raise ConfigError(f"--out {args.out}: name the ONNX file with a .onnx suffix")
    if os.path.isfile(args.out) and not args.overwrite:
        raise ConfigError(f"--out {args.out} exists; choose another file or add --overwrite")
    check_output_file(args.out, StorageSettings(), "--out", inputs=[args.model])
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise ConfigError(f"--out {args.out}: its folder does not exist; create it first")
    cfg = load_config(args.config, args.overrides)
    data = fetch_bundle_bytes(args.model, StorageSettings.resolve(cfg.storage))
    bundle = load_bundle_bytes(data, args.model)
    norm = None
    if args.stats_from:
        settings = StorageSettings.resolve(cfg.storage)
        scene = open_scene(args.stats_from, settings, expected_bands=bundle.info.in_bands)
        stats = compute_statistics([scene], settings, scheduler="synchronous").pooled
        norm = (stats.mean, stats.std)
        print(f"folding in the band statistics of {args.stats_from}: mean {np.round(stats.mean, 1).tolist()}")
    elif args.input != "normalized" and bundle.info.extra.get("normalization") == "per_scene":
        warnings.warn(
            f"{args.model} was trained with per-scene normalisation: the export folds in its training "
            "scenes' statistics, which fit other scenes only roughly; add --stats-from SCENE for a model "
            "of that scene, or --input normalized and normalise each scene yourself",
            UserWarning,
            stacklevel=1,
        )
    report = export_onnx_model(
        bundle,
        args.out,
        window=args.window,
        overlap=args.overlap,
        input=args.input,
        resolution_cm=args.resolution_cm,
        sha256=hashlib.sha256(data).hexdigest(),
        norm=norm,
    )
    info = bundle.info
    print(
        f"wrote {report.path}: {info.architecture}, {info.in_bands} bands {info.band_names}, classes "
        f"{info.class_names}, {report.window}x{report.window} windows, input {report.input}, "
        f"{report.size_bytes / 1e6:.1f} MB"
    )
    print(
        f"checked in ONNX Runtime against PyTorch: max |probability diff| {report.max_abs_diff:.2e}, "
        f"classes agree on {100 * report.agreement:.3f} % of pixels ({report.seconds:.1f} s)"
    )
    print("metadata: " + ", ".join(f"{k}={v}" for k, v in report.metadata.items()))
