"""Simulated sensors: how each turns surface reflectance into digital numbers (gains and
offsets, noise, blur, ground resolution, bit depth, haze), so scenes from different sensors
differ in statistics the way real acquisitions do (the domain shift of the paper's test scenes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from resseg_ray.demo.landscape import BASE_RES
from resseg_ray.demo.specs import SceneSpec

BAND_NAMES = ("blue", "green", "red", "nir")


@dataclass(frozen=True)
class Sensor:
    """How a simulated sensor turns reflectance into digital numbers."""

    name: str
    gains: tuple[float, float, float, float]
    offsets: tuple[float, float, float, float]
    noise: float
    """Standard deviation of additive noise, in DN."""
    blur: float
    """Gaussian point-spread sigma in output pixels."""
    resolution: float
    """Ground sample distance in metres."""
    bits: int
    """Radiometric depth: values are clipped to 2**bits - 1."""
    haze: float = 0.0
    """Extra path radiance in blue/green (reflectance units)."""


SENSORS: dict[str, Sensor] = {
    "alpha": Sensor("alpha", (1500, 1550, 1600, 1700), (60, 55, 50, 45), 5.0, 0.6, 0.5, 11),
    "bravo": Sensor("bravo", (2600, 2900, 3100, 3300), (140, 130, 110, 90), 12.0, 0.8, 0.5, 12),
    "charlie": Sensor("charlie", (9000, 8600, 8800, 7600), (600, 520, 450, 300), 45.0, 1.1, 0.6, 14, 0.03),
    "delta": Sensor("delta", (1100, 1250, 1500, 1250), (180, 150, 120, 80), 7.0, 0.5, 0.55, 11, 0.015),
    "echo": Sensor("echo", (3400, 3200, 2900, 4200), (40, 45, 50, 60), 18.0, 1.4, 0.7, 12),
}


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each band of a (B, H, W) array with a Gaussian of ``sigma`` pixels (FFT)."""
    if sigma <= 0:
        return img
    _, h, w = img.shape
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    kernel = np.exp(-2.0 * (math.pi * sigma) ** 2 * (fx * fx + fy * fy)).astype(np.float32)
    return np.fft.irfft2(np.fft.rfft2(img, axes=(1, 2)) * kernel, s=(h, w), axes=(1, 2)).astype(np.float32)


def image_with_sensor(
    refl: np.ndarray, spec: SceneSpec, sensor: Sensor, rng: np.random.Generator
) -> np.ndarray:
    """Resample the 0.5 m reflectance to the sensor grid and convert to uint16 DN."""
    import torch
    import torch.nn.functional as F

    _, h, w = refl.shape
    out_h = max(1, round(h * BASE_RES / sensor.resolution))
    out_w = max(1, round(w * BASE_RES / sensor.resolution))
    img = refl
    if (out_h, out_w) != (h, w):
        t = torch.from_numpy(refl)[None]
        img = F.interpolate(t, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)[
            0
        ].numpy()
    img = _gaussian_blur(img, sensor.blur)
    haze = np.array([sensor.haze, sensor.haze * 0.6, sensor.haze * 0.3, 0.0], np.float32)[:, None, None]
    dn = (img + haze) * np.asarray(sensor.gains, np.float32)[:, None, None]
    dn += np.asarray(sensor.offsets, np.float32)[:, None, None]
    dn += rng.normal(0, sensor.noise, dn.shape).astype(np.float32)
    return np.clip(np.rint(dn), 1, 2**sensor.bits - 1).astype(np.uint16)
