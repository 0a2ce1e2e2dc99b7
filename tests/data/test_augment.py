"""The paper's augmentation keeps image and label aligned and marks rotated-in pixels 255."""

from __future__ import annotations

import math

import numpy as np

from resseg_ray.data.augment import AugmentParams, apply_params, augment, center_crop, draw_params


def _tiles(n=6, t=64, seed=0, block=1):
    rng = np.random.default_rng(seed)
    coarse = (rng.random((n, -(-t // block), -(-t // block))) < 0.4).astype(np.uint8)
    labels = np.ascontiguousarray(np.kron(coarse, np.ones((1, block, block), np.uint8))[:, :t, :t])
    images = np.stack([labels.astype(np.float32), labels.astype(np.float32) * 2], axis=1)
    return images, labels


def test_image_equal_to_label_stays_equal_under_every_transform() -> None:
    images, labels = _tiles(n=64, block=8)
    out_img, out_lab = augment(images, labels, 48, np.random.default_rng(1))
    assert out_img.shape == (64, 2, 48, 48) and out_img.dtype == np.float32
    assert out_lab.shape == (64, 48, 48) and out_lab.dtype == np.uint8
    inside = out_lab != 255
    # Nearest-neighbour labels and bilinear images agree wherever the image is not a blend.
    crisp = (out_img[:, 0] == 0) | (out_img[:, 0] == 1)
    assert (out_img[:, 0][inside & crisp] == out_lab[inside & crisp]).all()
    assert (crisp & inside).mean() > 0.6  # the check covers most pixels
    np.testing.assert_array_equal(out_img[:, 1], 2 * out_img[:, 0])


def test_crops_and_flips_are_exact() -> None:
    images, labels = _tiles(n=1)
    p = AugmentParams(rotate=False, angle=0.0, x0=5, y0=9, flip_h=True, flip_v=True)
    img, lab = apply_params(images, labels, [p], 32)
    np.testing.assert_array_equal(lab[0], labels[0, 9:41, 5:37][::-1, ::-1])
    np.testing.assert_array_equal(img[0], images[0, :, 9:41, 5:37][:, ::-1, ::-1])


def test_rotation_by_90_degrees_is_exact_and_rotated_in_pixels_are_ignored() -> None:
    images, labels = _tiles(n=1, t=64)
    p = AugmentParams(rotate=True, angle=math.pi / 2, x0=0, y0=0, flip_h=False, flip_v=False)
    _, lab = apply_params(images, labels, [p], 32)
    centre = labels[0, 16:48, 16:48]
    assert any(np.array_equal(lab[0], np.rot90(centre, k)) for k in (1, 3))
    # A tile barely larger than the crop, rotated by 45 degrees: the corners come from outside.
    images, labels = _tiles(n=1, t=34)
    p = AugmentParams(rotate=True, angle=math.pi / 4, x0=0, y0=0, flip_h=False, flip_v=False)
    img, lab = apply_params(images, labels, [p], 32)
    assert (lab[0, 0, 0], lab[0, 0, -1], lab[0, -1, 0], lab[0, -1, -1]) == (255, 255, 255, 255)
    assert (lab[0, 14:18, 14:18] != 255).all()
    assert img[0, 0, 0, 0] == 0.0


def test_paper_tile_never_rotates_in_outside_pixels() -> None:
    images, labels = _tiles(n=40, t=364)
    params = [AugmentParams(True, a, 0, 0, False, False) for a in np.linspace(0.01, 2 * math.pi, 40)]
    _, lab = apply_params(images, labels, params, 256)
    assert (lab != 255).all()


def test_draws_have_the_paper_probabilities() -> None:
    params = draw_params(4000, 364, 256, np.random.default_rng(0))
    assert abs(np.mean([p.rotate for p in params]) - 0.5) < 0.03
    assert abs(np.mean([p.flip_h for p in params]) - 0.5) < 0.03
    assert abs(np.mean([p.flip_v for p in params]) - 0.5) < 0.03
    angles = np.array([p.angle for p in params if p.rotate])
    assert angles.min() > 0 and angles.max() < 2 * math.pi and abs(angles.mean() - math.pi) < 0.15
    offsets = np.array([p.x0 for p in params if not p.rotate])
    assert offsets.min() == 0 and offsets.max() == 108


def test_center_crop() -> None:
    images, labels = _tiles(n=2, t=40)
    img, lab = center_crop(images, labels, 32)
    np.testing.assert_array_equal(lab, labels[:, 4:36, 4:36])
    np.testing.assert_array_equal(img, images[:, :, 4:36, 4:36])
