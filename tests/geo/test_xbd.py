"""xBD read as it is published: 1024 px pre/post PNGs under images/, label documents under
labels/ with WKT in pixel coordinates and a damage subtype; a pre image without its post image
is reported and skipped; bad documents are errors naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from resseg_ray.errors import InputDataError
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.geo.xbd import damage_raster, find_pairs, read_labels

SIZE = 1024  # every xBD image


def _png(path) -> None:
    profile = {"driver": "PNG", "width": SIZE, "height": SIZE, "count": 3, "dtype": "uint8"}
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((3, SIZE, SIZE), np.uint8))


def _square(x: float, y: float, s: float) -> str:
    return f"POLYGON (({x} {y}, {x + s} {y}, {x + s} {y + s}, {x} {y + s}, {x} {y}))"


def _doc(buildings: list[tuple[str, str | None]], name: str) -> dict:
    """A label document as xBD writes it: each building under lng_lat and xy (pixels)."""
    xy, lng_lat = [], []
    for i, (wkt, subtype) in enumerate(buildings):
        props = {"feature_type": "building", "uid": f"uid-{i}"}
        if subtype is not None:
            props["subtype"] = subtype
        xy.append({"properties": props, "wkt": wkt})
        lng_lat.append(
            {"properties": props, "wkt": "POLYGON ((-95.1 29.7, -95.1 29.8, -95.0 29.8, -95.1 29.7))"}
        )
    meta = {
        "sensor": "WORLDVIEW02", "disaster": "hurricane-harvey", "disaster_type": "flooding",
        "gsd": 2.1, "width": SIZE, "height": SIZE, "img_name": f"{name}.png", "sun_azimuth": 160.5,
        "off_nadir_angle": 23.1,
    }  # fmt: skip
    return {"features": {"lng_lat": lng_lat, "xy": xy}, "metadata": meta}


POST = [
    (_square(100, 100, 20), "no-damage"),
    (_square(200, 100, 20), "minor-damage"),
    (_square(300, 100, 20), "major-damage"),
    (_square(400, 100, 20), "destroyed"),
    (_square(500, 100, 20), "un-classified"),
    (_square(1010, 1010, 30), "destroyed"),  # across the image's edge: clipped
]


@pytest.fixture
def xbd(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for stem in ("hurricane-harvey_00000012", "socal-fire_00001400"):
        for when in ("pre", "post"):
            _png(tmp_path / "images" / f"{stem}_{when}_disaster.png")
            buildings = POST if when == "post" else [(w, None) for w, _ in POST]
            name = f"{stem}_{when}_disaster"
            (tmp_path / "labels" / f"{name}.json").write_text(json.dumps(_doc(buildings, name)))
    _png(tmp_path / "images" / "midwest-flooding_00000001_pre_disaster.png")  # its post is missing
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    return tmp_path


def test_an_xbd_folder_gives_its_pairs_and_says_what_it_skipped(xbd) -> None:
    pairs, skipped = find_pairs(str(xbd), StorageSettings())
    assert [p.name for p in pairs] == ["hurricane-harvey_00000012", "socal-fire_00001400"]
    first = pairs[0]
    assert first.event == "hurricane-harvey"
    assert first.pre.endswith("images/hurricane-harvey_00000012_pre_disaster.png")
    assert first.post.endswith("images/hurricane-harvey_00000012_post_disaster.png")
    assert first.post_labels is not None and first.post_labels.endswith("_post_disaster.json")
    (line,) = skipped
    assert (
        "midwest-flooding_00000001_pre_disaster.png: no post-disaster image of midwest-flooding_00000001"
        in line
    )


def test_a_post_label_document_burns_into_a_damage_raster(xbd) -> None:
    labels = read_labels(str(xbd / "labels" / "socal-fire_00001400_post_disaster.json"), StorageSettings())
    assert labels.size == (SIZE, SIZE) and labels.metadata["disaster_type"] == "flooding"
    assert [b.value for b in labels.buildings] == [1, 2, 3, 4, 255, 4]
    raster = damage_raster(labels, SIZE, SIZE)
    assert raster.shape == (SIZE, SIZE) and raster.dtype == np.uint8
    for x, value in ((110, 1), (210, 2), (310, 3), (410, 4), (510, 255)):
        assert raster[110, x] == value
    assert raster[1020, 1020] == 4 and raster[50, 50] == 0
    counts = {v: int((raster == v).sum()) for v in (1, 2, 3, 4, 255)}
    assert counts == {1: 400, 2: 400, 3: 400, 4: 400 + 14 * 14, 255: 400}  # the edge one clipped
    assert set(np.unique(raster).tolist()) == {0, 1, 2, 3, 4, 255}
    pre = read_labels(str(xbd / "labels" / "socal-fire_00001400_pre_disaster.json"), StorageSettings())
    assert {b.value for b in pre.buildings} == {1}  # before the event: buildings, no damage


def test_bad_label_documents_are_errors_naming_the_file(tmp_path) -> None:
    settings = StorageSettings()
    point = {"features": {"xy": [{"properties": {}, "wkt": "POINT (1 1)"}]}}
    cases = {
        "unknown.json": (_doc([(_square(1, 1, 5), "flooded")], "x"), "feature 0: unknown damage subtype"),
        "nowkt.json": (point, "has no WKT polygon"),
        "other.json": ({"type": "FeatureCollection", "features": []}, "not an xBD label document"),
    }
    for name, (doc, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        with pytest.raises(InputDataError, match=message) as err:
            read_labels(str(path), settings)
        assert str(path) in str(err.value)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(_doc([(_square(2000, 2000, 10), "destroyed")], "x")))
    with pytest.raises(InputDataError, match=r"building uid-0 lies outside the 1024x1024 image"):
        damage_raster(read_labels(str(outside), settings), SIZE, SIZE)
    with pytest.raises(InputDataError, match="is not an xBD folder"):
        find_pairs(str(tmp_path), settings)
