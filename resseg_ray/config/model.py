"""Which network is trained (``model``)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from resseg_ray.config.base import Section
from resseg_ray.errors import ConfigError


class ModelSection(Section):
    """Which network is trained."""

    section = "model"

    arch: str = "prop18"
    """Registry name: prop18, prop34, prop50, prop101, prop152, prop200, unet19 or unet35; for
    damage on pre/post pairs, damage-prop18 ... damage-prop200."""
    pretrained: str | None = None
    """Local torchvision ResNet state dict (.pth/.safetensors) to initialise the encoder from."""
    class_names: list[str] = Field(default_factory=lambda: ["ground", "building"])
    """Names of the output classes (label value i is class i); a damage network's are
    ``[background, no-damage, minor-damage, major-damage, destroyed]``."""
    init_from: str | None = None
    """A damage network's start: a trained building model (bundle path, s3:// or ``models:/``
    URI) of the same depth and bands per image, copied into it (the two-stage recipe: it maps
    buildings from the first step and learns damage on top). Default: fresh weights."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(self.class_names) < 2:
            raise ConfigError(f"model.class_names needs at least 2 classes, got {self.class_names}")
        return self
