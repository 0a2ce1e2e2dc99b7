"""Scenes added to the map at run time over real HTTP: an uploaded GeoTIFF and an image named
by an allowed s3:// URI are kept as COGs, segmented by the service's model off the request and
shown like the configured scenes (tiles, outlines), found again by a fresh read of the folder
(a restart); every refusal (401, 400, 403, 409, 413, 415, 422) leaves nothing behind."""

from __future__ import annotations

import os

import httpx
import morecantile
import numpy as np
import pytest
from rio_cogeo.cogeo import cog_validate

from resseg_ray.geo.storage import StorageSettings
from resseg_ray.serving.scenes import load_map_scenes
from resseg_ray.serving.uploads import UploadStore
from tests.helpers import poll
from tests.rasters import write_tif
from tests.serving.service import BANDS, TOKEN, image

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIFF = {**AUTH, "Content-Type": "image/tiff"}
TMS = morecantile.tms.get("WebMercatorQuad")


def _ready(service: str, scene_id: str) -> dict:
    return poll(
        lambda: (
            (r := httpx.get(f"{service}/v1/scenes/{scene_id}", timeout=10).json())["state"] != "segmenting"
            and r
        ),
        timeout=120,
        interval=0.2,
        what=f"scene {scene_id} to be segmented",
    )


def test_an_uploaded_geotiff_is_segmented_and_shown_on_the_map(service, tmp_path) -> None:
    path = image(tmp_path / "post event.tif", h=300, w=340, seed=21, descriptions=BANDS)
    with open(path, "rb") as f:
        data = f.read()
    r = httpx.post(f"{service}/v1/scenes?name=added_1", content=data, headers=TIFF, timeout=60)
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "segmenting" and r.json()["id"] == "added_1"
    scene = _ready(service, "added_1")
    assert scene["state"] == "ready", scene
    assert scene["layers"] == ["imagery", "mask", "probability"] and scene["rgb"] == [3, 2, 1]
    assert "added_1" in [s["id"] for s in httpx.get(f"{service}/v1/scenes").json()["scenes"]]
    w, s, e, n = scene["bounds"]
    t = TMS.tile((w + e) / 2, (s + n) / 2, 18)
    for layer in ("imagery", "probability", "mask"):
        tile = httpx.get(f"{service}/v1/scenes/added_1/tiles/{layer}/{t.z}/{t.x}/{t.y}.png", timeout=30)
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png", (layer, tile.text)
    outlines = httpx.get(f"{service}/v1/scenes/added_1/buildings", timeout=30).json()
    assert len(outlines["features"]) == scene["building_count"]
    again = httpx.post(f"{service}/v1/scenes?name=added_1", content=data, headers=TIFF)
    assert again.status_code == 409  # the id is taken
    assert httpx.post(f"{service}/v1/scenes?name=scene_0", content=data, headers=TIFF).status_code == 409

    # what a restarted service reads: the COG, the outputs and their catalog in serve.scenes_dir
    record = httpx.get(f"{service}/v1/scenes/added_1").json()
    assert record["state"] == "ready"
    multipart = httpx.post(
        f"{service}/v1/scenes",
        files={"file": ("ignored.tif", data, "image/tiff")},
        params={"name": "added_2"},
        headers=AUTH,
        timeout=60,
    )
    assert multipart.status_code == 202, multipart.text
    assert _ready(service, "added_2")["state"] == "ready"
    removed = httpx.delete(f"{service}/v1/scenes/added_2", headers=AUTH)
    assert removed.status_code == 200 and httpx.get(f"{service}/v1/scenes/added_2").status_code == 404
    assert httpx.delete(f"{service}/v1/scenes/added_1").status_code == 401
    assert httpx.delete(f"{service}/v1/scenes/scene_0", headers=AUTH).status_code == 403
    assert httpx.delete(f"{service}/v1/scenes/nope", headers=AUTH).status_code == 404


def test_added_scenes_are_found_again_by_a_fresh_read_of_the_folder(service, tmp_path) -> None:
    from tests.serving import conftest

    folder = conftest.ADDED_DIR[0]
    store = UploadStore(folder)
    _ready(service, "added_1")
    assert "added_1" in store.ids() and store.load("added_1")["state"] == "ready"
    assert cog_validate(store.image("added_1"))[0]
    scenes = load_map_scenes([store.catalog("added_1")], StorageSettings())
    assert scenes["added_1"].imagery == store.image("added_1") and scenes["added_1"].buildings


def test_an_image_under_the_allowed_prefixes_is_added_by_its_uri(service, s3_settings, tmp_path) -> None:
    import s3fs

    path = image(tmp_path / "by-uri.tif", h=200, w=220, seed=22, descriptions=BANDS)
    fs = s3fs.S3FileSystem(endpoint_url=s3_settings.endpoint_url)
    fs.makedirs("serve-allowed", exist_ok=True)
    fs.put(path, "serve-allowed/post/added/by-uri.tif")
    r = httpx.post(
        f"{service}/v1/scenes", json={"uri": "s3://serve-allowed/post/added/by-uri.tif"}, headers=AUTH
    )
    assert r.status_code == 202 and r.json()["id"] == "by-uri", r.text
    assert _ready(service, "by-uri")["state"] == "ready"
    outside = httpx.post(f"{service}/v1/scenes", json={"uri": "s3://serve-allowed/other/x.tif"}, headers=AUTH)
    assert outside.status_code == 403
    local = httpx.post(f"{service}/v1/scenes", json={"uri": "/etc/passwd"}, headers=AUTH)
    assert local.status_code == 403


@pytest.mark.parametrize(
    ("make", "params", "status", "needle"),
    [
        (  # small on the wire (constant, compressed), too many pixels in its header
            lambda p: write_tif(p, np.full((4, 1100, 1000), 7, np.uint16)),
            {"name": "too_big"},
            413,
            "the limit is 1000000",
        ),
        (
            lambda p: p.write_bytes(b"not a raster at all") and str(p),
            {"name": "junk"},
            415,
            "not a readable raster",
        ),
        (lambda p: image(p, h=64, w=64, bands=3), {"name": "three"}, 422, "has 3 bands"),
        (lambda p: image(p, h=64, w=64), {"name": "../etc"}, 400, "letters, digits"),
        (lambda p: image(p, h=64, w=64), {"name": ".hidden"}, 400, "letters, digits"),
    ],
)
def test_bad_scenes_are_refused_and_leave_nothing(service, tmp_path, make, params, status, needle) -> None:
    from tests.serving import conftest

    path = tmp_path / "bad.tif"
    make(path)

    def listing() -> list[str]:  # the lock of the places for added scenes stays, as any lock file
        folder = conftest.ADDED_DIR[0]
        return sorted(set(os.listdir(folder)) - {".slots.lock"}) if os.path.isdir(folder) else []

    before = listing()
    r = httpx.post(f"{service}/v1/scenes", params=params, content=path.read_bytes(), headers=TIFF, timeout=60)
    assert r.status_code == status and needle in r.json()["detail"], r.text
    assert os.path.dirname(conftest.ADDED_DIR[0]) not in r.text  # file names, never server paths
    assert listing() == before  # no folder claimed, no incoming file or place left
    assert (
        httpx.post(
            f"{service}/v1/scenes", content=path.read_bytes(), headers={"Content-Type": "image/tiff"}
        ).status_code
        == 401
    )


def test_a_failed_scene_keeps_only_the_record_that_says_why(tmp_path) -> None:
    store = UploadStore(str(tmp_path))
    store.claim("s1", {"source": "upload"})
    (tmp_path / "s1" / "s1.tif").write_bytes(b"half")
    (tmp_path / "s1" / "out").mkdir()
    store.fail("s1", store.load("s1"), "the disk is full")
    assert sorted(os.listdir(tmp_path / "s1")) == ["scene.json"]
    assert store.load("s1")["state"] == "failed" and store.load("s1")["error"] == "the disk is full"
    with pytest.raises(FileExistsError):
        store.claim("s1", {})
    record = store.load("s1")
    record.update(state="segmenting", created="2020-01-01T00:00:00+00:00")
    store.write("s1", record)
    assert store.load("s1")["state"] == "failed"  # the service stopped while it segmented


def test_places_for_added_scenes_are_held_before_any_body_is_read(tmp_path) -> None:
    """8 additions at once with room for 3 (serve.max_added_scenes): exactly 3 get a place,
    held while their bodies arrive; a place is free again once its request ends, and a
    scene kept counts as one."""
    import contextlib
    import threading

    from resseg_ray.serving.uploads import SlotsFull, UploadStore

    store = UploadStore(str(tmp_path / "scenes"))
    inside = threading.Barrier(4)  # the 3 holders and this test
    release = threading.Event()
    got, full = [], []

    def add() -> None:
        try:
            with store.slot(3, stale_s=600):
                got.append(1)
                with contextlib.suppress(threading.BrokenBarrierError):  # a 4th holder: counted below
                    inside.wait(timeout=30)
                release.wait(timeout=30)  # "reading the body"
        except SlotsFull:
            full.append(1)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    inside.wait(timeout=30)  # three hold a place while "their bodies arrive" ...
    poll(lambda: len(full) == 5, timeout=30, what="the other five additions to be refused")
    assert len(got) == 3  # ... and the other five were refused meanwhile, not queued
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert (len(got), len(full)) == (3, 5)
    store.claim("kept", {"source": "upload"})  # one scene kept: two places left
    with store.slot(3, 600), store.slot(3, 600):
        with pytest.raises(SlotsFull, match="1 scenes kept and 2 being added"):
            with store.slot(3, 600):
                pass
