"""The runtime options through the jobs: the same map from every fp32 runtime, what ran in the
job's table and STAC item, and a one-line error for a precision the CPU cannot run."""

from __future__ import annotations

import json

import pytest
import rasterio

from resseg_ray.models import build_model
from resseg_ray.models.bundle import save_bundle
from tests.helpers import run_here, run_script
from tests.rasters import two_band_scene


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "m.resseg.safetensors"
    save_bundle(path, build_model("prop18", in_bands=2), norm_mean=[100, 100], norm_std=[50, 50])
    return str(path)


def _predict(bundle: str, scene: str, out, *flags: str):
    return run_script(
        "predict.py", "--model", bundle, "--scenes", scene, "--out", str(out), "--window", "64",
        "--overlap", "16", *flags,
    )  # fmt: skip


def test_every_fp32_runtime_makes_the_same_map(tmp_path, bundle) -> None:
    scene, _ = two_band_scene(tmp_path)
    masks = {}
    for runtime in ("torch", "onnxruntime", "openvino"):
        out = tmp_path / runtime
        proc = _predict(bundle, scene, out, "--runtime", runtime, "--precision", "fp32")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"{runtime} fp32" in proc.stdout  # the table says what ran
        with rasterio.open(out / "s_mask.tif") as src:
            masks[runtime] = src.read(1)
        item = json.loads((out / "s_item.json").read_text())
        props = item["properties"]
        assert props["resseg_ray:runtime"] == runtime and props["resseg_ray:precision"] == "fp32"
        assert props["resseg_ray:engine"] == f"{runtime} fp32"
    for runtime in ("onnxruntime", "openvino"):
        assert (masks[runtime] == masks["torch"]).mean() > 0.9999


def test_a_precision_the_cpu_cannot_run_is_one_error_line_and_no_output(tmp_path, bundle) -> None:
    scene, _ = two_band_scene(tmp_path)
    out = tmp_path / "out"
    proc = _predict(bundle, scene, out, "--precision", "fp16")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--precision fp16" in lines[0]
    assert "bf16" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_finetune_refuses_a_scoring_precision_the_cpu_lacks_before_any_training(
    tmp_path, bundle, capsys
) -> None:
    scene, _ = two_band_scene(tmp_path)
    args = ["--model", bundle, "--scene", scene, "--labels", scene, "--precision", "fp16"]
    proc = run_here("finetune.py", *args, capsys=capsys)  # a refusal: in this process, no start-up
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --precision fp16 is for CUDA GPUs"), proc.stderr
