"""Ray Data actor pools of the batch jobs (``predict --actors``, ``damage --actors``): actors
that load a model once and take one item (a scene, a part, a pair) at a time, and what they
pass on of the warnings their work raised."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["on_actor_pool", "warning_lines"]


def on_actor_pool(
    items: list[dict[str, Any]],
    actor: type,
    kwargs: dict[str, Any],
    actors: int,
    gpus_per_actor: float,
    cpus_per_actor: float,
) -> list[dict[str, Any]]:
    """The rows ``actor`` (a Ray Data callable class, built once per actor with ``kwargs``)
    makes of ``items``, one item per call, on a pool of ``actors`` actors (``predict --actors``,
    ``damage --actors``)."""
    import ray

    return (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            actor,
            batch_size=1,
            # one item (a scene, a part or a pair: seconds to minutes) per actor at a time: by
            # default Ray Data queues several on the first actor ready while the others still start
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
            num_gpus=gpus_per_actor,
            num_cpus=cpus_per_actor,
            fn_constructor_kwargs=kwargs,
        )
        .take_all()
    )


def warning_lines(caught: list[warnings.WarningMessage]) -> str:
    """What an actor passes on to the driver of the warnings a unit of work raised: each
    message once, libraries' deprecation notes (for their own developers) left out."""
    notes = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    said = [w for w in caught if not issubclass(w.category, notes)]
    return "\n".join(dict.fromkeys(str(w.message) for w in said))
