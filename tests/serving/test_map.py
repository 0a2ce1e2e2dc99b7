"""The map page and its API over real HTTP: scenes from a predict run's STAC catalog, web
tiles rendered by rio-tiler, building outlines in EPSG:4326, every 4xx, and the page itself
in a real headless Chromium (Debian's, driven by Playwright) with no request leaving
127.0.0.1."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
import rasterio

from tests.serving.conftest import scene_ids

TMS = morecantile.tms.get("WebMercatorQuad")


def _centre_tile(scene: dict, zoom: int) -> morecantile.Tile:
    w, s, e, n = scene["bounds"]
    return TMS.tile((w + e) / 2, (s + n) / 2, zoom)


def _png(content: bytes) -> np.ndarray:
    with rasterio.MemoryFile(content) as mem, mem.open() as ds:
        assert ds.driver == "PNG"
        return ds.read()


def test_scenes_tiles_and_buildings(service, map_catalog) -> None:
    scenes = httpx.get(service + "/v1/scenes").json()["scenes"]
    listed = [s["id"] for s in scenes]  # the catalog's, and those other tests added at run time
    assert listed == sorted(listed) and scene_ids(map_catalog) == ["scene_0", "scene_1"]
    assert set(scene_ids(map_catalog)) <= set(listed)
    scene = next(s for s in scenes if s["id"] == "scene_0")
    assert scene["layers"] == ["imagery", "mask", "probability"] and scene["rgb"] == [3, 2, 1]
    assert httpx.get(service + "/v1/scenes/scene_0").json() == scene
    t = _centre_tile(scene, 19)
    for layer in ("imagery", "probability", "mask"):
        r = httpx.get(f"{service}/v1/scenes/scene_0/tiles/{layer}/{t.z}/{t.x}/{t.y}.png", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        rgba = _png(r.content)
        assert rgba.shape == (4, 256, 256)
        if layer == "imagery":
            assert rgba[3].mean() > 128 and rgba[:3].std() > 10  # the scene's pixels, stretched
    nir = httpx.get(f"{service}/v1/scenes/scene_0/tiles/imagery/{t.z}/{t.x}/{t.y}.png?bands=4,3,2")
    assert nir.status_code == 200 and not np.array_equal(_png(nir.content), rgba)
    far = TMS.tile(0.0, 0.0, 19)
    assert httpx.get(f"{service}/v1/scenes/scene_0/tiles/imagery/19/{far.x}/{far.y}.png").status_code == 204
    collection = httpx.get(service + "/v1/scenes/scene_0/buildings").json()
    assert len(collection["features"]) == scene["building_count"] > 0
    lon, lat = collection["features"][0]["geometry"]["coordinates"][0][0][:2]
    w, s, e, n = scene["bounds"]
    assert w - 1e-6 <= lon <= e + 1e-6 and s - 1e-6 <= lat <= n + 1e-6  # degrees, inside the scene


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/v1/scenes/nope", 404, "no scene 'nope'"),
        ("/v1/scenes/..%2F..%2Fetc%2Fpasswd/tiles/imagery/1/0/0.png", 404, "Not Found"),
        ("/v1/scenes/..passwd/tiles/imagery/1/0/0.png", 404, "no scene"),
        ("/v1/scenes/scene_0/tiles/elevation/1/0/0.png", 404, "no layer 'elevation'"),
        ("/v1/scenes/scene_0/tiles/imagery/25/0/0.png", 400, "zoom 0-24"),
        ("/v1/scenes/scene_0/tiles/imagery/3/8/0.png", 400, "does not exist"),
        ("/v1/scenes/scene_0/tiles/imagery/3/1/1.png?bands=1,2", 400, "three band indexes from 1 to 4"),
        ("/v1/scenes/scene_0/tiles/imagery/3/1/1.png?bands=1,2,9", 400, "three band indexes"),
        ("/v1/scenes/scene_0/tiles/imagery/3/1/1.png?bands=a,b,c", 400, "three band indexes"),
        ("/v1/scenes/scene_0/tiles/imagery/3/x/1.png", 400, "whole numbers"),
    ],
)
def test_map_requests_that_name_nothing_served_are_refused(
    service, path: str, status: int, needle: str
) -> None:
    r = httpx.get(service + path)
    assert r.status_code == status, r.text
    assert needle in json.dumps(r.json())


def test_the_page_and_its_javascript_are_served_by_the_service(service) -> None:
    page = httpx.get(service + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "static/vendor/leaflet/leaflet.js" in page.text and "http" not in page.text.split("<body>")[1]
    assert '<script type="module" src="static/js/main.js">' in page.text
    modules = ("main", "api", "dom", "state", "layers", "annotate", "refine")
    for path in (
        "static/vendor/leaflet/leaflet.js",
        "static/vendor/geoman/leaflet-geoman.min.js",
        *(f"static/js/{m}.js" for m in modules),
    ):
        r = httpx.get(f"{service}/{path}")
        assert r.status_code == 200 and len(r.content) > 500, path
        assert "javascript" in r.headers["content-type"], path  # a module script needs it


def offline(page, service: str) -> list[str]:
    """Abort every request of ``page`` that leaves the service (pages must work with no
    internet); the list of those URLs, to assert empty."""
    outside: list[str] = []

    def guard(route) -> None:
        if route.request.url.startswith(service):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    return outside


def test_the_map_page_shows_the_scenes_imagery_and_overlay_in_a_real_browser(service, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    outside = offline(page, service)
    tiles: list[tuple[str, int, str]] = []
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # 503: the test service has 2 + 2 request slots (for its overload tests); the page retries
    page.on(
        "console", lambda m: m.type == "error" and "status of 503" not in m.text and errors.append(m.text)
    )
    page.on(
        "response",
        lambda r: "/tiles/" in r.url and tiles.append((r.url, r.status, r.headers.get("content-type", ""))),
    )
    page.goto(service + "/")
    try:
        page.wait_for_selector("#scenes button[data-id=scene_1]", timeout=30_000)
    except Exception:
        raise AssertionError(
            f"no scene list; page errors: {errors}, status: {page.inner_text('#status')}"
        ) from None
    assert any(t.startswith("scene_0") for t in page.locator("#scenes button").all_inner_texts())
    try:
        page.wait_for_function(
            "(() => { const t = [...document.querySelectorAll('.leaflet-tile-loaded')].map(t => t.src);"
            " return t.some(s => s.includes('/tiles/imagery/'))"
            " && t.some(s => s.includes('/tiles/probability/')) && t.length >= 4; })()",
            timeout=60_000,
        )
    except Exception:
        n = page.evaluate("[document.querySelectorAll('.leaflet-tile-loaded').length, resseg.map.getZoom()]")
        raise AssertionError(f"tiles loaded, zoom: {n}; responses {tiles[:6]}; errors {errors}") from None
    page.wait_for_selector("path.leaflet-interactive", timeout=30_000)  # the building outlines
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('buildings')", timeout=30_000
    )
    assert tiles and all(status in (200, 204, 503) for _, status, _ in tiles), tiles
    assert any("/tiles/imagery/" in u and s == 200 and t == "image/png" for u, s, t in tiles)
    assert any("/tiles/probability/" in u and s == 200 for u, s, _ in tiles)
    shot = page.locator("#map").screenshot()
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not a blank map
    page.click("#scenes button[data-id=scene_1]")  # another scene, then the mask as the overlay
    page.wait_for_function("location.hash === '#scene=scene_1'")
    page.check("#overlay-mask")
    page.wait_for_function(
        "[...document.querySelectorAll('.leaflet-tile-loaded')].some(t => t.src.includes('/tiles/mask/'))",
        timeout=60_000,
    )
    page.check("#show-suggestions")  # where to annotate first: ranked squares on the map
    page.wait_for_function(
        "document.getElementById('status').textContent.includes('suggested regions')", timeout=120_000
    )
    assert page.locator(".leaflet-tooltip", has_text=re.compile(r"^#1$")).count() == 1
    assert not outside, outside
    assert not errors, errors
    page.close()


def _map_point(page, lat: float, lng: float) -> tuple[float, float]:
    """Page coordinates of a map position (for mouse events)."""
    box = page.locator("#map").bounding_box()
    p = page.evaluate(
        f"(() => {{ const p = resseg.map.latLngToContainerPoint([{lat}, {lng}]); return [p.x, p.y]; }})()"
    )
    return box["x"] + p[0], box["y"] + p[1]


def save_on_page(page, errors: list[str]) -> None:
    """Click *Save annotations* and wait for the page to say it saved; else fail with what the
    page said, what it sent (each feature's properties and geometry size) and its errors."""
    page.click("#save")
    try:
        page.wait_for_function("document.getElementById('status').textContent.startsWith('saved version')")
    except Exception:
        sent = page.evaluate(
            "resseg.annotationDocument().features.map(f => [f.properties, JSON.stringify(f.geometry).length])"
        )
        said = page.inner_text("#status")
        raise AssertionError(f"not saved: {said}; sent {sent}; errors {errors}") from None


def test_a_mapper_draws_an_area_and_buildings_accepts_one_and_saves(service, browser) -> None:
    from tests.serving.service import TOKEN

    cleared = httpx.post(  # whatever another test saved on scene_1: the mapper starts from none
        service + "/v1/scenes/scene_1/annotations",
        json={"type": "FeatureCollection", "features": []},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert cleared.status_code == 200, cleared.text
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(service + "/#scene=scene_1")
    page.wait_for_selector("path.leaflet-interactive", timeout=60_000)
    before = httpx.get(service + "/v1/scenes/scene_1/annotations").json()["version"]
    w, s, e, n = httpx.get(service + "/v1/scenes/scene_1").json()["bounds"]
    lat = lambda f: s + f * (n - s)  # noqa: E731
    lng = lambda f: w + f * (e - w)  # noqa: E731
    page.click("#draw-area")  # the annotated area: a polygon of four clicks, closed on its first vertex
    corners = [(0.05, 0.05), (0.05, 0.95), (0.95, 0.95), (0.95, 0.05), (0.05, 0.05)]
    for fy, fx in corners:
        page.mouse.click(*_map_point(page, lat(fy), lng(fx)))
    page.wait_for_function("resseg.annotations.getLayers().length === 1")
    page.click("#draw-rectangle")  # a building the model missed: a rectangle of two clicks
    page.mouse.click(*_map_point(page, lat(0.40), lng(0.40)))
    page.mouse.click(*_map_point(page, lat(0.45), lng(0.46)))
    page.wait_for_function("resseg.annotations.getLayers().length === 2")
    # accept a small predicted building near the middle: one click on a point inside it
    from shapely.geometry import Point, shape

    outlines = httpx.get(service + "/v1/scenes/scene_1/buildings").json()["features"]
    middle = Point(lng(0.5), lat(0.5))
    small = [(shape(f["geometry"]), f["properties"]["id"]) for f in outlines]
    small = [
        (g, i)
        for g, i in small
        if g.area < 4e-9 and not g.intersects(Point(lng(0.43), lat(0.425)).buffer(4e-5))
    ]
    geom, ident = min(small, key=lambda gi: gi[0].distance(middle))
    inside = geom.representative_point()
    target = (ident, inside.y, inside.x)
    page.mouse.click(*_map_point(page, target[1], target[2]))
    page.wait_for_function(f"resseg.decisions.get({target[0]}) === 'accepted'")
    page.click("#save")  # without the token: refused, and said
    page.wait_for_function("document.getElementById('status').textContent.includes('enter the token')")
    page.fill("#token", TOKEN)
    save_on_page(page, errors)
    saved = httpx.get(service + "/v1/scenes/scene_1/annotations").json()
    assert saved["version"] == before + 1
    kinds = [
        (f["properties"]["kind"], f["properties"].get("source")) for f in saved["annotations"]["features"]
    ]
    assert sorted(kinds, key=str) == sorted(
        [("area", None), ("building", "drawn"), ("building", "predicted")], key=str
    )
    page.reload()  # what was saved comes back
    page.wait_for_selector("path.leaflet-interactive", timeout=60_000)
    page.wait_for_function(
        "resseg.annotations.getLayers().length === 2 && resseg.decisions.size === 1", timeout=30_000
    )
    assert "1 areas, 1 drawn and 1 accepted buildings" in page.inner_text("#annotation-count")
    with page.expect_download(timeout=60_000) as download:  # the export, as the mapper downloads it
        page.click("#export-osm")
    assert download.value.suggested_filename == "scene_1_buildings.osm"
    text = Path(download.value.path()).read_text()
    assert 'upload="false"' in text and "reviewed on the map" in text
    assert not errors, errors
    page.close()


def test_suggested_regions_rank_the_most_uncertain_first(service) -> None:
    url = service + "/v1/scenes/scene_0/suggestions"
    r = httpx.get(url, params={"fraction": 0.2, "region": 64}, timeout=120)
    assert r.status_code == 200, r.text
    features = r.json()["features"]
    assert [f["properties"]["rank"] for f in features] == list(range(1, len(features) + 1)) and features
    entropy = [f["properties"]["mean_entropy_bits"] for f in features]
    assert entropy == sorted(entropy, reverse=True)
    w, s, e, n = httpx.get(service + "/v1/scenes/scene_0").json()["bounds"]
    for x, y in (p for f in features for p in f["geometry"]["coordinates"][0]):
        assert w - 1e-5 <= x <= e + 1e-5 and s - 1e-5 <= y <= n + 1e-5  # degrees, on the scene
    assert httpx.get(url, params={"fraction": 0.2, "region": 64}).content == r.content  # computed once
    assert httpx.get(url, params={"fraction": 0.9}).status_code == 400
    assert httpx.get(url, params={"region": 8}).status_code == 400


def test_a_mapper_adds_a_scene_from_the_page(service, browser, tmp_path) -> None:
    from tests.serving.service import BANDS, TOKEN, image

    path = image(tmp_path / "from the page.tif", h=260, w=300, seed=31, descriptions=BANDS)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(service + "/")
    page.wait_for_selector("#scenes button", timeout=60_000)
    page.click("#add summary")
    page.set_input_files("#add-file", path)
    page.fill("#token", TOKEN)
    page.click("#add-scene")
    try:
        page.wait_for_function(
            "document.getElementById('status').textContent.includes('added and segmented')", timeout=120_000
        )
    except Exception:
        raise AssertionError(f"not added: {page.inner_text('#status')}; errors {errors}") from None
    assert page.evaluate("resseg.state.scene.id") == "from-the-page"
    assert page.locator("#scenes button.active").inner_text().startswith("from-the-page")
    page.wait_for_function(
        "[...document.querySelectorAll('.leaflet-tile-loaded')]"
        ".some(t => t.src.includes('from-the-page/tiles/imagery'))",
        timeout=60_000,
    )
    assert not errors, errors
    page.close()


def test_the_api_is_documented_on_an_openapi_page_that_needs_no_internet(service, browser) -> None:
    spec = httpx.get(service + "/openapi.json").json()
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for needed in [
        ("GET", "/v1/scenes"),
        ("POST", "/v1/scenes"),
        ("DELETE", "/v1/scenes/{scene_id}"),
        ("GET", "/v1/scenes/{scene_id}/tiles/{layer}/{z}/{x}/{y}.png"),
        ("POST", "/v1/scenes/{scene_id}/annotations"),
        ("POST", "/v1/scenes/{scene_id}/refinements"),
        ("GET", "/v1/scenes/{scene_id}/refinements/{job}"),
        ("DELETE", "/v1/scenes/{scene_id}/refinements/{job}"),
        ("GET", "/v1/scenes/{scene_id}/export"),
        ("POST", "/v1/segment"),
    ]:
        assert needed in operations, needed
    for path in ("/v1/scenes", "/v1/scenes/{scene_id}/annotations", "/v1/scenes/{scene_id}/refinements"):
        assert "application/json" in spec["paths"][path]["post"]["requestBody"]["content"], path
    # the JSON answers are typed models, with their fields described on the page
    schemas = spec["components"]["schemas"]

    def answer(method: str, path: str, status: str = "200") -> str:
        ref = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        return ref["$ref"].rsplit("/", 1)[1]

    assert answer("get", "/v1/scenes") == "SceneList"
    assert answer("get", "/v1/model") == "ModelInfo" and answer("get", "/healthz") == "Health"
    assert answer("get", "/v1/scenes/{scene_id}/refinements") == "RefinementList"
    assert answer("get", "/v1/scenes/{scene_id}/refinements/{job}") == "RefinementRecord"
    assert answer("post", "/v1/scenes/{scene_id}/refinements", "202") == "RefinementRecord"
    assert answer("post", "/v1/scenes/{scene_id}/annotations") == "AnnotationsSaved"
    states = schemas["RefinementState"]["enum"]
    assert states == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert schemas["SceneState"]["enum"] == ["segmenting", "ready", "failed"]
    assert "model refined" in schemas["RefinementRecord"]["properties"]["parent"]["description"]
    map_param = next(
        p for p in spec["paths"]["/v1/scenes/{scene_id}/buildings"]["get"]["parameters"] if p["name"] == "map"
    )
    assert map_param["in"] == "query" and "refinement" in map_param["description"]
    page = browser.new_page()
    outside = offline(page, service)
    page.goto(service + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    assert page.locator(".opblock").count() == len(operations)
    assert not outside, outside
    page.close()
