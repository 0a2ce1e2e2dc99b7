"""What a training reserves on its Ray instance, and what to say when it is not free.

A job joins any Ray instance running on its machine (``ray.init(address="auto")``, as Ray
does), including one that serves the map page: its Serve replicas and refinements may hold
every CPU, and Ray Train then waits for them without a word. :func:`shortage` says what the
training waits for; :func:`wait_for_resources` gives the instance a short while, then says it
once, with how to run on the job's own instance, and lets Ray Train wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from resseg_ray.config import Config

__all__ = ["shortage", "wait_for_resources"]


def shortage(cfg: Config, source: str = "", loaders: bool = True) -> str | None:
    """Why the training may not start at once: the CPUs (and GPUs) its workers and, with
    ``loaders`` (its epochs read by Ray Data, not in the workers), its loaders reserve against
    those free on the Ray instance now; None when they fit. ``source`` names where the
    reservations were set (e.g. ``of serve.refine_config``)."""
    import ray

    s = cfg.scaling
    need_cpu = s.num_workers * s.cpus_per_worker + (cfg.data.loader_num_cpus if loaders else 0.0)
    need_gpu = s.num_workers if s.use_gpu else 0
    total, free = ray.cluster_resources(), ray.available_resources()
    short = []
    if free.get("CPU", 0.0) + 1e-9 < need_cpu:
        what = "scaling.num_workers x scaling.cpus_per_worker" + (
            " + data.loader_num_cpus" if loaders else ""
        )
        short.append(
            f"{need_cpu:g} CPUs ({what}"
            f"{' ' + source if source else ''}) and {free.get('CPU', 0.0):g} of the instance's "
            f"{total.get('CPU', 0.0):g} are free"
        )
    if need_gpu and free.get("GPU", 0.0) + 1e-9 < need_gpu:
        short.append(
            f"{need_gpu} GPUs (scaling.use_gpu) and {free.get('GPU', 0.0):g} of its "
            f"{total.get('GPU', 0.0):g} are free"
        )
    if not short:
        return None
    return (
        f"waiting for Ray resources at {ray.get_runtime_context().gcs_address}: the training reserves "
        + "; ".join(short)
        + " (other programs' tasks, actors or Serve replicas hold the rest); it starts when they are "
        "freed or an autoscaler adds nodes, or lower those reservations"
    )


def wait_for_resources(
    cfg: Config,
    log: Callable[[str], None],
    wait_s: float = 3.0,
    poll_s: float = 0.25,
    loaders: bool = True,
) -> str | None:
    """Give the instance up to ``wait_s`` seconds to free what the training reserves (polled;
    ``loaders`` as :func:`shortage`'s); when it has not, say what the training waits for and
    how to run on the job's own Ray instance, once, and return that line (Ray Train then waits
    for the resources itself)."""
    deadline = time.monotonic() + wait_s
    short = shortage(cfg, loaders=loaders)
    while short is not None and time.monotonic() < deadline:
        time.sleep(poll_s)
        short = shortage(cfg, loaders=loaders)
    if short is None:
        return None
    line = (
        f"{short}. To run this job on a Ray instance of its own on this machine instead, stop it "
        "and start it again with RAY_ADDRESS=local"
    )
    log(line)
    return line
