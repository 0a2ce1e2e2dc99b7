"""Building polygon files: GeoJSON, GeoParquet and FlatGeobuf hold the same buildings and
the provenance record, read back by the field's readers (geopandas, pyogrio)."""

from __future__ import annotations

import json

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import box, mapping

from resseg_ray.geo.vectors import read_provenance, write_vector

UTM = "EPSG:32633"


def _collection(n: int) -> dict:
    feats = [
        {
            "type": "Feature",
            "properties": {"id": i, "area": 50.0 + i, "mean_probability": 0.5 + i / 10},
            "geometry": mapping(box(452000 + 20 * i, 5043000, 452010 + 20 * i, 5043005)),
        }
        for i in range(n)
    ]
    return {"type": "FeatureCollection", "features": feats}


@pytest.mark.parametrize("suffix", [".geojson", ".parquet", ".fgb"])
@pytest.mark.parametrize("n", [3, 0])
def test_each_format_holds_the_buildings_and_their_provenance(tmp_path, suffix: str, n: int) -> None:
    path = str(tmp_path / f"b{suffix}")
    provenance = {"RESSEG_RAY_SOURCE": "s3://bucket/post/scene.tif"}
    write_vector(_collection(n), UTM, path, provenance)
    assert read_provenance(path, open(path, "rb").read()) == provenance
    if suffix == ".parquet":
        frame = gpd.read_parquet(path)  # GeoParquet: geometry column and CRS from its metadata
    else:
        frame = gpd.read_file(path) if suffix == ".fgb" else None
    if frame is not None:
        assert len(frame) == n
        if n:
            assert frame.crs.to_epsg() == 32633
            assert sorted(frame["area"]) == [50.0, 51.0, 52.0]
            assert frame.geometry.area.round(6).tolist() == [50.0] * 3
    else:
        doc = json.loads(open(path).read())
        assert len(doc["features"]) == n
    if suffix == ".fgb":
        assert pyogrio.read_info(path)["geometry_type"] == "MultiPolygon"


def test_a_file_that_is_not_its_format_has_no_provenance(tmp_path) -> None:
    for name in ("x.geojson", "x.parquet", "x.fgb"):
        assert read_provenance(name, b"not a vector file") == {}
    assert read_provenance("x.geojson", b"[1, 2]") == {}
