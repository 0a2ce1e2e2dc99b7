"""Simulated disasters: what an earthquake, a flood, a fire or a storm does to a demo place.

Damage is spatially clustered, as real damage is: each event has an intensity field over the
place (distance from an epicentre, a river's flood plain, a fire front, a storm's gusts) and
each building's grade follows the intensity where it stands, with a little luck. Each grade
looks distinct in the post-event image:

- ``no-damage``: the roof as it was;
- ``minor-damage``: a few patches on the roof: blue tarps or missing tiles;
- ``major-damage``: part of the roof gone, the building's inside and debris showing;
- ``destroyed``: rubble over the footprint and spilling around it, no shadow.

The ground changes too: turbid flood water, a burn scar with charred trees, scattered storm
debris. The post image is taken by another sensor under another sun (the paper's domain gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import box

from resseg_ray.demo.landscape import BASE_RES, Building, burn_shapes, smooth_field
from resseg_ray.demo.specs import SceneSpec

KINDS = ("earthquake", "flood", "fire", "storm")
"""The events the demo simulates."""
# Grade thresholds on intensity (no-damage below the first, destroyed above the last), per kind:
# earthquakes grade evenly, fires mostly spare or destroy, floods mostly damage, storms strip.
THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "earthquake": (0.35, 0.55, 0.75),
    "flood": (0.3, 0.62, 0.95),
    "fire": (0.45, 0.52, 0.6),
    "storm": (0.3, 0.6, 0.88),
}
DEBRIS = np.array([0.15, 0.15, 0.155, 0.19], np.float32)
DARK_DEBRIS = np.array([0.07, 0.068, 0.07, 0.09], np.float32)
TARP = np.array([0.3, 0.21, 0.09, 0.17], np.float32)
UNDERLAY = np.array([0.05, 0.05, 0.055, 0.07], np.float32)
FLOOD_WATER = np.array([0.08, 0.1, 0.11, 0.055], np.float32)
CHAR = np.array([0.03, 0.03, 0.034, 0.055], np.float32)
ASH = np.array([0.13, 0.13, 0.13, 0.14], np.float32)


@dataclass(frozen=True)
class EventSpec:
    """A simulated disaster at a place: what struck, where, and how the post image was taken."""

    name: str
    kind: str
    place: SceneSpec
    """The place, and how the pre-event image was taken."""
    post_sensor: str
    post_sun_azimuth: float
    post_sun_elevation: float
    centre: tuple[float, float] = (0.5, 0.5)
    """Where it struck, as fractions of the place's width and height."""
    reach: float = 0.5
    """How far it reaches, as a fraction of the place's diagonal."""
    angle: float = 30.0
    """Direction in degrees of the river (flood) or the fire front (fire)."""
    seed: int = 0

    @property
    def post(self) -> SceneSpec:
        """The place as the post-event sensor saw it (same ground, other sensor and sun)."""
        import dataclasses

        return dataclasses.replace(
            self.place,
            name=f"{self.name}_post",
            sensor=self.post_sensor,
            sun_azimuth=self.post_sun_azimuth,
            sun_elevation=self.post_sun_elevation,
            nodata_corner=False,
        )


def intensity(event: EventSpec, shape: tuple[int, int]) -> np.ndarray:
    """The event's intensity over the place's ground pixels, about 0 (untouched) to 1."""
    rng = np.random.default_rng(event.seed + 7)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = event.centre[0] * w, event.centre[1] * h
    reach = event.reach * math.hypot(w, h)
    noise = smooth_field(rng, shape, 40.0 / BASE_RES)
    a = math.radians(event.angle)
    across = (xx - cx) * -math.sin(a) + (yy - cy) * math.cos(a)  # signed distance to the line
    if event.kind == "earthquake":
        base = 1.0 - np.hypot(xx - cx, yy - cy) / reach
    elif event.kind == "flood":  # a river along the line: the lowest ground floods worst
        base = 1.0 - np.abs(across) / reach
    elif event.kind == "fire":  # the front advanced to the line: behind it, burned
        base = 0.5 + across / (0.15 * reach)
    elif event.kind == "storm":  # gusts everywhere, in patches
        base = 0.55 + 0.25 * smooth_field(rng, shape, 120.0 / BASE_RES)
    else:
        raise ValueError(f"unknown event kind {event.kind!r}; one of {', '.join(KINDS)}")
    return np.clip(base + 0.18 * noise, 0.0, 1.0).astype(np.float32)


def grades(event: EventSpec, buildings: list[Building], field: np.ndarray) -> list[int]:
    """Each building's damage raster value (1 no-damage .. 4 destroyed) from the intensity at
    its centre and a little luck."""
    rng = np.random.default_rng(event.seed + 11)
    h, w = field.shape
    t = THRESHOLDS[event.kind]
    out = []
    for b in buildings:
        c = b.polygon.centroid
        level = field[min(max(int(c.y), 0), h - 1), min(max(int(c.x), 0), w - 1)] + rng.normal(0, 0.07)
        out.append(1 + sum(level >= x for x in t))
    return out


class EventEffects:
    """The :class:`~resseg_ray.demo.landscape.GroundEffects` of one event at its place."""

    def __init__(self, event: EventSpec, shape: tuple[int, int]) -> None:
        self.event = event
        self.field = intensity(event, shape)
        self.grades: list[int] = []
        self.rng = np.random.default_rng(event.seed + 13)

    def heights(self, buildings: list[Building]) -> list[float]:
        """Destroyed buildings are rubble, half of a major-damaged one still stands."""
        self.grades = grades(self.event, buildings, self.field)
        scale = {1: 1.0, 2: 1.0, 3: 0.6, 4: 0.0}
        return [
            b.height_m * scale[g] + (0.3 if g == 4 else 0.0)
            for b, g in zip(buildings, self.grades, strict=True)
        ]

    def apply(self, refl: np.ndarray, cover: np.ndarray, ids: np.ndarray, buildings: list[Building]) -> None:
        """The ground's change first (under the buildings' debris), then each damaged roof."""
        shape = cover.shape
        rng = self.rng
        grain = 1.0 + 0.35 * smooth_field(rng, shape, 0.7)
        ground = (cover != 4) & (ids == 0)
        kind = self.event.kind
        if kind == "flood":
            wet = ground & (self.field > 0.5)
            refl[:, wet] = FLOOD_WATER[:, None] * (1.0 + 0.1 * grain[wet])[None]
            cover[wet] = 2
        elif kind == "fire":
            burned = ground & (self.field > 0.5)
            ash = burned & (smooth_field(rng, shape, 3.0) > 0.8)
            refl[:, burned] = CHAR[:, None] * grain[burned][None]
            refl[:, ash] = ASH[:, None] * grain[ash][None]
        elif kind == "storm":
            windy = ground & (self.field > 0.6) & (cover == 3)
            refl[3, windy] *= 0.7  # stripped leaves: less NIR
            litter = ground & (self.field > 0.55) & (rng.random(shape) < 0.01)
            refl[:, litter] = DEBRIS[:, None]
        rubble, parts, patches = [], [], []
        for i, (b, g) in enumerate(zip(buildings, self.grades, strict=True)):
            if g == 4:
                rubble.append((self._spill(b), 1))
            elif g == 3:
                parts.append((self._part(b), i + 1))
            elif g == 2:
                patches.extend(self._patches(b, i + 1))
        dark = smooth_field(rng, shape, 1.2) > 0.4
        if rubble:
            area = burn_shapes(rubble, shape).astype(bool)
            refl[:, area] = (
                np.where(dark[area][None], DARK_DEBRIS[:, None], DEBRIS[:, None]) * grain[area][None]
            )
        if parts:
            gone = burn_shapes(parts, shape, dtype="int32")
            gone = (gone > 0) & (gone == ids)
            mixed = rng.random(shape) < 0.5
            refl[:, gone] = (
                np.where(mixed[gone][None], DEBRIS[:, None], DARK_DEBRIS[:, None]) * grain[gone][None]
            )
        if patches:
            owner = burn_shapes([(p, i) for p, i, _ in patches], shape, dtype="int32")
            colour = burn_shapes([(p, c) for p, _, c in patches], shape)
            on_roof = (owner > 0) & (owner == ids)
            for code, value in ((1, TARP), (2, UNDERLAY)):
                where = on_roof & (colour == code)
                refl[:, where] = value[:, None]

    def _spill(self, b: Building):
        """The rubble of a destroyed building: its footprint and 1-3 m around it."""
        spill = b.polygon.buffer(self.rng.uniform(1.0, 3.0) / BASE_RES, quad_segs=2)
        return affinity.scale(spill, self.rng.uniform(0.9, 1.15), self.rng.uniform(0.9, 1.15))

    def _part(self, b: Building):
        """The part of a major-damaged building's roof that is gone: 30-70 % of it, cut by a
        line through it at a random angle."""
        minx, miny, maxx, maxy = b.polygon.bounds
        side = max(maxx - minx, maxy - miny) * 2
        c = b.polygon.centroid
        cut = affinity.rotate(box(0, -side, side, side), self.rng.uniform(0, 360), origin=(0, 0))
        cut = affinity.translate(cut, c.x + self.rng.uniform(-0.2, 0.2) * side / 2, c.y)
        part = shapely.intersection(b.polygon, cut)
        return b.polygon if part.is_empty else part

    def _patches(self, b: Building, value: int) -> list[tuple[object, int, int]]:
        """1-3 patches of a minor-damaged roof: (shape, building value, 1 tarp or 2 missing tiles)."""
        minx, miny, maxx, maxy = b.polygon.bounds
        out = []
        for _ in range(int(self.rng.integers(1, 4))):
            pw = self.rng.uniform(0.2, 0.4) * (maxx - minx)
            ph = self.rng.uniform(0.2, 0.4) * (maxy - miny)
            x, y = self.rng.uniform(minx, maxx - pw), self.rng.uniform(miny, maxy - ph)
            out.append((box(x, y, x + pw, y + ph), value, 1 if self.rng.random() < 0.6 else 2))
        return out
