"""Ray Data actor pools of the batch jobs (``predict --actors``, ``damage --actors``): actors
that load a model once and take one item (a scene, a part, a pair) at a time, and what they
pass on of the warnings their work raised."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.config import PredictSection
    from resseg_ray.inference.predictor import ScenePredictor

__all__ = ["actor_predictor", "on_actor_pool", "warning_lines"]


def actor_predictor(bundle_ref: object, predict: PredictSection, threads: int | None) -> ScenePredictor:
    """An actor's predictor: the bundle (bytes, or a Ray object reference to them) loaded once,
    on the actor's own device (its GPU when Ray gave it one, whatever ``predict.device`` says),
    with ``threads`` torch threads."""
    import ray
    import torch

    from resseg_ray.device import DevicePolicy
    from resseg_ray.inference.predictor import ScenePredictor
    from resseg_ray.models.bundle import load_bundle_bytes

    if threads:
        torch.set_num_threads(threads)
    data = ray.get(bundle_ref) if isinstance(bundle_ref, ray.ObjectRef) else bundle_ref
    assert isinstance(data, bytes)
    return ScenePredictor(load_bundle_bytes(data), predict, DevicePolicy.resolve())


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
