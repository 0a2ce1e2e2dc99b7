"""What a training checkpoint holds, and how it is written and restored.

A checkpoint directory (one per epoch, under Ray Train's storage path) contains:

- ``state.pt``: model, optimiser and scheduler state dicts plus :class:`Progress`
  (plain tensors and numbers; restored with ``torch.load(weights_only=True)``);
- ``progress.json``: the same progress, readable by people and by the driver;
- ``best_val_loss.resseg.safetensors`` / ``best_val_f1.resseg.safetensors``: model bundles
  of the best epochs so far (and ``last.resseg.safetensors``, the latest epoch's, when
  ``train.select`` is ``last``), carried from checkpoint to checkpoint so that keeping only
  the latest checkpoints never loses the best models. A best bundle of the checkpoint's own
  epoch is recorded by its metadata only (``<bundle name>.info.json``): its weights are
  ``state.pt``'s model, so they are not written twice or three times (for prop18, 120 MB
  less per improving epoch, locally and in the storage). :func:`best_bundles` gives them
  all back as files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from resseg_ray.errors import InputDataError
from resseg_ray.geo.storage import (
    StorageSettings,
    filesystem,
    is_remote,
    join_uri,
    local_path,
    read_bytes,
    write_bytes,
)
from resseg_ray.models.bundle import bundle_info_from_dict, encode_weights, read_bundle_info
from resseg_ray.scratch import scratch_dir

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
BEST_FILES = {
    "val_loss": "best_val_loss.resseg.safetensors",
    "val_f1": "best_val_f1.resseg.safetensors",
    "last": "last.resseg.safetensors",
}


@dataclass
class Progress:
    """Where a run stands after its last completed epoch."""

    epochs_done: int = 0
    best_val_loss: float = math.inf
    best_val_loss_epoch: int = 0
    best_val_f1: float = -1.0
    best_val_f1_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    stop_reason: str = ""
    restarts: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def update(self, metrics: dict[str, float], min_delta: float) -> tuple[bool, bool]:
        """Record an epoch's metrics; returns whether it set a new best validation loss and F1.

        Early stopping counts epochs whose validation loss did not fall by more than ``min_delta``.
        An epoch without validation figures (no validation tiles) is neither best nor bad.
        """
        self.epochs_done = int(metrics["epoch"])
        self.history.append(dict(metrics))
        if "val_loss" not in metrics:
            return False, False
        loss, f1 = metrics["val_loss"], metrics["val_f1"]
        self.bad_epochs = 0 if loss < self.best_val_loss - min_delta else self.bad_epochs + 1
        loss_best = loss < self.best_val_loss
        if loss_best:
            self.best_val_loss, self.best_val_loss_epoch = loss, self.epochs_done
        f1_best = f1 > self.best_val_f1
        if f1_best:
            self.best_val_f1, self.best_val_f1_epoch = f1, self.epochs_done
        return loss_best, f1_best

    def training_seconds(self) -> float:
        """Seconds spent in training and validation epochs so far (across restarts; start-up and
        checkpoint writing not counted)."""
        return float(sum(h.get("epoch_seconds", 0.0) for h in self.history))

    def check_stop(self, epochs: int, patience: int, budget_minutes: float | None) -> None:
        """After an epoch: mark the run finished, with the reason, when early stopping triggers,
        the last epoch is done, or another epoch as long as the last one would overrun the
        training time budget."""
        if patience and self.bad_epochs >= patience:
            self.finished, self.stop_reason = True, f"early stop: no val loss decrease in {patience} epochs"
        elif self.epochs_done >= epochs:
            self.finished, self.stop_reason = True, f"reached train.epochs={epochs}"
        elif budget_minutes is not None and self._next_epoch_overruns(budget_minutes):
            self.finished = True
            self.stop_reason = (
                f"time budget: {self.training_seconds() / 60:.1f} of "
                f"train.time_budget_minutes={budget_minutes:g} spent, the next epoch would overrun it"
            )

    def _next_epoch_overruns(self, budget_minutes: float) -> bool:
        """Whether another epoch as long as the last would take training past the budget."""
        last = float(self.history[-1].get("epoch_seconds", 0.0)) if self.history else 0.0
        return self.training_seconds() + last > 60 * budget_minutes

    def may_go_on(self, epochs: int, budget_minutes: float | None) -> bool:
        """Whether a run that stopped at its epoch count or time budget may train on under a
        re-run's larger ``epochs`` or ``budget_minutes`` (an early stop stays final)."""
        if self.epochs_done >= epochs:
            return False
        if self.stop_reason.startswith("reached"):
            return True
        if self.stop_reason.startswith("time budget"):
            return budget_minutes is None or not self._next_epoch_overruns(budget_minutes)
        return False

    def to_json(self) -> str:
        """JSON text (infinite values written as null)."""
        d = asdict(self)
        if math.isinf(d["best_val_loss"]):
            d["best_val_loss"] = None
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Progress:
        """Parse :meth:`to_json` output."""
        d = json.loads(text)
        if d.get("best_val_loss") is None:
            d["best_val_loss"] = math.inf
        return cls(**d)


INFO_SUFFIX = ".info.json"
"""Suffix of the record standing for a best bundle whose weights are the checkpoint's model."""


def write_checkpoint(
    directory: str,
    progress: Progress,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    best_dir: str,
    current: Collection[str] = (),
) -> None:
    """Write a checkpoint of the current state into ``directory`` (created), with the best
    bundles of ``best_dir``; those named in ``current`` (saved from this epoch's weights) are
    recorded by their metadata only."""
    os.makedirs(directory, exist_ok=True)
    torch.save(
        {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": progress.to_json(),
        },
        os.path.join(directory, STATE_FILE),
    )
    with open(os.path.join(directory, PROGRESS_FILE), "w") as f:
        f.write(progress.to_json())
    for name in BEST_FILES.values():
        src = os.path.join(best_dir, name)
        if not os.path.exists(src):
            continue
        if name in current:
            with open(os.path.join(directory, name + INFO_SUFFIX), "w") as f:
                json.dump(asdict(read_bundle_info(src)), f)
        else:
            shutil.copy2(src, os.path.join(directory, name))


def read_checkpoint(
    directory: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    best_dir: str,
) -> Progress:
    """Restore model, optimiser and scheduler from ``directory``; its best bundles to ``best_dir``."""
    state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    best_bundles(directory, best_dir, state["model"])
    return Progress.from_json(state["progress"])


def best_bundles(
    directory: str, out_dir: str, weights: Mapping[str, torch.Tensor] | None = None
) -> dict[str, str]:
    """The checkpoint's best bundles as files in ``out_dir`` (name -> path): copied, or rebuilt
    from the checkpoint's model weights (``weights``, else read from ``state.pt``) and the
    recorded metadata."""
    os.makedirs(out_dir, exist_ok=True)
    found: dict[str, str] = {}
    for name in BEST_FILES.values():
        src, dst = os.path.join(directory, name), os.path.join(out_dir, name)
        if os.path.exists(src):
            shutil.copy2(src, dst)
        elif os.path.exists(src + INFO_SUFFIX):
            with open(src + INFO_SUFFIX) as f:
                info = bundle_info_from_dict(json.load(f), src + INFO_SUFFIX)
            if weights is None:
                path = os.path.join(directory, STATE_FILE)
                weights = torch.load(path, map_location="cpu", weights_only=True)["model"]
            write_bytes(dst, encode_weights(weights, info), StorageSettings())
        else:
            continue
        found[name] = dst
    return found


def read_progress(directory: str) -> Progress:
    """The progress recorded in a checkpoint directory."""
    with open(os.path.join(directory, PROGRESS_FILE)) as f:
        return Progress.from_json(f.read())


SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
"""Ray Train's record of a run's checkpoints, in the run's folder (the latest is the one a
re-run resumes from)."""


def finished_checkpoint(
    run_dir: str, epochs: int, budget_minutes: float | None, settings: StorageSettings
) -> str | None:
    """The latest checkpoint (its folder's URI) of a run under ``run_dir`` that has ended and
    may not go on with ``epochs`` and ``budget_minutes`` (:meth:`Progress.may_go_on`): a re-run
    of it has nothing to train. None for a new, unfinished or extended run, and whenever Ray
    Train's record is missing or not as expected (Ray Train then decides, as on any start)."""
    try:
        record = json.loads(read_bytes(join_uri(run_dir, SNAPSHOT_FILE), settings))
        name = record["latest_checkpoint_result"]["checkpoint_dir_name"]
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name.startswith("."):
            return None
        folder = join_uri(run_dir, name)
        progress = Progress.from_json(read_bytes(join_uri(folder, PROGRESS_FILE), settings).decode())
    except (InputDataError, OSError, ValueError, KeyError, TypeError):
        return None
    if not progress.finished or progress.may_go_on(epochs, budget_minutes):
        return None
    return folder


@contextlib.contextmanager
def local_checkpoint(folder: str, settings: StorageSettings) -> Iterator[str]:
    """A checkpoint folder as a local directory: a local one as it is, an ``s3://`` one copied
    into a scratch folder removed afterwards."""
    if not is_remote(folder):
        yield local_path(folder)
        return
    with scratch_dir("checkpoint") as tmp:
        filesystem(folder, settings).get(folder.rstrip("/") + "/", tmp + "/", recursive=True)
        yield tmp
