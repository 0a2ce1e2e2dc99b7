"""Damage labels: the four damage classes of xBD / xView2 and their raster values.

A damage raster holds 0 (background), 1 ``no-damage``, 2 ``minor-damage``, 3
``major-damage``, 4 ``destroyed`` and 255 (no data: unlabelled, ``un-classified``, outside
the image). Declared here only; every stage imports them.
"""

from __future__ import annotations

from resseg_ray.geo.labels import IGNORE

BACKGROUND = 0
"""Damage raster value of pixels that are not a building."""
DAMAGE_CLASSES = ("no-damage", "minor-damage", "major-damage", "destroyed")
"""The damage classes in raster order: class ``DAMAGE_CLASSES[i]`` is value ``i + 1``
(xBD's ``subtype`` names)."""
NUM_DAMAGE_VALUES = len(DAMAGE_CLASSES) + 1
"""Values a damage raster may hold besides :data:`IGNORE`: background and the four classes."""
UNCLASSIFIED = "un-classified"
"""xBD's subtype of buildings whose damage was not graded: no data, not a class."""

__all__ = ["BACKGROUND", "DAMAGE_CLASSES", "IGNORE", "NUM_DAMAGE_VALUES", "UNCLASSIFIED", "damage_value"]


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
