"""Driver side of a training run: checks, Ray Train assembly, MLflow run and final bundle.

:func:`run_training` is what ``jobs/train.py`` calls. Before any worker starts it checks
every input it can (architecture, pretrained weights, tracking store, prepared dataset,
every scene and label raster), so bad input fails in seconds with a message naming the
field or URI. It then runs a :class:`ray.train.torch.TorchTrainer` (DDP: gloo on CPU,
NCCL on GPU) over the Ray Data pipelines, and finally writes the selected best model
bundle to ``<run.storage_path>/<name>/model.resseg.safetensors``, logs it to MLflow as a
model and registers it. Re-running with the same ``run.name`` resumes the run.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import yaml

from resseg_ray import jobstate
from resseg_ray.config import Config, to_dict
from resseg_ray.data.pipeline import reads_in_worker, sample_spec, split_rows
from resseg_ray.data.prepare import DATASET_FILE, DatasetDescription, load_dataset
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.storage import (
    StorageSettings,
    exists,
    filesystem,
    is_s3,
    join_uri,
    resolve_uri,
    workdir,
)
from resseg_ray.scratch import scratch_dir
from resseg_ray.train import tracking
from resseg_ray.train.checks import check_arch, check_data_config, check_scenes, check_task
from resseg_ray.train.epoch_feed import epoch_queue
from resseg_ray.train.fit import TrainResult, finish_run, fit_and_finish, torch_threads_kept
from resseg_ray.train.rehearsal import add_rehearsal
from resseg_ray.train.resources import wait_for_resources
from resseg_ray.train.state import (
    finished_checkpoint,
    local_checkpoint,
    read_progress,
)

DEMO_DATASET = "data/demo"


@dataclass(frozen=True)
class StartFrom:
    """Start training from a trained model (refinement) instead of fresh weights."""

    bundle_bytes: bytes
    """The parent bundle file: its weights initialise the network."""
    norm_mean: list[float] | None = None
    """Keep the parent's pooled normalisation (None: the dataset's own, e.g. per scene)."""
    norm_std: list[float] | None = None
    parent_run_id: str | None = None
    """The parent model's MLflow run, recorded on the bundle."""
    dataset: str | None = None
    """The parent's training dataset (its bundle's ``dataset``): ``train.rehearsal_tiles`` come
    from it."""


@dataclass
class TrainingPlan:
    """A checked training run: resolved configuration, storage, dataset, names, tracking store."""

    cfg: Config
    settings: StorageSettings
    desc: DatasetDescription
    run_name: str
    storage: str
    tracking_uri: str


def load_or_prepare(cfg: Config, settings: StorageSettings, log: Callable[[str], None]) -> DatasetDescription:
    """The prepared dataset ``train.dataset`` names; the demo's is prepared on first use, any
    other missing one is an error saying how to prepare it."""
    root = resolve_uri(cfg.train.dataset)
    if not exists(join_uri(root, DATASET_FILE), settings):
        if cfg.train.dataset.rstrip("/") != DEMO_DATASET:
            raise InputDataError(
                f"train.dataset {root} is not a prepared dataset (no {DATASET_FILE}); "
                f"run jobs/prepare.py --out {root} first"
            )
        from resseg_ray.demo import prepare_demo

        log(f"preparing the demo data under {root} (first run only) ...")
        t0 = time.perf_counter()
        prepare_demo(root, cfg, settings)
        log(f"prepared the demo data in {time.perf_counter() - t0:.0f} s")
    return load_dataset(root, settings)


def plan_training(cfg: Config, log: Callable[[str], None] = print) -> TrainingPlan:
    """Every check that can fail before training starts."""
    check_arch(cfg.model.arch)
    if cfg.model.pretrained:
        if not cfg.model.arch.startswith("prop"):
            raise ConfigError(f"model.pretrained loads ResNet encoder weights; {cfg.model.arch} has none")
        if not os.path.isfile(resolve_uri(cfg.model.pretrained)):
            raise InputDataError(f"model.pretrained {resolve_uri(cfg.model.pretrained)} does not exist")
    settings = StorageSettings.resolve(cfg.storage)
    tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow, workdir())
    tracking.check_tracking(tracking_uri)
    desc = load_or_prepare(cfg, settings, log)
    check_task(cfg, desc)
    check_data_config(cfg, desc)
    check_scenes(desc, settings)
    name = cfg.run.name or f"{cfg.model.arch}-{_dt.datetime.now(_dt.UTC):%Y%m%d-%H%M%S}"
    return TrainingPlan(cfg, settings, desc, name, resolve_uri(cfg.run.storage_path), tracking_uri)


def _params(plan: TrainingPlan) -> dict[str, Any]:
    cfg, desc = plan.cfg, plan.desc
    t, s = cfg.train, cfg.scaling
    arch = cfg.model.arch
    return {
        "arch": arch,
        "depth": int(re.findall(r"\d+", arch)[-1]),  # prop18, unet35, damage-prop50
        "family": "damage" if arch.startswith("damage") else "resseg" if arch.startswith("prop") else "unet",
        "init_from": cfg.model.init_from or "none",
        "class_weights": ",".join(map(str, cfg.train.class_weights)) if cfg.train.class_weights else "none",
        "pretrained": os.path.basename(cfg.model.pretrained) if cfg.model.pretrained else "none",
        "in_bands": len(desc.band_names),
        "bands": ",".join(desc.band_names),
        "band_indexes": ",".join(map(str, desc.bands)),
        "classes": ",".join(cfg.model.class_names),
        "optimizer": "SGD",
        "lr": t.lr,
        "momentum": t.momentum,
        "weight_decay": 0.0 if t.l2sp > 0 else t.weight_decay,
        "lr_step_epochs": t.lr_step_epochs,
        "lr_gamma": t.lr_gamma,
        "epochs": t.epochs,
        "patience": t.patience,
        "time_budget_minutes": t.time_budget_minutes if t.time_budget_minutes is not None else "none",
        "freeze_bn": t.freeze_bn,
        "freeze_encoder": t.freeze_encoder,
        "l2sp": t.l2sp,
        "select": t.select,
        "batch_size_per_worker": t.batch_size,
        "batch_size_global": t.batch_size * s.num_workers,
        "workers": s.num_workers,
        "use_gpu": s.use_gpu,
        "cpus_per_worker": s.cpus_per_worker,
        "precision": t.precision,
        "dataset": desc.root,
        "manifest_sha256": desc.raw.get("manifest_sha256", ""),
        "tiles_train": desc.raw.get("tiles", {}).get("train", ""),
        "tiles_val": desc.raw.get("tiles", {}).get("val", ""),
        "train_tiles_per_epoch": t.train_tiles_per_epoch or "all",
        "val_tiles": t.val_tiles or "all",
        "tile_size": desc.raw["data"]["tile_size"],
        "crop_size": cfg.data.crop_size,
        "normalization": cfg.data.normalization,
        "seed": cfg.run.seed,
    }


def _storage(storage: str, settings: StorageSettings) -> tuple[str, Any]:
    """Ray Train's (storage_path, storage_filesystem) for a local folder or an s3:// prefix
    (S3 through s3fs, so it honours the same endpoint settings as the data)."""
    if not is_s3(storage):
        os.makedirs(storage, exist_ok=True)
        return storage, None
    import pyarrow.fs

    fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(filesystem(storage, settings)))
    return storage[len("s3://") :], fs


def run_training(
    cfg: Config,
    log: Callable[[str], None] = print,
    tags: dict[str, str] | None = None,
    start_from: StartFrom | None = None,
    loop: Callable[[dict[str, Any]], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    register: bool = True,
) -> TrainResult:
    """Train ``cfg`` on Ray Train (Ray must be initialised) and return what it produced.

    ``tags`` are set on a new MLflow run (e.g. ``mlflow.parentRunId`` to nest it);
    ``start_from`` initialises the network from a trained bundle (refinement); ``loop`` is the
    per-worker function (default :func:`~resseg_ray.train.loop.train_loop_per_worker`; tests
    wrap it to inject faults); ``on_epoch(epoch, metrics)`` is called as each epoch's
    ``train_loss``, ``val_loss`` and ``val_f1`` reach MLflow (the map page's live progress);
    ``register=False`` logs the model without registering it
    (:func:`~resseg_ray.train.registry.register_run_model` can, later)."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from resseg_ray.train.loop import train_loop_per_worker

    start = time.perf_counter()
    plan = plan_training(cfg, log)
    cfg, desc = plan.cfg, plan.desc
    _warn_resources(cfg)
    run_dir = join_uri(plan.storage, plan.run_name)

    def open_run() -> tracking.TrackedRun:
        """The run's MLflow run (found again on a re-run), said, with its parameters and inputs."""
        run = tracking.open_run(
            plan.tracking_uri,
            cfg.mlflow.experiment,
            plan.run_name,
            plan.storage,
            tags={"resseg.arch": cfg.model.arch, "resseg.dataset": desc.root, **(tags or {})},
            resume=not cfg.scaling.in_process,
        )
        log(
            f"{'resuming' if run.resumed else 'starting'} run {plan.run_name} "
            f"(MLflow run {run.run_id} at {plan.tracking_uri})"
        )
        tracking.log_params(run, _params(plan))
        _log_inputs(run, cfg, desc)
        return run

    # a re-run of a run that has ended, given no more epochs or time: nothing to train, so none
    # of the data plan, the wait for resources or a Ray Train start (its workers would only say so)
    finished = finished_checkpoint(run_dir, cfg.train.epochs, cfg.train.time_budget_minutes, plan.settings)
    if finished is not None:
        run = open_run()
        with local_checkpoint(finished, plan.settings) as ckpt_dir:
            log(f"run {plan.run_name} has ended ({read_progress(ckpt_dir).stop_reason}): nothing to train")
            return finish_run(plan, run, run_dir, ckpt_dir, start, register)

    limits = {"train": cfg.train.train_tiles_per_epoch, "val": cfg.train.val_tiles}
    norm = None
    if start_from is not None and start_from.norm_mean is not None:
        norm = (list(start_from.norm_mean), list(start_from.norm_std or []))
    # each worker builds its share of every epoch from these rows (train/loop.py), so the data
    # order and the augmentation follow run.seed alone
    rows = split_rows(desc, plan.settings, cfg.run.seed, limits)
    spec = sample_spec(desc, cfg.data, plan.settings, augment=True, seed=cfg.run.seed, norm=norm)
    if start_from is not None and cfg.train.rehearsal_tiles:
        rows, spec = add_rehearsal(rows, spec, cfg, desc, plan.settings, start_from.dataset, log)
    s = cfg.scaling
    local = reads_in_worker(
        rows["train"].num_rows, s.num_workers, cfg.train.batch_size, cfg.data.local_loader_tiles
    )
    in_process = cfg.scaling.in_process
    if not in_process:  # in this process: it holds what it trains on
        wait_for_resources(cfg, log, loaders=not local)  # says what it waits for when the instance is busy
    run = open_run()
    if in_process:
        log(f"training run {plan.run_name} in this process (scaling.in_process): no Ray Train workers")

    queue = epoch_queue()
    jobstate.doing(f"training run {plan.run_name} (checkpoints under {run_dir})")
    storage_path, storage_fs = _storage(plan.storage, plan.settings)
    stats = desc.statistics.pooled
    meta = {
        "band_names": desc.band_names,
        "norm_mean": norm[0] if norm else list(stats.mean),
        "norm_std": norm[1] if norm else list(stats.std),
        "run_name": plan.run_name,
        "run_id": run.run_id,
        "tracking_uri": plan.tracking_uri,
        "dataset": desc.root,
        "manifest_sha256": desc.raw.get("manifest_sha256", ""),
        "rows": ray.put(rows),
        "sample_spec": spec,
        "epoch_queue": queue,
    }
    if cfg.model.init_from and start_from is None:  # the two-stage recipe: a building model first
        from resseg_ray.models.source import fetch_bundle_bytes

        meta["init_buildings"] = ray.put(
            fetch_bundle_bytes(cfg.model.init_from, plan.settings, plan.tracking_uri)
        )
    if start_from is not None:
        meta["init_bundle"] = ray.put(start_from.bundle_bytes)
        meta["parent_run_id"] = start_from.parent_run_id
    env = {"RESSEG_WORKDIR": workdir()}
    resources = {"CPU": cfg.scaling.cpus_per_worker, **cfg.scaling.worker_resources}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    with ExitStack() as stack:
        if in_process:  # Ray Train's local mode keeps no checkpoint: the loop keeps its latest here
            meta["local_checkpoints"] = stack.enter_context(scratch_dir("localckpt"))
            stack.enter_context(torch_threads_kept())  # the loop sets this process's threads
        return fit_and_finish(
            plan,
            run,
            run_dir,
            start,
            register,
            on_epoch,
            queue,
            TorchTrainer(
                loop or train_loop_per_worker,
                train_loop_config={"cfg": to_dict(cfg), "meta": meta},
                torch_config=TorchConfig(backend="nccl" if cfg.scaling.use_gpu else "gloo"),
                scaling_config=ray.train.ScalingConfig(
                    num_workers=0 if in_process else cfg.scaling.num_workers,
                    use_gpu=cfg.scaling.use_gpu and not in_process,
                    resources_per_worker=None if in_process else resources,
                ),
                run_config=ray.train.RunConfig(
                    name=plan.run_name,
                    storage_path=storage_path,
                    storage_filesystem=storage_fs,
                    failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
                    checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.checkpoints_to_keep),
                    # Ray Train V2's RunConfig (the default in 2.60) has it; the typed V1 class does not
                    worker_runtime_env={"env_vars": env},  # type: ignore[call-arg]
                ),
            ),
        )


def _warn_resources(cfg: Config) -> None:
    import ray

    have = ray.cluster_resources()
    need_cpu = cfg.scaling.cpus_per_worker * cfg.scaling.num_workers
    if have.get("CPU", 0) < need_cpu:
        warnings.warn(
            f"the Ray cluster has {have.get('CPU', 0):g} CPUs, the workers need {need_cpu:g} "
            "(scaling.num_workers x scaling.cpus_per_worker); training waits until an autoscaler adds them",
            stacklevel=2,
        )
    if cfg.scaling.use_gpu and have.get("GPU", 0) < cfg.scaling.num_workers:
        warnings.warn(
            f"the Ray cluster has {have.get('GPU', 0):g} GPUs, scaling.use_gpu needs "
            f"{cfg.scaling.num_workers}; "
            "training waits until an autoscaler adds GPU nodes (set scaling.use_gpu=false for CPU training)",
            stacklevel=2,
        )


def _log_inputs(run: tracking.TrackedRun, cfg: Config, desc: DatasetDescription) -> None:
    c = tracking.client(run.tracking_uri)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "config.yaml"), "w") as f:
            yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
        with open(os.path.join(d, "stats.json"), "w") as f:
            f.write(desc.statistics.to_json())
        c.log_artifact(run.run_id, os.path.join(d, "config.yaml"))
        c.log_artifact(run.run_id, os.path.join(d, "stats.json"), "data")
