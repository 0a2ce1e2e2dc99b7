"""Scenes from STAC: a static event catalog (catalog -> collection -> items with analytic and
visual COGs, as the open-data catalogs are) served over HTTP on 127.0.0.1 and from the moto
S3 server, a STAC API searched by pystac-client, and what goes wrong with real catalogs:
items listed twice, missing children, items without the asset, assets that are not
rasters, items without projection information, empty searches."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import pytest

from resseg_ray.config import StacSection
from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.stac import resolve_scenes
from resseg_ray.geo.stac_write import validate_catalog, write_scene_catalog
from resseg_ray.geo.storage import StorageSettings
from tests.rasters import ORIGIN, write_tif
from tests.stac_servers import stac_api, static_server

LOCAL = StorageSettings()
WHEN = dt.datetime(2023, 2, 7, 8, 0, tzinfo=dt.UTC)


def _scenes(tmp_path: Path, n: int = 3) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        data = rng.integers(1, 2000, size=(4, 48, 64)).astype(np.uint16)
        origin = (ORIGIN[0] + 2000.0 * i, ORIGIN[1])  # 2 km apart: distinct footprints
        out.append(write_tif(tmp_path / "raw" / f"scene_{i}.tif", data, nodata=0, origin=origin))
    return out


@pytest.fixture
def event_catalog(tmp_path: Path) -> Path:
    """A static catalog of three scenes, then the oddities of real catalogs added to its
    collection: the first item listed twice, a child that does not exist, an item without any
    of the default assets, one whose 'analytic' asset is JSON, not a raster."""
    (tmp_path / "raw").mkdir()
    root = tmp_path / "stac"
    href = write_scene_catalog(_scenes(tmp_path), str(root), LOCAL, "quake-2023", rgb=(3, 2, 1), when=WHEN)
    assert validate_catalog(href, LOCAL) >= 4
    collection = pystac.Collection.from_file(str(root / "quake-2023" / "collection.json"))
    geom = {"type": "Polygon", "coordinates": [[[14, 45], [14.01, 45], [14.01, 45.01], [14, 45]]]}
    for name, key, media in (
        ("odd-thumb", "thumbnail", "image/png"),
        ("odd-json", "analytic", "application/json"),
    ):
        item = pystac.Item(name, geom, [14, 45, 14.01, 45.01], WHEN, {})
        item.add_asset(key, pystac.Asset(f"./{name}.bin", media_type=media))
        collection.add_item(item)
    collection.normalize_hrefs(str(root / "quake-2023"))
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    doc = json.loads((root / "quake-2023" / "collection.json").read_text())
    first = next(link for link in doc["links"] if link["rel"] == "item")
    doc["links"].append(dict(first))  # listed twice
    doc["links"].append({"rel": "child", "href": "./missing/collection.json", "type": "application/json"})
    (root / "quake-2023" / "collection.json").write_text(json.dumps(doc))
    return root


def _skips(inputs) -> str:
    return "\n".join(inputs.skipped)


def test_a_static_catalog_over_http_gives_each_scene_once_and_reports_the_rest(event_catalog) -> None:
    with static_server(str(event_catalog)) as base:
        inputs = resolve_scenes([f"{base}/catalog.json"], LOCAL, StacSection())
        assert inputs.uris == [f"{base}/quake-2023/scene_{i}/scene_{i}-analytic.tif" for i in range(3)]
        assert set(inputs.assets.values()) == {"analytic"}
        assert inputs.items[inputs.uris[0]].id == "scene_0"
        skipped = _skips(inputs)
        assert "missing/collection.json (listed in" in skipped and "cannot be read" in skipped
        assert (
            "item odd-thumb: it has none of the assets analytic, visual, data (it has thumbnail)" in skipped
        )
        assert "item odd-json: its asset 'analytic' is not a raster (application/json)" in skipped
        scene = open_scene(inputs.uris[1], LOCAL)  # the COG itself, read over HTTP by GDAL
        assert (scene.width, scene.height, scene.count) == (64, 48, 4)
        visual = resolve_scenes([f"{base}/catalog.json"], LOCAL, StacSection(asset="visual", max_items=2))
        assert [u.rsplit("/", 1)[-1] for u in visual.uris] == ["scene_0-visual.tif", "scene_1-visual.tif"]
        assert "more items than --stac-max-items 2" in _skips(visual)
        one = resolve_scenes([f"{base}/quake-2023/scene_2/scene_2.json"], LOCAL, StacSection())
        assert one.uris == [f"{base}/quake-2023/scene_2/scene_2-analytic.tif"]


def test_the_same_catalog_on_s3(event_catalog, s3_bucket, s3_settings) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_settings.endpoint_url)
    fs.put(str(event_catalog) + "/", f"{s3_bucket}/events/", recursive=True)
    inputs = resolve_scenes([f"{s3_bucket}/events/catalog.json"], s3_settings, StacSection())
    assert inputs.uris == [
        f"{s3_bucket}/events/quake-2023/scene_{i}/scene_{i}-analytic.tif" for i in range(3)
    ]
    assert open_scene(inputs.uris[0], s3_settings).width == 64


def test_a_stac_api_search_through_pystac_client(event_catalog) -> None:
    with static_server(str(event_catalog)) as base:
        items = []
        for i in range(3):
            item = pystac.Item.from_file(f"{base}/quake-2023/scene_{i}/scene_{i}.json")
            item.make_asset_hrefs_absolute()
            item.clear_links()  # as an API serves it: absolute asset hrefs, its own links only
            item.collection_id = "quake-2023"
            items.append(item.to_dict(include_self_link=False, transform_hrefs=False))
        west, south, east, north = items[0]["bbox"]
        with stac_api(items) as (url, requests):
            everything = resolve_scenes([], LOCAL, StacSection(search=url, collections=["quake-2023"]))
            assert [u.rsplit("/", 1)[-1] for u in everything.uris] == [
                f"scene_{i}-analytic.tif" for i in range(3)
            ]
            assert len(requests) == 2  # two pages of two
            near = resolve_scenes([], LOCAL, StacSection(search=url, bbox=[west, south, east, north]))
            assert [u.rsplit("/", 1)[-1] for u in near.uris] == ["scene_0-analytic.tif"]
            capped = resolve_scenes([], LOCAL, StacSection(search=url, max_items=2))
            assert len(capped.uris) == 2
            with pytest.raises(InputDataError, match=r"returned no item"):
                resolve_scenes([], LOCAL, StacSection(search=url, datetime="2020-01-01/2020-12-31"))
            with pytest.raises(InputDataError, match=r"returned no item"):
                resolve_scenes([], LOCAL, StacSection(search=url, collections=["another-event"]))
        with stac_api(items, loop=True) as (url, requests):  # "next" leads back to the first page
            looped = resolve_scenes([], LOCAL, StacSection(search=url))
            assert len(looped.uris) == 2 and len(requests) == 2
            assert "returned the same page of 2 items twice" in _skips(looped)


def test_catalogs_that_give_no_scene_are_refused(event_catalog, tmp_path) -> None:
    href = str(event_catalog / "catalog.json")
    with pytest.raises(InputDataError, match=r"no scene in .*catalog\.json: no item holds asset 'pan'"):
        resolve_scenes([href], LOCAL, StacSection(asset="pan"))
    odd = str(event_catalog / "quake-2023" / "odd-json" / "odd-json.json")
    with pytest.raises(InputDataError, match=r"not a raster \(application/json\)"):
        resolve_scenes([odd], LOCAL, StacSection())
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    with pytest.raises(InputDataError, match=r"notes\.json is not a"):
        resolve_scenes([str(tmp_path / "notes.json")], LOCAL, StacSection())
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputDataError, match=r"broken\.json \(a STAC document\) is not valid JSON"):
        resolve_scenes([str(tmp_path / "broken.json")], LOCAL, StacSection())
    with (
        static_server(str(tmp_path)) as base,
        pytest.raises(InputDataError, match=r"does not exist \(HTTP 404\)"),
    ):
        resolve_scenes([f"{base}/nothing/catalog.json"], LOCAL, StacSection())


def test_an_item_without_projection_information(tmp_path) -> None:
    """The raster's own georeferencing is what counts: an item without ``proj:`` fields whose
    COG has a CRS gives a scene; one whose raster has no CRS is a clear error when opened."""
    (tmp_path / "raw").mkdir()
    data = np.ones((4, 32, 32), np.uint16)
    located = write_tif(tmp_path / "raw" / "located.tif", data)
    bare = write_tif(tmp_path / "raw" / "bare.tif", data, crs=None)
    geom = {"type": "Polygon", "coordinates": [[[14, 45], [14.01, 45], [14.01, 45.01], [14, 45]]]}
    for name, raster in (("located", located), ("bare", bare)):
        item = pystac.Item(name, geom, [14, 45, 14.01, 45.01], WHEN, {})
        item.add_asset("analytic", pystac.Asset(raster, media_type=pystac.MediaType.COG))
        item.save_object(dest_href=str(tmp_path / f"{name}.json"), include_self_link=False)
    ok = resolve_scenes([str(tmp_path / "located.json")], LOCAL, StacSection())
    assert open_scene(ok.uris[0], LOCAL).crs
    no_crs = resolve_scenes([str(tmp_path / "bare.json")], LOCAL, StacSection())
    with pytest.raises(InputDataError, match=r"bare\.tif has no CRS"):
        open_scene(no_crs.uris[0], LOCAL)


def test_make_catalog_job(tmp_path, capsys) -> None:
    """``jobs/make_catalog.py``: a valid event catalog (re-runnable); bands the scenes lack and
    a catalog.json the job did not write are refused with nothing written."""
    from tests.helpers import assert_cogs, run_here

    (tmp_path / "raw").mkdir()
    _scenes(tmp_path, 2)
    raw = str(tmp_path / "raw")
    args = ("--scenes", raw, "--out", str(tmp_path / "cat"), "--rgb", "3", "2", "1",
            "--collection", "flood-2024", "--datetime", "2024-05-01T10:00")  # fmt: skip
    for _ in range(2):
        proc = run_here("make_catalog.py", *args, capsys=capsys)
        assert proc.returncode == 0, proc.stderr
        assert "2 items in collection flood-2024" in proc.stdout and "valid" in proc.stdout
    item = pystac.Item.from_file(str(tmp_path / "cat" / "flood-2024" / "scene_1" / "scene_1.json"))
    assert set(item.assets) == {"analytic", "visual"} and item.datetime.year == 2024
    assert_cogs(*(a.get_absolute_href() for a in item.assets.values()))  # rio-cogeo's validator
    bad = run_here("make_catalog.py", "--scenes", raw, "--out", str(tmp_path / "bad"), "--rgb", "3", "2", "7",
                   capsys=capsys)  # fmt: skip
    assert bad.returncode == 2 and "has 4 bands: --rgb [3, 2, 7]" in bad.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "catalog.json").write_text('{"id": "mine"}')
    refused = run_here("make_catalog.py", "--scenes", raw, "--out", str(tmp_path / "mine"), capsys=capsys)
    assert refused.returncode == 2 and "was not written by this job" in refused.stderr
    assert (tmp_path / "mine" / "catalog.json").read_text() == '{"id": "mine"}'
    # the user's own collection and items under the names the catalog would write: refused
    # (no catalog of ours lists the collection), every file as it was
    for folder, files in (
        ("own-collection", {"event/collection.json": '{"id": "theirs"}'}),
        ("own-item", {"event/scene_0/scene_0.json": '{"id": "theirs"}'}),
        ("own-asset", {"event/scene_1/scene_1-analytic.tif": "not ours"}),
    ):
        for name, text in files.items():
            (tmp_path / folder / name).parent.mkdir(parents=True)
            (tmp_path / folder / name).write_text(text)
        proc = run_here("make_catalog.py", "--scenes", raw, "--out", str(tmp_path / folder), capsys=capsys)
        assert proc.returncode == 2 and "exists and was not written by this job" in proc.stderr, proc.stderr
        assert sorted(
            str(p.relative_to(tmp_path / folder)) for p in (tmp_path / folder).rglob("*") if p.is_file()
        ) == list(files)
        assert all((tmp_path / folder / n).read_text() == t for n, t in files.items())


def test_catalogs_that_never_end_are_cut_short(tmp_path, monkeypatch) -> None:
    """Children nested without end stop at MAX_DEPTH with a line saying so (not at Python's
    recursion limit); a document trickled a byte at a time is abandoned at the deadline."""
    import http.server
    import threading

    from resseg_ray.geo import http as geo_http
    from resseg_ray.geo import stac, storage

    for depth in range(40):  # catalog d0 -> d1 -> ... -> d39
        doc = {"type": "Catalog", "id": f"d{depth}", "stac_version": "1.1.0", "description": "x",
               "links": [{"rel": "root", "href": "./d0.json", "type": "application/json"}]}  # fmt: skip
        if depth < 39:
            doc["links"].append({"rel": "child", "href": f"./d{depth + 1}.json", "type": "application/json"})
        (tmp_path / f"d{depth}.json").write_text(json.dumps(doc))
    with pytest.raises(InputDataError, match="no scene in") as e:
        resolve_scenes([str(tmp_path / "d0.json")], LOCAL, StacSection())
    assert f"nests catalogs more than {stac.MAX_DEPTH} levels deep" in str(e.value)

    stop = threading.Event()  # set at the end: the trickling handler stops at once

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):  # a byte every 0.1 s: each read is on time, the whole never is
                if stop.wait(0.1):  # the server's pace, not a wait for readiness
                    return
                self.wfile.write(b" ")
                self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(geo_http, "HTTP_TIMEOUT_S", 1.0)
    try:
        with pytest.raises(InputDataError, match=r"did not arrive within 1 s"):
            storage.read_bytes(f"http://127.0.0.1:{server.server_address[1]}/catalog.json", LOCAL)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
