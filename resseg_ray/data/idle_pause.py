"""Ray Data's streaming executor, paused while it has nothing to wait on.

The executor's scheduling loop blocks in ``ray.wait`` (up to 0.1 s) only while some task is
running. When backpressure holds every operator (training consumes slower than the loaders
produce, the usual case) no task runs, and the loop spins without pause: on a 2-core machine
the ``SplitCoordinator`` that runs it took 60-65 % of a core (py-spy: scheduling-loop
bookkeeping and Prometheus gauges), and the demo's epochs took 44-48 s instead of 26-30 s
until the executor had produced every epoch (Ray 2.60; ray-project/ray#65060 notes the loop
"keeps spinning"). :func:`install` makes such an idle loop step sleep :data:`PAUSE_S`, far
below a training step, so producing stays as prompt as the consumer needs.

It patches one private method of Ray Data, so it checks what it patches and does nothing on
a Ray whose executor looks otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import Any

PAUSE_S = 0.005
"""Sleep of a loop step that found no task running (a training step takes 0.1-1 s)."""

_MODULE = "ray.data._internal.execution.streaming_executor"

__all__ = ["PAUSE_S", "install", "install_if_loaded", "pause_idle_steps"]


def install() -> bool:
    """Pause the idle steps of Ray Data's streaming executor in this process; whether it is
    (now or already) installed."""
    try:
        from ray.data._internal.execution.streaming_executor import StreamingExecutor
    except ImportError:  # pragma: no cover - another Ray layout: leave it alone
        return False
    return pause_idle_steps(StreamingExecutor)


def pause_idle_steps(executor: type) -> bool:
    """Wrap ``executor._scheduling_loop_step(topology)`` (a dict keyed by operators with
    ``num_active_tasks()``) so that a step after which the loop goes on with no task running
    sleeps :data:`PAUSE_S`; whether the class is (now or already) wrapped."""
    step = getattr(executor, "_scheduling_loop_step", None)
    if step is None:
        return False
    if getattr(step, "_resseg_idle_pause", False):
        return True

    def paused_step(self: Any, topology: Any) -> bool:
        go_on = step(self, topology)
        if go_on and not any(op.num_active_tasks() for op in topology):
            time.sleep(PAUSE_S)
        return go_on

    paused_step._resseg_idle_pause = True  # type: ignore[attr-defined]
    paused_step.__doc__ = step.__doc__
    executor._scheduling_loop_step = paused_step  # type: ignore[attr-defined]
    return True


def install_if_loaded() -> None:
    """:func:`install` where Ray Data's executor is already imported (a Ray Data actor, such as
    the ``SplitCoordinator``, unpickling a dataset that maps this package's loader), without
    importing Ray Data anywhere else."""
    if _MODULE in sys.modules:
        install()
