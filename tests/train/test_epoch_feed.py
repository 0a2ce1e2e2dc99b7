"""Epoch figures from a training's rank 0 to its job over a Ray queue: in order, per run, and a
queue that is gone costs a warning, not the run."""

from __future__ import annotations

import time

import pytest
import ray

from resseg_ray.train.epoch_feed import EpochFigures, epoch_queue, publish, take

pytestmark = pytest.mark.usefixtures("ray_session")


@ray.remote(num_cpus=0)
def _rank0(queue, run_id: str, epochs: int) -> None:
    for e in range(1, epochs + 1):
        publish(queue, run_id, e, {"train_loss": 1.0 / e, "val_loss": 2.0 / e, "val_f1": 0.1 * e, "lr": 0.1})


def _collect(queue, run_id: str, n: int) -> list[EpochFigures]:
    got: list[EpochFigures] = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        got += take(queue, run_id, timeout=1.0)
    return got


def test_each_run_gets_its_own_epochs_in_order() -> None:
    queue = epoch_queue()
    assert epoch_queue() is queue  # one queue per job process, shared by its runs
    ray.get([_rank0.remote(queue, "run-a", 3), _rank0.remote(queue, "run-b", 2)])
    a = _collect(queue, "run-a", 3)
    assert [f.epoch for f in a] == [1, 2, 3]
    assert a[1] == EpochFigures("run-a", 2, train_loss=0.5, val_loss=1.0, val_f1=0.2)
    assert [f.epoch for f in _collect(queue, "run-b", 2)] == [1, 2]  # kept for it meanwhile
    assert take(queue, "run-a", timeout=0.2) == []  # nothing more came


def test_a_queue_that_is_gone_warns_and_training_goes_on() -> None:
    from ray.util.queue import Queue

    gone = Queue(actor_options={"num_cpus": 0})
    ray.kill(gone.actor)
    with pytest.warns(UserWarning, match="could not report epoch 4 to the job"):
        publish(gone, "run-c", 4, {"train_loss": 0.1, "val_loss": 0.2, "val_f1": 0.3})
