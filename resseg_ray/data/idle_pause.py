"""Ray Data's streaming executor, paused while it has nothing to wait on.

The executor's scheduling loop blocks in ``ray.wait`` (up to 0.1 s) only while some task is
running. When backpressure holds every operator (training consumes slower than the loaders
produce, the usual case) no task runs, and the loop spins without pause: on a 2-core machine
the ``SplitCoordinator`` that runs it took 60-90 % of a core (py-spy: scheduling-loop
bookkeeping and Prometheus gauges), and the demo's epochs took 44-48 s instead of 26-30 s
until the executor had produced every epoch (Ray 2.60; ray-project/ray#65060 notes that the
loop "keeps spinning"). :class:`IdlePause` is an execution callback (Ray Data's extension
point, ``DataContext.custom_execution_callback_classes``, which travels with the dataset to
the process that executes it): after a loop step that left no task running it sleeps
:data:`PAUSE_S`, far below a training step, so producing stays as prompt as the consumer needs.
"""

from __future__ import annotations

import time
from typing import Any

from ray.data._internal.execution.execution_callback import ExecutionCallback

PAUSE_S = 0.005
"""Sleep after a loop step that left no task running (a training step takes 0.1-1 s)."""

__all__ = ["PAUSE_S", "IdlePause", "install"]


class IdlePause(ExecutionCallback):
    """Sleep :data:`PAUSE_S` after each executor loop step that left no task running."""

    def on_execution_step(self, executor: Any) -> None:
        """Called by the executor after every step of its scheduling loop."""
        topology = getattr(executor, "_topology", None)
        if topology is None:  # an executor laid out otherwise: leave its loop as it is
            return
        if not any(op.num_active_tasks() for op in topology):
            time.sleep(PAUSE_S)


def install(ctx: Any) -> None:
    """Register :class:`IdlePause` in a ``DataContext`` (once)."""
    if IdlePause not in ctx.custom_execution_callback_classes:
        ctx.custom_execution_callback_classes.append(IdlePause)
