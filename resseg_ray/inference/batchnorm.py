"""Label-free adaptation: re-estimate BatchNorm running statistics on the target scene.

A network trained on other sensors normalises each layer's activations with statistics
of the training imagery. Re-estimating those running means and variances on windows of
the scene to be mapped (no labels needed; the authors' follow-up work) adapts it to the
new sensor. Only the BatchNorm buffers change: weights, biases and the affine
parameters stay as trained.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from resseg_ray.device import DevicePolicy
from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import SceneInfo, read_window
from resseg_ray.geo.stats import Norm, normalize
from resseg_ray.geo.storage import StorageSettings

M = TypeVar("M", bound=nn.Module)

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model``."""
    return [m for m in model.modules() if isinstance(m, BN_TYPES)]


def set_batchnorm_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer of a model in training mode into inference mode: batches are
    normalised with the running statistics, which stay as they are (the affine scale and shift
    still receive gradients)."""
    for layer in batchnorm_layers(model):
        layer.eval()


@torch.no_grad()
def reestimate_batchnorm(
    model: nn.Module, batches: Iterable[torch.Tensor], policy: DevicePolicy | None = None
) -> int:
    """Replace every BatchNorm's running mean/variance by their average over ``batches``
    (cumulative average, ``momentum=None``), computed in train mode for the BatchNorms only,
    without gradients; the model is left in eval mode on its original device. Returns the
    number of images seen; with none the model is unchanged."""
    policy = policy or DevicePolicy.resolve("cpu")
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = []
    for m in layers:
        assert m.running_mean is not None and m.running_var is not None  # track_running_stats
        saved.append((m, m.momentum, m.running_mean.clone(), m.running_var.clone()))
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # running stats = cumulative average over the batches
    device = next(model.parameters()).device
    model.to(policy.device).eval()
    for m in layers:
        m.train()
    seen = 0
    try:
        for x in batches:
            model(policy.prepare_batch(x))  # fp32: statistics in full precision
            seen += int(x.shape[0])
    finally:
        for m, momentum, mean, var in saved:
            m.momentum = momentum
            m.eval()
            if seen == 0 and m.running_mean is not None and m.running_var is not None:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        model.eval().to(device)
    return seen


def scene_windows(
    scene: SceneInfo,
    settings: StorageSettings,
    size: int = 256,
    max_windows: int = 64,
    min_valid: float = 0.5,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """Origins ``(col, row)`` of up to ``max_windows`` windows of ``size`` px on a regular
    grid over the scene, with at least ``min_valid`` of their pixels valid, drawn at random
    (seeded) when there are more."""
    h, w = min(size, scene.height), min(size, scene.width)
    rows = range(0, scene.height - h + 1, h)
    cols = range(0, scene.width - w + 1, w)
    origins = [(c, r) for r in rows for c in cols]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(origins))
    chosen = []
    for k in order:
        c, r = origins[int(k)]
        _, valid = read_window(scene, settings, c, r, w, h)
        if valid.mean() >= min_valid:
            chosen.append((c, r))
            if len(chosen) == max_windows:
                break
    return sorted(chosen, key=lambda o: (o[1], o[0]))


def window_batches(
    scene: SceneInfo,
    settings: StorageSettings,
    norm: Norm,
    origins: list[tuple[int, int]],
    size: int = 256,
    batch_size: int = 8,
) -> Iterator[torch.Tensor]:
    """Normalised windows (no-data pixels 0, as the predictor feeds them) in batches."""
    h, w = min(size, scene.height), min(size, scene.width)
    for b in range(0, len(origins), batch_size):
        tiles = []
        for c, r in origins[b : b + batch_size]:
            pixels, valid = read_window(scene, settings, c, r, w, h)
            tiles.append(normalize(pixels, valid, norm))
        yield torch.from_numpy(np.stack(tiles))


def adapt_to_scene(
    model: M,
    scene: SceneInfo,
    settings: StorageSettings,
    norm: Norm,
    policy: DevicePolicy | None = None,
    size: int = 256,
    max_windows: int = 64,
    batch_size: int = 8,
    seed: int = 0,
) -> M:
    """A copy of ``model`` whose BatchNorm statistics are re-estimated on up to
    ``max_windows`` windows of the scene (normalised with ``norm``); the original is untouched."""
    origins = scene_windows(scene, settings, size, max_windows, seed=seed)
    if not origins:
        raise InputDataError(
            f"{scene.uri}: no {size} px window with at least half of its pixels valid to re-estimate "
            "BatchNorm statistics on; segment it without --adapt-bn"
        )
    adapted = copy.deepcopy(model)
    reestimate_batchnorm(adapted, window_batches(scene, settings, norm, origins, size, batch_size), policy)
    return adapted
