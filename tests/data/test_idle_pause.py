"""Ray Data's executor loop pauses when no task runs (resseg_ray.data.idle_pause)."""

from __future__ import annotations

import pytest

from resseg_ray.data import idle_pause


class _Op:
    def __init__(self, active: int) -> None:
        self.active = active

    def num_active_tasks(self) -> int:
        return self.active


class _Executor:
    def __init__(self, active: list[int] | None) -> None:
        if active is not None:
            self._topology = {_Op(a): None for a in active}


@pytest.mark.parametrize(
    ("active", "paused"),
    [
        ([0, 0], True),  # backpressured: nothing running, the loop would spin
        ([0, 2], False),  # a task runs: the loop already blocks in ray.wait
        (None, False),  # an executor without the attribute it reads: left alone
    ],
)
def test_an_idle_step_sleeps_and_a_busy_one_does_not(monkeypatch, active, paused) -> None:
    slept: list[float] = []
    monkeypatch.setattr(idle_pause.time, "sleep", slept.append)
    idle_pause.IdlePause().on_execution_step(_Executor(active))
    assert slept == ([idle_pause.PAUSE_S] if paused else [])


def test_loader_datasets_carry_it_to_the_executor(ray_session, monkeypatch) -> None:
    """Registered once in the DataContext a loader dataset is built with, and called by the
    pinned Ray's executor at every loop step of a real execution."""
    import pyarrow as pa
    import ray

    from resseg_ray.data.idle_pause import IdlePause, install

    ctx = ray.data.DataContext.get_current()
    install(ctx)
    install(ctx)
    assert ctx.custom_execution_callback_classes.count(IdlePause) == 1
    assert IdlePause in ctx.execution_callback_classes  # what the executor instantiates
    steps: list[bool] = []
    step = IdlePause.on_execution_step
    monkeypatch.setattr(IdlePause, "on_execution_step", lambda self, ex: steps.append(True) or step(self, ex))
    rows = ray.data.from_arrow(pa.table({"x": list(range(64))})).map_batches(lambda b: b, batch_size=8)
    assert sorted(r["x"] for r in rows.take_all()) == list(range(64))
    assert steps  # this process ran the executor, and the executor called the pause
