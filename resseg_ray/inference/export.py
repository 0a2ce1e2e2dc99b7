"""Create a model bundle from the registry (optionally from pretrained encoder weights)
and check that it reloads and predicts identically, eagerly and on the inference path."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.models.bundle import BundleInfo, load_bundle, save_bundle
from resseg_ray.models.registry import build_model
from resseg_ray.models.resnet import load_pretrained_encoder
from resseg_ray.models.resseg import ResSegNet


@dataclass
class ExportReport:
    """What :func:`export_bundle` wrote and measured."""

    path: str
    info: BundleInfo
    parameters: int
    size_bytes: int
    check_shape: tuple[int, ...]
    max_abs_diff_reload: float
    max_abs_diff_inference: float
    inference_seconds: float


def export_bundle(
    out: str | os.PathLike[str],
    architecture: str,
    *,
    band_names: Sequence[str],
    norm_mean: Sequence[float],
    norm_std: Sequence[float],
    class_names: Sequence[str] = ("ground", "building"),
    pretrained: str | None = None,
    tile_size: int = 256,
    check_size: tuple[int, int] = (300, 437),
    policy: DevicePolicy | None = None,
    seed: int = 0,
) -> ExportReport:
    """Build ``architecture`` for ``len(band_names)`` bands, save it as a bundle at
    ``out``, reload it and compare predictions on a seeded random image of
    ``check_size`` (not a multiple of 32, so padding and cropping are exercised)."""
    if len(norm_mean) != len(band_names) or len(norm_std) != len(band_names):
        raise ConfigError(
            f"--mean and --std need one value per band ({len(band_names)} bands: {list(band_names)})"
        )
    torch.manual_seed(seed)
    model = build_model(architecture, in_bands=len(band_names), num_classes=len(class_names))
    if pretrained:
        if not isinstance(model, ResSegNet):
            raise ConfigError(f"--pretrained loads ResNet encoder weights; {architecture} has none")
        load_pretrained_encoder(model.encoder, pretrained, band_names)
    info = save_bundle(
        out,
        model,
        norm_mean=norm_mean,
        norm_std=norm_std,
        band_names=band_names,
        class_names=class_names,
        tile_size=tile_size,
        extra={"source": "export", "pretrained": os.path.basename(pretrained) if pretrained else None},
    )
    policy = policy or DevicePolicy.resolve()
    x = torch.randn(1, len(band_names), *check_size, generator=torch.Generator().manual_seed(seed))
    model.eval()
    bundle = load_bundle(out, expect_architecture=architecture, expect_in_bands=len(band_names))
    fast = policy.prepare_for_inference(bundle.model)
    with torch.inference_mode():
        ref = model(x)
        again = bundle.model(x)
        t0 = time.perf_counter()
        with policy.autocast():
            quick = fast(policy.prepare_batch(x)).float().cpu()
        seconds = time.perf_counter() - t0
    return ExportReport(
        path=os.fspath(out),
        info=info,
        parameters=sum(p.numel() for p in model.parameters()),
        size_bytes=os.path.getsize(out),
        check_shape=tuple(ref.shape),
        max_abs_diff_reload=float((ref - again).abs().max()),
        max_abs_diff_inference=float((ref - quick).abs().max()),
        inference_seconds=seconds,
    )
