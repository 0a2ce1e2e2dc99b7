"""Common base of all segmentation networks: any input size in, same size out."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resseg_ray.errors import InputDataError


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a network: registry name, bands, classes, options."""

    name: str
    in_bands: int
    num_classes: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in model bundles)."""
        return {
            "name": self.name,
            "in_bands": self.in_bands,
            "num_classes": self.num_classes,
            "options": dict(self.options),
        }


def pad_aligned(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (N x D x H x W) padded at the bottom/right to sides that are multiples of
    ``multiple``: reflection where the side allows it, edge replication otherwise (e.g. a
    1-pixel side). The one padding rule of every network and of the exported graphs' engines
    (:mod:`resseg_ray.runtime`), so that both give the same output on any window size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class SegmentationNet(nn.Module, abc.ABC):
    """A fully convolutional network mapping N x D x H x W to N x C x H x W logits.

    Inputs whose sides are multiples of :attr:`size_multiple` run natively; other
    sizes are padded at the bottom/right (reflection where the side allows it, edge
    replication otherwise, e.g. for 1-pixel inputs) and the logits cropped back.
    """

    #: Total downsampling factor; inputs are padded to a multiple of it.
    size_multiple: int = 32

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        #: Set by :func:`resseg_ray.models.fuse.fold_batchnorm` on inference copies.
        self.bn_folded = False

    @abc.abstractmethod
    def encoder_modules(self) -> list[nn.Module]:
        """The modules of the contracting path (what ``train.freeze_encoder`` keeps fixed)."""

    @abc.abstractmethod
    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input whose sides are multiples of :attr:`size_multiple`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.spec.in_bands:
            raise InputDataError(
                f"{self.spec.name} expects a batch of shape N x {self.spec.in_bands} x H x W "
                f"(bands first), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % self.size_multiple == 0 and w % self.size_multiple == 0:
            return self.forward_aligned(x)
        return self.forward_aligned(pad_aligned(x, self.size_multiple))[..., :h, :w]
