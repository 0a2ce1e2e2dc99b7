"""``POST /v1/damage`` over real HTTP on the running service: a pair (uploaded as two
multipart files, or named as allowed s3:// URIs) mapped as ``resseg damage`` maps it, by
the damage network's own deployment, in each format; the checks of ``/v1/segment`` for each
image, and a pair that does not overlap, answered with what is wrong and which image."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import rasterio

from resseg_ray.config import PredictSection
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.damage import map_damage
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models.bundle import load_bundle
from tests.rasters import write_tif
from tests.serving.service import BANDS, OVERLAP, image


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("pair")
    return (
        image(folder / "pre.tif", h=200, w=240, seed=21, descriptions=BANDS),
        image(folder / "post.tif", h=200, w=240, seed=22, descriptions=BANDS),
    )


def _files(pre: str, post: str) -> dict:
    return {"pre": ("pre.tif", open(pre, "rb").read(), "image/tiff"),
            "post": ("post.tif", open(post, "rb").read(), "image/tiff")}  # fmt: skip


def _pixels(content: bytes) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.MemoryFile(content) as mem, mem.open() as ds:
        return ds.read(), ds.transform


def test_a_pair_is_mapped_as_resseg_damage_maps_it(service, damage_bundle, pair, tmp_path) -> None:
    pre, post = pair
    predictor = ScenePredictor(
        load_bundle(damage_bundle), PredictSection(window=OVERLAP[0], overlap=OVERLAP[1], device="cpu")
    )
    want = map_damage(predictor, pre, post, str(tmp_path / "expected"), StorageSettings(), "pair").outputs
    got = {}
    for fmt in ("damage", "prob", "geojson", "summary"):
        r = httpx.post(service + "/v1/damage", params={"format": fmt}, files=_files(pre, post), timeout=120)
        assert r.status_code == 200, r.text
        got[fmt] = r
    # the class raster on the pre scene's grid; a window's float rounding depends on the batch
    # it ran in on the replicas (other requests' windows), so a class may flip where two tie
    classes, transform = _pixels(got["damage"].content)
    with rasterio.open(want["damage"]) as ds, rasterio.open(pre) as src:
        expected = ds.read()
        assert transform == src.transform
    assert set(np.unique(classes).tolist()) <= {0, 1, 2, 3, 4, 255} and len(np.unique(classes)) > 2
    assert (classes != expected).mean() < 1e-3 and (classes[0, :20, :30] == 255).all()
    probs, _ = _pixels(got["prob"].content)
    with rasterio.open(want["prob"]) as ds:
        assert probs.shape == (5, 200, 240) and np.abs(probs.astype(int) - ds.read().astype(int)).max() <= 1
    assert got["geojson"].headers["content-type"].startswith("application/geo+json")
    features = got["geojson"].json()["features"]
    with open(want["buildings"]) as f:
        assert len(features) == len(json.load(f)["features"]) > 0
    assert all(f["properties"]["damage"] in ("no-damage", "minor-damage", "major-damage", "destroyed")
               and 0 <= f["properties"]["confidence"] <= 1 for f in features)  # fmt: skip
    summary = got["summary"].json()
    assert summary["total"] == len(features) == sum(summary["buildings"].values())
    assert summary["pre"] is None and summary["post"] is None  # no server paths in any answer
    assert "/tmp" not in got["geojson"].text and b"/tmp" not in got["damage"].content
    assert got["damage"].headers["content-disposition"] == 'attachment; filename="pair_damage.tif"'
    assert "/v1/damage" in httpx.get(service + "/openapi.json").json()["paths"]


def test_a_pair_named_by_allowed_s3_uris_is_mapped(service, pair, s3_settings) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_settings.endpoint_url)
    fs.makedirs("serve-allowed", exist_ok=True)  # also made by other tests of the service
    fs.put(pair[0], "serve-allowed/post/pair/pre.tif")
    fs.put(pair[1], "serve-allowed/post/pair/post.tif")
    doc = {"pre": {"uri": "s3://serve-allowed/post/pair/pre.tif"},
           "post": {"uri": "s3://serve-allowed/post/pair/post.tif"}}  # fmt: skip
    r = httpx.post(service + "/v1/damage", json=doc, timeout=120)
    assert r.status_code == 200, r.text
    uploaded = httpx.post(service + "/v1/damage", files=_files(*pair), timeout=120)
    a, b = _pixels(r.content)[0], _pixels(uploaded.content)[0]
    assert (a != b).mean() < 1e-3
    outside = {**doc, "post": {"uri": "s3://serve-allowed/other/post.tif"}}
    r = httpx.post(service + "/v1/damage", json=outside, timeout=60)
    assert r.status_code == 403 and "outside the allowed prefixes" in r.json()["detail"]


def test_bad_pairs_get_clear_errors(service, pair, tmp_path) -> None:
    pre, post = pair

    def send(**kw) -> httpx.Response:
        return httpx.post(service + "/v1/damage", timeout=60, **kw)

    r = send(files={"pre": _files(pre, post)["pre"]})
    assert r.status_code == 400 and "no file 'post'" in r.json()["detail"]
    r = send(content=open(pre, "rb").read())  # one raw image: a pair needs two
    assert r.status_code == 400 and "multipart files pre and post" in r.json()["detail"]
    r = send(json={"pre": {"uri": "s3://serve-allowed/post/pair/pre.tif"}})
    assert r.status_code == 400
    rgb = image(tmp_path / "rgb.tif", h=200, w=240, bands=3)
    r = send(files=_files(rgb, post))
    detail = r.json()["detail"]
    assert r.status_code == 422 and detail.startswith("the pre has 3 bands but the model expects 4"), detail
    huge = write_tif(tmp_path / "huge.tif", np.zeros((4, 1000, 1200), np.uint16))
    r = send(files=_files(pre, huge))
    assert r.status_code == 413 and "the post is 1200x1000" in r.json()["detail"]
    r = send(files=_files(pre, str(tmp_path / "rgb.tif")), params={"format": "jpeg"})
    assert r.status_code == 422
    far = image(tmp_path / "far.tif", h=200, w=240, seed=5)
    with rasterio.open(far, "r+") as ds:  # the same scene 10 km east: no overlap
        ds.transform = ds.transform * rasterio.Affine.translation(20_000, 0)
    r = send(files=_files(pre, far))
    assert r.status_code == 422 and "overlap" in r.json()["detail"], r.text
