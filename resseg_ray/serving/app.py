"""Assemble the Serve application from the project's configuration (``serve`` section).

``serve run serve_app:app`` builds it from the environment: ``RESSEG_CONFIG`` (a YAML
configuration, optional) and ``RESSEG_MODEL`` (the model; default the demo's). The model
deployment autoscales between ``serve.min_replicas`` and ``serve.max_replicas`` replicas
(one GPU each with ``serve.use_gpu``, else ``serve.cpus_per_replica`` CPUs) and batches
windows up to ``serve.max_batch_size``; ``serve build serve_app:app`` writes these options
into a production config whose ``deployments`` section can change them without code.
"""

from __future__ import annotations

import math
import os

from ray.serve import Application

from resseg_ray.config import Config, load_config, to_dict
from resseg_ray.errors import ConfigError
from resseg_ray.geo.storage import is_s3, normalize_uri

DEMO_MODEL = "runs/demo-prop18/model.resseg.safetensors"
"""Where ``make demo`` leaves its trained model (relative to the working directory)."""
MAP_REQUESTS = 64
"""Requests of the map page (page, tiles, polygons) an ingress replica takes beside its images."""
DEMO_MAPS = ("runs/demo-maps/catalog.json", "runs/demo-damage-maps/catalog.json")
"""Where ``make demo`` and ``make demo-damage`` leave the STAC catalogs of their maps."""


def map_catalogs(cfg: Config) -> list[str]:
    """The map page's catalogs: ``serve.map_catalogs``, else the demos' maps that exist."""
    if cfg.serve.map_catalogs is not None:
        out = [c if is_s3(c) else normalize_uri(c) for c in cfg.serve.map_catalogs]
        for c in out:  # checked before Serve starts: a replica failing to start says it less clearly
            if not is_s3(c) and not os.path.isfile(c):
                raise ConfigError(
                    f"serve.map_catalogs: {c} does not exist; give the catalog.json of a jobs/predict.py "
                    "output folder (make demo writes runs/demo-maps/catalog.json)"
                )
        return out
    demos = [normalize_uri(d) for d in DEMO_MAPS]
    return [d for d in demos if os.path.isfile(d)]


DEMO_REFINE = "configs/finetune_demo.yaml"
"""The refinement schedule of the map page when ``serve.refine_config`` is not set and this
file exists (relative to the working directory): the demo's (``jobs/finetune.py``'s default)."""
DEMO_DAMAGE_REFINE = "configs/finetune_damage_demo.yaml"
"""The same for the damage network's refinements (``serve.damage_refine_config``)."""


def refine_config(cfg: Config, damage: bool = False) -> Config:
    """The configuration of the map page's refinements (``damage``: of the damage network):
    ``serve.refine_config`` (``serve.damage_refine_config``), else the demo's when it exists
    (for the damage network, else the building refinements'), else the defaults; loaded (and so
    checked) before Serve starts, with its MLflow store and run folder made absolute (replicas
    do not share the working directory), trained in process with ``serve.refine_in_process``."""
    from resseg_ray.train.tracking import resolve_tracking_uri

    option, path, demo = "serve.refine_config", cfg.serve.refine_config, DEMO_REFINE
    if damage and (cfg.serve.damage_refine_config is not None or os.path.isfile(DEMO_DAMAGE_REFINE)):
        option, path, demo = "serve.damage_refine_config", cfg.serve.damage_refine_config, DEMO_DAMAGE_REFINE
    if path is not None and not os.path.isfile(path):
        raise ConfigError(
            f"{option}: {path} does not exist; give a YAML configuration of the refinement (e.g. {demo})"
        )
    if path is None and os.path.isfile(demo):
        path = demo
    try:
        rcfg = load_config(path)
    except ConfigError as exc:
        raise ConfigError(f"{option} ({path}): {exc}") from None
    mlflow = rcfg.mlflow.replace(tracking_uri=resolve_tracking_uri(rcfg.mlflow, os.getcwd()))
    scaling = rcfg.scaling
    if cfg.serve.refine_in_process:  # in the runner actor, no Ray Train workers to start
        scaling = scaling.replace(in_process=True, num_workers=1)
    return rcfg.replace(mlflow=mlflow, storage=cfg.storage, scaling=scaling)


def model_uri(cfg: Config) -> str:
    """The model to serve: ``serve.model``, else ``RESSEG_MODEL``, else the demo's; a local
    bundle that does not exist is a clear error saying how to get one."""
    uri = cfg.serve.model or os.environ.get("RESSEG_MODEL") or DEMO_MODEL
    return _checked(
        uri,
        "no model bundle at {path}. Train the demo model with `make demo` (or `python jobs/train.py`), "
        "or point RESSEG_MODEL (or serve.model) at a bundle file, an s3:// bundle or a "
        "models:/NAME@ALIAS URI",
    )


def damage_model_uri(uri: str) -> str:
    """``serve.damage_model`` as the replicas take it (a local bundle made absolute, and checked)."""
    return _checked(
        uri,
        "serve.damage_model: no model bundle at {path}. Train one with `make demo-damage` (or `resseg "
        "train --config configs/damage_demo.yaml`), or give an s3:// bundle or a models:/NAME@ALIAS URI",
    )


def _checked(uri: str, missing: str) -> str:
    """A registry, run or s3:// URI as it is; a local bundle as an absolute path that exists
    (else the error ``missing``, its ``{path}`` filled)."""
    if uri.startswith(("models:/", "runs:/")) or is_s3(uri):
        return uri
    path = normalize_uri(uri)
    if not os.path.isfile(path):
        raise ConfigError(missing.format(path=path))
    return path


def build_app(cfg: Config) -> Application:
    """The application: the ``SegmentAPI`` ingress bound to an autoscaled ``SegmentModel`` (and,
    with ``serve.damage_model``, to a ``DamageModel`` deployment of the damage network)."""
    from resseg_ray.serving.ingress import SegmentAPI
    from resseg_ray.serving.model import SegmentModel

    s = cfg.serve
    uri = model_uri(cfg)
    storage = to_dict(cfg.storage)
    threads = s.torch_threads or max(1, math.floor(s.cpus_per_replica))
    engine = {"runtime": s.runtime, "precision": s.precision, "window": cfg.predict.window}
    actor = {"num_cpus": s.cpus_per_replica, "num_gpus": 1 if s.use_gpu else 0}
    # @serve.deployment turns the classes into Deployments (Ray's decorator is untyped)
    model = SegmentModel.options(  # type: ignore[attr-defined]
        autoscaling_config={
            "min_replicas": s.min_replicas,
            "initial_replicas": max(1, s.min_replicas),
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target,
        },
        max_ongoing_requests=s.ongoing,
        max_queued_requests=s.max_queued_requests,
        ray_actor_options=actor,
    ).bind(uri, storage, s.max_batch_size, s.batch_wait_timeout_s, threads, engine, "buildings")
    damage = None
    if s.damage_model is not None:  # its own deployment: another network, other windows to batch
        damage = SegmentModel.options(  # type: ignore[attr-defined]
            name="DamageModel",
            num_replicas=s.damage_replicas,
            max_ongoing_requests=s.ongoing,
            max_queued_requests=s.max_queued_requests,
            ray_actor_options=actor,
        ).bind(
            damage_model_uri(s.damage_model), storage, s.max_batch_size, s.batch_wait_timeout_s, threads,
            engine, "damage",
        )  # fmt: skip
    serve_cfg = to_dict(
        s.replace(
            model=uri,
            map_catalogs=map_catalogs(cfg),
            annotations_dir=normalize_uri(s.annotations_dir),
            refine_dir=normalize_uri(s.refine_dir),
            scenes_dir=normalize_uri(s.scenes_dir),
        )
    )
    refine = to_dict(refine_config(cfg))
    damage_refine = to_dict(refine_config(cfg, damage=True)) if damage is not None else None
    return SegmentAPI.options(  # type: ignore[attr-defined]
        num_replicas=s.ingress_replicas,
        # images: ingress_max_ongoing_requests at once and ingress_max_queued_requests waiting
        # (SegmentAPI.segment); the rest of the slots are the map page's light requests
        max_ongoing_requests=s.ingress_max_ongoing_requests + s.ingress_max_queued_requests + MAP_REQUESTS,
        max_queued_requests=MAP_REQUESTS,
        ray_actor_options={"num_cpus": s.ingress_cpus},
    ).bind(model, serve_cfg, to_dict(cfg.predict), storage, refine, damage, damage_refine)


def app_from_environment() -> Application:
    """``build_app`` of ``RESSEG_CONFIG`` (default: all defaults) with ``RESSEG_MODEL``."""
    return build_app(load_config(os.environ.get("RESSEG_CONFIG") or None))
