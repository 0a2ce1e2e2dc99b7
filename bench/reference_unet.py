"""Reference design for the throughput comparison: a conventional U-Net with a
ResNet-18 encoder and bilinear upsampling (as in segmentation_models_pytorch's
``Unet("resnet18")``: upsample x2, concatenate the skip, two 3x3 conv+BN+ReLU).

It lives in bench/ only: it is a yardstick for prop18's speed, not a product model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from resseg_ray.models.base import ModelSpec, SegmentationNet
from resseg_ray.models.resnet import ResNetEncoder


def _conv_bn_relu(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)
    )


class ResNet18UNet(SegmentationNet):
    """ResNet-18 encoder + bilinear-upsampling U-Net decoder."""

    def __init__(
        self,
        in_bands: int = 4,
        num_classes: int = 2,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    ) -> None:
        super().__init__(ModelSpec("ref_unet_resnet18", in_bands, num_classes, {}))
        self.encoder = ResNetEncoder(18, in_bands, pool_kernel=3)
        enc = self.encoder.out_channels  # 64, 64, 128, 256, 512
        skips = (enc[3], enc[2], enc[1], enc[0], 0)
        blocks = []
        inp = enc[4]
        for skip, out in zip(skips, decoder_channels, strict=True):
            blocks.append(nn.Sequential(_conv_bn_relu(inp + skip, out), _conv_bn_relu(out, out)))
            inp = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(inp, num_classes, 1)

    def encoder_modules(self) -> list[nn.Module]:
        """The ResNet-18 encoder."""
        return [self.encoder]

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = feats[4]
        skips = (feats[3], feats[2], feats[1], feats[0], None)
        for block, skip in zip(self.blocks, skips, strict=True):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            if skip is not None:
                y = torch.cat([y, skip], dim=1)
            y = block(y)
        return self.head(y)
