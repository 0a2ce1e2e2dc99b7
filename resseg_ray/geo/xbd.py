"""The xBD data set read as it is published: ``images/<event>_<id>_pre_disaster.png|tif`` and
``..._post_disaster.*`` pairs, and ``labels/<same stem>.json`` with each building as WKT in
pixel coordinates (``features.xy``) and, after the event, its damage ``subtype``.

Anyone holding xBD (or a part of it, e.g. its ``tier3`` or ``hold`` folders) can train and
score without converting it: :func:`find_pairs` lists the pairs of a folder (a pre image
whose post image is missing is reported and skipped), :func:`read_labels` parses one label
document, and :func:`damage_raster` burns it into a damage raster (0 background, 1..4 the
classes, 255 ``un-classified``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from resseg_ray.errors import InputDataError
from resseg_ray.geo.damage_labels import BACKGROUND, IGNORE, damage_value
from resseg_ray.geo.storage import StorageSettings, expand_uris, join_uri, read_bytes
from resseg_ray.jsondoc import load_json

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
"""The image files of an xBD folder (the challenge's PNGs, or the GeoTIFF release)."""
MAX_LABEL_BYTES = 32 * 1024 * 1024
"""The largest label document read (xBD's largest are about 2 MB)."""
_NAME = re.compile(r"^(?P<stem>(?P<event>.+)_(?P<id>\d+))_(?P<when>pre|post)_disaster$")


@dataclass(frozen=True)
class XbdPair:
    """One place before and after an event: its images and label documents (None when the
    folder has none)."""

    name: str
    """``<event>_<id>``, e.g. ``hurricane-harvey_00000012``."""
    event: str
    pre: str
    post: str
    pre_labels: str | None
    post_labels: str | None


@dataclass(frozen=True)
class XbdBuilding:
    """One building of a label document: its polygon in pixel coordinates (WKT) and damage
    raster value (1..4; 255 ``un-classified``; 1 for the pre-event buildings, which carry no
    subtype)."""

    wkt: str
    value: int
    uid: str = ""


@dataclass(frozen=True)
class XbdLabels:
    """A label document: its buildings and the image's metadata (width, height, disaster,
    disaster_type, sensor, gsd, sun and off-nadir angles, capture date...)."""

    uri: str
    buildings: list[XbdBuilding]
    metadata: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the image as the document states it, when it does."""
        w, h = self.metadata.get("width"), self.metadata.get("height")
        return (int(w), int(h)) if isinstance(w, int) and isinstance(h, int) else None


def find_pairs(root: str, settings: StorageSettings) -> tuple[list[XbdPair], list[str]]:
    """The pairs of an xBD folder (local or ``s3://``) with ``images/`` and ``labels/`` below it,
    sorted by name, and one line per image that cannot be paired (skipped): a pre image whose
    post image is missing, or the reverse."""
    images_dir, labels_dir = join_uri(root, "images"), join_uri(root, "labels")
    try:
        images = expand_uris([images_dir + "/"], settings, IMAGE_SUFFIXES)
    except InputDataError:
        raise InputDataError(
            f"{root} is not an xBD folder: it has no images/ folder with images (xBD keeps "
            "images/<event>_<id>_pre_disaster.png and labels/<event>_<id>_pre_disaster.json)"
        ) from None
    try:
        labels = {os.path.basename(u) for u in expand_uris([labels_dir + "/"], settings, (".json",))}
    except InputDataError:
        labels = set()  # images only: pairs to map or score against rasters of one's own
    found: dict[str, dict[str, str]] = {}
    events: dict[str, str] = {}
    for uri in images:
        stem = os.path.splitext(os.path.basename(uri))[0]
        m = _NAME.match(stem)
        if m is not None:
            found.setdefault(m["stem"], {})[m["when"]] = uri
            events[m["stem"]] = m["event"]

    def label(stem: str, when: str) -> str | None:
        name = f"{stem}_{when}_disaster.json"
        return join_uri(labels_dir, name) if name in labels else None

    pairs, skipped = [], []
    for stem, files in sorted(found.items()):
        missing = {"pre", "post"} - files.keys()
        if missing:
            (have,) = files.values()
            skipped.append(f"{have}: no {missing.pop()}-disaster image of {stem} in {images_dir}; skipped")
            continue
        pairs.append(
            XbdPair(stem, events[stem], files["pre"], files["post"], label(stem, "pre"), label(stem, "post"))
        )
    if not pairs:
        raise InputDataError(
            f"{images_dir} holds no pre/post pair named <event>_<id>_pre_disaster and _post_disaster "
            f"({', '.join(IMAGE_SUFFIXES)})"
            + (f"; {len(skipped)} images without their pair" if skipped else "")
        )
    return pairs, skipped


def read_labels(uri: str, settings: StorageSettings) -> XbdLabels:
    """Parse an xBD label document: each ``features.xy`` feature whose ``feature_type`` is
    ``building`` (or has none), with its ``subtype`` (none: a pre-event building, value 1).
    An unknown subtype, or a feature without a WKT polygon, is an error naming the file."""
    data = read_bytes(uri, settings)
    if len(data) > MAX_LABEL_BYTES:
        raise InputDataError(f"label document {uri} is {len(data)} bytes; at most {MAX_LABEL_BYTES} are read")
    doc = load_json(data, f"label document {uri}")
    features = doc.get("features") if isinstance(doc, dict) else None
    xy = features.get("xy") if isinstance(features, dict) else None
    if not isinstance(xy, list):
        raise InputDataError(
            f"label document {uri} has no features.xy list: not an xBD label document "
            "(its buildings are WKT polygons in pixel coordinates under features.xy)"
        )
    buildings = []
    for i, f in enumerate(xy):
        props = f.get("properties") if isinstance(f, dict) else None
        props = props if isinstance(props, dict) else {}
        if props.get("feature_type", "building") != "building":
            continue
        wkt = f.get("wkt") if isinstance(f, dict) else None
        if not isinstance(wkt, str) or not wkt.lstrip().upper().startswith(("POLYGON", "MULTIPOLYGON")):
            raise InputDataError(f"label document {uri}: feature {i} has no WKT polygon (its 'wkt' member)")
        subtype = props.get("subtype")
        if subtype is None:
            value = 1
        else:
            try:
                value = damage_value(str(subtype))
            except ValueError as exc:
                raise InputDataError(f"label document {uri}: feature {i}: {exc}") from None
        buildings.append(XbdBuilding(wkt, value, str(props.get("uid", ""))))
    meta = doc.get("metadata")
    return XbdLabels(uri, buildings, meta if isinstance(meta, dict) else {})


def damage_raster(labels: XbdLabels, width: int, height: int) -> np.ndarray:
    """The buildings of ``labels`` burned into a ``height x width`` uint8 damage raster: 0
    background, each building's value (``un-classified`` ones 255, burned last so no class
    claims their pixels). A polygon that is not valid WKT, or lies wholly outside the image,
    is an error naming the file and the building."""
    import rasterio.features
    import shapely
    from shapely.geometry import box

    out = np.full((height, width), BACKGROUND, np.uint8)
    image = box(0, 0, width, height)
    shapes: list[tuple[object, int]] = []
    for b in labels.buildings:
        try:
            geom = shapely.from_wkt(b.wkt)
        except shapely.errors.ShapelyError as exc:
            raise InputDataError(
                f"label document {labels.uri}: building {b.uid or b.wkt[:40]}: {exc}"
            ) from None
        if geom.is_empty:
            continue
        if not geom.intersects(image):
            x0, y0, x1, y1 = geom.bounds
            raise InputDataError(
                f"label document {labels.uri}: building {b.uid or '?'} lies outside the {width}x{height} "
                f"image (pixel bounds {x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}); is it this image's document?"
            )
        shapes.append((geom, b.value))
    shapes.sort(key=lambda s: s[1] == IGNORE)  # un-classified last: no data wins where they overlap
    if shapes:
        rasterio.features.rasterize(shapes, out=out, transform=rasterio.Affine.identity())
    return out
