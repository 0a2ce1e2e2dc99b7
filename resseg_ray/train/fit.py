"""Fitting a planned training run and finishing it: the fit on Ray Train (or, with
``scaling.in_process``, Ray Train's local mode in this process) with a progress line per
epoch, then the chosen bundle written beside the run and logged (and registered) in MLflow.
:func:`~resseg_ray.train.trainer.run_training` plans the run and calls these."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resseg_ray.errors import InputDataError
from resseg_ray.geo.storage import join_uri, write_bytes
from resseg_ray.models.registry import model_task
from resseg_ray.scratch import scratch_dir
from resseg_ray.train import tracking
from resseg_ray.train.epoch_feed import take
from resseg_ray.train.registry import BUNDLE_NAME, log_model
from resseg_ray.train.state import BEST_FILES, Progress, best_bundles, read_progress

if TYPE_CHECKING:
    from resseg_ray.train.trainer import TrainingPlan

__all__ = ["TrainResult", "finish_run", "fit_and_finish", "torch_threads_kept"]


@dataclass
class TrainResult:
    """What a finished training run produced."""

    run_name: str
    run_dir: str
    bundle_uri: str
    progress: Progress
    tracking_uri: str
    mlflow_run_id: str
    registered_model: str | None
    registered_version: str | None
    alias_moved: bool
    resumed: bool
    seconds: float


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restores this process's torch intra-op thread count on exit."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_and_finish(
    plan: TrainingPlan,
    run: tracking.TrackedRun,
    run_dir: str,
    start: float,
    register: bool,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    queue: Any,
    trainer: Any,
) -> TrainResult:
    """Fit ``trainer`` showing its epochs, then finish the run from its last checkpoint; the
    MLflow run is marked FAILED when the fit fails or leaves no checkpoint."""
    try:
        result = _fit_showing_epochs(
            trainer, queue, plan.tracking_uri, run.run_id, plan.cfg.train.epochs, on_epoch
        )
    except BaseException:
        tracking.client(plan.tracking_uri).set_terminated(run.run_id, status="FAILED")
        raise
    if result.checkpoint is None:
        tracking.client(plan.tracking_uri).set_terminated(run.run_id, status="FAILED")
        raise InputDataError(f"run {plan.run_name} finished without a checkpoint under {run_dir}")
    with result.checkpoint.as_directory() as ckpt_dir:
        return finish_run(plan, run, run_dir, ckpt_dir, start, register)


def _fit_showing_epochs(
    trainer: Any,
    queue: Any,
    tracking_uri: str,
    run_id: str,
    epochs: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> Any:
    """``trainer.fit()``, with a progress line (or bar) per epoch as rank 0 reports it on
    ``queue`` (:mod:`~resseg_ray.train.epoch_feed`): losses, validation F1, time, ETA (at most:
    early stopping may end sooner)."""
    import threading

    from ray.exceptions import RayError

    from resseg_ray.progress import Progress

    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    # a resumed run's bar starts at the epochs it already has (asked once)
    seen = len(tracking.client(tracking_uri).get_metric_history(run_id, "train_loss"))
    thread = threading.Thread(target=fit, name="resseg-fit", daemon=True)
    thread.start()
    with Progress("epoch", epochs, start=seen) as bar:

        def show(wait: float) -> None:
            nonlocal seen
            for f in take(queue, run_id, wait):
                if f.epoch <= seen:
                    continue
                figures = {"train_loss": f.train_loss, "val_loss": f.val_loss, "val_f1": f.val_f1}
                if on_epoch is not None:  # the figures there are (none of validation without tiles)
                    on_epoch(f.epoch, {k: v for k, v in figures.items() if math.isfinite(v)})
                val = (
                    f"val loss {f.val_loss:.4f}, val F1 {f.val_f1:.4f}"
                    if math.isfinite(f.val_loss)
                    else "no validation tiles"
                )
                bar.step(f"train loss {f.train_loss:.4f}, {val}")
                seen = f.epoch

        try:
            while thread.is_alive():
                show(0.5)
            show(0.0)  # what rank 0 reported last, before the run ended
        except RayError:  # the queue went with the Ray instance: the run says what happened
            thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def finish_run(
    plan: TrainingPlan,
    run: tracking.TrackedRun,
    run_dir: str,
    ckpt_dir: str,
    start: float,
    register: bool = True,
) -> TrainResult:
    cfg = plan.cfg
    progress = read_progress(ckpt_dir)
    c = tracking.client(plan.tracking_uri)
    tags = c.get_run(run.run_id).data.tags
    version = tags.get(tracking.VERSION_TAG)
    moved = False
    bundle_uri = join_uri(run_dir, BUNDLE_NAME)
    with scratch_dir("best") as best_dir:
        bundles = best_bundles(ckpt_dir, best_dir)
        chosen = bundles.get(BEST_FILES[cfg.train.select])
        if chosen is None:
            raise InputDataError(f"checkpoint {ckpt_dir} holds no {BEST_FILES[cfg.train.select]}")
        with open(chosen, "rb") as f:
            write_bytes(bundle_uri, f.read(), plan.settings)
        if version is None:
            version, moved = log_model(
                cfg, plan.tracking_uri, plan.run_name, run.run_id, ckpt_dir, bundles, chosen, progress,
                register,
            )  # fmt: skip
        else:
            c.set_terminated(run.run_id, status="FINISHED")
    return TrainResult(
        run_name=plan.run_name,
        run_dir=run_dir,
        bundle_uri=bundle_uri,
        progress=progress,
        tracking_uri=plan.tracking_uri,
        mlflow_run_id=run.run_id,
        registered_model=cfg.mlflow.registry_name(model_task(cfg.model.arch)),
        registered_version=version,
        alias_moved=moved,
        resumed=run.resumed,
        seconds=time.perf_counter() - start,
    )
