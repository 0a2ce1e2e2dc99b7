"""Each finished epoch's figures, from a training's rank 0 to the job that started it.

Rank 0 puts one small record per epoch on a Ray queue (:class:`ray.util.queue.Queue`: an actor
holding no CPU, made once per job process on its Ray instance and shared by its runs); the
job's progress line (and the map page's live progress) takes each record as it arrives,
instead of asking the tracking store over and over.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EpochFigures", "epoch_queue", "publish", "take"]

_queue: Any = None
_instance: str | None = None
"""The Ray instance (its GCS address) :data:`_queue` lives on."""
_held: dict[str, list[EpochFigures]] = {}
"""Records taken from the queue for another run of this process than the one asking."""


@dataclass(frozen=True)
class EpochFigures:
    """What a progress line shows of one epoch."""

    run_id: str
    """The MLflow run the epoch belongs to (one queue serves every run of a job)."""
    epoch: int
    train_loss: float
    val_loss: float
    val_f1: float


def epoch_queue() -> Any:
    """This process's epoch queue on the Ray instance it is attached to (made on first use, and
    again after the process attached to another instance)."""
    global _queue, _instance
    import ray
    from ray.util.queue import Queue

    here = ray.get_runtime_context().gcs_address
    if _queue is None or _instance != here:
        _queue = Queue(actor_options={"num_cpus": 0})
        _instance = here
    return _queue


def publish(queue: Any, run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
    """Rank 0: put one epoch's figures on ``queue``. A queue that is gone (its job ended, the
    actor was lost) warns and lets the training go on: progress is not worth a run."""
    figures = EpochFigures(
        run_id=run_id,
        epoch=epoch,
        train_loss=float(metrics.get("train_loss", math.nan)),
        val_loss=float(metrics.get("val_loss", math.nan)),
        val_f1=float(metrics.get("val_f1", math.nan)),
    )
    from ray.exceptions import RayError

    try:
        queue.put_nowait(figures)
    except RayError as exc:
        warnings.warn(f"could not report epoch {epoch} to the job: {exc}", stacklevel=2)


def take(queue: Any, run_id: str, timeout: float) -> list[EpochFigures]:
    """The figures of ``run_id`` waiting or arriving within ``timeout`` seconds, in order;
    empty when none came. Records of the process's other runs are kept for them."""
    from ray.util.queue import Empty

    mine = _held.pop(run_id, [])
    if not mine:
        try:
            first = queue.get(block=True, timeout=timeout)
        except Empty:
            return []
        waiting = queue.qsize()
        for f in [first, *(queue.get_nowait_batch(waiting) if waiting else [])]:
            if isinstance(f, EpochFigures):
                _held.setdefault(f.run_id, []).append(f)
        mine = _held.pop(run_id, [])
    return mine
