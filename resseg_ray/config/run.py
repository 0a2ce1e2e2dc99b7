"""Where a training run lives, how it survives failures, and its seed (``run``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Self

from pydantic import model_validator

from resseg_ray.config.base import Section
from resseg_ray.errors import ConfigError


class RunSection(Section):
    """Where a training run lives and how it survives failures (Ray Train's RunConfig)."""

    section = "run"
    flags: ClassVar[Mapping[str, str]] = {"seed": "--seed"}

    name: str | None = None
    """Run name; re-running with the same name resumes it. Default ``<arch>-<UTC time>``."""
    storage_path: str = "runs"
    """Folder or s3:// prefix for checkpoints and the final bundle (``<storage_path>/<name>/``)."""
    max_failures: int = 2
    """Worker crashes survived per run by restarting from the latest checkpoint (-1: unlimited)."""
    checkpoints_to_keep: int = 2
    """Epoch checkpoints kept (the best models travel inside each, so older ones can go)."""
    seed: int = 0
    """The one seed of everything random (``--seed`` on prepare, train, finetune and
    compare_depths): the weights' initialisation, which tiles and in which order each epoch and
    each worker sees, every augmentation draw, ``prepare``'s train/validation split, the
    placement of random and suggested annotation areas. Two runs with the same seed and
    configuration on CPU give the same metrics (to 1e-6) and weights; GPU kernels may still
    differ from run to run."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", self.name):
            raise ConfigError(
                f"run.name {self.name!r} must be 1-128 letters, digits, '_', '.' or '-' (it names a folder)"
            )
        if self.max_failures < -1:
            raise self.bad("max_failures", ">= -1", self.max_failures)
        if self.checkpoints_to_keep < 1:
            raise self.bad("checkpoints_to_keep", ">= 1", self.checkpoints_to_keep)
        if not 0 <= self.seed < 2**63:
            raise self.bad("seed", "an integer from 0 to 2**63 - 1", self.seed)
        return self
