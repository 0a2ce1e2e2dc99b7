"""Annotations of the map page: validated saves (every 4xx), a version per save never
overwritten, the newest read back after a restart, concurrent saves on distinct versions,
writes refused without the service's token."""

from __future__ import annotations

import concurrent.futures
import json
import math

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resseg_ray.errors import InputDataError
from resseg_ray.serving.annotations import AnnotationLimits, AnnotationStore, validate_annotations
from tests.serving.service import TOKEN

BOUNDS = (14.0, 45.0, 14.01, 45.01)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _box(x0: float, y0: float, x1: float, y1: float) -> list:
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def _feature(kind: str, coords: list, geom: str = "Polygon", **props: object) -> dict:
    return {
        "type": "Feature",
        "properties": {"kind": kind, **props},
        "geometry": {"type": geom, "coordinates": coords},
    }


def _doc(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


AREA = _feature("area", _box(14.001, 45.001, 14.005, 45.005))
HOUSE = _feature("building", _box(14.002, 45.002, 14.0022, 45.0022), source="drawn")


def test_a_valid_save_keeps_what_it_should() -> None:
    accepted = _feature(
        "building",
        _box(14.003, 45.003, 14.0031, 45.0031),
        source="predicted",
        predicted_id=7,
        secret="<script>",
    )
    clean = validate_annotations(_doc(AREA, HOUSE, accepted), BOUNDS)
    props = [f["properties"] for f in clean["features"]]
    assert props == [
        {"kind": "area", "id": 0},
        {"kind": "building", "id": 1, "source": "drawn"},
        {"kind": "building", "id": 2, "source": "predicted", "predicted_id": 7},
    ]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ([1, 2], "must be a GeoJSON FeatureCollection"),
        (_doc({"type": "Feature", "properties": {"kind": "area"}}), "feature 0 is not a GeoJSON Feature"),
        (_doc(_feature("road", _box(14.001, 45.001, 14.002, 45.002))), "kind must be one of area, building"),
        (_doc(_feature("area", [14.001, 45.001], geom="Point")), "geometry type 'Point'"),
        (_doc(_feature("area", _box(13.9, 45.001, 14.002, 45.002))), "is outside the scene"),
        (
            _doc(
                _feature("area", [[[14.001, 45.001], [14.002, math.nan], [14.002, 45.002], [14.001, 45.001]]])
            ),
            "finite",
        ),
        (
            _doc(
                _feature(
                    "area",
                    [
                        [
                            [14.001, 45.001],
                            [14.002, 45.002],
                            [14.002, 45.001],
                            [14.001, 45.002],
                            [14.001, 45.001],
                        ]
                    ],
                )
            ),
            "self-intersecting",
        ),
        (
            _doc(_feature("area", [[[14.001, 45.001], [14.002, 45.002], [14.001, 45.001]]])),
            "at least 4 positions",
        ),
        (_doc(HOUSE), "without an annotated area"),
        (
            _doc(AREA, _feature("building", _box(14.008, 45.008, 14.0085, 45.0085))),
            "outside every annotated area",
        ),
        (
            _doc(
                _feature(
                    "area",
                    [
                        [[14.001 + i * 1e-6, 45.001] for i in range(3000)]
                        + [[14.004, 45.004], [14.001, 45.001]]
                    ],
                )
            ),
            "vertices, at most 2000",
        ),
    ],
)
def test_bad_annotations_say_what_and_where(doc: object, needle: str) -> None:
    with pytest.raises(InputDataError, match=needle):
        validate_annotations(doc, BOUNDS, AnnotationLimits())


ODD_NUMBERS = st.one_of(
    st.integers(min_value=10**300, max_value=10**400),
    st.just(float("inf")),
    st.text(max_size=3),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_odd_coordinates_and_parts_are_refused_never_raised(data) -> None:
    """Whatever a position or a MultiPolygon part holds (huge integers, strings, booleans,
    nested lists, extra values), the save is refused with an InputDataError (422), never an
    exception of another kind (a 500)."""
    ring = [[14.001, 45.001], [14.002, 45.001], [14.002, 45.002], [14.001, 45.001]]
    k = data.draw(st.integers(0, 3))
    bad = data.draw(
        st.one_of(
            st.lists(ODD_NUMBERS, min_size=1, max_size=4).map(lambda p: p),
            st.tuples(st.just(14.001), st.just(45.001), ODD_NUMBERS).map(list),
        )
    )
    ring = [*ring[:k], bad, *ring[k + 1 :]]
    geometry = data.draw(
        st.sampled_from(
            [
                {"type": "Polygon", "coordinates": [ring]},
                {"type": "MultiPolygon", "coordinates": [[ring]]},
                {"type": "MultiPolygon", "coordinates": [[ring], data.draw(ODD_NUMBERS)]},
            ]
        )
    )
    doc = _doc({"type": "Feature", "properties": {"kind": "area"}, "geometry": geometry})
    try:
        validate_annotations(doc, BOUNDS, AnnotationLimits())
    except InputDataError:
        pass


def test_json_nested_without_end_is_refused() -> None:
    from resseg_ray.jsondoc import MAX_NESTING, load_json

    for depth in (MAX_NESTING + 1, 100_000):
        with pytest.raises(InputDataError, match="nests arrays or objects more than"):
            load_json("[" * depth + "]" * depth, "the annotations")
    assert load_json("[" * MAX_NESTING + "]" * MAX_NESTING, "x") is not None


def test_versions_survive_a_restart_and_concurrent_saves(tmp_path) -> None:
    store = AnnotationStore(str(tmp_path))
    assert store.load("s") == (0, {"type": "FeatureCollection", "features": []})
    first = validate_annotations(_doc(AREA), BOUNDS)
    assert store.save("s", first) == 1
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        numbers = sorted(
            pool.map(lambda _: store.save("s", validate_annotations(_doc(AREA, HOUSE), BOUNDS)), range(8))
        )
    assert numbers == list(range(2, 10))
    again = AnnotationStore(str(tmp_path))  # the service restarted: the files are what counts
    assert again.versions("s") == list(range(1, 10))
    assert again.load("s")[0] == 9 and len(again.load("s")[1]["features"]) == 2
    assert again.load("s", 1) == (1, first)
    with pytest.raises(KeyError):
        again.load("s", 42)
    (tmp_path / "s" / "v000010.geojson").write_bytes(b"")  # a version claimed, its content not yet written
    assert again.versions("s")[-1] == 9 and again.save("s", first) == 11


def test_the_annotation_api(service) -> None:
    url = service + "/v1/scenes/scene_0/annotations"
    scene = httpx.get(service + "/v1/scenes/scene_0").json()
    w, s, e, n = scene["bounds"]
    dx, dy = (e - w) / 10, (n - s) / 10
    area = _feature("area", _box(w + dx, s + dy, w + 5 * dx, s + 5 * dy))
    house = _feature("building", _box(w + 2 * dx, s + 2 * dy, w + 2.5 * dx, s + 2.5 * dy), source="drawn")
    before = httpx.get(url).json()
    saved = httpx.post(url, json=_doc(area, house), headers=AUTH)
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"version": before["version"] + 1, "areas": 1, "buildings": 1}
    got = httpx.get(url).json()
    assert got["version"] == saved.json()["version"] and len(got["annotations"]["features"]) == 2
    second = httpx.post(url, json=_doc(area), headers=AUTH).json()["version"]
    assert httpx.get(url, params={"version": second - 1}).json()["annotations"] == got["annotations"]
    assert httpx.get(url).json()["versions"][-2:] == [second - 1, second]
    assert httpx.get(url, params={"version": 999}).status_code == 404
    assert httpx.post(url, json=_doc(area)).status_code == 401  # no token
    wrong = httpx.post(url, json=_doc(area), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "Bearer" in wrong.headers["www-authenticate"]
    outside = _feature("area", _box(w - 1, s, w + dx, s + dy))
    bad = httpx.post(url, json=_doc(outside), headers=AUTH)
    assert bad.status_code == 422 and "outside the scene" in bad.json()["detail"]
    assert httpx.post(url, content=b"{not json", headers=AUTH).status_code == 400
    deep = httpx.post(url, content=b"[" * 50_000 + b"]" * 50_000, headers=AUTH)
    assert deep.status_code == 400 and "levels deep" in deep.json()["detail"]
    for odd in ([w + dx, s + dy, "x"], [10**400, s + dy]):  # a third value that is text, a huge integer
        ring = [[w + dx, s + dy], [w + 2 * dx, s + dy], odd, [w + dx, s + dy]]
        r = httpx.post(url, content=json.dumps(_doc(_feature("area", [ring]))), headers=AUTH)
        assert r.status_code == 422, r.text
    polygon = _box(w + dx, s + dy, w + 2 * dx, s + 2 * dy)
    part = {
        "type": "Feature",
        "properties": {"kind": "area"},
        "geometry": {"type": "MultiPolygon", "coordinates": [polygon, 7]},  # a part that is no polygon
    }
    assert httpx.post(url, json=_doc(part), headers=AUTH).status_code == 422
    for path in ("tiles/mask/1.5/0/0.png", "tiles/mask/x/0/0.png"):  # the API documents 400
        assert httpx.get(f"{service}/v1/scenes/scene_0/{path}").status_code == 400
    big = httpx.post(
        url, content=json.dumps(_doc(*[area] * 6000)), headers=AUTH
    )  # over serve.max_annotation_mb
    assert big.status_code == 413
    assert (
        httpx.post(service + "/v1/scenes/nope/annotations", json=_doc(area), headers=AUTH).status_code == 404
    )
    assert httpx.get(url).json()["version"] == second  # nothing refused was saved


def test_the_export_takes_the_mappers_word_inside_the_areas_and_the_model_outside(service) -> None:
    import xml.etree.ElementTree as ET

    from shapely.geometry import box, shape

    scene = httpx.get(service + "/v1/scenes/scene_0").json()
    w, s, e, n = scene["bounds"]
    dx, dy = (e - w) / 10, (n - s) / 10
    area_box = box(w + dx, s + dy, w + 6 * dx, s + 6 * dy)
    model = httpx.get(service + "/v1/scenes/scene_0/buildings").json()["features"]
    inside = [f for f in model if area_box.covers(shape(f["geometry"]).representative_point())]
    outside = [f for f in model if f not in inside]
    assert inside and outside
    area = _feature("area", [list(map(list, area_box.exterior.coords))])
    house = _feature("building", _box(w + 2 * dx, s + 2 * dy, w + 2.5 * dx, s + 2.5 * dy), source="drawn")
    accepted = {
        **inside[0],
        "properties": {
            "kind": "building",
            "source": "predicted",
            "predicted_id": inside[0]["properties"]["id"],
        },
    }
    saved = httpx.post(
        service + "/v1/scenes/scene_0/annotations", json=_doc(area, house, accepted), headers=AUTH
    )
    assert saved.status_code == 200, saved.text
    r = httpx.get(service + "/v1/scenes/scene_0/export", params={"format": "geojson"}, timeout=60)
    assert r.status_code == 200 and 'filename="scene_0_buildings.geojson"' in r.headers["content-disposition"]
    assert r.headers["x-resseg-annotation-version"] == str(saved.json()["version"])
    sources = [f["properties"]["source"] for f in r.json()["features"]]
    assert sources.count("drawn") == 1 and sources.count("accepted") == 1
    assert sources.count("model") == len(outside)  # the other predictions inside the area are left out
    osm = httpx.get(service + "/v1/scenes/scene_0/export", params={"format": "osm"}, timeout=60)
    assert osm.status_code == 200 and 'filename="scene_0_buildings.osm"' in osm.headers["content-disposition"]
    root = ET.fromstring(osm.content)
    assert root.get("upload") == "false"
    tagged = [
        x
        for x in root
        if x.tag in ("way", "relation") and any(t.get("k") == "building" for t in x.iter("tag"))
    ]
    expected = sum(
        len(f["geometry"]["coordinates"]) if f["geometry"]["type"] == "MultiPolygon" else 1
        for f in r.json()["features"]
    )
    assert len(tagged) == expected
    assert httpx.get(service + "/v1/scenes/scene_0/export", params={"format": "shp"}).status_code == 422
