"""STAC in and out through ``jobs/predict.py``: scenes from a catalog served over HTTP, an
item per scene beside the outputs (mask, probability, polygons, JOSM file; projection and
raster extensions; derived_from the source item; model and windowing recorded) and a
catalog valid under pystac's validate_all; re-runs keep it whole; a user's catalog.json is
never replaced; an empty search stops before anything is written."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pystac
import pytest

from resseg_ray.geo.stac_write import validate_catalog, write_scene_catalog
from resseg_ray.geo.storage import StorageSettings
from tests.helpers import run_here
from tests.rasters import ORIGIN, write_tif
from tests.stac_servers import stac_api, static_server

LOCAL = StorageSettings()
BANDS = ["blue", "green", "red", "nir"]


@pytest.fixture
def catalog_and_model(tmp_path: Path) -> tuple[Path, str]:
    import torch

    from resseg_ray.models import build_model
    from resseg_ray.models.bundle import save_bundle
    from tests.helpers import randomize_batchnorm

    rng = np.random.default_rng(0)
    scenes = []
    for i in range(2):
        data = rng.integers(1, 2000, size=(4, 64, 80)).astype(np.uint16)
        origin = (ORIGIN[0] + 1000.0 * i, ORIGIN[1])
        scenes.append(write_tif(tmp_path / f"s{i}.tif", data, nodata=0, descriptions=BANDS, origin=origin))
    when = dt.datetime(2023, 2, 7, tzinfo=dt.UTC)
    write_scene_catalog(scenes, str(tmp_path / "stac"), LOCAL, "event", rgb=(3, 2, 1), when=when)
    torch.manual_seed(0)
    model = str(tmp_path / "m.resseg.safetensors")
    net = randomize_batchnorm(build_model("prop18", in_bands=4))
    save_bundle(model, net, norm_mean=[1000.0] * 4, norm_std=[300.0] * 4, band_names=BANDS)
    return tmp_path / "stac", model


def test_predict_from_a_catalog_over_http_writes_a_valid_stac_catalog(
    catalog_and_model, tmp_path, capsys
) -> None:
    stac, model = catalog_and_model
    out = tmp_path / "maps"
    with static_server(str(stac)) as base:
        args = ("--model", model, "--scenes", f"{base}/catalog.json", "--out", str(out), "--osm",
                "--window", "64", "--overlap", "16", "--device", "cpu")  # fmt: skip
        proc = run_here("predict.py", *args, capsys=capsys)
        assert proc.returncode == 0, proc.stderr
        assert "STAC catalog" in proc.stdout and "2 items, valid" in proc.stdout
        href = str(out / "catalog.json")
        assert validate_catalog(href, LOCAL) == 3
        items = {i.id: i for i in pystac.Catalog.from_file(href).get_items()}
        assert sorted(items) == ["s0-analytic", "s1-analytic"]
        item = items["s0-analytic"]
        assert set(item.assets) == {"mask", "probability", "buildings", "osm"}
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).exists()
        assert item.properties["proj:code"] == "EPSG:32633" and item.properties["proj:shape"] == [64, 80]
        assert item.assets["probability"].extra_fields["raster:bands"][0]["scale"] == pytest.approx(0.004)
        assert item.properties["resseg_ray:architecture"] == "prop18"
        assert item.properties["resseg_ray:window"] == 64 and item.properties["resseg_ray:overlap"] == 16
        assert item.properties["resseg_ray:source_asset"] == "analytic"
        assert item.datetime == dt.datetime(
            2023, 2, 7, tzinfo=dt.UTC
        )  # the acquisition's, from the source item
        derived = item.get_single_link("derived_from")
        assert derived is not None and derived.href == f"{base}/event/s0/s0.json"
        again = run_here(
            "predict.py", *args, capsys=capsys
        )  # a re-run skips the scenes, the catalog stays whole
        assert again.returncode == 0 and "skipped" in again.stdout
        assert validate_catalog(href, LOCAL) == 3
        mine = {"type": "Catalog", "id": "mine", "description": "x", "stac_version": "1.1.0", "links": []}
        (out / "catalog.json").write_text(json.dumps(mine))
        refused = run_here("predict.py", *args, capsys=capsys)
    assert refused.returncode == 2 and "is not a STAC catalog resseg-ray wrote" in refused.stderr
    assert json.loads((out / "catalog.json").read_text())["id"] == "mine"


def test_an_empty_search_or_a_catalog_without_the_asset_stops_the_job(
    catalog_and_model, tmp_path, capsys
) -> None:
    stac, model = catalog_and_model
    common = ("--model", model, "--window", "64", "--overlap", "16", "--device", "cpu")
    with stac_api([]) as (url, _):
        proc = run_here("predict.py", *common, "--stac-search", url, "--bbox", "14", "45", "15", "46",
                        "--out", str(tmp_path / "a"), capsys=capsys)  # fmt: skip
    assert (
        proc.returncode == 2
        and "returned no item" in proc.stderr
        and "bbox [14.0, 45.0, 15.0, 46.0]" in proc.stderr
    )
    assert "widen the search (--bbox, --datetime, --collections)" in proc.stderr
    assert "--stac-asset" not in proc.stderr  # the asset is not what was wrong
    assert not (tmp_path / "a").exists()
    proc = run_here("predict.py", *common, "--scenes", str(stac / "catalog.json"), "--stac-asset", "pan",
                    "--out", str(tmp_path / "b"), capsys=capsys)  # fmt: skip
    assert proc.returncode == 2 and "no item holds asset 'pan'" in proc.stderr
    assert "item s0: it has no asset 'pan' (it has analytic, visual)" in proc.stderr  # the skips, as warnings
    bbox = ("--bbox", "1", "2", "3", "4")
    proc = run_here("predict.py", *common, "--scenes", str(stac / "catalog.json"), *bbox,
                    "--out", str(tmp_path / "c"), capsys=capsys)  # fmt: skip
    assert proc.returncode == 2 and "give --stac-search" in proc.stderr


def test_an_event_catalog_cut_into_quadkey_folders_maps_in_one_run(
    catalog_and_model, tmp_path, capsys
) -> None:
    """The open-data layout: one acquisition cut into ``<zone>/<quadkey>/<date>/`` folders whose
    files share a name (``10300100E1E84500-visual.tif``), items named ``<zone>_<quadkey>_<id>``.
    From the catalog the outputs are named by item id; given as files (a glob), by the quadkey
    folder that tells them apart; a re-run skips all three; nothing overwrites another."""
    _, model = catalog_and_model
    rng = np.random.default_rng(3)
    root = tmp_path / "Turkey-Earthquake-Feb-2023"
    collection = pystac.Collection(
        "Turkey-Earthquake-Feb-2023-10300100E1E84500", "one acquisition", pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
        )
    )  # fmt: skip
    quadkeys = ["031133012213", "031133012230", "031133012231"]
    for k, qk in enumerate(quadkeys):
        folder = root / "ard" / "37" / qk / "2023-02-07"
        folder.mkdir(parents=True)
        data = rng.integers(1, 2000, size=(4, 64, 80)).astype(np.uint16)
        tif = write_tif(folder / "10300100E1E84500-visual.tif", data, nodata=0, descriptions=BANDS,
                        origin=(ORIGIN[0] + 40.0 * k, ORIGIN[1]))  # fmt: skip
        item = pystac.Item(
            f"37_{qk}_10300100E1E84500", None, None, dt.datetime(2023, 2, 7, tzinfo=dt.UTC), {}
        )
        item.add_asset("visual", pystac.Asset(tif, media_type=pystac.MediaType.COG))
        collection.add_item(item)
    collection.normalize_hrefs(str(root))
    collection.make_all_asset_hrefs_relative()
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    common = ("--model", model, "--window", "64", "--overlap", "16", "--device", "cpu")

    out = tmp_path / "maps"
    args = (*common, "--scenes", str(root / "collection.json"), "--out", str(out), "--polygons")
    proc = run_here("predict.py", *args, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert "3 segmented" in proc.stdout and "3 items, valid" in proc.stdout
    names = [f"37_{qk}_10300100E1E84500" for qk in quadkeys]
    assert sorted(p.name for p in out.glob("*_mask.tif")) == [f"{n}_mask.tif" for n in names]
    assert sorted(p.name for p in out.glob("*_buildings.geojson")) == [
        f"{n}_buildings.geojson" for n in names
    ]
    items = {i.id: i for i in pystac.Catalog.from_file(str(out / "catalog.json")).get_items()}
    assert sorted(items) == names
    for n, qk in zip(names, quadkeys, strict=True):  # each output item derives from its own source
        assert (
            items[n].properties["resseg_ray:source"].endswith(f"/{qk}/2023-02-07/10300100E1E84500-visual.tif")
        )
        assert items[n].properties["resseg_ray:source_item"] == n
    again = run_here("predict.py", *args, capsys=capsys)
    assert again.returncode == 0 and "0 segmented" in again.stdout and "3 skipped" in again.stdout

    files = tmp_path / "files"
    glob = str(root / "ard" / "37" / "*" / "2023-02-07" / "*-visual.tif")
    proc = run_here("predict.py", *common, "--scenes", glob, "--out", str(files), "--no-stac", capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in files.glob("*_mask.tif")) == [
        f"10300100E1E84500-visual_{qk}_mask.tif" for qk in quadkeys
    ]


def test_a_catalog_listing_an_item_outside_out_never_touches_it(catalog_and_model, tmp_path, capsys) -> None:
    """A catalog.json of ours in --out, edited to list an item elsewhere: predict leaves that
    file as it was and writes a catalog of the items under --out only."""
    stac, model = catalog_and_model
    out = tmp_path / "maps"
    args = ("--model", model, "--scenes", str(stac / "catalog.json"), "--out", str(out),
            "--window", "64", "--overlap", "16", "--device", "cpu")  # fmt: skip
    assert run_here("predict.py", *args, capsys=capsys).returncode == 0
    outside = tmp_path / "elsewhere" / "x_item.json"
    outside.parent.mkdir()
    outside.write_bytes((out / "s0-analytic_item.json").read_bytes())
    before = outside.read_bytes()
    doc = json.loads((out / "catalog.json").read_text())
    doc["links"].append({"rel": "item", "href": str(outside), "type": "application/json"})
    (out / "catalog.json").write_text(json.dumps(doc))
    again = run_here("predict.py", *args, "--overwrite", capsys=capsys)
    assert again.returncode == 0, again.stderr
    assert outside.read_bytes() == before
    items = {
        Path(i.get_self_href()).parent
        for i in pystac.Catalog.from_file(str(out / "catalog.json")).get_items()
    }
    assert items == {out}
