"""The paper's network: residual encoder + deconvolutional decoder (Sec. III-A, Table I)."""

from __future__ import annotations

import torch
from torch import nn

from resseg_ray.models.base import ModelSpec, SegmentationNet
from resseg_ray.models.resnet import ResNetEncoder

#: Output maps of decoder blocks 1..5 (Table I, bottom).
DECODER_WIDTHS_SHALLOW = (256, 128, 64, 64, 64)
DECODER_WIDTHS_DEEP = (1024, 512, 256, 64, 64)
#: Maps computed from the input by 3x3 filters, concatenated after the fifth deconv.
INPUT_BRANCH_MAPS = 64


class DeconvBlock(nn.Module):
    """4x4 stride-2 transposed convolution + BN + ReLU (doubles H and W).

    torch's own ConvTranspose2d: with channels_last and the allocator tuning of
    :mod:`resseg_ray.device` it measured as fast on CPU as an exact rewrite into one
    2x2 convolution per output phase (inference) and 12 % faster to train, so the
    rewrite was dropped (figures in the manual, docs/benchmarks).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.deconv(x)))


class ResSegNet(SegmentationNet):
    """Residual encoder-decoder ("Prop-<depth>") of the paper.

    Decoder block i doubles the resolution and is concatenated with the encoder
    output of the same size and the same number of maps (block 5 -> 4 -> 3 -> 2 ->
    block 1 before pooling); the fifth block's 64 full-resolution maps are
    concatenated with 64 maps from a 3x3 conv + BN + ReLU on the input; a 1x1 conv
    gives C logits. Softmax is left to the loss / the caller.
    """

    def __init__(
        self, spec: ModelSpec, depth: int, pool_kernel: int = 2, encoder_bands: int | None = None
    ) -> None:
        super().__init__(spec)
        self.depth = depth
        # the encoder sees ``encoder_bands`` (default all input bands; one image of a pair in
        # the Siamese network), the input branch every input band
        self.encoder = ResNetEncoder(depth, encoder_bands or spec.in_bands, pool_kernel=pool_kernel)
        enc = self.encoder.out_channels
        widths = DECODER_WIDTHS_SHALLOW if depth <= 34 else DECODER_WIDTHS_DEEP
        skips = (enc[3], enc[2], enc[1], enc[0])
        assert widths[:4] == skips, "decoder/encoder concatenations must be balanced"
        blocks = []
        in_ch = enc[4]
        for i, width in enumerate(widths):
            blocks.append(DeconvBlock(in_ch, width))
            in_ch = width + (skips[i] if i < 4 else INPUT_BRANCH_MAPS)
        self.decoder = nn.ModuleList(blocks)
        self.input_branch = nn.Sequential(
            nn.Conv2d(spec.in_bands, INPUT_BRANCH_MAPS, 3, padding=1, bias=False),
            nn.BatchNorm2d(INPUT_BRANCH_MAPS),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(in_ch, spec.num_classes, 1)

    def encoder_modules(self) -> list[nn.Module]:
        """The ResNet encoder."""
        return [self.encoder]

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encoder(x), x)

    def decode(self, features: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits from the encoder's five outputs (full resolution first) and the input."""
        c1, c2, c3, c4, c5 = features
        y = c5
        for block, skip in zip(self.decoder[:4], (c4, c3, c2, c1), strict=True):
            y = torch.cat([block(y), skip], dim=1)
        y = torch.cat([self.decoder[4](y), self.input_branch(x)], dim=1)
        return self.classifier(y)
