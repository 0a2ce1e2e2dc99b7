"""The paper's decoder (Table I bottom), U-Net layer counts, any-size inputs, BN folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resseg_ray.models import build_model, list_models
from resseg_ray.models.fuse import fold_batchnorm
from resseg_ray.models.resseg import ResSegNet
from resseg_ray.models.unet import UNet
from tests.helpers import randomize_batchnorm

PROPS = ["prop18", "prop34", "prop50", "prop101", "prop152", "prop200"]
# Paper Table I (bottom): output maps of decoder blocks 1..5, one conv layer each.
TABLE_I_DECODER = {
    "shallow": [256, 128, 64, 64, 64],
    "deep": [1024, 512, 256, 64, 64],
}


@pytest.mark.parametrize("name", PROPS)
def test_table_one_decoder_and_balanced_concatenation(name: str) -> None:
    model = build_model(name, in_bands=4, num_classes=2)
    assert isinstance(model, ResSegNet)
    depth = int(name[4:])
    widths = TABLE_I_DECODER["shallow" if depth <= 34 else "deep"]
    assert [b.deconv.out_channels for b in model.decoder] == widths
    for block in model.decoder:
        convs = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        assert len(convs) == 1 and isinstance(convs[0], nn.ConvTranspose2d)
        d = convs[0]
        assert (d.kernel_size, d.stride, d.padding) == ((4, 4), (2, 2), (1, 1))
    # each deconv output is concatenated with an equal number of encoder maps:
    enc = model.encoder.out_channels  # blocks 1..5
    skips = [enc[3], enc[2], enc[1], enc[0], 64]  # ... and the 64-map input branch
    assert widths == skips
    assert [b.deconv.in_channels for b in model.decoder] == [enc[4]] + [2 * w for w in widths[:4]]
    assert model.input_branch[0].kernel_size == (3, 3) and model.input_branch[0].out_channels == 64
    assert model.classifier.kernel_size == (1, 1)
    assert model.classifier.in_channels == 128 and model.classifier.out_channels == 2


@pytest.mark.parametrize("name", PROPS)
def test_deep_models_on_tiny_input(name: str) -> None:
    model = build_model(name, in_bands=3, num_classes=3).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(256, 256), (512, 512), (300, 437)])
def test_prop18_output_shapes(size: tuple[int, int]) -> None:
    model = build_model("prop18", in_bands=4).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 4, *size))
    assert y.shape == (1, 2, *size)


@pytest.mark.parametrize("name", ["prop18", "unet19"])
@pytest.mark.parametrize("size", [(1, 1), (31, 33), (65, 17), (300, 437)])
def test_any_input_size(name: str, size: tuple[int, int]) -> None:
    model = build_model(name, in_bands=2, num_classes=2).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 2, *size))
    assert y.shape == (2, 2, *size)


def _count_layers(model: UNet) -> tuple[int, int]:
    """(layers as documented: 3x3 convs + the 1x1 classifier, 2x2 up-convolutions)."""
    convs = sum(1 for m in model.modules() if type(m) is nn.Conv2d)
    ups = sum(1 for m in model.modules() if isinstance(m, nn.ConvTranspose2d))
    return convs, ups


@pytest.mark.parametrize(("name", "layers"), [("unet19", 19), ("unet35", 35)])
def test_unet_layer_counts(name: str, layers: int) -> None:
    model = build_model(name, in_bands=4)
    assert isinstance(model, UNet)
    assert _count_layers(model) == (layers, 4)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 4, 48, 80)).shape == (1, 2, 48, 80)


def test_training_mode_backward() -> None:
    model = build_model("prop18", in_bands=4).train()
    x = torch.randn(2, 4, 64, 64)
    target = torch.randint(0, 2, (2, 64, 64))
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


FOLD_CASES = [(name, True) for name in list_models("buildings")] + [
    ("prop18", False),
    ("prop50", False),
    ("unet19", False),
]


@pytest.mark.parametrize(("name", "channels_last"), FOLD_CASES)
def test_folded_inference_copy_equals_model(name: str, channels_last: bool) -> None:
    # float64, so that deep random networks compare tightly
    model = randomize_batchnorm(build_model(name, in_bands=4)).eval().double()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    folded = folded.to(memory_format=fmt)
    x = torch.randn(2, 4, 40, 72, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        got = folded(x.contiguous(memory_format=fmt))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))
