"""Build a network from the registry and write it as a model bundle, with a reload check.

Examples (``resseg <command>``, or ``python jobs/<script>.py``)::

    resseg export-model --arch prop18 --out runs/demo/prop18.resseg.safetensors
    resseg export-model --arch prop50 --pretrained resnet50.pth \\
        --bands blue green red nir --mean 400 500 600 2000 --std 100 120 150 500 --out p50.resseg.safetensors
    resseg export-model --arch prop18 --dataset data/demo --out runs/demo/prop18.resseg.safetensors
    resseg export-model --list
"""

from __future__ import annotations

import argparse
import math

from resseg_ray.data.prepare import load_dataset
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.geo.storage import StorageSettings, check_output_file
from resseg_ray.inference.export import export_bundle
from resseg_ray.models import describe_models


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command's options (the docs' option table is made from them)."""
    p = argparse.ArgumentParser(prog=prog, description="Write a model bundle for a registered architecture.")
    p.add_argument("--arch", default="prop18", help="architecture name (--list shows all)")
    p.add_argument(
        "--out",
        default="runs/demo/prop18.resseg.safetensors",
        metavar="FILE",
        help="bundle to write (atomically)",
    )
    p.add_argument(
        "--bands",
        nargs="+",
        default=["blue", "green", "red", "nir"],
        metavar="NAME",
        help="band names in input order; their number is the input band count D",
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=["ground", "building"],
        metavar="NAME",
        help="class names; their number is C",
    )
    p.add_argument(
        "--mean", nargs="+", type=float, help="per-band normalisation mean recorded in the bundle (default 0)"
    )
    p.add_argument("--std", nargs="+", type=float, help="per-band normalisation std (default 1)")
    p.add_argument(
        "--pretrained",
        metavar="FILE",
        help="local torchvision ResNet state dict (.pth or .safetensors) for the encoder; conv1 is adapted "
        "to D bands",
    )
    p.add_argument("--tile-size", type=int, default=256, help="training tile size recorded in the bundle")
    p.add_argument("--device", default="auto", help="device for the reload check: auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--dataset",
        metavar="FOLDER",
        help="a prepared dataset (prepare --out): band names, pooled mean/std and tile size "
        "(data.crop_size) come from it",
    )
    p.add_argument("--list", action="store_true", help="list the architectures and exit")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default the process's arguments) and run the job."""
    args = parser(prog).parse_args(argv)
    if args.list:
        for name, text in describe_models().items():
            print(f"{name:<8} {text}")
        return
    if args.dataset:
        desc = load_dataset(args.dataset, StorageSettings.resolve())
        args.bands = desc.band_names
        args.mean = args.mean or desc.statistics.pooled.mean
        args.std = args.std or desc.statistics.pooled.std
        args.tile_size = desc.raw["data"]["crop_size"]
    n = len(args.bands)
    _check_flags(args, n)
    check_output_file(
        args.out, StorageSettings.resolve(), "--out", inputs=[args.pretrained] if args.pretrained else []
    )
    report = export_bundle(
        args.out,
        args.arch,
        band_names=args.bands,
        class_names=args.classes,
        norm_mean=args.mean if args.mean is not None else [0.0] * n,
        norm_std=args.std if args.std is not None else [1.0] * n,
        pretrained=args.pretrained,
        tile_size=args.tile_size,
        policy=DevicePolicy.resolve(args.device),
    )
    print(
        f"wrote {report.path}: {report.info.architecture}, {report.info.in_bands} bands "
        f"{report.info.band_names}, classes {report.info.class_names}, "
        f"{report.parameters / 1e6:.2f} M parameters, {report.size_bytes / 1e6:.1f} MB"
    )
    print(
        f"reload check on a {report.check_shape[-2]}x{report.check_shape[-1]} image: "
        f"logits {report.check_shape}, max |diff| reloaded {report.max_abs_diff_reload:.2e}, "
        f"inference path {report.max_abs_diff_inference:.2e} ({report.inference_seconds:.2f} s)"
    )


def _check_flags(args: argparse.Namespace, n: int) -> None:
    """Every flag, before anything is written: one line naming the flag when it is wrong."""
    if not 1 <= args.tile_size <= 16384:
        raise ConfigError(f"--tile-size must be a tile side from 1 to 16384 pixels, got {args.tile_size}")
    for flag, values in (("--mean", args.mean), ("--std", args.std)):
        if values is None:
            continue
        if len(values) != n:
            raise ConfigError(f"{flag} needs one value per band ({n} bands: {args.bands}), got {len(values)}")
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{flag} {values} holds NaN or infinity; give finite numbers, one per band")
    if args.std is not None and any(v <= 0 for v in args.std):
        raise ConfigError(f"--std {args.std} must be > 0 for every band")
    if len(args.classes) < 2 or len(set(args.classes)) != len(args.classes):
        raise ConfigError(f"--classes needs at least two distinct class names, got {args.classes}")
    if len(set(args.bands)) != n:
        raise ConfigError(f"--bands needs distinct band names, got {args.bands}")
