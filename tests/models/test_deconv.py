"""The fast 4x4 stride-2 deconvolution is exactly ConvTranspose2d(4, 2, 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resseg_ray.models.deconv import Deconv4x4


def _pair(cin: int, cout: int, bias: bool) -> tuple[Deconv4x4, nn.ConvTranspose2d]:
    ours = Deconv4x4(cin, cout, bias=bias)
    ref = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)
    ref.load_state_dict(ours.state_dict())  # same parameter names and layout
    return ours, ref


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (7, 9), (16, 16), (5, 32)])
def test_forward_equals_conv_transpose(bias: bool, channels_last: bool, size: tuple[int, int]) -> None:
    ours, ref = _pair(6, 5, bias)
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    ours, ref = ours.double(), ref.double()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = ours(x)
    assert y.shape == (2, 5, 2 * size[0], 2 * size[1])
    torch.testing.assert_close(y, ref(x), rtol=1e-12, atol=1e-12)


def test_gradients_equal_conv_transpose() -> None:
    ours, ref = _pair(4, 3, True)
    ours, ref = ours.double(), ref.double()
    x1 = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    g = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    (ours(x1) * g).sum().backward()
    (ref(x2) * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)


def test_state_dict_loads_from_conv_transpose() -> None:
    ref = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, bias=False)
    ours = Deconv4x4(3, 2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(ours(x), ref(x))


def test_out_buffer_and_relu() -> None:
    ours, ref = _pair(4, 3, True)
    x = torch.randn(2, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    buf = torch.full((2, 8, 10, 12), 7.0).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ours(x, out=buf[:, :3], relu=True)
        expected = torch.relu(ref(x))
    torch.testing.assert_close(buf[:, :3], expected)
    assert torch.all(buf[:, 3:] == 7.0)  # the rest of the buffer is untouched
    with pytest.raises(ValueError, match="shape"):
        ours(x, out=buf[:, :4])
