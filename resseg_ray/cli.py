"""Shared plumbing of the commands (:mod:`resseg_ray.commands`, ``resseg <command>`` and the
``jobs/*.py`` scripts): user errors become one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resseg_ray import jobstate, launcher
from resseg_ray.config import Config, PredictSection, StacSection
from resseg_ray.config.flags import add_flags, given
from resseg_ray.errors import ConfigError, user_error
from resseg_ray.geo.stac import SceneInputs, resolve_scenes
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.progress import VERBOSE_ENV, quiet_libraries, verbose

if TYPE_CHECKING:  # torch is imported where a network runs: every job's start and error stay quick
    from resseg_ray.inference.predictor import ScenePredictor

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
"""The project's ``configs/`` folder (the default configurations of train, compare-depths and
finetune) in a source checkout."""


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_job(main: Callable[[], object], supervise: bool = False) -> None:
    """Run a job's ``main``; a :class:`ResSegError` prints ``error: ...`` and exits 2.

    Warnings print as one ``warning: ...`` line each. Ray's and MLflow's own chatter is kept to
    warnings (:func:`~resseg_ray.progress.quiet_libraries`) unless the command line has
    ``--verbose`` (every job takes it; it is removed before the job parses its arguments) or
    ``RESSEG_VERBOSE=1`` is set. With ``supervise`` (the jobs that attach to a Ray cluster), the
    job runs as the child of a launcher that says a lost cluster (:mod:`resseg_ray.launcher`);
    the job records that its ``main`` returned, and leaves its error line, or the traceback of
    an error it did not expect, to the launcher, which prints it unless the cluster's loss was
    its cause.
    """
    if supervise:
        launcher.supervise()  # on the command line as the user gave it: before --verbose goes
    warnings.formatwarning = _format_warning
    if "--verbose" in sys.argv[1:]:
        sys.argv.remove("--verbose")
        os.environ[VERBOSE_ENV] = "1"
    quiet_libraries()
    try:
        main()
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            if not jobstate.launched():
                jobstate.returned()
                raise
            jobstate.returned(traceback.format_exc())  # Ray's errors at a lost cluster, or a bug
            raise SystemExit(1) from None
        line = "error: " + " ".join(str(err).split()) + "\n"  # one line
        if jobstate.launched():  # the launcher says it, unless the cluster's loss is why
            jobstate.returned(line)
        else:
            jobstate.returned()
            sys.stderr.write(line)
        raise SystemExit(2) from None
    except BaseException:  # SystemExit (--help, argparse's refusals), KeyboardInterrupt
        jobstate.returned()
        raise
    jobstate.returned()


def bound_gdal_cache(megabytes: int = 256) -> None:
    """Cap GDAL's block cache (default: 5 % of RAM) unless ``GDAL_CACHEMAX`` is set.

    Writing a scene's outputs fills the cache with dirty blocks, so without a cap a
    job's peak memory grows with scene size up to the default. Must run before the
    process's first raster read or write (GDAL reads the setting once).
    """

    os.environ.setdefault("GDAL_CACHEMAX", str(megabytes))


def init_ray() -> None:
    """Connect to the Ray cluster of ``RAY_ADDRESS`` (set by ``ray job submit``) or a running
    local one; start a local instance when there is none."""

    import ray

    from resseg_ray.device import ray_runtime_env

    if ray.is_initialized():  # attached already (a notebook, a test): the job's output stays quiet
        quiet_libraries()
        return
    # the workers' output (Ray Train's and Ray Data's INFO logs, TrainingReport dicts) stays in
    # Ray's log folder unless --verbose; what a user must know comes back as results (errors,
    # the warnings of each scene) or through MLflow (the epochs)
    opts: dict[str, Any] = {"log_to_driver": verbose(), "runtime_env": ray_runtime_env()}
    if not verbose():
        opts["logging_level"] = logging.WARNING  # "Connecting to ... cluster", "Started a local ..."
    address = os.environ.get("RAY_ADDRESS")
    joined = True
    try:
        if address:
            raise ConnectionError  # straight to the address given
        ray.init(address="auto", **opts)
    except (ConnectionError, RuntimeError):
        ray.init(address=address or None, **opts)
        joined = address not in (None, "", "local")
    quiet_libraries()  # Ray Data's context exists now
    print(cluster_line(joined), flush=True)
    if joined:  # for the launcher; an instance the job started ends with it: never a loss to say
        jobstate.attached(ray.get_runtime_context().gcs_address, _local_raylet())


def cluster_line(joined: bool) -> str:
    """One line on the Ray instance this job runs on: joined or started, its address, its CPUs
    and GPUs and how many are free (another program's instance may hold them all)."""
    import ray

    total, free = ray.cluster_resources(), ray.available_resources()
    gcs = ray.get_runtime_context().gcs_address
    how = (
        f"joined the running Ray instance at {gcs} (RAY_ADDRESS=local runs this job on its own)"
        if joined
        else f"started a Ray instance for this job at {gcs}"
    )
    amounts = ", ".join(
        f"{total.get(k, 0):g} {k}s ({free.get(k, 0):g} free)"
        for k in ("CPU", "GPU")
        if total.get(k, 0) or k == "CPU"
    )
    return f"Ray: {how}: {amounts}"


def _local_raylet() -> str | None:
    """``host:port`` of the raylet this driver is attached to (None when Ray does not say)."""
    try:
        import ray

        node = ray._private.worker.global_worker.node
        return f"{node.node_ip_address}:{node.node_manager_port}"
    except Exception:
        return None


def json_report(path: str) -> bool:
    """Whether ``--report PATH`` asks for the command's typed report as JSON (``.json``) rather
    than its markdown table (the commands whose report was a table: evaluate, finetune)."""
    return path.lower().endswith(".json")


def add_seed_option(p: argparse.ArgumentParser) -> None:
    """``--seed``: ``run.seed``, the one seed of everything random in a run (see
    :func:`config_overrides`)."""
    from resseg_ray.config import RunSection

    add_flags(p, RunSection, ["seed"])


def config_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides with the dedicated flags (``--seed``) applied after them."""
    extra = [f"run.seed={args.seed}"] if getattr(args, "seed", None) is not None else []
    return [*getattr(args, "overrides", []), *extra]


ENGINE_FIELDS = ("runtime", "precision")
"""The ``predict`` fields that choose what runs the network."""
PREDICTOR_FIELDS = (
    "window",
    "overlap",
    "blend",
    "batch_size",
    "normalization",
    "adapt_bn",
    "bands",
    "device",
)
"""The ``predict`` fields of every job that segments scenes, besides :data:`ENGINE_FIELDS`."""
OUTPUT_FIELDS = (
    "prob_dtype", "prob", "polygons", "min_area", "simplify", "wgs84", "osm", "vector_format",
    "regularize", "existing", "existing_overlap",
)  # fmt: skip
"""The ``predict`` fields of what ``predict`` writes."""
_PREDICT_FLAGS = {"existing": {"metavar": "FILE"}, "bands": {"metavar": "BAND"}}


@dataclass(frozen=True)
class ActorPool:
    """``--actors``, ``--gpus-per-actor``, ``--cpus-per-actor`` (:func:`add_actor_options`)."""

    actors: int | None
    gpus: float | None
    cpus: float

    @classmethod
    def of(cls, args: argparse.Namespace) -> ActorPool:
        """The flags, checked (a one-line error for each bad value)."""
        if args.actors is not None and args.actors < 1:
            raise ConfigError(f"--actors must be >= 1, got {args.actors}")
        if not (math.isfinite(args.cpus_per_actor) and args.cpus_per_actor > 0):
            raise ConfigError(f"--cpus-per-actor must be a finite number > 0, got {args.cpus_per_actor}")
        gpus = args.gpus_per_actor
        if gpus is not None and not (math.isfinite(gpus) and gpus >= 0):
            raise ConfigError(f"--gpus-per-actor must be a finite number >= 0, got {gpus}")
        return cls(args.actors, gpus, args.cpus_per_actor)

    def gpus_on(self) -> float:
        """GPUs per actor on the Ray cluster this process is attached to (given, else 1 when
        the cluster has GPUs)."""
        import ray

        if self.gpus is not None:
            return self.gpus
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def add_actor_options(p: argparse.ArgumentParser, what: str = "scene") -> None:
    """``--actors N`` (work on a Ray Data actor pool, each actor loading the model once) and its
    resources (:class:`ActorPool`)."""
    p.add_argument(
        "--actors",
        type=int,
        metavar="N",
        help=f"work on Ray: a Ray Data actor pool of N actors, each loading the model once and taking "
        f"one {what} at a time, on the cluster of RAY_ADDRESS, a running one, or a local one (default: "
        "in this process)",
    )
    p.add_argument(
        "--gpus-per-actor",
        type=float,
        help="GPUs per actor (default 1 when the Ray cluster has GPUs, else 0)",
    )
    p.add_argument(
        "--cpus-per-actor", type=float, default=1.0, help="CPUs per actor, also its torch threads (default 1)"
    )


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--precision``: the ``predict`` section's engine fields (see
    :func:`add_predictor_options`, and ``jobs/finetune.py`` for its scoring)."""
    add_flags(p, PredictSection, ENGINE_FIELDS)


def add_predictor_options(p: argparse.ArgumentParser, outputs: bool = False) -> None:
    """The flags of the ``predict`` configuration section shared by the jobs that segment scenes
    (windowing, normalisation, bands, device, engine) and, with ``outputs``, ``jobs/predict.py``'s
    output and polygon flags. Each defaults to the configuration's value (see
    :func:`predict_options`)."""
    names = (*PREDICTOR_FIELDS, *ENGINE_FIELDS, *(OUTPUT_FIELDS if outputs else ()))
    add_flags(p, PredictSection, names, _PREDICT_FLAGS)


def predict_options(args: argparse.Namespace, cfg: Config) -> PredictSection:
    """The configuration's ``predict`` section with the flags of :func:`add_predictor_options`
    that were given on top, validated once (a bad value is a ConfigError naming the flag)."""
    return cfg.predict.replace(**given(args, PredictSection))


def predictor_from_args(args: argparse.Namespace, cfg: Config, settings: StorageSettings) -> ScenePredictor:
    """The one ScenePredictor of ``--model`` and :func:`predict_options`."""
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.models.bundle import load_bundle_bytes
    from resseg_ray.models.source import fetch_bundle_bytes

    options = predict_options(args, cfg)  # checked before the model is fetched
    bundle = load_bundle_bytes(fetch_bundle_bytes(args.model, settings), args.model)
    return ScenePredictor(bundle, options)


class StacSkipped(UserWarning):
    """A STAC item or link that was listed but not taken (printed as a warning line)."""


def add_stac_options(p: argparse.ArgumentParser) -> None:
    """The flags of the ``stac`` configuration section: scenes may be STAC items, collections or
    catalogs (.json, local, s3:// or http(s)://), or the items of a STAC API search."""
    extra: dict[str, dict[str, Any]] = {
        "search": {"metavar": "URL"},
        "bbox": {"nargs": 4, "metavar": ("W", "S", "E", "N")},
    }
    add_flags(p, StacSection, extra=extra)


def stac_options(args: argparse.Namespace, cfg: Config) -> StacSection:
    """The configuration's ``stac`` section with :func:`add_stac_options`' flags on top, validated."""
    return cfg.stac.replace(**given(args, StacSection))


def scene_inputs(
    patterns: list[str], args: argparse.Namespace, cfg: Config, settings: StorageSettings
) -> SceneInputs:
    """The scenes of ``patterns`` (files, globs, folders, STAC documents) and of ``--stac-search``;
    what STAC listed but could not give is printed as warning lines."""
    inputs = resolve_scenes(patterns, settings, stac_options(args, cfg))
    for message in inputs.skipped:
        warnings.warn(message, StacSkipped, stacklevel=2)
    return inputs


def one_scene(
    pattern: str, args: argparse.Namespace, cfg: Config, settings: StorageSettings, flag: str = "--scene"
) -> str:
    """The one scene of ``flag`` (a raster, or a STAC item / document holding one scene)."""
    uris = scene_inputs([pattern], args, cfg, settings).uris
    if len(uris) != 1:
        raise ConfigError(
            f"{flag} {pattern} gives {len(uris)} scenes; this job adapts to one: give one raster or one "
            "STAC item (or --stac-max-items 1)"
        )
    return uris[0]
