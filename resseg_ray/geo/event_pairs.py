"""Which post-event scene goes with which pre-event scene.

Scenes given as files pair in the order given. An event's imagery from a STAC catalog comes
as items of tiles (quadkey folders, a provider's strips) whose order and count need not match
between the acquisitions before and after: when either side comes from STAC, each pre scene is
paired with the post scene whose footprint overlaps it most (the raster's own bounds in
EPSG:4326, not the item's geometry, which may be rounded or absent). A post scene may serve
several pre scenes (one post strip over several pre tiles); it is read on each pre grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from resseg_ray.errors import ConfigError, InputDataError
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stac import SceneInputs
from resseg_ray.geo.stac_write import raster_geometry
from resseg_ray.geo.storage import StorageSettings

__all__ = ["EventPairs", "pair_event_scenes"]


@dataclass
class EventPairs:
    """The (pre, post) scene pairs to map, and what was left out and why."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    """One line per scene not mapped (for the job to print as a warning)."""


def pair_event_scenes(pre: SceneInputs, post: SceneInputs, settings: StorageSettings) -> EventPairs:
    """Pair the scenes of ``--pre`` and ``--post``: in order when both are files, else by
    largest overlap (the module's rules). No pair at all is an InputDataError; files in
    different numbers a ConfigError."""
    if not pre.items and not post.items:
        if len(pre.uris) != len(post.uris):
            raise ConfigError(
                f"--pre matched {len(pre.uris)} scenes but --post {len(post.uris)}; give one post scene "
                "per pre scene, in the same order (or STAC collections, paired by where they overlap)"
            )
        return EventPairs(list(zip(pre.uris, post.uris, strict=True)))
    posts = [(uri, _footprint(uri, settings)) for uri in post.uris]
    out = EventPairs()
    used: set[str] = set()
    for uri in pre.uris:
        here = _footprint(uri, settings)
        best, area = None, 0.0
        for candidate, footprint in posts:
            overlap = here.intersection(footprint).area if here is not None and footprint is not None else 0.0
            if overlap > area:
                best, area = candidate, overlap
        if best is None:
            out.left_out.append(f"pre scene {uri}: no --post scene overlaps it; not mapped")
            continue
        out.pairs.append((uri, best))
        used.add(best)
    out.left_out += [f"post scene {u}: overlaps no --pre scene; not used" for u in post.uris if u not in used]
    if not out.pairs:
        raise InputDataError(
            f"no --post scene overlaps any of the {len(pre.uris)} --pre scenes; "
            "give imagery of the same place before and after the event"
        )
    return out


def _footprint(uri: str, settings: StorageSettings) -> BaseGeometry | None:
    """The scene's footprint in EPSG:4326, drawn as this project's STAC items draw theirs (None
    without a CRS: it overlaps nothing)."""
    info = open_scene(uri, settings)
    return shape(raster_geometry(info.crs, info.bounds)[0]) if info.crs else None
