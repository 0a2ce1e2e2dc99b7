"""The typed report of a predict run: its table, its lines and its JSON."""

from __future__ import annotations

import json

from resseg_ray.inference.batch import SceneReport
from resseg_ray.inference.report import FORMAT, PredictReport, status

DONE = SceneReport("s3://b/post/a.tif", {"mask": "out/a_mask.tif"}, 2.0, 4.0, buildings=12, already_mapped=3,
                   engine="openvino bf16")  # fmt: skip
SKIPPED = SceneReport("b.tif", {"mask": "out/b_mask.tif"}, skipped=True)
FAILED = SceneReport("c.tif", error="c.tif is not a raster")


def test_a_report_counts_each_scene_once_and_says_its_status() -> None:
    report = PredictReport([DONE, SKIPPED, FAILED], "out", polygons=True, existing="osm.geojson")
    assert [status(r) for r in report.scenes] == ["done", "skipped", "failed"]
    assert (report.megapixels, report.seconds) == (4.0, 2.0)
    header, *rows = report.table().splitlines()
    assert header.split()[-3:] == ["buildings", "mapped", "status"]
    assert rows[0].split()[-4:] == ["bf16", "12", "3", "done"] and rows[2].endswith("failed")
    lines = report.lines()
    assert "3 predicted buildings left out as already mapped in osm.geojson" in lines
    assert lines[-1] == "1 segmented (4.0 Mpx in 2.0 s), 1 skipped, 1 failed; outputs under out"


def test_the_json_report_holds_every_field_and_the_totals() -> None:
    report = PredictReport([DONE, FAILED], "out", catalog="out/catalog.json", catalog_items=1)
    doc = json.loads(report.to_json())
    assert doc["format"] == FORMAT and (doc["segmented"], doc["skipped"], doc["failed"]) == (1, 0, 1)
    first = doc["scenes"][0]
    assert first["mpx_per_s"] == 2.0 and first["engine"] == "openvino bf16" and first["status"] == "done"
    assert doc["scenes"][1]["error"] == "c.tif is not a raster"
    assert (doc["catalog"], doc["catalog_items"], doc["existing"]) == ("out/catalog.json", 1, None)
    assert "buildings" not in report.table().splitlines()[0]  # no polygons asked for: no column
