"""Device policy: resolution, clear errors, layouts, autocast and the inference copy."""

from __future__ import annotations

import pytest
import torch

from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.models import build_model


def test_cpu_defaults() -> None:
    policy = DevicePolicy.resolve("cpu")
    assert policy.device == torch.device("cpu")
    assert policy.channels_last and policy.amp_dtype is None
    assert policy.describe()["precision"] == "fp32"
    assert not policy.grad_scaler().is_enabled()


def test_auto_matches_hardware() -> None:
    policy = DevicePolicy.resolve()
    assert policy.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, "tpu"),
        ({"device": "cpu", "precision": "fp8"}, "precision='fp8'"),
        ({"device": "cpu", "precision": "fp16"}, "only supported on CUDA"),
        ({"device": "cpu", "channels_last": "maybe"}, "channels_last='maybe'"),
    ],
)
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DevicePolicy.resolve(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        DevicePolicy.resolve("cuda")


def test_prepare_batch_and_model_layout() -> None:
    policy = DevicePolicy.resolve("cpu", channels_last=True)
    x = policy.prepare_batch(torch.randn(2, 4, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    plain = DevicePolicy.resolve("cpu", channels_last=False)
    assert plain.prepare_batch(torch.randn(2, 4, 8, 8)).is_contiguous()


def test_bf16_autocast_on_cpu() -> None:
    policy = DevicePolicy.resolve("cpu", precision="bf16")
    model = policy.prepare_for_inference(build_model("prop18", in_bands=4))
    with torch.inference_mode(), policy.autocast():
        y = model(policy.prepare_batch(torch.randn(1, 4, 64, 64)))
    assert y.dtype == torch.bfloat16 and y.shape == (1, 2, 64, 64)


def test_prepare_for_inference_leaves_model_trainable() -> None:
    policy = DevicePolicy.resolve("cpu")
    model = build_model("prop18", in_bands=4).train()
    fast = policy.prepare_for_inference(model)
    assert fast is not model and not fast.training
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision_forward_backward() -> None:
    policy = DevicePolicy.resolve("cuda")
    assert policy.amp_dtype in (torch.bfloat16, torch.float16)
    model = policy.prepare_model(build_model("prop18", in_bands=4).train())
    x = policy.prepare_batch(torch.randn(2, 4, 64, 64))
    scaler = policy.grad_scaler()
    with policy.autocast():
        loss = torch.nn.functional.cross_entropy(
            model(x).float(), torch.zeros(2, 64, 64, dtype=torch.long, device=policy.device)
        )
    scaler.scale(loss).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
