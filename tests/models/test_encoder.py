"""Residual encoder: Table I from the built modules, torchvision parameter counts,
torchvision-compatible names and pretrained-weight loading with band adaptation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.models.resnet import RESNET_UNITS, ResNetEncoder, adapt_first_conv, load_pretrained_encoder

# Paper Table I (top): (output maps, conv layers) of encoder blocks 1..5.
TABLE_I_ENCODER = {
    18: [(64, 1), (64, 4), (128, 4), (256, 4), (512, 4)],
    34: [(64, 1), (64, 6), (128, 8), (256, 12), (512, 6)],
    50: [(64, 1), (256, 9), (512, 12), (1024, 18), (2048, 9)],
    101: [(64, 1), (256, 9), (512, 12), (1024, 69), (2048, 9)],
    152: [(64, 1), (256, 9), (512, 24), (1024, 108), (2048, 9)],
    200: [(64, 1), (256, 9), (512, 72), (1024, 108), (2048, 9)],
}

# torchvision.models.resnetN parameter counts minus the fc layer (3 input bands).
TORCHVISION_PARAMS_NO_FC = {
    18: 11_176_512,
    34: 21_284_672,
    50: 23_508_032,
    101: 42_500_160,
    152: 58_143_808,
}


def _conv_layers(block: nn.Module) -> int:
    """Convolutions of a block as the paper counts them (projection shortcuts excluded)."""
    return sum(
        1 for name, m in block.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in name
    )


@pytest.mark.parametrize("depth", sorted(RESNET_UNITS))
def test_table_one_encoder_blocks(depth: int) -> None:
    enc = ResNetEncoder(depth, in_bands=4).eval()
    expected = TABLE_I_ENCODER[depth]
    assert [_conv_layers(b) for b in enc.blocks()] == [convs for _, convs in expected]
    with torch.no_grad():
        feats = enc(torch.randn(1, 4, 64, 64))
    assert [f.shape[1] for f in feats] == [maps for maps, _ in expected]
    # block 1 at H/2 (before pooling), then H/4 .. H/32; a 256 input gives 8x8 maps
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS_NO_FC))
def test_parameter_counts_equal_torchvision(depth: int) -> None:
    enc = ResNetEncoder(depth, in_bands=3)
    assert sum(p.numel() for p in enc.parameters()) == TORCHVISION_PARAMS_NO_FC[depth]


def test_torchvision_parameter_names() -> None:
    keys = set(ResNetEncoder(50, in_bands=3).state_dict())
    for k in (
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.conv3.weight",
        "layer4.2.bn3.bias",
        "layer3.5.conv2.weight",
    ):
        assert k in keys
    assert not any(k.startswith("fc.") for k in keys)


def test_bad_depth_and_pool() -> None:
    with pytest.raises(ConfigError, match="depth 19"):
        ResNetEncoder(19, 4)
    with pytest.raises(ConfigError, match="pool_kernel"):
        ResNetEncoder(18, 4, pool_kernel=4)


def test_adapt_first_conv_preserves_response_to_equal_bands() -> None:
    w = torch.randn(64, 3, 7, 7)
    for bands in (1, 2, 3, 4, 8):
        adapted = adapt_first_conv(w, bands)
        assert adapted.shape == (64, bands, 7, 7)
        torch.testing.assert_close(adapted.sum(dim=1), w.sum(dim=1))


def test_adapt_first_conv_maps_named_bands() -> None:
    w = torch.randn(64, 3, 7, 7)
    adapted = adapt_first_conv(w, 4, ["blue", "green", "red", "nir"])
    scale = 3 / 4
    torch.testing.assert_close(adapted[:, 0], w[:, 2] * scale)  # blue <- B
    torch.testing.assert_close(adapted[:, 2], w[:, 0] * scale)  # red <- R
    torch.testing.assert_close(adapted[:, 3], w.mean(dim=1) * scale)  # nir <- mean


def _torchvision_style_file(tmp_path, depth: int = 18) -> tuple[str, dict]:
    """A state dict laid out exactly as torchvision's resnet (3 bands, 3x3 pool, fc)."""
    src = ResNetEncoder(depth, in_bands=3, pool_kernel=3)
    state = dict(src.state_dict())
    state["fc.weight"] = torch.randn(1000, src.out_channels[-1])
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(state, path)
    return str(path), state


def test_load_pretrained_encoder_adapts_conv1(tmp_path) -> None:
    path, state = _torchvision_style_file(tmp_path)
    enc = ResNetEncoder(18, in_bands=4)
    load_pretrained_encoder(enc, path, ["blue", "green", "red", "nir"])
    own = enc.state_dict()
    torch.testing.assert_close(own["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    torch.testing.assert_close(own["conv1.weight"][:, 2], state["conv1.weight"][:, 0] * 0.75)
    # the same file in safetensors form
    from safetensors.torch import save_file

    st = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    enc2 = ResNetEncoder(18, in_bands=4)
    load_pretrained_encoder(enc2, st, ["blue", "green", "red", "nir"])
    torch.testing.assert_close(enc2.state_dict()["conv1.weight"], own["conv1.weight"])


def test_load_pretrained_encoder_errors(tmp_path) -> None:
    path, _ = _torchvision_style_file(tmp_path, depth=18)
    with pytest.raises(InputDataError, match="ResNet-34"):
        load_pretrained_encoder(ResNetEncoder(34, in_bands=3), path)
    with pytest.raises(InputDataError, match="does not exist"):
        load_pretrained_encoder(ResNetEncoder(18, in_bands=3), tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(InputDataError, match=r"junk\.pth"):
        load_pretrained_encoder(ResNetEncoder(18, in_bands=3), junk)
