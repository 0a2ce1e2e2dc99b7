"""A procedural landscape at 0.5 m: bare soil, grass, trees, water, roads and buildings with
roofs of several materials and cast shadows, as surface reflectance (blue, green, red, NIR).

Deterministic given the scene's seed; nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import rasterio.features
import shapely
from shapely import affinity
from shapely.geometry import LineString, Polygon, box

from resseg_ray.demo.specs import SceneSpec

BASE_RES = 0.5  # metres per pixel of the simulated ground truth

# Surface reflectances (blue, green, red, NIR).
SURFACES: dict[str, tuple[float, float, float, float]] = {
    "soil": (0.09, 0.13, 0.17, 0.24),
    "dry_grass": (0.07, 0.11, 0.13, 0.29),
    "grass": (0.04, 0.08, 0.05, 0.38),
    "tree": (0.03, 0.06, 0.035, 0.33),
    "water": (0.06, 0.07, 0.045, 0.015),
    "asphalt": (0.075, 0.085, 0.095, 0.11),
    "pavement": (0.19, 0.21, 0.23, 0.25),
}
ROOFS: dict[str, tuple[float, float, float, float]] = {
    "red_tile": (0.07, 0.085, 0.21, 0.27),
    "concrete": (0.17, 0.185, 0.2, 0.23),
    "metal": (0.33, 0.35, 0.36, 0.38),
    "dark_shingle": (0.05, 0.052, 0.058, 0.075),
    "white_membrane": (0.52, 0.55, 0.56, 0.58),
    "green_metal": (0.06, 0.14, 0.08, 0.19),
    "brown_tile": (0.08, 0.09, 0.13, 0.2),
}


@dataclass(frozen=True)
class Landscape:
    """Layout parameters of a simulated place."""

    name: str
    road_spacing: float  # metres between parallel roads
    building_density: float  # probability a building lot is built
    building_size: tuple[float, float]  # side range in metres
    big_fraction: float  # fraction of large (warehouse) buildings
    tree_density: float
    water: float  # fraction of the area under water (about)
    roofs: tuple[str, ...]


LANDSCAPES: dict[str, Landscape] = {
    "urban": Landscape("urban", 70.0, 0.85, (9.0, 22.0), 0.1, 0.25, 0.03, tuple(ROOFS)),
    "suburban": Landscape(
        "suburban",
        95.0,
        0.6,
        (8.0, 16.0),
        0.02,
        0.6,
        0.05,
        ("red_tile", "dark_shingle", "brown_tile", "concrete", "green_metal"),
    ),
    "industrial": Landscape(
        "industrial",
        130.0,
        0.55,
        (14.0, 40.0),
        0.5,
        0.15,
        0.02,
        ("metal", "white_membrane", "concrete", "dark_shingle"),
    ),
    "village": Landscape(
        "village", 110.0, 0.4, (7.0, 14.0), 0.0, 0.9, 0.08, ("red_tile", "brown_tile", "metal", "concrete")
    ),
}


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit std (float32)."""
    h, w = shape
    noise = rng.standard_normal((h, w), dtype=np.float32)
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    kernel = np.exp(-2.0 * (math.pi * sigma) ** 2 * (fx * fx + fy * fy)).astype(np.float32)
    out = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(h, w)).astype(np.float32)
    out -= out.mean()
    std = out.std()
    return out / std if std > 0 else out


@dataclass
class Building:
    """A simulated building: its outline in ground pixels (x right, y down), roof, height."""

    polygon: Polygon
    roof: str
    height_m: float
    gabled: bool


class GroundEffects(Protocol):
    """What an event does to a place (:mod:`resseg_ray.demo.disasters`): how tall each building
    still stands (for its shadow) and what the ground and roofs look like after it."""

    def heights(self, buildings: list[Building]) -> list[float]:
        """Each building's height in metres after the event."""
        ...

    def apply(self, refl: np.ndarray, cover: np.ndarray, ids: np.ndarray, buildings: list[Building]) -> None:
        """Change the reflectance ``(4, H, W)`` and cover map in place, before shadows are cast;
        ``ids`` holds each ground pixel's building index + 1 (0: none)."""
        ...


def _road_network(rng: np.random.Generator, w: int, h: int, land: Landscape) -> tuple[list, float]:
    """Roads as buffered lines in pixel space, on a grid rotated by a random angle."""
    angle = rng.uniform(0, 90)
    spacing = land.road_spacing / BASE_RES
    diag = math.hypot(w, h)
    cx, cy = w / 2, h / 2
    roads = []
    for direction in (0.0, 90.0):
        offset = rng.uniform(0, spacing)
        k = -diag / 2 + offset
        while k < diag / 2:
            if rng.random() < 0.85:
                width_m = rng.choice([7.0, 9.0, 12.0], p=[0.5, 0.35, 0.15])
                line = LineString([(cx - diag / 2, cy + k), (cx + diag / 2, cy + k)])
                line = affinity.rotate(line, angle + direction, origin=(cx, cy))
                roads.append(line.buffer(width_m / BASE_RES / 2, cap_style="flat"))
            k += spacing * rng.uniform(0.8, 1.25)
    return roads, angle


def _buildings(
    rng: np.random.Generator, w: int, h: int, land: Landscape, angle: float, blocked, density: np.ndarray
) -> list[Building]:
    """Buildings on a jittered lattice aligned with the road grid, avoiding roads and water."""
    smin, smax = (s / BASE_RES for s in land.building_size)
    lot = smax * 1.35 + 6
    diag = math.hypot(w, h)
    cx, cy = w / 2, h / 2
    out: list[Building] = []
    n = int(diag / lot) + 2
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for i in range(-n // 2, n // 2 + 1):
        for j in range(-n // 2, n // 2 + 1):
            u, v = i * lot, j * lot
            x, y = cx + u * ca - v * sa, cy + u * sa + v * ca
            if not (-smax <= x < w + smax and -smax <= y < h + smax):
                continue
            px, py = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
            if rng.random() > land.building_density * density[py, px]:
                continue
            big = rng.random() < land.big_fraction
            scale = 1.7 if big else 1.0
            bw = rng.uniform(smin, smax) * scale
            bh = rng.uniform(smin, smax) * scale * rng.uniform(0.6, 1.0)
            bw, bh = min(bw, lot * 1.6 - 6), min(bh, lot * 1.6 - 6)
            shape = rng.choice(["rect", "rect", "L", "T"]) if not big else "rect"
            poly = box(-bw / 2, -bh / 2, bw / 2, bh / 2)
            if shape == "L":
                cut = box(0, 0, bw / 2, bh / 2)
                poly = poly.difference(affinity.scale(cut, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)))
            elif shape == "T":
                poly = box(-bw / 2, -bh / 2, bw / 2, -bh / 2 + bh * 0.45).union(
                    box(-bw * 0.18, -bh / 2, bw * 0.18, bh / 2)
                )
            rot = angle + rng.normal(0, 3.0) + (90 if rng.random() < 0.5 else 0)
            jitter = max(0.0, (lot - max(bw, bh)) * 0.3)
            poly = affinity.rotate(poly, rot, origin=(0, 0))
            poly = affinity.translate(
                poly, x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)
            )
            poly = shapely.set_precision(poly, 0.01)
            if poly.is_empty or not poly.is_valid or blocked.intersects(poly):
                continue
            out.append(
                Building(
                    polygon=poly,
                    roof=str(rng.choice(land.roofs)),
                    height_m=float(rng.uniform(8, 16) if big else rng.uniform(3, 10)),
                    gabled=bool(not big and rng.random() < 0.6),
                )
            )
    return out


def burn_shapes(shapes, shape: tuple[int, int], value=1, dtype="uint8") -> np.ndarray:
    """``(geometry, value)`` pairs in ground pixels burned onto a zero array of ``shape``."""
    shapes = list(shapes)
    if not shapes:
        return np.zeros(shape, dtype=dtype)
    return rasterio.features.rasterize(shapes, out_shape=shape, fill=0, dtype=dtype, default_value=value)


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys_src = slice(max(0, -dy), min(h, h - dy))
    xs_src = slice(max(0, -dx), min(w, w - dx))
    ys_dst = slice(max(0, dy), min(h, h + dy))
    xs_dst = slice(max(0, dx), min(w, w + dx))
    out[ys_dst, xs_dst] = mask[ys_src, xs_src]
    return out


def _cast_shadow(mask: np.ndarray, length_px: float, azimuth: float) -> np.ndarray:
    """Pixels shadowed by ``mask`` objects of a given shadow length (sun from ``azimuth``)."""
    shadow = np.zeros_like(mask)
    # The shadow falls away from the sun: azimuth measured clockwise from north, y down.
    ux, uy = -math.sin(math.radians(azimuth)), math.cos(math.radians(azimuth))
    steps = max(1, int(length_px))
    for k in range(1, steps + 1, max(1, steps // 8)):
        shadow |= _shift(mask, round(ux * k), round(uy * k))
    shadow |= _shift(mask, round(ux * length_px), round(uy * length_px))
    return shadow


def render_ground(
    spec: SceneSpec, effects: GroundEffects | None = None
) -> tuple[np.ndarray, list[Building], np.ndarray]:
    """Simulate the ground at 0.5 m: reflectance (4, H, W), buildings, and a cover map; with
    ``effects``, as an event left it (the place itself, drawn from ``spec.seed``, is the same)."""
    land = LANDSCAPES[spec.landscape]
    rng = np.random.default_rng(spec.seed)
    w, h = round(spec.width_m / BASE_RES), round(spec.height_m / BASE_RES)
    shape = (h, w)

    moisture = smooth_field(rng, shape, 60)
    patches = smooth_field(rng, shape, 12)
    lakes = smooth_field(rng, shape, 120)
    neighbourhood = smooth_field(rng, shape, 200)
    water = lakes > np.quantile(lakes, 1.0 - land.water)

    roads, angle = _road_network(rng, w, h, land)
    road_union = shapely.union_all(roads) if roads else Polygon()
    water_shapes = [
        shapely.geometry.shape(g)
        for g, v in rasterio.features.shapes(water.astype(np.uint8), mask=water, connectivity=8)
        if v == 1
    ]
    blocked = shapely.union_all([road_union, *[s.buffer(4) for s in water_shapes]])
    shapely.prepare(blocked)
    density = np.clip(0.75 + 0.35 * neighbourhood, 0.2, 1.0)
    buildings = _buildings(rng, w, h, land, angle, blocked, density)

    # Base cover: soil / dry grass / grass by moisture, fine patches for texture.
    refl = np.empty((4, h, w), np.float32)
    wet = np.clip((moisture + 0.35 * patches + 0.3) / 1.2, 0, 1)
    soil = np.asarray(SURFACES["soil"], np.float32)[:, None, None]
    dry = np.asarray(SURFACES["dry_grass"], np.float32)[:, None, None]
    grass = np.asarray(SURFACES["grass"], np.float32)[:, None, None]
    t1 = np.clip(wet * 2, 0, 1)[None]
    t2 = np.clip(wet * 2 - 1, 0, 1)[None]
    refl[:] = soil * (1 - t1) + dry * t1
    refl[:] = refl * (1 - t2) + grass * t2

    road_mask = burn_shapes([(g, 1) for g in roads], shape).astype(bool)
    cover = np.zeros(shape, np.uint8)  # 0 land, 1 road, 2 water, 3 tree, 4 building, 5 shadow
    refl[:, road_mask] = np.asarray(SURFACES["asphalt"], np.float32)[:, None]
    # Pavements along the roads.
    curb = [g.buffer(2.0 / BASE_RES).difference(g) for g in roads]
    curb_mask = burn_shapes([(g, 1) for g in curb if not g.is_empty], shape).astype(bool) & ~road_mask
    refl[:, curb_mask] = np.asarray(SURFACES["pavement"], np.float32)[:, None]
    cover[road_mask] = 1
    refl[:, water] = np.asarray(SURFACES["water"], np.float32)[:, None]
    cover[water] = 2

    # Trees: clustered crowns away from roads and water.
    n_trees = int(land.tree_density * w * h / 900)
    tx, ty = rng.uniform(0, w, n_trees), rng.uniform(0, h, n_trees)
    keep = moisture[ty.astype(int), tx.astype(int)] + rng.normal(0, 0.6, n_trees) > 0.0
    keep &= ~road_mask[ty.astype(int), tx.astype(int)] & ~water[ty.astype(int), tx.astype(int)]
    radii = rng.uniform(2.0, 5.0, n_trees) / BASE_RES
    crowns = [
        shapely.Point(x, y).buffer(r, quad_segs=4)
        for x, y, r, k in zip(tx, ty, radii, keep, strict=True)
        if k
    ]
    tree_mask = burn_shapes([(c, 1) for c in crowns], shape).astype(bool)

    building_mask = burn_shapes([(b.polygon, 1) for b in buildings], shape).astype(bool)
    tree_mask &= ~building_mask

    # Shadows of buildings (by height group) and trees.
    tan_e = math.tan(math.radians(spec.sun_elevation))
    shadow = np.zeros(shape, bool)
    heights = [b.height_m for b in buildings] if effects is None else effects.heights(buildings)
    for lo, hi in ((0.5, 5), (5, 9), (9, 99)):  # below 0.5 m (rubble) no shadow to speak of
        group = [b.polygon for b, z in zip(buildings, heights, strict=True) if lo <= z < hi]
        if group:
            mean_h = float(np.mean([z for z in heights if lo <= z < hi]))
            shadow |= _cast_shadow(
                burn_shapes([(p, 1) for p in group], shape).astype(bool),
                mean_h / tan_e / BASE_RES,
                spec.sun_azimuth,
            )
    shadow |= _cast_shadow(tree_mask, 6.0 / tan_e / BASE_RES, spec.sun_azimuth) & ~tree_mask
    shadow &= ~building_mask

    tree_tex = 1.0 + 0.25 * smooth_field(rng, shape, 1.5)
    refl[:, tree_mask] = np.asarray(SURFACES["tree"], np.float32)[:, None] * tree_tex[tree_mask][None]
    cover[tree_mask] = 3

    # Roofs: material per building, gabled roofs with a lit and a shaded side.
    ids = burn_shapes([(b.polygon, i + 1) for i, b in enumerate(buildings)], shape, dtype="int32")
    if buildings:
        n = len(buildings)
        base = np.stack([np.asarray(ROOFS[b.roof], np.float32) for b in buildings]) * rng.uniform(
            0.85, 1.15, (n, 1)
        ).astype(np.float32)
        sun = np.array([math.sin(math.radians(spec.sun_azimuth)), -math.cos(math.radians(spec.sun_azimuth))])
        normals = np.zeros((n, 2), np.float32)
        centres = np.zeros((n, 2), np.float32)
        lit = np.ones(n, np.float32)
        for i, b in enumerate(buildings):
            c = b.polygon.centroid
            centres[i] = (c.x, c.y)
            if not b.gabled:
                continue
            pts = np.asarray(b.polygon.minimum_rotated_rectangle.exterior.coords)[:3]
            e1, e2 = pts[1] - pts[0], pts[2] - pts[1]
            ridge = e1 if np.linalg.norm(e1) > np.linalg.norm(e2) else e2
            normals[i] = np.array([-ridge[1], ridge[0]]) / (np.linalg.norm(ridge) + 1e-9)
            lit[i] = 1.12 if float(normals[i] @ sun) > 0 else 0.82
        ys, xs = np.nonzero(building_mask)
        k = ids[ys, xs] - 1
        ok = k >= 0
        ys, xs, k = ys[ok], xs[ok], k[ok]
        side = (xs - centres[k, 0]) * normals[k, 0] + (ys - centres[k, 1]) * normals[k, 1] > 0
        factor = np.where(side, lit[k], 1.94 - lit[k])
        refl[:, ys, xs] = (base[k] * factor[:, None]).T
    cover[building_mask] = 4
    if effects is not None:
        effects.apply(refl, cover, ids, buildings)
    refl[:, shadow] = refl[:, shadow] * 0.32 + np.array([0.012, 0.01, 0.006, 0.004], np.float32)[:, None]
    cover[shadow] = 5

    # Fine texture everywhere (material grain), stronger on natural surfaces.
    grain = smooth_field(rng, shape, 0.8)
    strength = np.where(cover == 4, 0.03, 0.07).astype(np.float32)
    refl *= (1.0 + strength * grain)[None]
    np.clip(refl, 0.001, 1.0, out=refl)
    return refl, buildings, cover
