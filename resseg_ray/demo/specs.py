"""What the demo is made of: scene specifications (place, sensor, size, seed) and the default
set of 6 training and 3 test scenes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SceneSpec:
    """One demo scene: where, what kind of place, which sensor."""

    name: str
    landscape: str
    sensor: str
    width_m: float
    height_m: float
    epsg: int
    origin: tuple[float, float]  # upper-left easting, northing
    seed: int
    nodata_corner: bool = False
    sun_azimuth: float = 135.0
    sun_elevation: float = 45.0


@dataclass(frozen=True)
class DemoSet:
    """Training and test scenes of the default demo."""

    train: tuple[SceneSpec, ...]
    test: tuple[SceneSpec, ...] = field(default_factory=tuple)


def default_demo(scale: float = 1.0) -> DemoSet:
    """The demo set: 6 training scenes from two sensors, 3 test scenes from three others.

    ``scale`` shrinks every scene side (tests use small scenes); sizes are about
    1800x1600 (training) and 2400x2000 (test) pixels at scale 1.
    """

    def s(name, land, sensor, w, h, epsg, origin, seed, **kw) -> SceneSpec:
        return SceneSpec(name, land, sensor, w * scale, h * scale, epsg, origin, seed, **kw)

    train = (
        s("train_01", "urban", "alpha", 900, 800, 32633, (452000.0, 5043000.0), 11, sun_azimuth=150),
        s("train_02", "suburban", "alpha", 900, 800, 32633, (455000.0, 5041000.0), 12, nodata_corner=True),
        s("train_03", "industrial", "alpha", 900, 800, 32633, (458500.0, 5046000.0), 13, sun_elevation=38),
        s("train_04", "urban", "bravo", 900, 800, 32634, (378000.0, 5120000.0), 14, sun_azimuth=160),
        s("train_05", "village", "bravo", 900, 800, 32634, (381000.0, 5124000.0), 15),
        s("train_06", "suburban", "bravo", 900, 800, 32634, (384500.0, 5118000.0), 16, sun_elevation=55),
    )
    test = (
        s("test_01", "urban", "charlie", 1200, 1000, 32618, (585000.0, 4510000.0), 21, sun_azimuth=120),
        s("test_02", "suburban", "delta", 1200, 1000, 32611, (380000.0, 3760000.0), 22, nodata_corner=True),
        s("test_03", "industrial", "echo", 1200, 1000, 32631, (445000.0, 5410000.0), 23, sun_elevation=32),
    )
    return DemoSet(train=train, test=test)
