"""Damage labels: the four damage classes of xBD / xView2, their raster values, and damage
rasters burned from building footprints that carry a damage field.

A damage raster holds 0 (background), 1 ``no-damage``, 2 ``minor-damage``, 3
``major-damage``, 4 ``destroyed`` and 255 (no data: unlabelled, ``un-classified``, outside
the image). Declared here only; every stage imports them.
"""

from __future__ import annotations

from resseg_ray.errors import InputDataError
from resseg_ray.geo.labels import IGNORE, Footprints, LabelReport, make_label_raster
from resseg_ray.geo.scene import SceneInfo
from resseg_ray.geo.storage import StorageSettings

BACKGROUND = 0
"""Damage raster value of pixels that are not a building."""
DAMAGE_CLASSES = ("no-damage", "minor-damage", "major-damage", "destroyed")
"""The damage classes in raster order: class ``DAMAGE_CLASSES[i]`` is value ``i + 1``
(xBD's ``subtype`` names)."""
NUM_DAMAGE_VALUES = len(DAMAGE_CLASSES) + 1
"""Values a damage raster may hold besides :data:`IGNORE`: background and the four classes."""
UNCLASSIFIED = "un-classified"
"""xBD's subtype of buildings whose damage was not graded: no data, not a class."""
VALUES_TEXT = (
    "0 background, " + ", ".join(f"{i} {c}" for i, c in enumerate(DAMAGE_CLASSES, 1)) + ", 255 no data"
)
"""What a damage raster's values mean, as its band description and its docs say it."""

__all__ = [
    "BACKGROUND",
    "DAMAGE_CLASSES",
    "IGNORE",
    "NUM_DAMAGE_VALUES",
    "UNCLASSIFIED",
    "VALUES_TEXT",
    "damage_value",
    "damage_values",
    "make_damage_raster",
]


def damage_value(subtype: str) -> int:
    """The raster value of an xBD damage ``subtype`` (:data:`IGNORE` for ``un-classified``);
    ``ValueError`` for any other name."""
    if subtype == UNCLASSIFIED:
        return IGNORE
    try:
        return DAMAGE_CLASSES.index(subtype) + 1
    except ValueError:
        raise ValueError(
            f"unknown damage subtype {subtype!r}; expected one of {', '.join(DAMAGE_CLASSES)} "
            f"or {UNCLASSIFIED}"
        ) from None


def damage_values(footprints: Footprints, field: str) -> list[int]:
    """Each footprint's damage raster value from its ``field`` value: a subtype name of
    :data:`DAMAGE_CLASSES` (any case, ``_`` or ``-``), its number 1..4, or ``un-classified``,
    empty or missing (255: not graded). Anything else is an error naming the file, the field,
    the value and how many footprints carry it."""
    if footprints.values is None:
        raise ValueError("footprints read without their damage field")
    out: list[int] = []
    odd: dict[str, int] = {}
    for v in footprints.values:
        if v is None or (isinstance(v, float) and v != v) or str(v).strip() == "":
            out.append(IGNORE)
            continue
        key = str(v).strip().lower().replace("_", "-")
        if key in {"1", "2", "3", "4", "1.0", "2.0", "3.0", "4.0"}:
            out.append(int(float(key)))
            continue
        try:
            out.append(damage_value(key))
        except ValueError:
            odd[str(v)] = odd.get(str(v), 0) + 1
            out.append(IGNORE)
    if odd:
        shown = ", ".join(f"{k!r} ({n})" for k, n in list(odd.items())[:5])
        raise InputDataError(
            f"footprints {footprints.uri}: field {field!r} holds values that are no damage class: {shown}; "
            f"expected {', '.join(DAMAGE_CLASSES)} (or 1..4), or {UNCLASSIFIED}"
        )
    return out


def make_damage_raster(
    scene: SceneInfo, footprints: Footprints, field: str, out_uri: str, settings: StorageSettings
) -> LabelReport:
    """Burn footprints with their damage (``field``, :func:`damage_values`) onto ``scene``'s
    grid as a damage raster (0 background, 1..4, 255 no data: not graded, or no scene data;
    ungraded footprints burned last so no class claims their pixels) and write ``out_uri``."""
    values = damage_values(footprints, field)
    order = sorted(range(len(values)), key=lambda i: values[i] == IGNORE)
    ordered = Footprints(footprints.uri, footprints.crs, [footprints.geometries[i] for i in order])
    return make_label_raster(scene, ordered, out_uri, settings, [values[i] for i in order], VALUES_TEXT)
