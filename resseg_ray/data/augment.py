"""The paper's training augmentation (Sec. III-B), on batches of normalised tiles.

Per sample, independently: with p=0.5 a random ``crop``x``crop`` window of the tile;
otherwise the tile rotated about its centre by an angle drawn uniformly in (0, 2*pi) and
its centre ``crop`` window. Then a horizontal flip with p=0.5 and a vertical flip with
p=0.5. Images are resampled bilinearly, labels by nearest neighbour; label pixels rotated
in from outside the tile are 255 (ignored). Validation samples are the centre crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = 255


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for one sample."""

    rotate: bool
    angle: float  # radians, used when rotate
    x0: int  # crop offset, used when not rotate
    y0: int
    flip_h: bool
    flip_v: bool


def draw_params(n: int, tile: int, crop: int, rng: np.random.Generator) -> list[AugmentParams]:
    """Draw augmentation parameters for ``n`` samples of a ``tile``-pixel tile."""
    out = []
    for _ in range(n):
        rotate = bool(rng.random() >= 0.5)
        angle = float(rng.uniform(0.0, 2.0 * math.pi)) if rotate else 0.0
        x0 = int(rng.integers(0, tile - crop + 1))
        y0 = int(rng.integers(0, tile - crop + 1))
        out.append(AugmentParams(rotate, angle, x0, y0, bool(rng.random() < 0.5), bool(rng.random() < 0.5)))
    return out


def center_crop(images: np.ndarray, labels: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """The centre ``crop`` window of ``(N, D, T, T)`` images and ``(N, T, T)`` labels."""
    t_h, t_w = images.shape[-2:]
    y0, x0 = (t_h - crop) // 2, (t_w - crop) // 2
    return (
        np.ascontiguousarray(images[..., y0 : y0 + crop, x0 : x0 + crop]),
        np.ascontiguousarray(labels[..., y0 : y0 + crop, x0 : x0 + crop]),
    )


def _rotate_center(image: torch.Tensor, label: torch.Tensor, angle: float, crop: int):
    """Rotate a (D, T, T) image and (T, T) label by ``angle`` about the centre; centre crop."""
    d, th, tw = image.shape
    c, s = math.cos(angle), math.sin(angle)
    # affine_grid maps output coords in [-1, 1] (over `crop` px) to input coords (over T px).
    sx, sy = crop / tw, crop / th
    theta = torch.tensor([[c * sx, -s * sx, 0.0], [s * sy, c * sy, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, [1, d, crop, crop], align_corners=False)
    img = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    stacked = torch.stack([label.float(), torch.ones_like(label, dtype=torch.float32)])[None]
    lab, inside = F.grid_sample(stacked, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    lab = torch.where(inside > 0.5, lab, torch.full_like(lab, IGNORE))
    return img, lab.to(torch.uint8)


def apply_params(
    images: np.ndarray, labels: np.ndarray, params: list[AugmentParams], crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Augment ``(N, D, T, T)`` float32 images and ``(N, T, T)`` uint8 labels -> crop size."""
    n = images.shape[0]
    out_img = np.empty((n, images.shape[1], crop, crop), np.float32)
    out_lab = np.empty((n, crop, crop), np.uint8)
    for i, p in enumerate(params):
        if p.rotate:
            img_t, lab_t = _rotate_center(
                torch.from_numpy(images[i]), torch.from_numpy(labels[i]), p.angle, crop
            )
            img, lab = img_t.numpy(), lab_t.numpy()
        else:
            img = images[i, :, p.y0 : p.y0 + crop, p.x0 : p.x0 + crop]
            lab = labels[i, p.y0 : p.y0 + crop, p.x0 : p.x0 + crop]
        if p.flip_h:
            img, lab = img[..., ::-1], lab[..., ::-1]
        if p.flip_v:
            img, lab = img[..., ::-1, :], lab[..., ::-1, :]
        out_img[i] = img
        out_lab[i] = lab
    return out_img, out_lab


def augment(
    images: np.ndarray, labels: np.ndarray, crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw parameters and augment a batch of square tiles."""
    params = draw_params(images.shape[0], images.shape[-1], crop, rng)
    return apply_params(images, labels, params, crop)
