"""Segment whole scenes by overlapping windows, strip by strip, in bounded memory.

The one windowing/stitching path of the project: training-time evaluation of test scenes
uses it now; the predict job, the evaluator and the Serve app build on it. Windows are
processed one window row at a time: the scene strip under that row is read once, its
windows go through the network in batches, and their blended class probabilities are
accumulated in a buffer one window high. Rows no later window touches are final and
yielded, so memory depends on the window size and scene width, never on scene height.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.scene import SceneInfo, read_window
from resseg_ray.geo.stats import compute_statistics
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.windows import blend_weights, window_starts
from resseg_ray.models.bundle import ModelBundle

_DEFAULT_BAND = re.compile(r"band\s*\d+")


def _sample_pixels(scene: SceneInfo, settings: StorageSettings, grid: int = 4, size: int = 128) -> np.ndarray:
    """Valid pixels ``(D, N)`` of a grid x grid sample of windows spread over the scene."""
    parts = []
    for gy in range(grid):
        for gx in range(grid):
            r = int((scene.height - size) * gy / max(grid - 1, 1)) if scene.height > size else 0
            c = int((scene.width - size) * gx / max(grid - 1, 1)) if scene.width > size else 0
            pix, valid = read_window(scene, settings, c, r, min(size, scene.width), min(size, scene.height))
            parts.append(pix[:, valid].astype(np.float64))
    return np.concatenate(parts, axis=1)


NORMALIZATIONS = ("pooled", "per_scene")
"""``pooled``: the bundle's training statistics; ``per_scene``: each scene's own statistics."""


@dataclass
class Strip:
    """Final rows ``[row, row + probs.shape[1])`` of a scene: class probabilities ``(C, h, W)``
    float32 and the input's validity ``(h, W)``."""

    row: int
    probs: np.ndarray
    valid: np.ndarray


class ScenePredictor:
    """A model bundle ready to segment scenes of any size on one device."""

    def __init__(
        self,
        bundle: ModelBundle,
        policy: DevicePolicy | None = None,
        window: int = 512,
        overlap: int = 112,
        batch_size: int = 4,
        blend: str = "flat",
        normalization: str | None = None,
    ) -> None:
        self.info = bundle.info
        self.normalization = normalization or str(self.info.extra.get("normalization", "pooled"))
        self.check_options(window, overlap, batch_size, blend, self.normalization)
        self.policy = policy or DevicePolicy.resolve()
        self.model = self.policy.prepare_for_inference(bundle.model)
        self.window, self.overlap, self.batch_size, self.blend = window, overlap, batch_size, blend

    @staticmethod
    def check_options(
        window: int, overlap: int, batch_size: int, blend: str, normalization: str | None
    ) -> None:
        """A clear error for unusable windowing options (cheap: nothing is built)."""
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization {normalization!r} is not one of {', '.join(NORMALIZATIONS)}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        blend_weights(1, 1, 0, blend)
        window_starts(window, window, overlap)

    def check_bands(self, scene: SceneInfo) -> None:
        """When the scene names its bands and they are the model's bands in another order, say
        how to map them (``--bands``) instead of silently feeding red as blue."""
        names = [n.lower() for n in scene.band_names]
        model = [n.lower() for n in self.info.band_names]
        if any(_DEFAULT_BAND.fullmatch(n) for n in names) or names == model or sorted(names) != sorted(model):
            return
        mapping = " ".join(str(scene.bands[names.index(b)]) for b in model)
        raise InputDataError(
            f"{scene.uri} has bands {list(scene.band_names)} in this order but the model expects "
            f"{self.info.band_names}; map them with --bands {mapping}"
        )

    def warn_if_far(self, scene: SceneInfo, settings: StorageSettings) -> None:
        """Warn, naming the bands, when a sample of the scene is far from the training
        normalisation (|mean difference| > 3 training std, or std off by 3x)."""
        sample = _sample_pixels(scene, settings)
        if sample.shape[1] < 100:
            return
        mean, std = sample.mean(1), sample.std(1)
        ref_m, ref_s = np.asarray(self.info.norm_mean), np.asarray(self.info.norm_std)
        far = (np.abs(mean - ref_m) > 3 * ref_s) | (std > 3 * ref_s) | (std < ref_s / 3)
        if far.any():
            bands = [self.info.band_names[i] for i in np.flatnonzero(far)]
            warnings.warn(
                f"{scene.uri}: band(s) {bands} are far from the model's training statistics "
                f"(scene mean {np.round(mean[far]).tolist()} vs {np.round(ref_m[far]).tolist()}, std "
                f"{np.round(std[far]).tolist()} vs {np.round(ref_s[far]).tolist()}); another sensor? "
                "Predictions may be poor: try --normalization per_scene",
                stacklevel=2,
            )

    def scene_norm(self, scene: SceneInfo, settings: StorageSettings) -> tuple[np.ndarray, np.ndarray]:
        """Mean and 1/std ``(D, 1, 1)`` applied to a scene: the bundle's (training) statistics,
        or with ``per_scene`` normalisation the scene's own, computed over its valid pixels
        exactly as training computed them for each training scene."""
        if self.normalization == "per_scene":
            stats = compute_statistics([scene], settings, scheduler="synchronous").pooled
            mean, std = stats.mean, stats.std
        else:
            self.warn_if_far(scene, settings)
            mean, std = self.info.norm_mean, self.info.norm_std
        return (
            np.asarray(mean, np.float32)[:, None, None],
            1.0 / np.asarray(std, np.float32)[:, None, None],
        )

    def _forward(self, tiles: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), self.policy.autocast():
            logits = self.model(self.policy.prepare_batch(torch.from_numpy(tiles)))
        return torch.softmax(logits.float(), 1).cpu().numpy()

    def strips(self, scene: SceneInfo, settings: StorageSettings) -> Iterator[Strip]:
        """Yield the scene's blended class probabilities, top to bottom, in final strips."""
        self.check_bands(scene)
        h, w = scene.height, scene.width
        wh, ww = min(self.window, h), min(self.window, w)
        rows = window_starts(h, wh, min(self.overlap, wh - 1))
        cols = window_starts(w, ww, min(self.overlap, ww - 1))
        weights = blend_weights(wh, ww, self.overlap, self.blend)
        c = self.info.num_classes
        acc = np.zeros((c, wh, w), np.float32)  # rows [top, top + wh) of the scene
        wsum = np.zeros((wh, w), np.float32)
        top = 0
        mean, inv_std = self.scene_norm(scene, settings)
        for i, r in enumerate(rows):
            if r > top:  # shift the buffer down to start at r
                shift = r - top
                acc[:, :-shift] = acc[:, shift:]
                acc[:, -shift:] = 0
                wsum[:-shift] = wsum[shift:]
                wsum[-shift:] = 0
                top = r
            pixels, valid = read_window(scene, settings, 0, r, w, wh)
            x = pixels.astype(np.float32)
            x -= mean
            x *= inv_std
            x[:, ~valid] = 0.0
            for b in range(0, len(cols), self.batch_size):
                chunk = cols[b : b + self.batch_size]
                probs = self._forward(np.stack([x[:, :, c0 : c0 + ww] for c0 in chunk]))
                for p, c0 in zip(probs, chunk, strict=True):
                    acc[:, :, c0 : c0 + ww] += p * weights
                    wsum[:, c0 : c0 + ww] += weights
            end = rows[i + 1] if i + 1 < len(rows) else r + wh
            n = end - r
            yield Strip(row=r, probs=acc[:, :n] / wsum[:n], valid=valid[:n].copy())
