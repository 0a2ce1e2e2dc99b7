"""The paper's training augmentation (Sec. III-B), on batches of normalised tiles.

Per sample, independently: with p=0.5 a random ``crop``x``crop`` window of the tile;
otherwise the tile rotated about its centre by an angle drawn uniformly in (0, 2*pi) and
its centre ``crop`` window. Then a horizontal flip with p=0.5 and a vertical flip with
p=0.5. Images are resampled bilinearly, labels by nearest neighbour; label pixels rotated
in from outside the tile are 255 (ignored). Validation samples are the centre crop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from resseg_ray.geo.labels import IGNORE


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


def _rotate_center(
    image: np.ndarray, label: np.ndarray, angle: float, crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a (D, T, T) image and (T, T) label by ``angle`` about the centre; centre crop."""
    # imported here: the loader tasks' processes (and Ray Data's coordinator, which imports this
    # module with the task's function) start without PyTorch until a rotation needs it
    import torch
    import torch.nn.functional as F

    d, th, tw = image.shape
    c, s = math.cos(angle), math.sin(angle)
    # affine_grid maps output coords in [-1, 1] (over `crop` px) to input coords (over T px).
    sx, sy = crop / tw, crop / th
    theta = torch.tensor([[c * sx, -s * sx, 0.0], [s * sy, c * sy, 0.0]], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, [1, d, crop, crop], align_corners=False)
    img = F.grid_sample(
        torch.from_numpy(image)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    lab_in = torch.from_numpy(label).float()
    stacked = torch.stack([lab_in, torch.ones_like(lab_in)])[None]
    lab, inside = F.grid_sample(stacked, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    lab = torch.where(inside > 0.5, lab, torch.full_like(lab, IGNORE))
    return img[0].numpy(), lab.to(torch.uint8).numpy()


ReadFn = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
"""``read(x0, y0, width, height)`` -> (float32 ``(D, h, w)`` image, uint8 ``(h, w)`` label) of a
sub-window of the tile (offsets relative to the tile's upper-left corner)."""


def augment_sample(read: ReadFn, tile: int, crop: int, p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """One augmented sample, reading only what it needs: the crop window, or the whole tile
    when it is rotated."""
    if p.rotate:
        img, lab = _rotate_center(*read(0, 0, tile, tile), p.angle, crop)
    else:
        img, lab = read(p.x0, p.y0, crop, crop)
    if p.flip_h:
        img, lab = img[..., ::-1], lab[..., ::-1]
    if p.flip_v:
        img, lab = img[..., ::-1, :], lab[..., ::-1, :]
    return img, lab


def apply_params(
    images: np.ndarray, labels: np.ndarray, params: list[AugmentParams], crop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Augment ``(N, D, T, T)`` float32 images and ``(N, T, T)`` uint8 labels -> crop size."""
    n, d, tile = images.shape[0], images.shape[1], images.shape[-1]
    out_img = np.empty((n, d, crop, crop), np.float32)
    out_lab = np.empty((n, crop, crop), np.uint8)
    for i, p in enumerate(params):

        def read(x0: int, y0: int, w: int, h: int, i: int = i) -> tuple[np.ndarray, np.ndarray]:
            return images[i, :, y0 : y0 + h, x0 : x0 + w], labels[i, y0 : y0 + h, x0 : x0 + w]

        out_img[i], out_lab[i] = augment_sample(read, tile, crop, p)
    return out_img, out_lab


def augment(
    images: np.ndarray, labels: np.ndarray, crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw parameters and augment a batch of square tiles."""
    params = draw_params(images.shape[0], images.shape[-1], crop, rng)
    return apply_params(images, labels, params, crop)
