"""The paper's network as a Siamese damage network (its future work, Sec. VI): one shared
residual encoder applied to the pre- and the post-event image, their features fused at every
level, and the paper's decoder giving background and the four damage classes.

The input is one tensor, the pre image's bands then the post image's (``N x 2B x H x W``), so
the project's windowing, runtimes and exports take a pair as they take a scene. Each level's
fusion is a 1x1 convolution (+ BN + ReLU) of ``[pre, post, post - pre]`` back to the level's
width: the difference carries the change, the post features what is there now, the pre
features what was there (the xView2 winners' Siamese nets fuse by concatenation, change
detection nets by difference; the 1x1 convolution learns the mix). The decoder is the paper's,
unchanged, so a trained building network's decoder fits it.

:func:`init_from_buildings` is the two-stage recipe of the xView2 winners: the damage network
starts as the building network looking at the post image (encoder and decoder copied, each
fusion passing the post features through, the input branch seeing the post bands), so it
localizes buildings from the first step and learns damage on top.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from resseg_ray.errors import ConfigError
from resseg_ray.models.base import ModelSpec
from resseg_ray.models.resseg import ResSegNet


class FeatureFusion(nn.Sequential):
    """``[pre, post, post - pre]`` (3C maps) -> C maps: 1x1 conv + BN + ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(3 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.channels = channels

    def fuse(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """The fused maps of one level."""
        return self(torch.cat([pre, post, post - pre], dim=1))


class SiameseResSegNet(ResSegNet):
    """``damage-prop<depth>``: pre and post through one encoder, fused per level, the paper's
    decoder; ``spec.in_bands`` counts both images' bands (pre first), ``spec.num_classes`` is
    5 (background, no-damage, minor, major, destroyed) for damage."""

    def __init__(self, spec: ModelSpec, depth: int, pool_kernel: int = 2) -> None:
        if spec.in_bands % 2:
            raise ConfigError(
                f"{spec.name} takes a pre and a post image with the same bands: in_bands must be even "
                f"(pre bands then post bands), got {spec.in_bands}"
            )
        super().__init__(spec, depth, pool_kernel=pool_kernel, encoder_bands=spec.in_bands // 2)
        self.fusion = nn.ModuleList(FeatureFusion(c) for c in self.encoder.out_channels)

    @property
    def image_bands(self) -> int:
        """Bands of one image of the pair."""
        return self.spec.in_bands // 2

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        n, b = x.shape[0], self.image_bands
        # one encoder pass over both images: the weights (and BatchNorm) are shared
        features = self.encoder(torch.cat([x[:, :b], x[:, b:]], dim=0))
        fusions = cast(list[FeatureFusion], list(self.fusion))
        fused = [f.fuse(level[:n], level[n:]) for f, level in zip(fusions, features, strict=True)]
        return self.decode(fused, x)


@torch.no_grad()
def init_from_buildings(damage: SiameseResSegNet, buildings: ResSegNet) -> None:
    """Start ``damage`` as ``buildings`` looking at the post image: encoder and decoder copied,
    each fusion an identity on the post features (with BatchNorm at rest), the input branch
    seeing the post bands only, the background logit copied and the damage classes sharing the
    building logit (in eval mode the damage network's P(background) is then the building
    network's on the post image). Refused unless both have the same depth and bands per image."""
    if not isinstance(buildings, ResSegNet) or isinstance(buildings, SiameseResSegNet):
        raise ConfigError(
            f"a damage network starts from a building network (prop<depth>), not {buildings.spec.name}"
        )
    if buildings.depth != damage.depth or buildings.spec.in_bands != damage.image_bands:
        raise ConfigError(
            f"building model {buildings.spec.name} with {buildings.spec.in_bands} bands cannot start "
            f"{damage.spec.name} with {damage.image_bands} bands per image: use the same depth and bands"
        )
    damage.encoder.load_state_dict(buildings.encoder.state_dict())
    damage.decoder.load_state_dict(buildings.decoder.state_dict())
    b = damage.image_bands
    conv, old_conv = damage.input_branch[0], buildings.input_branch[0]
    assert isinstance(conv, nn.Conv2d) and isinstance(old_conv, nn.Conv2d)
    conv.weight.zero_()
    conv.weight[:, b:] = old_conv.weight
    damage.input_branch[1].load_state_dict(buildings.input_branch[1].state_dict())
    for fusion in damage.fusion:
        assert isinstance(fusion, FeatureFusion)
        c = fusion.channels
        mix, norm = fusion[0], fusion[1]
        assert isinstance(mix, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        mix.weight.zero_()
        mix.weight[:, c : 2 * c, 0, 0] = torch.eye(c)
        norm.reset_parameters()
        norm.reset_running_stats()
        assert norm.running_var is not None
        norm.running_var.fill_(1.0 - norm.eps)  # at rest: y = x (then ReLU of ReLU'd maps: x)
    head, old = damage.classifier, buildings.classifier
    assert head.bias is not None and old.bias is not None
    classes = head.weight.shape[0] - 1
    head.weight[0] = old.weight[0]
    head.bias[0] = old.bias[0]
    head.weight[1:] = old.weight[1]
    head.bias[1:] = old.bias[1] - math.log(classes)  # the classes share P(building)
