"""The Serve application over real HTTP on 127.0.0.1: every endpoint, the same output as the
batch path, every designed error, batches larger than one, and a crashed replica."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import numpy as np
import pytest
import rasterio

from resseg_ray.config import PredictSection
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.batch import predict_scene
from resseg_ray.inference.outputs import OutputOptions
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.inference.vectorize import PolygonOptions
from resseg_ray.models.bundle import load_bundle
from tests.helpers import free_port, poll
from tests.rasters import write_tif
from tests.serving.service import APP, OVERLAP
from tests.serving.service import image as _image


def _expected(bundle: str, image: str, fmt: str) -> np.ndarray | dict:
    """What the batch path (jobs/predict.py's predict_scene) gives on the same file."""
    predictor = ScenePredictor(
        load_bundle(bundle), PredictSection(window=OVERLAP[0], overlap=OVERLAP[1], device="cpu")
    )
    out = image + ".expected"
    options = OutputOptions(prob=fmt == "prob", polygons=PolygonOptions() if fmt == "geojson" else None)
    uris = predict_scene(predictor, image, out, StorageSettings(), options, overwrite=True).outputs
    if fmt == "geojson":
        with open(uris["buildings"]) as f:
            return json.load(f)
    with rasterio.open(uris[fmt]) as ds:
        return ds.read()


def _read(content: bytes) -> tuple[np.ndarray, rasterio.Affine, str]:
    with rasterio.MemoryFile(content) as mem, mem.open() as ds:
        return ds.read(), ds.transform, ds.crs.to_string()


def test_health_docs_and_model(service) -> None:
    assert httpx.get(service + "/healthz").json() == {"status": "ok"}
    assert httpx.get(service + "/docs").status_code == 200
    assert "/v1/segment" in httpx.get(service + "/openapi.json").json()["paths"]
    info = httpx.get(service + "/v1/model").json()
    assert info["architecture"] == "prop18" and info["bands"] == ["blue", "green", "red", "nir"]
    assert info["classes"] == ["ground", "building"]
    assert info["normalization"] == {"mode": "pooled", "mean": [1500.0] * 4, "std": [800.0] * 4}
    assert info["model_uri"].endswith("m.resseg.safetensors")
    assert info["engine"]["runtime"] in ("torch", "openvino", "onnxruntime")  # serve.runtime auto's choice
    assert info["engine"]["precision"] in ("fp32", "bf16") and info["engine"]["device"] == "cpu"


@pytest.mark.parametrize("fmt", ["mask", "prob", "geojson"])
def test_uploads_give_what_predict_gives(service, bundle, tmp_path, fmt: str) -> None:
    image = _image(tmp_path / "scene.tif")
    body = open(image, "rb").read()
    r = httpx.post(service + "/v1/segment", params={"format": fmt}, content=body, timeout=120)
    assert r.status_code == 200, r.text
    expected = _expected(bundle, image, fmt)
    # Batches on the replicas mix windows of other requests, and a convolution's float
    # rounding depends on the batch: probabilities may differ in the last bit, which moves
    # a uint8 probability by at most 1 and flips the mask only where p is about 0.5.
    if fmt == "geojson":
        assert r.headers["content-type"].startswith("application/geo+json")
        got, want = r.json()["features"], expected["features"]
        assert len(got) == len(want) > 0
        for g, w in zip(got, want, strict=True):
            assert g["geometry"] == w["geometry"]
            for k, v in w["properties"].items():
                assert g["properties"][k] == pytest.approx(v, abs=0.01), k
        return
    assert r.headers["content-type"] == "image/tiff"
    pixels, transform, crs = _read(r.content)
    with rasterio.open(image) as src:
        assert transform == src.transform and crs == src.crs.to_string()
    if fmt == "prob":
        assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1
        assert (pixels != expected).mean() < 1e-3
    else:
        prob = _expected(bundle, image, "prob")
        differ = pixels != expected
        assert np.all(np.abs(prob[differ].astype(int) - 125) <= 1), prob[differ]
    if fmt == "mask":
        assert (pixels[0, :20, :30] == 255).all()  # no data stays no data
        files = {"file": ("scene.tif", body, "image/tiff")}
        multipart = httpx.post(service + "/v1/segment", files=files, timeout=120)
        assert multipart.status_code == 200 and multipart.content == r.content


def test_an_allowed_s3_uri_is_segmented(service, bundle, s3_settings, tmp_path) -> None:
    import s3fs

    image = _image(tmp_path / "post.tif", seed=1)
    fs = s3fs.S3FileSystem(endpoint_url=s3_settings.endpoint_url)
    fs.makedirs("serve-allowed", exist_ok=True)  # also made by other tests of the service
    fs.put(image, "serve-allowed/post/event/post.tif")
    uri = "s3://serve-allowed/post/event/post.tif"
    r = httpx.post(service + "/v1/segment", json={"uri": uri}, timeout=120)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(_read(r.content)[0], _expected(bundle, image, "mask"))
    missing = httpx.post(service + "/v1/segment", json={"uri": "s3://serve-allowed/post/none.tif"})
    assert missing.status_code == 404 and "none.tif" in missing.json()["detail"]


def test_a_stac_item_names_the_scene_under_the_allowed_prefixes(
    service, bundle, s3_settings, tmp_path
) -> None:
    """``{"uri": item.json}`` (its relative asset resolved against it) and ``{"item": {...}}``
    segment the item's raster; an asset outside the allowed prefixes is 403 whatever the item
    says, and a document that is no item, or an item without a raster asset, is 422."""
    import s3fs

    image = _image(tmp_path / "post.tif", seed=1)
    fs = s3fs.S3FileSystem(endpoint_url=s3_settings.endpoint_url)
    fs.makedirs("serve-allowed", exist_ok=True)  # also made by the test of plain URIs
    fs.put(image, "serve-allowed/post/stac/a/a-visual.tif")
    geom = {"type": "Polygon", "coordinates": [[[14, 45], [14.01, 45], [14.01, 45.01], [14, 45]]]}

    def item(href: str, key: str = "visual", media: str = "image/tiff; application=geotiff") -> dict:
        return {"type": "Feature", "stac_version": "1.1.0", "id": "a", "geometry": geom,
                "bbox": [14, 45, 14.01, 45.01], "properties": {"datetime": "2023-02-07T00:00:00Z"},
                "links": [], "assets": {key: {"href": href, "type": media}}}  # fmt: skip

    fs.pipe("serve-allowed/post/stac/a/a.json", json.dumps(item("./a-visual.tif")).encode())
    expected = _expected(bundle, image, "mask")
    by_uri = httpx.post(
        service + "/v1/segment", json={"uri": "s3://serve-allowed/post/stac/a/a.json"}, timeout=120
    )
    assert by_uri.status_code == 200, by_uri.text
    np.testing.assert_array_equal(_read(by_uri.content)[0], expected)
    inline = {"item": item("s3://serve-allowed/post/stac/a/a-visual.tif"), "asset": "visual"}
    r = httpx.post(service + "/v1/segment", json=inline, timeout=120)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(_read(r.content)[0], expected)
    for href in ("/etc/passwd", "http://169.254.169.254/latest/meta-data", "s3://serve-allowed/other/x.tif"):
        r = httpx.post(service + "/v1/segment", json={"item": item(href)})
        assert r.status_code == 403 and href in r.json()["detail"], r.text
    r = httpx.post(
        service + "/v1/segment",
        json={"item": item("s3://serve-allowed/post/x.json", media="application/json")},
    )
    assert r.status_code == 422 and "not a raster" in r.json()["detail"]
    r = httpx.post(
        service + "/v1/segment", json={"item": item("s3://serve-allowed/post/x.tif", key="thumbnail")}
    )
    assert r.status_code == 422 and "none of the assets analytic, visual, data" in r.json()["detail"]
    r = httpx.post(service + "/v1/segment", json={"item": {"type": "Catalog", "id": "c", "links": []}})
    assert r.status_code == 422 and "not an item" in r.json()["detail"]
    r = httpx.post(service + "/v1/segment", json={"uri": "s3://serve-allowed/post/stac/none.json"})
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "/etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "/vsicurl/http://example.com/x.tif",
        "s3://serve-allowed/other/x.tif",
        "s3://serve-allowed/post/../secret/x.tif",
        "s3://serve-allowed/postscript/x.tif",
        "gs://serve-allowed/post/x.tif",
    ],
)
def test_uris_outside_the_allowed_prefixes_are_forbidden(service, uri: str) -> None:
    r = httpx.post(service + "/v1/segment", json={"uri": uri})
    assert r.status_code == 403, r.text
    assert uri in r.json()["detail"]


def test_bad_requests_get_clear_errors(service, tmp_path) -> None:
    post = lambda **kw: httpx.post(service + "/v1/segment", timeout=60, **kw)  # noqa: E731
    big = post(content=b"\0" * (2 * 1024 * 1024 + 1))
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    # 1200 x 1000 px from the header (a few kB of compressed zeros): refused before decoding
    huge = np.zeros((4, 1000, 1200), np.uint16)
    path = write_tif(tmp_path / "huge.tif", huge)
    r = post(content=open(path, "rb").read())
    assert r.status_code == 413 and "1200x1000" in r.json()["detail"]
    r = post(content=b"this is not a GeoTIFF")
    assert r.status_code == 415 and "not a readable raster" in r.json()["detail"]
    r = post(content=open(_image(tmp_path / "rgb.tif", bands=3), "rb").read())
    assert r.status_code == 422 and "3 bands" in r.json()["detail"] and "expects 4" in r.json()["detail"]
    assert post(content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    assert post(json={"url": "s3://serve-allowed/post/x.tif"}).status_code == 400
    assert post(params={"format": "jpeg"}, content=b"x").status_code == 422
    assert post(content=b"").status_code == 400


def _vrt(source: str, size: int = 64) -> bytes:
    """A VRT of 4 bands, each band 1 of ``source`` (a path or a /vsicurl/ URL)."""
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/></SimpleSource></VRTRasterBand>'
        for b in range(1, 5)
    )
    return f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">{bands}</VRTDataset>'.encode()


def test_an_uploaded_vrt_cannot_read_the_servers_disk(service, tmp_path) -> None:
    secret = _image(tmp_path / "secret.tif", h=64, w=64)  # a raster on the server's disk
    body = _vrt(secret)
    with rasterio.MemoryFile(body, ext=".vrt") as m, m.open() as ds:
        assert ds.read(1).any()  # the attack works without the allow-list
    r = httpx.post(service + "/v1/segment", content=body, timeout=60)
    assert r.status_code == 415 and "not a readable raster" in r.json()["detail"]


def test_an_uploaded_vrt_cannot_make_the_server_call_other_hosts(service, tmp_path) -> None:
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"/vsicurl/http://127.0.0.1:{server.server_address[1]}/internal/metadata.tif"
        r = httpx.post(service + "/v1/segment", content=_vrt(url), timeout=60)
        assert r.status_code == 415
        assert hits == []  # no request left the server
    finally:
        server.shutdown()


@pytest.mark.parametrize("driver", ["PNG", "AAIGrid", "HFA"])
def test_other_gdal_formats_are_refused(service, tmp_path, driver: str) -> None:
    data = np.random.default_rng(0).integers(1, 200, size=(1, 64, 64)).astype(np.uint8)
    path = tmp_path / f"image.{driver.lower()}"
    with rasterio.open(path, "w", driver=driver, width=64, height=64, count=1, dtype="uint8") as dst:
        dst.write(data)
    r = httpx.post(service + "/v1/segment", content=path.read_bytes(), timeout=60)
    assert r.status_code == 415 and "GeoTIFF" in r.json()["detail"]


def test_stalled_uploads_are_dropped_and_others_served(service, tmp_path) -> None:
    import socket
    import time

    host, port = service.removeprefix("http://").split(":")
    stalled = []
    for _ in range(4):  # more than the ingress's 2 ongoing + 2 queued slots
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(
            b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/tiff\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"II*\0" + b"\0" * 60
        )
        stalled.append(s)
    start = time.monotonic()
    body = open(_image(tmp_path / "ok.tif", h=64, w=64), "rb").read()
    ok = poll(
        lambda: httpx.post(service + "/v1/segment", content=body, timeout=30).status_code == 200,
        timeout=60,
        what="a normal request served beside stalled uploads",
    )
    assert ok
    codes = []
    for s in stalled:  # taken ones dropped with 408 (serve.body_idle_timeout_s=1), the rest 503
        answer = s.recv(4096)
        codes.append(answer[9:12])
        s.close()
    assert set(codes) <= {b"408", b"503"} and b"408" in codes, codes
    assert time.monotonic() - start < 60


def test_windows_of_concurrent_requests_share_batches(service, tmp_path) -> None:
    from ray import serve

    image = _image(tmp_path / "b.tif", h=256, w=480)
    body = open(image, "rb").read()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        send = lambda _: httpx.post(service + "/v1/segment", content=body, timeout=120)  # noqa: E731
        codes = list(pool.map(send, range(2)))
    assert [c.status_code for c in codes] == [200, 200]
    handle = serve.get_deployment_handle("SegmentModel", app_name=APP)
    sizes: dict[int, int] = {}
    for _ in range(8):  # both replicas (requests are spread over them)
        for k, v in handle.batch_sizes.remote().result().items():
            sizes[k] = max(sizes.get(k, 0), v)
    assert max(sizes) > 1, sizes


def test_overload_is_answered_503_not_a_hang(service, tmp_path) -> None:
    body = open(_image(tmp_path / "o.tif", h=480, w=480), "rb").read()  # 1.8 MB: under the limit

    def send(_):
        return httpx.post(service + "/v1/segment", content=body, timeout=300).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(send, range(10)))
    assert set(codes) <= {200, 503}, codes
    assert 503 in codes and 200 in codes, codes  # 2 ongoing + 2 queued at the ingress, the rest 503


def test_a_crashed_model_replica_is_replaced_while_the_other_answers(service, tmp_path) -> None:
    import ray
    from ray import serve

    handle = serve.get_deployment_handle("SegmentModel", app_name=APP)

    def replicas() -> set[str]:
        return {handle.source.remote().result(timeout_s=10)["replica"] for _ in range(12)}

    before = poll(lambda: len(replicas()) == 2 and replicas(), what="two model replicas")
    victim = sorted(before)[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    body = open(_image(tmp_path / "c.tif", h=128, w=128), "rb").read()
    # the surviving replica answers meanwhile (Serve routes around the dead one)
    poll(lambda: httpx.post(service + "/v1/segment", content=body, timeout=60).status_code == 200,
         timeout=60, what="an answer while a replica is down")  # fmt: skip
    after = poll(lambda: (r := replicas()) and len(r) == 2 and victim not in r and r, timeout=120,
                 what="a replacement replica")  # fmt: skip
    assert len(after & before) == 1  # the survivor kept serving; the victim was replaced
    assert serve.status().applications[APP].status == "RUNNING"
    assert httpx.post(service + "/v1/segment", content=body, timeout=60).status_code == 200
