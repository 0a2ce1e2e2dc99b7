"""Damage scenes on the map: a pair mapped by ``jobs/damage.py`` (its STAC catalog in
``serve.map_catalogs``) served with its pre- and post-event imagery, its damage classes and
its buildings by class; the mapper's damage classes saved as annotations (and refused where
they do not belong); in a real Chromium, the pre/post swipe (screenshots tell which image
shows where) and a building's class given with a click; a refinement of the damage network
on the saved classes, over HTTP, to its map."""

from __future__ import annotations

import io
import json
import time

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from shapely.geometry import Point, box, mapping, shape

from resseg_ray.geo.damage_labels import DAMAGE_CLASSES
from resseg_ray.serving.scenes import DAMAGE_COLOURS
from tests.helpers import poll
from tests.serving.service import TOKEN

TMS = morecantile.tms.get("WebMercatorQuad")
SCENE = "zone_9-damage"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _png(content: bytes) -> np.ndarray:
    with rasterio.MemoryFile(content) as mem, mem.open() as ds:
        return ds.read()


def _area(bounds: list[float], x0: float, y0: float, x1: float, y1: float) -> dict:
    w, s, e, n = bounds
    return mapping(box(w + x0 * (e - w), s + y0 * (n - s), w + x1 * (e - w), s + y1 * (n - s)))


def _save(service: str, *features: dict) -> httpx.Response:
    doc = {"type": "FeatureCollection", "features": list(features)}
    return httpx.post(f"{service}/v1/scenes/{SCENE}/annotations", json=doc, headers=AUTH, timeout=30)


def _feature(kind: str, geometry: dict, **props) -> dict:
    return {"type": "Feature", "properties": {"kind": kind, **props}, "geometry": geometry}


def test_a_damage_scene_is_served_with_both_images_its_classes_and_its_buildings(
    service, damage_catalog
) -> None:
    listed = httpx.get(f"{service}/v1/scenes").json()["scenes"]
    scene = next(s for s in listed if s["id"] == SCENE)
    assert scene["kind"] == "damage" and scene["layers"] == ["imagery", "post", "damage"]
    assert scene["post_rgb"] == scene["rgb"] == [3, 2, 1] and scene["post_bands"] == scene["bands"]
    assert list(scene["damage_colours"]) == list(DAMAGE_CLASSES)
    with open(damage_catalog.replace("catalog.json", "zone_9_damage_summary.json")) as f:
        summary = json.load(f)
    assert scene["damage_counts"] == summary["buildings"] == dict.fromkeys(DAMAGE_CLASSES, 3)
    assert scene["building_count"] == summary["total"] == 12
    assert next(s for s in listed if s["id"] == "scene_0")["kind"] == "buildings"

    w, s, e, n = scene["bounds"]
    t = TMS.tile((w + e) / 2, (s + n) / 2, 19)
    tiles = {}
    for layer in ("imagery", "post", "damage"):
        r = httpx.get(f"{service}/v1/scenes/{SCENE}/tiles/{layer}/{t.z}/{t.x}/{t.y}.png", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", (layer, r.text)
        tiles[layer] = _png(r.content)
    # the post-event image is the striped one: its columns alternate dark and bright
    post = tiles["post"][:3].astype(float).mean(axis=0)
    assert post[tiles["post"][3] > 0].std() > 60 and not np.array_equal(tiles["post"], tiles["imagery"])
    # the damage layer holds the classes' colours, nothing else, background transparent
    rgba = tiles["damage"]
    seen = {tuple(int(v) for v in rgba[:3, y, x]) for y, x in zip(*np.nonzero(rgba[3]), strict=True)}
    palette = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in DAMAGE_COLOURS.values()}
    assert len(seen) >= 2 and seen <= palette and (rgba[3] == 0).any()
    for layer in ("mask", "probability"):  # a building scene's layers: not this scene's
        r = httpx.get(f"{service}/v1/scenes/{SCENE}/tiles/{layer}/{t.z}/{t.x}/{t.y}.png")
        assert r.status_code == 404 and "its layers: imagery, post, damage" in r.json()["detail"]
    r = httpx.get(f"{service}/v1/scenes/scene_0/tiles/post/{t.z}/{t.x}/{t.y}.png")
    assert r.status_code == 404 and "has no layer 'post'" in r.json()["detail"]

    buildings = httpx.get(f"{service}/v1/scenes/{SCENE}/buildings", timeout=30).json()["features"]
    assert len(buildings) == summary["total"]
    assert sorted(b["properties"]["damage"] for b in buildings) == sorted(DAMAGE_CLASSES * 3)
    assert all(0 <= b["properties"]["confidence"] <= 1 for b in buildings)
    lon, lat = buildings[0]["geometry"]["coordinates"][0][0][:2]
    assert w - 1e-6 <= lon <= e + 1e-6 and s - 1e-6 <= lat <= n + 1e-6  # degrees
    r = httpx.get(f"{service}/v1/scenes/{SCENE}/suggestions")
    assert r.status_code == 409 and "damage scene" in r.json()["detail"]


def test_the_mappers_damage_classes_are_saved_checked_and_exported(service) -> None:
    bounds = httpx.get(f"{service}/v1/scenes/{SCENE}").json()["bounds"]
    area = _feature("area", _area(bounds, 0.1, 0.1, 0.6, 0.9))
    drawn = _area(bounds, 0.2, 0.2, 0.25, 0.26)
    r = _save(service, area, _feature("building", drawn, source="drawn", damage="destroyed"))
    assert r.status_code == 200 and r.json()["buildings"] == 1, r.text
    saved = httpx.get(f"{service}/v1/scenes/{SCENE}/annotations").json()["annotations"]["features"]
    assert [f["properties"].get("damage") for f in saved] == [None, "destroyed"]
    export = httpx.get(f"{service}/v1/scenes/{SCENE}/export?format=geojson", timeout=30).json()["features"]
    mine = [f["properties"] for f in export if f["properties"]["source"] != "model"]
    model = [f["properties"] for f in export if f["properties"]["source"] == "model"]
    assert mine == [{"source": "drawn", "damage": "destroyed"}]
    assert model and all(p["damage"] in DAMAGE_CLASSES and "confidence" in p for p in model)
    annotated = shape(area["geometry"])
    assert all(not annotated.covers(shape(f["geometry"]).representative_point())
               for f in export if f["properties"]["source"] == "model")  # fmt: skip

    cases = [  # (the building, what the 422 says)
        (_feature("building", drawn, source="drawn"), "needs properties.damage, one of no-damage"),
        (_feature("building", drawn, source="drawn", damage="wrecked"), "got 'wrecked'"),
    ]
    for building, said in cases:
        r = _save(service, area, building)
        assert r.status_code == 422 and said in r.json()["detail"], r.text
    r = _save(service, _feature("area", area["geometry"], damage="destroyed"))
    assert r.status_code == 422 and "for the buildings of a damage scene" in r.json()["detail"]
    scene_bounds = httpx.get(f"{service}/v1/scenes/scene_0").json()["bounds"]
    r = httpx.post(  # a building scene's buildings have no damage class
        f"{service}/v1/scenes/scene_0/annotations",
        json={"type": "FeatureCollection", "features": [
            _feature("area", _area(scene_bounds, 0.1, 0.1, 0.9, 0.9)),
            _feature("building", _area(scene_bounds, 0.2, 0.2, 0.3, 0.3), source="drawn", damage="destroyed"),
        ]},
        headers=AUTH,
    )  # fmt: skip
    assert r.status_code == 422 and "for the buildings of a damage scene" in r.json()["detail"]
    after = httpx.get(f"{service}/v1/scenes/{SCENE}/annotations").json()["annotations"]["features"]
    assert after == saved  # nothing refused was kept


def _shot(page, position: float) -> np.ndarray:
    page.evaluate(
        f"(() => {{ const h = document.querySelector('input.swipe'); h.value = '{position}';"
        " h.dispatchEvent(new Event('input')); })()"
    )
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator("#map").screenshot())).convert("RGB"), dtype=float)


def test_the_page_swipes_between_pre_and_post_and_a_click_gives_a_building_its_class(
    service, browser
) -> None:
    from tests.serving.test_map import _map_point, offline, save_on_page

    assert _save(service).status_code == 200  # whatever another test saved: the mapper starts from none
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    outside = offline(page, service)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(  # 503: the test service's request slots are few; the page retries
        "console", lambda m: m.type == "error" and "status of 503" not in m.text and errors.append(m.text)
    )
    page.goto(f"{service}/#scene={SCENE}")
    page.wait_for_selector("path.leaflet-interactive", timeout=60_000)  # the buildings
    # the damage scene's controls: the swipe, the damage overlay and its legend; no suggestions
    assert page.is_checked("#overlay-damage") and page.is_visible("#show-swipe")
    assert not page.is_visible("#overlay-probability") and not page.is_visible("#show-suggestions")
    legend = page.locator("#legend li").all_inner_texts()
    assert [x.split(" (")[0] for x in legend] == list(DAMAGE_CLASSES)
    assert "damage" in page.inner_text("#facts")
    assert page.locator("#scenes button", has_text="damaged").count() == 1

    # the swipe: pre-event imagery left of the divider, post-event right (overlay and outlines off)
    page.check("#overlay-none")
    page.uncheck("#show-buildings")
    page.wait_for_function(
        "(() => { const t = [...document.querySelectorAll('.leaflet-tile')];"
        " return t.some(x => x.src.includes('/tiles/post/')) && t.every(x => x.complete"
        " && x.classList.contains('leaflet-tile-loaded')); })()",
        timeout=60_000,
    )
    centre = page.evaluate("resseg.map.getCenter()")
    box_ = page.locator("#map").bounding_box()
    y = box_["y"] + box_["height"] / 2  # the handle's thumb, in the middle of the divider
    page.mouse.move(box_["x"] + box_["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box_["x"] + box_["width"] * 0.25, y, steps=8)
    page.mouse.up()
    dragged = float(page.evaluate("document.querySelector('input.swipe').value"))
    assert 0.15 < dragged < 0.35 and page.evaluate("resseg.map.getCenter()") == centre  # the map stayed
    pre, post, half = _shot(page, 1), _shot(page, 0), _shot(page, 0.5)
    w, s, e, n = httpx.get(f"{service}/v1/scenes/{SCENE}").json()["bounds"]
    corners = page.evaluate(
        f"[resseg.map.latLngToContainerPoint([{n}, {w}]), resseg.map.latLngToContainerPoint([{s}, {e}])]"
    )
    x0, y0 = (max(0, int(corners[0][k]) + 4) for k in ("x", "y"))  # the scene on the map
    x1, y1 = min(pre.shape[1], int(corners[1]["x"]) - 4), min(pre.shape[0], int(corners[1]["y"]) - 4)
    mid = pre.shape[1] // 2  # the divider, its handle 28 px wide
    assert x0 < mid - 60 and x1 > mid + 60 and y1 - y0 > 100, (x0, x1, y0, y1)
    left, right = np.s_[y0:y1, x0 : mid - 20], np.s_[y0:y1, mid + 20 : x1]
    assert np.abs(pre - post).mean() > 20  # the two images differ on the map
    assert np.abs(half[left] - pre[left]).mean() < 2 < 20 < np.abs(half[left] - post[left]).mean()
    assert np.abs(half[right] - post[right]).mean() < 2 < 20 < np.abs(half[right] - pre[right]).mean()
    page.check("#show-buildings")
    page.wait_for_selector("path.leaflet-interactive", timeout=60_000)

    # an area, then a building inside it given its class from the menu a click opens
    lat = lambda f: s + f * (n - s)  # noqa: E731
    lng = lambda f: w + f * (e - w)  # noqa: E731
    page.click("#draw-area")
    for fy, fx in [(0.05, 0.05), (0.05, 0.95), (0.95, 0.95), (0.95, 0.05), (0.05, 0.05)]:
        page.mouse.click(*_map_point(page, lat(fy), lng(fx)))
    page.wait_for_function("resseg.annotations.getLayers().length === 1")
    outlines = httpx.get(f"{service}/v1/scenes/{SCENE}/buildings").json()["features"]
    middle = Point(lng(0.5), lat(0.5))
    well_inside = box(lng(0.1), lat(0.1), lng(0.9), lat(0.9))  # the area is 5-95 %: the page checks
    inner = [f for f in outlines if well_inside.covers(shape(f["geometry"]).envelope.centroid)]
    target = min(inner, key=lambda f: shape(f["geometry"]).distance(middle))
    ident, given = target["properties"]["id"], "destroyed"
    if target["properties"]["damage"] == given:
        given = "minor-damage"  # a class other than the model's: a reassignment
    inside = shape(target["geometry"]).representative_point()
    page.mouse.click(*_map_point(page, inside.y, inside.x))
    page.click(f".grade-menu button[data-grade={given}]")
    page.wait_for_function(f"resseg.decisions.get({ident}) === '{given}'")
    fill = page.evaluate(
        f"(() => {{ let c; resseg.state.buildings.eachLayer(l => {{ if (l.feature.properties.id === {ident})"
        " c = l.options.fillColor || l.options.color; }); return c; })()"
    )
    assert fill == DAMAGE_COLOURS[given]
    page.select_option("#draw-damage", "major-damage")  # a building the model missed, drawn
    page.click("#draw-rectangle")
    page.mouse.click(*_map_point(page, lat(0.08), lng(0.08)))
    page.mouse.click(*_map_point(page, lat(0.12), lng(0.13)))
    page.wait_for_function("resseg.annotations.getLayers().length === 2")
    page.fill("#token", TOKEN)
    save_on_page(page, errors)
    saved = httpx.get(f"{service}/v1/scenes/{SCENE}/annotations").json()["annotations"]["features"]
    got = sorted((f["properties"].get("source"), f["properties"].get("damage")) for f in saved
                 if f["properties"]["kind"] == "building")  # fmt: skip
    assert got == [("drawn", "major-damage"), ("predicted", given)]
    page.reload()  # what was saved comes back
    page.wait_for_selector("path.leaflet-interactive", timeout=60_000)
    page.wait_for_function(f"resseg.decisions.get({ident}) === '{given}'", timeout=30_000)
    assert "1 drawn and 1 graded buildings" in page.inner_text("#annotation-count")
    assert not outside, outside
    assert not errors, errors
    page.close()


def test_the_damage_network_is_refined_on_the_saved_classes_and_maps_the_pair(service) -> None:
    bounds = httpx.get(f"{service}/v1/scenes/{SCENE}").json()["bounds"]
    buildings = httpx.get(f"{service}/v1/scenes/{SCENE}/buildings").json()["features"]
    area = _area(bounds, 0.05, 0.05, 0.95, 0.75)
    inside = [f for f in buildings if shape(area).covers(shape(f["geometry"]).representative_point())]
    assert len(inside) >= 4
    graded = [  # the mapper's word: every class present, whatever the random network said
        _feature("building", f["geometry"], source="predicted", predicted_id=f["properties"]["id"],
                 damage=DAMAGE_CLASSES[i % 4])
        for i, f in enumerate(inside)
    ]  # fmt: skip
    assert _save(service, _feature("area", area), *graded).status_code == 200
    url = f"{service}/v1/scenes/{SCENE}/refinements"
    started = time.monotonic()
    r = httpx.post(url, json={"epochs": 1}, headers=AUTH)
    assert r.status_code == 202, r.text

    def ended() -> dict | None:
        rec = httpx.get(f"{url}/{r.json()['id']}", timeout=30).json()
        return rec if rec["state"] not in ("queued", "running") else None

    done = poll(ended, timeout=400, interval=0.5, what="the damage refinement to end")
    assert done["state"] == "succeeded", done
    decision = done["decision"]
    assert decision["measure"] == "xView2 score of the grades present" and decision["pixels"] > 0
    assert done["figures"]["annotated_buildings"] == len(graded)
    assert decision["chosen"] in ("refined", "adapted"), decision["line"]  # train.min_gain=0: a map
    after = done["figures"]["buildings_after"]
    assert set(after) == set(DAMAGE_CLASSES) and done["outputs"]["prob"] is None
    refined = httpx.get(f"{service}/v1/scenes/{SCENE}/buildings?map={done['id']}", timeout=30).json()
    assert len(refined["features"]) == sum(after.values())
    w, s, e, n = bounds
    t = TMS.tile((w + e) / 2, (s + n) / 2, 19)
    tile = httpx.get(f"{service}/v1/scenes/{SCENE}/tiles/damage/{t.z}/{t.x}/{t.y}.png?map={done['id']}")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    seconds = time.monotonic() - started
    print(f"damage refinement over HTTP: {seconds:.1f} s, stages {done['stage_seconds']}, {decision['line']}")


@pytest.mark.parametrize("layer", ["post", "damage"])
def test_a_damage_layer_tile_outside_the_pair_is_empty(service, layer: str) -> None:
    far = TMS.tile(0.0, 0.0, 19)
    r = httpx.get(f"{service}/v1/scenes/{SCENE}/tiles/{layer}/19/{far.x}/{far.y}.png")
    assert r.status_code == 204
