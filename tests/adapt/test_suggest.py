"""Annotation suggestions: the most uncertain regions first, covering the requested fraction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resseg_ray.adapt.suggest import suggest_regions
from resseg_ray.config import PredictSection
from resseg_ray.errors import InputDataError
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models import build_model
from resseg_ray.models.bundle import save_bundle
from tests.helpers import band_bundle, run_script
from tests.rasters import write_tif

S = StorageSettings()


def _scene(tmp_path) -> str:
    band = np.full((256, 320), 400, np.uint16)  # far above the mean: confident building
    band[64:128, 192:256] = 100  # exactly the mean: p = 0.5, entropy 1 bit
    band[128:192, 0:64] = 120  # close to the mean: second most uncertain
    band[:, 300:] = 0  # no data
    return write_tif(tmp_path / "s.tif", np.stack([band, band]), nodata=0)


def test_most_uncertain_regions_first_covering_the_fraction(tmp_path) -> None:
    scene = open_scene(_scene(tmp_path), S)
    predictor = ScenePredictor(band_bundle(), PredictSection(window=64, overlap=16, device="cpu"))
    fc = suggest_regions(predictor, scene, S, fraction=0.1, region=64)
    props = [f["properties"] for f in fc["features"]]
    assert [p["rank"] for p in props] == [1, 2]
    assert (props[0]["rows"], props[0]["cols"]) == ([64, 128], [192, 256])
    assert props[0]["mean_entropy_bits"] == pytest.approx(1.0, abs=1e-4)
    assert (props[1]["rows"], props[1]["cols"]) == ([128, 192], [0, 64])
    covered = sum(p["scene_fraction"] for p in props)
    assert 0.1 <= covered < 0.1 + props[-1]["scene_fraction"]
    x0, y0 = fc["features"][0]["geometry"]["coordinates"][0][0]
    assert (x0, y0) == scene.affine * (192, 64)
    with pytest.raises(InputDataError, match="between 0 and 1"):
        suggest_regions(predictor, scene, S, fraction=0.0)


def test_suggest_job_writes_a_ranked_geojson(tmp_path) -> None:
    bundle = tmp_path / "m.resseg.safetensors"
    save_bundle(bundle, build_model("prop18", in_bands=2), norm_mean=[100, 100], norm_std=[50, 50])
    out = tmp_path / "suggested.geojson"
    args = ["--model", str(bundle), "--scene", _scene(tmp_path), "--fraction", "0.2", "--region", "64"]
    proc = run_script("suggest_annotation.py", *args, "--window", "64", "--overlap", "16", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    feats = json.loads(out.read_text())["features"]
    assert [f["properties"]["rank"] for f in feats] == list(range(1, len(feats) + 1))
    entropies = [f["properties"]["mean_entropy_bits"] for f in feats]
    assert entropies == sorted(entropies, reverse=True)
    assert sum(f["properties"]["scene_fraction"] for f in feats) >= 0.2
