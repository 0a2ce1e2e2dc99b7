"""Portable ONNX models (jobs/export_onnx.py): what QGIS's Deepness reads, the same map as the
predictor on a real GeoTIFF's pixels, and refusals that leave nothing behind."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import rasterio

from resseg_ray.config import PredictSection
from resseg_ray.geo.scene import open_scene
from resseg_ray.geo.storage import StorageSettings
from resseg_ray.inference.predictor import ScenePredictor
from resseg_ray.models import build_model
from resseg_ray.models.bundle import load_bundle, save_bundle
from tests.helpers import run_here, run_script
from tests.rasters import write_tif


@pytest.fixture(scope="module")
def per_scene_bundle(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "m.resseg.safetensors"
    save_bundle(
        path,
        build_model("prop18", in_bands=2),
        norm_mean=[100, 80],
        norm_std=[50, 40],
        extra={"normalization": "per_scene"},
    )
    return str(path)


def _scene(tmp_path) -> str:
    rng = np.random.default_rng(3)
    return write_tif(tmp_path / "scene.tif", rng.integers(20, 250, size=(2, 64, 64)).astype(np.uint8))


def _run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0])


def test_the_onnx_model_maps_a_scene_as_the_predictor_does(tmp_path, per_scene_bundle) -> None:
    scene = _scene(tmp_path)
    out = tmp_path / "m.onnx"
    proc = run_script(
        "export_onnx.py", "--model", per_scene_bundle, "--out", str(out), "--window", "64", "--overlap", "16",
        "--stats-from", scene, "--resolution-cm", "50",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "classes agree on 100.000 %" in proc.stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    # Deepness reads these with json.loads
    assert json.loads(meta["model_type"]) == "Segmentor"
    assert json.loads(meta["class_names"]) == {"0": "ground", "1": "building"}
    assert json.loads(meta["tile_size"]) == 64 and json.loads(meta["tiles_overlap"]) == 25
    assert json.loads(meta["resolution"]) == 50.0 and meta["resseg_input"] == "raw"
    assert session.get_inputs()[0].shape[1:] == [2, 64, 64]
    assert session.get_outputs()[0].shape[1:] == [2, 64, 64]
    with rasterio.open(scene) as src:
        raw = src.read().astype(np.float32)
    got = _run(session, raw[None])[0]
    options = PredictSection(window=64, overlap=16, runtime="torch", precision="fp32", device="cpu")
    predictor = ScenePredictor(load_bundle(per_scene_bundle), options)
    settings = StorageSettings()
    (strip,) = list(predictor.strips(open_scene(scene, settings), settings))
    assert np.abs(got - strip.probs).max() < 1e-4  # the scene's own statistics, folded in


def test_unit_input_takes_8_bit_values_over_255_as_deepness_feeds_them(tmp_path, per_scene_bundle) -> None:
    scene = _scene(tmp_path)
    raw_model, unit_model = tmp_path / "raw.onnx", tmp_path / "unit.onnx"
    for path, kind in ((raw_model, "raw"), (unit_model, "unit")):
        proc = run_script(
            "export_onnx.py", "--model", per_scene_bundle, "--out", str(path), "--window", "64",
            "--input", kind, "--stats-from", scene,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    with rasterio.open(scene) as src:
        raw = src.read().astype(np.float32)[None]
    a = _run(ort.InferenceSession(str(raw_model)), raw)
    b = _run(ort.InferenceSession(str(unit_model)), raw / 255.0)
    assert np.abs(a - b).max() < 1e-4


def test_a_per_scene_model_without_scene_statistics_is_exported_with_a_warning(
    tmp_path, per_scene_bundle
) -> None:
    proc = run_script(
        "export_onnx.py", "--model", per_scene_bundle, "--out", str(tmp_path / "m.onnx"), "--window", "64"
    )
    assert proc.returncode == 0 and "warning: " in proc.stderr and "--stats-from SCENE" in proc.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--out", "{tmp}/m.txt"], "with a .onnx suffix"),
        (["--out", "{tmp}/existing.onnx"], "exists; choose another file or add --overwrite"),
        (["--out", "{tmp}/no/such/m.onnx"], "its folder does not exist"),
        (["--out", "{tmp}/m.onnx", "--window", "8"], "--window must be 16..4096"),
        (["--out", "{tmp}/m.onnx", "--resolution-cm", "-1"], "--resolution-cm must be a number > 0"),
    ],
)
def test_bad_requests_are_one_error_line_and_write_nothing(
    tmp_path, per_scene_bundle, args, says, capsys
) -> None:
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"the user's file")
    before = sorted(p.name for p in tmp_path.iterdir())
    # in this process (the export itself runs as a user runs it above): refusals need no start-up
    bad = [a.format(tmp=tmp_path) for a in args]
    proc = run_here("export_onnx.py", "--model", per_scene_bundle, *bad, capsys=capsys)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert existing.read_bytes() == b"the user's file"
