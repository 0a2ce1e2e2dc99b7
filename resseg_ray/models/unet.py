"""U-Net baselines (Ronneberger et al.) with 19 and 35 convolutional layers.

Layer counting (as the paper compares U-Net(19) with ResNet-18): every 3x3
convolution plus the final 1x1 classifier is one layer; the 2x2 up-convolutions
(transposed, stride 2) are counted as upsampling, like pooling, not as layers.
Four 2x2 poolings give five levels with widths 64, 128, 256, 512, 1024. Nine stages
(four encoder levels, the bottleneck, four decoder levels) hold the 3x3 convs:
- unet19: 2 convs per stage (the original U-Net) -> 18 + 1 = 19 layers;
- unet35: 4 convs per encoder/decoder stage, 2 in the bottleneck -> 34 + 1 = 35.
Convolutions are padded (output size = input size) and followed by BN + ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from resseg_ray.errors import ConfigError
from resseg_ray.models.base import ModelSpec, SegmentationNet

UNET_WIDTHS = (64, 128, 256, 512, 1024)


def _stage(inp: int, out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(inp if i == 0 else out, out, 3, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class UNet(SegmentationNet):
    """U-Net with configurable 3x3-conv counts per stage (encoder..., bottleneck, decoder...)."""

    size_multiple = 16

    def __init__(self, spec: ModelSpec, stage_convs: Sequence[int]) -> None:
        super().__init__(spec)
        if len(stage_convs) != 9 or min(stage_convs) < 1:
            raise ConfigError(f"stage_convs={list(stage_convs)}: need 9 stages of >= 1 conv")
        w = UNET_WIDTHS
        self.stage_convs = tuple(int(c) for c in stage_convs)
        self.down = nn.ModuleList()
        inp = spec.in_bands
        for level in range(4):
            self.down.append(_stage(inp, w[level], self.stage_convs[level]))
            inp = w[level]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _stage(w[3], w[4], self.stage_convs[4])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i, level in enumerate((3, 2, 1, 0)):
            self.up.append(nn.ConvTranspose2d(w[level + 1], w[level], 2, stride=2))
            self.dec.append(_stage(2 * w[level], w[level], self.stage_convs[5 + i]))
        self.classifier = nn.Conv2d(w[0], spec.num_classes, 1)

    def encoder_modules(self) -> list[nn.Module]:
        """The contracting stages and the bottleneck."""
        return [self.down, self.bottleneck]

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.classifier(x)
