"""Ray Data's executor loop pauses when no task runs (resseg_ray.data.idle_pause)."""

from __future__ import annotations

import pytest

from resseg_ray.data import idle_pause


class _Op:
    def __init__(self, active: int) -> None:
        self.active = active

    def num_active_tasks(self) -> int:
        return self.active


def _executor(go_on: bool) -> type:
    class Executor:
        steps = 0

        def _scheduling_loop_step(self, topology: dict) -> bool:
            type(self).steps += 1
            return go_on

    return Executor


@pytest.mark.parametrize(
    ("go_on", "active", "paused"),
    [
        (True, [0, 0], True),  # backpressured: nothing running, the loop would spin
        (True, [0, 2], False),  # a task runs: the loop already blocks in ray.wait
        (False, [0, 0], False),  # the last step: no pause before the executor ends
    ],
)
def test_an_idle_step_sleeps_and_a_busy_or_last_one_does_not(monkeypatch, go_on, active, paused) -> None:
    slept: list[float] = []
    monkeypatch.setattr(idle_pause.time, "sleep", slept.append)
    cls = _executor(go_on)
    assert idle_pause.pause_idle_steps(cls) and idle_pause.pause_idle_steps(cls)  # idempotent
    topology = {_Op(a): None for a in active}
    assert cls()._scheduling_loop_step(topology) is go_on
    assert cls.steps == 1  # the original step ran once, wrapped once
    assert slept == ([idle_pause.PAUSE_S] if paused else [])


def test_it_patches_the_installed_ray_where_ray_data_is_loaded() -> None:
    """The pinned Ray has the method it wraps; ``install_if_loaded`` (run when the pipeline
    module is imported, as a SplitCoordinator does when it unpickles a loader dataset) patches
    it once Ray Data's executor is imported."""
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    idle_pause.install_if_loaded()
    assert getattr(StreamingExecutor._scheduling_loop_step, "_resseg_idle_pause", False)
    assert idle_pause.install()
