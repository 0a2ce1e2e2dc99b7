"""Shared plumbing of the jobs in ``jobs/``: user errors become one line and exit 2."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

from resseg_ray.errors import user_error


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_job(main: Callable[[], object]) -> None:
    """Run a job's ``main``; a :class:`ResSegError` prints ``error: ...`` and exits 2.

    Warnings print as one ``warning: ...`` line each.
    """
    warnings.formatwarning = _format_warning
    try:
        main()
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def bound_gdal_cache(megabytes: int = 256) -> None:
    """Cap GDAL's block cache (default: 5 % of RAM) unless ``GDAL_CACHEMAX`` is set.

    Writing a scene's outputs fills the cache with dirty blocks, so without a cap a
    job's peak memory grows with scene size up to the default. Must run before the
    process's first raster read or write (GDAL reads the setting once).
    """
    import os

    os.environ.setdefault("GDAL_CACHEMAX", str(megabytes))


def init_ray() -> None:
    """Connect to the Ray cluster of ``RAY_ADDRESS`` (set by ``ray job submit``) or a running
    local one; start a local instance when there is none."""
    import os

    import ray

    from resseg_ray.device import ray_runtime_env

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        try:
            ray.init(address="auto", log_to_driver=True, runtime_env=ray_runtime_env())
            return
        except (ConnectionError, RuntimeError):
            pass
    ray.init(address=address or None, log_to_driver=True, runtime_env=ray_runtime_env())


def add_predictor_options(p: argparse.ArgumentParser) -> None:
    """The windowing options shared by the jobs that segment scenes with a model."""
    from resseg_ray.inference.predictor import NORMALIZATIONS

    p.add_argument("--window", type=int, default=512, help="window side in pixels (default 512)")
    p.add_argument("--overlap", type=int, default=112, help="overlap of neighbouring windows (default 112)")
    p.add_argument("--normalization", choices=NORMALIZATIONS, help="default: as the model was trained")
    p.add_argument(
        "--adapt-bn",
        action="store_true",
        help="re-estimate BatchNorm statistics on each scene's own windows first (label-free adaptation)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def predictor_from_args(args, settings):  # -> ScenePredictor
    """The ScenePredictor of ``--model`` and :func:`add_predictor_options`' options."""
    import tempfile

    from resseg_ray.device import DevicePolicy
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.models.bundle import load_bundle
    from resseg_ray.models.source import resolve_bundle

    with tempfile.TemporaryDirectory(prefix="resseg-model-") as tmp:
        bundle = load_bundle(resolve_bundle(args.model, tmp, settings))
    return ScenePredictor(
        bundle,
        DevicePolicy.resolve(args.device),
        window=args.window,
        overlap=args.overlap,
        normalization=args.normalization,
        adapt_bn=args.adapt_bn,
    )
