"""Window grids and blending weights for segmenting scenes larger than one window.

A scene is covered by windows of side ``size`` whose starts are ``size - overlap`` apart,
the last one flush with the scene edge; a scene side shorter than a window gets one
window of that side. Overlapping predictions are blended with per-pixel weights and
divided by the summed weights, so every pixel's weights sum to exactly 1.
"""

from __future__ import annotations

import numpy as np

from resseg_ray.config import BLEND_MODES
from resseg_ray.errors import ConfigError


def window_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``size`` covering ``[0, length)`` with at least ``overlap`` overlap."""
    if size < 1 or not 0 <= overlap < size:
        raise ConfigError(
            f"window size {size} with overlap {overlap}: the window must be >= 1 pixel and the "
            "overlap between 0 and window - 1 (e.g. --window 512 --overlap 112)"
        )
    if length <= size:
        return [0]
    step = size - overlap
    starts = list(range(0, length - size, step))
    starts.append(length - size)
    return starts


def blend_weights(height: int, width: int, overlap: int, mode: str = "flat") -> np.ndarray:
    """``(height, width)`` float32 weights of one window.

    ``flat``: all ones (the paper: overlapping maps averaged). ``linear``: ramps from
    ``1/(overlap+1)`` at the window edge to 1 at ``overlap`` pixels inside (the authors'
    code). ``cosine``: the same ramp with a raised-cosine profile. Weights stay > 0, so a
    pixel covered by one window only keeps that window's prediction.
    """
    if mode not in BLEND_MODES:
        raise ConfigError(f"blend mode {mode!r} is not one of {', '.join(BLEND_MODES)}")
    if mode == "flat" or overlap == 0:
        return np.ones((height, width), np.float32)
    return np.outer(_ramp(height, overlap, mode), _ramp(width, overlap, mode)).astype(np.float32)


def _ramp(n: int, overlap: int, mode: str) -> np.ndarray:
    d = np.minimum(np.arange(n), np.arange(n)[::-1]) + 1.0  # 1 at the edge
    t = np.clip(d / (overlap + 1), 0.0, 1.0)
    if mode == "cosine":
        t = 0.5 - 0.5 * np.cos(np.pi * t)
        t = np.maximum(t, 1.0 / (overlap + 1) ** 2)
    return t
