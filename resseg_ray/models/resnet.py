"""Residual encoder of the paper (Table I), with torchvision-compatible parameter names.

Block 1 is one 7x7 stride-2 convolution (64 maps, H/2) with BN and ReLU, followed by
pooling to H/4; blocks 2-5 are torchvision's ``layer1``..``layer4`` (basic units for
depths 18/34, bottlenecks above; the first unit of blocks 3-5 strided). Parameter
names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so a
torchvision state dict loads with :func:`load_pretrained_encoder`, which adapts
``conv1`` from RGB to D bands. Nothing here downloads weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from resseg_ray.errors import ConfigError, InputDataError

#: Residual units per block 2..5 for each supported depth (paper Table I).
RESNET_UNITS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}


def _conv3x3(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Residual unit of two 3x3 convolutions (depths 18 and 34)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """Residual unit 1x1-3x3-1x1 (depths 50 and above), stride on the 3x3 as torchvision."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNetEncoder(nn.Module):
    """ResNet encoder returning the outputs of all five blocks.

    ``forward`` returns ``[block1 (before pooling, H/2), block2 (H/4), block3 (H/8),
    block4 (H/16), block5 (H/32)]``. ``pool_kernel`` 2 is the paper's 2x2 pooling;
    3 is torchvision's 3x3/stride-2/padding-1 max pooling (both give H/4).
    """

    def __init__(self, depth: int, in_bands: int, pool_kernel: int = 2) -> None:
        super().__init__()
        if depth not in RESNET_UNITS:
            raise ConfigError(f"encoder depth {depth} is not supported; choose one of {sorted(RESNET_UNITS)}")
        if pool_kernel not in (2, 3):
            raise ConfigError(f"pool_kernel={pool_kernel}: use 2 (paper) or 3 (torchvision)")
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if depth <= 34 else Bottleneck
        self.depth = depth
        self.in_bands = in_bands
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_bands, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2, stride=2) if pool_kernel == 2 else nn.MaxPool2d(3, stride=2, padding=1)
        units = RESNET_UNITS[depth]
        self.layer1 = self._make_layer(block, 64, units[0], stride=1)
        self.layer2 = self._make_layer(block, 128, units[1], stride=2)
        self.layer3 = self._make_layer(block, 256, units[2], stride=2)
        self.layer4 = self._make_layer(block, 512, units[3], stride=2)
        e = block.expansion
        #: Output maps of blocks 1..5.
        self.out_channels: tuple[int, ...] = (64, 64 * e, 128 * e, 256 * e, 512 * e)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, units: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, units)]
        return nn.Sequential(*layers)

    def blocks(self) -> list[nn.Module]:
        """The five encoder blocks as modules (block 1 = conv1 + bn1, without pooling)."""
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c1, c2, c3, c4, c5]


def adapt_first_conv(
    weight: torch.Tensor, in_bands: int, band_names: Sequence[str] | None = None
) -> torch.Tensor:
    """Adapt a pretrained RGB ``conv1`` kernel ``(64, 3, k, k)`` to ``in_bands`` bands.

    When the bands include red, green and blue (by name, case-insensitive; without
    names the first three bands are taken as R, G, B), those bands take the matching
    RGB kernel and every other band the mean RGB kernel; otherwise (fewer than three
    bands, or names without all of R, G, B) every band takes the mean kernel. All
    kernels are scaled by ``3 / in_bands``, so the response to an image equal in
    all bands is unchanged.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise InputDataError(
            f"conv1 weight of shape {tuple(weight.shape)} is not an RGB kernel (64, 3, k, k)"
        )
    if in_bands < 1:
        raise ConfigError(f"in_bands={in_bands}: need at least one band")
    if band_names is not None and len(band_names) != in_bands:
        raise ConfigError(f"{len(band_names)} band names given for {in_bands} bands")
    if band_names is None:
        names = ["red", "green", "blue"][:in_bands] + [""] * max(0, in_bands - 3)
    else:
        names = [str(b).lower() for b in band_names]
    rgb = {"red": 0, "green": 1, "blue": 2}
    mean = weight.mean(dim=1)
    use_rgb = all(c in names for c in rgb)
    sources = [weight[:, rgb[n]] if use_rgb and n in rgb else mean for n in names]
    return torch.stack(sources, dim=1) * (3.0 / in_bands)


def _read_state_dict(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputDataError(f"pretrained weights file {path!r} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputDataError(
            f"pretrained weights file {path!r} cannot be read as a state dict ({exc}); "
            "give a torchvision ResNet .pth or .safetensors file"
        ) from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise InputDataError(f"pretrained weights file {path!r} does not hold a state dict")
    return state


def load_pretrained_encoder(
    encoder: ResNetEncoder,
    path: str | os.PathLike[str],
    band_names: Sequence[str] | None = None,
) -> None:
    """Load a torchvision ResNet state dict from a local file into ``encoder``.

    The classifier (``fc.*``) is dropped, a ``module.`` prefix is stripped, and
    ``conv1.weight`` is adapted from RGB to the encoder's band count.
    """
    state = {
        (k[len("module.") :] if k.startswith("module.") else k): v for k, v in _read_state_dict(path).items()
    }
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    w = state.get("conv1.weight")
    if w is not None and w.shape[1] != encoder.in_bands:
        state["conv1.weight"] = adapt_first_conv(w, encoder.in_bands, band_names)
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise InputDataError(
            f"pretrained weights {os.fspath(path)!r} do not fit a ResNet-{encoder.depth} encoder: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong)} of another shape (e.g. {wrong[:3]}); "
            f"use a torchvision resnet{encoder.depth} state dict"
        )
    encoder.load_state_dict(state)
