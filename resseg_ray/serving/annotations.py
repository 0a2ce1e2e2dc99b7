"""A mapper's annotations of a scene: the annotated areas and, inside them, the buildings
drawn or accepted, saved on the server as GeoJSON (EPSG:4326), a new version per save.

Each save is validated (:func:`validate_annotations`: a FeatureCollection of polygons, each
feature an ``area`` or a ``building``; finite coordinates inside the scene; valid rings;
every building inside an area; on a damage scene, each building's ``damage`` class, one of
:data:`~resseg_ray.geo.damage_labels.DAMAGE_CLASSES`; size limits) and written to
``<annotations_dir>/<scene id>/v<NNNNNN>.geojson``: the version number is claimed with an
exclusive create, the content written to a temporary file and renamed over it, so two
saves never share a version and a crash never leaves a half file under a version's name.
Nothing is ever overwritten: older versions stay, a reload or a restart reads the newest.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from shapely.geometry import shape
from shapely.ops import unary_union

from resseg_ray.errors import InputDataError
from resseg_ray.geo.damage_labels import DAMAGE_CLASSES

__all__ = ["KINDS", "AnnotationLimits", "AnnotationStore", "validate_annotations"]

KINDS = ("area", "building")
_VERSION = re.compile(r"v(\d{6})\.geojson")


@dataclass(frozen=True)
class AnnotationLimits:
    """How much one save may hold."""

    max_features: int = 20_000
    max_vertices: int = 2_000
    """Per polygon (all its rings)."""
    tolerance_deg: float = 1e-6
    """How far outside the scene's bounds a coordinate may lie (degrees, about 0.1 m)."""


def _rings(geometry: dict[str, Any]) -> list[list[Any]]:
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon" and isinstance(coords, list):
        return coords
    if kind == "MultiPolygon" and isinstance(coords, list):
        if not all(isinstance(poly, list) for poly in coords):
            raise InputDataError("a MultiPolygon's coordinates must be a list of polygons (lists of rings)")
        return [ring for poly in coords for ring in poly]
    raise InputDataError(f"geometry type {kind!r}: areas and buildings are Polygons or MultiPolygons")


def _positions_2d(geometry: dict[str, Any]) -> dict[str, Any]:
    """A checked (Multi)Polygon with every position as ``[longitude, latitude]`` floats."""

    def ring(r: list[Any]) -> list[list[float]]:
        return [[float(p[0]), float(p[1])] for p in r]

    coords = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": [ring(r) for r in coords]}
    return {"type": "MultiPolygon", "coordinates": [[ring(r) for r in poly] for poly in coords]}


def validate_annotations(
    doc: object,
    bounds: tuple[float, float, float, float],
    limits: AnnotationLimits = AnnotationLimits(),
    damage: bool = False,
) -> dict[str, Any]:
    """The annotations of a save request, checked and normalised (features with ``kind`` and
    ``id``, nothing else kept but the allowed properties); an InputDataError says what is wrong
    and where (feature index). ``damage``: the scene is a damage scene, each building has its
    damage class."""
    if (
        not isinstance(doc, dict)
        or doc.get("type") != "FeatureCollection"
        or not isinstance(doc.get("features"), list)
    ):
        raise InputDataError(
            'the annotations must be a GeoJSON FeatureCollection: {"type": "FeatureCollection", ...}'
        )
    features = doc["features"]
    if len(features) > limits.max_features:
        raise InputDataError(f"{len(features)} features: at most {limits.max_features} per save")
    w, s, e, n = bounds
    tol = limits.tolerance_deg
    out: list[dict[str, Any]] = []
    areas: list[tuple[int, Any]] = []
    buildings: list[tuple[int, Any]] = []
    for i, f in enumerate(features):
        where = f"feature {i}"
        if not isinstance(f, dict) or f.get("type") != "Feature" or not isinstance(f.get("geometry"), dict):
            raise InputDataError(f"{where} is not a GeoJSON Feature with a geometry")
        raw = f.get("properties")
        props: dict[str, Any] = raw if isinstance(raw, dict) else {}
        kind = props.get("kind")
        if kind not in KINDS:
            raise InputDataError(f"{where}: properties.kind must be one of {', '.join(KINDS)}, got {kind!r}")
        try:
            rings = _rings(f["geometry"])
        except InputDataError as exc:
            raise InputDataError(f"{where}: {exc}") from None
        count = 0
        for ring in rings:
            if not isinstance(ring, list) or len(ring) < 4:
                raise InputDataError(f"{where}: a ring needs at least 4 positions (closed)")
            for p in ring:
                if not (
                    isinstance(p, list)
                    and len(p) in (2, 3)
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
                ):
                    raise InputDataError(
                        f"{where}: positions must be [longitude, latitude] (or with a height) numbers"
                    )
                try:
                    x, y = float(p[0]), float(p[1])
                    height = float(p[2]) if len(p) == 3 else 0.0
                except OverflowError:  # an integer beyond any float (10**400)
                    raise InputDataError(f"{where}: coordinates must be finite numbers") from None
                if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(height)):
                    raise InputDataError(f"{where}: coordinates must be finite numbers")
                if not (w - tol <= x <= e + tol and s - tol <= y <= n + tol):
                    raise InputDataError(
                        f"{where}: ({x:.7f}, {y:.7f}) is outside the scene "
                        f"({w:.6f}, {s:.6f}, {e:.6f}, {n:.6f})"
                    )
            count += len(ring)
        if count > limits.max_vertices:
            raise InputDataError(f"{where}: {count} vertices, at most {limits.max_vertices} per polygon")
        flat = _positions_2d(f["geometry"])  # heights dropped: the map is 2D
        geom = shape(flat)
        if geom.is_empty or not geom.is_valid or geom.area == 0:
            raise InputDataError(f"{where}: the polygon is empty or self-intersecting; redraw it")
        keep: dict[str, Any] = {"kind": kind, "id": i}
        for key in ("source", "predicted_id", "map", "note"):
            value = props.get(key)
            if (
                isinstance(value, str | int | float)
                and not isinstance(value, bool)
                and len(str(value)) <= 200
            ):
                keep[key] = value
        grade = props.get("damage")
        if kind == "building" and damage and grade not in DAMAGE_CLASSES:
            raise InputDataError(
                f"{where}: a building of a damage scene needs properties.damage, one of "
                f"{', '.join(DAMAGE_CLASSES)}; got {grade!r}"
            )
        if grade is not None and not (kind == "building" and damage):
            raise InputDataError(
                f"{where}: properties.damage is for the buildings of a damage scene; remove it"
            )
        if grade is not None:
            keep["damage"] = grade
        (areas if kind == "area" else buildings).append((i, geom))
        out.append({"type": "Feature", "properties": keep, "geometry": flat})
    if buildings and not areas:
        raise InputDataError(
            "buildings were given without an annotated area: draw the area they lie in first"
        )
    if areas:
        union = unary_union([g for _, g in areas]).buffer(tol)
        for i, geom in buildings:
            if not union.covers(geom.representative_point()):
                raise InputDataError(
                    f"feature {i}: a building outside every annotated area; draw the area first"
                )
    return {"type": "FeatureCollection", "features": out}


class AnnotationStore:
    """The saved versions of every scene's annotations, under one folder."""

    def __init__(self, folder: str) -> None:
        self.folder = os.path.abspath(folder)

    def _dir(self, scene_id: str) -> str:
        return os.path.join(self.folder, scene_id)

    def versions(self, scene_id: str) -> list[int]:
        """The saved versions of a scene, oldest first."""
        try:
            names = os.listdir(self._dir(scene_id))
        except FileNotFoundError:
            return []
        folder = self._dir(scene_id)
        found = []
        for name in names:
            m = _VERSION.fullmatch(name)
            # a claimed version whose content is still being written is empty: not yet a version
            if m and os.path.getsize(os.path.join(folder, name)) > 0:
                found.append(int(m.group(1)))
        return sorted(found)

    def load(self, scene_id: str, version: int | None = None) -> tuple[int, dict[str, Any]]:
        """(version, annotations): the newest, or ``version``; (0, empty) before the first save."""
        versions = self.versions(scene_id)
        if version is None:
            version = versions[-1] if versions else 0
        if version == 0:
            return 0, {"type": "FeatureCollection", "features": []}
        if version not in versions:
            raise KeyError(version)
        with open(os.path.join(self._dir(scene_id), f"v{version:06d}.geojson"), encoding="utf-8") as f:
            return version, json.load(f)

    def save(self, scene_id: str, annotations: dict[str, Any]) -> int:
        """Write a new version (atomically; never over another) and return its number."""
        folder = self._dir(scene_id)
        os.makedirs(folder, exist_ok=True)
        data = json.dumps(annotations).encode("utf-8")
        version = (self.versions(scene_id) or [0])[-1] + 1
        while True:  # claim the number: another replica may be saving the same scene
            target = os.path.join(folder, f"v{version:06d}.geojson")
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                break
            except FileExistsError:
                version += 1
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".saving-", suffix=".geojson")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            for path in (tmp, target):  # the claimed, empty version is not a save
                if os.path.exists(path) and (path == tmp or os.path.getsize(path) == 0):
                    os.unlink(path)
            raise
        return version
