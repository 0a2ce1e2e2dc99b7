"""How many Ray Train workers and what each reserves (``scaling``)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from resseg_ray.config.base import Section
from resseg_ray.errors import ConfigError


class ScalingSection(Section):
    """How many Ray Train workers and what each reserves (Ray Train's ScalingConfig)."""

    section = "scaling"

    num_workers: int = 1
    """Data-parallel workers (DDP processes)."""
    use_gpu: bool = False
    """One GPU per worker (NCCL backend); otherwise CPU workers (gloo backend)."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker; leave some for the Ray Data loaders."""
    torch_threads: int | None = None
    """Intra-op threads of each worker; default the worker's reserved CPUs (at least 1)."""
    in_process: bool = False
    """Train in the calling process with Ray Train's local mode instead of starting Ray Train
    worker actors: no controller or worker start (10-30 s on a small machine), but no worker
    restarts and no checkpoints a re-run resumes from. For small refinements (the map page's);
    needs ``num_workers: 1``. The process must hold the CPUs or GPU it trains on."""
    worker_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each worker reserves besides its CPUs/GPU, e.g. ``{train_slot: 1}``
    on nodes started with ``--resources='{"train_slot": 1}'`` puts one worker per node."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        for name, amount in self.worker_resources.items():
            if name in ("CPU", "GPU", "memory"):
                raise ConfigError(
                    f"scaling.worker_resources: {name} is set by scaling.cpus_per_worker / "
                    "scaling.use_gpu; list only custom resources here"
                )
            if amount <= 0:
                raise ConfigError(f"scaling.worker_resources.{name} must be a number > 0, got {amount!r}")
        if self.num_workers < 1:
            raise self.bad("num_workers", ">= 1", self.num_workers)
        if self.in_process and self.num_workers != 1:
            raise self.bad("num_workers", "1 with scaling.in_process", self.num_workers)
        if self.cpus_per_worker <= 0:
            raise self.bad("cpus_per_worker", "> 0", self.cpus_per_worker)
        if self.torch_threads is not None and self.torch_threads < 1:
            raise self.bad("torch_threads", ">= 1", self.torch_threads)
        return self
