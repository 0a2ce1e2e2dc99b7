"""The typed report of a training run (:class:`~resseg_ray.train.fit.TrainResult`) as the
``train`` command prints it, and as JSON (``resseg train --report``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from resseg_ray.jsondoc import dump_json

if TYPE_CHECKING:
    from resseg_ray.train.fit import TrainResult

FORMAT = "resseg-train-report/1"
"""The ``format`` of the JSON report."""


def summary_lines(r: TrainResult, alias: str) -> list[str]:
    """The run in a few lines: epochs and why it stopped, the best epochs, where the bundle,
    the checkpoints and the MLflow run are, and the registered version (``alias``: the
    registry alias a better version moves)."""
    done = r.progress
    best = (
        f"best val loss {done.best_val_loss:.4f} (epoch {done.best_val_loss_epoch}), "
        f"best val F1 {done.best_val_f1:.4f} (epoch {done.best_val_f1_epoch})"
        if done.best_val_loss_epoch
        else "no validation tiles"
    )
    lines = [
        f"run {r.run_name}: {done.epochs_done} epochs ({done.stop_reason}), {best}, {r.seconds:.0f} s",
        f"  model bundle: {r.bundle_uri}",
        f"  checkpoints:  {r.run_dir}",
        f"  MLflow run:   {r.mlflow_run_id} at {r.tracking_uri}",
    ]
    if r.registered_version:
        moved = f", alias '{alias}' now points to it" if r.alias_moved else ""
        lines.append(f"  registered:   {r.registered_model} version {r.registered_version}{moved}")
    return lines


def report_json(r: TrainResult) -> str:
    """The run as a JSON document (:data:`FORMAT`): every field of the result, the progress
    with each epoch's metrics; a value that is not finite (no best yet) is null."""
    return dump_json({"format": FORMAT, **asdict(r)})
