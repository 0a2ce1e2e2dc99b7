"""Inference-time folding of BatchNorm into the preceding convolution.

In eval mode a BatchNorm is an affine map per channel, so it can be folded exactly
into the weights and bias of the convolution before it, removing one full pass
over every activation. :func:`fold_batchnorm` returns a folded copy for inference;
the original (trainable, savable) model is left untouched.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from resseg_ray.models.base import SegmentationNet

# (convolution, batch norm) attribute pairs used by the residual units and blocks
_NAMED_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"), ("deconv", "bn"))
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fold(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv = getattr(parent, conv_name)
    bn = getattr(parent, bn_name)
    weight, bias = fuse_conv_bn_weights(
        conv.weight,
        conv.bias,
        bn.running_mean,
        bn.running_var,
        bn.eps,
        bn.weight,
        bn.bias,
        transpose=isinstance(conv, nn.ConvTranspose2d),
    )
    conv.weight = weight
    conv.bias = bias
    setattr(parent, bn_name, nn.Identity())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv -> BatchNorm pair folded.

    Pairs are found as consecutive children of ``nn.Sequential`` containers and as
    the ``convN``/``bnN`` and ``deconv``/``bn`` attributes of residual units and
    decoder blocks. A folded :class:`SegmentationNet` is marked ``bn_folded`` and
    cannot be saved as a bundle (its weights no longer match the architecture).
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        pairs: list[tuple[str, str]] = []
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (name_a, a), (name_b, b) in itertools.pairwise(children):
                if isinstance(a, _CONVS) and isinstance(b, nn.BatchNorm2d):
                    pairs.append((name_a, name_b))
        for conv_name, bn_name in _NAMED_PAIRS:
            if isinstance(getattr(module, conv_name, None), _CONVS) and isinstance(
                getattr(module, bn_name, None), nn.BatchNorm2d
            ):
                pairs.append((conv_name, bn_name))
        for conv_name, bn_name in pairs:
            _fold(module, conv_name, bn_name)
    if isinstance(folded, SegmentationNet):
        folded.bn_folded = True
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
