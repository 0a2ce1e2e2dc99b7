"""Quicklook PNG of validation samples: image (true colour when the bands allow), labels, prediction."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from resseg_ray.evaluation.metrics import IGNORE

_IGNORE_RGB = (200, 60, 200)


def display_bands(band_names: Sequence[str]) -> list[int]:
    """Indexes of the bands shown as red, green, blue: the named ones when present, else the first three."""
    lower = [b.lower() for b in band_names]
    if all(c in lower for c in ("red", "green", "blue")):
        return [lower.index("red"), lower.index("green"), lower.index("blue")]
    n = len(band_names)
    return [0, min(1, n - 1), min(2, n - 1)]


def _stretch(img: np.ndarray) -> np.ndarray:
    """(3, H, W) floats -> (H, W, 3) uint8, each band stretched between its 2nd and 98th percentile."""
    out = np.empty((*img.shape[1:], 3), np.uint8)
    for i in range(3):
        lo, hi = np.percentile(img[i], [2, 98])
        out[..., i] = np.clip((img[i] - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return out


def _classes(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[mask == 1] = 255
    out[mask == IGNORE] = _IGNORE_RGB
    return out


def render_quicklook(
    images: np.ndarray, labels: np.ndarray, probs: np.ndarray, band_names: Sequence[str]
) -> bytes:
    """PNG bytes: one row per sample with the image, the labels (white building, magenta
    ignored) and the predicted building probability (grey scale), separated by 4 px gaps."""
    from PIL import Image

    n, _, h, w = images.shape
    gap = 4
    canvas = np.full((n * h + (n - 1) * gap, 3 * w + 2 * gap, 3), 255, np.uint8)
    rgb = display_bands(band_names)
    for i in range(n):
        y = i * (h + gap)
        canvas[y : y + h, 0:w] = _stretch(images[i, rgb])
        canvas[y : y + h, w + gap : 2 * w + gap] = _classes(labels[i])
        p = np.clip(probs[i] * 255, 0, 255).astype(np.uint8)
        canvas[y : y + h, 2 * (w + gap) :] = p[..., None]
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()
