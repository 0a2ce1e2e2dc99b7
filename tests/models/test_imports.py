"""The networks, model bundles, device policy and runtimes import without GDAL, Ray, MLflow,
PyYAML, OpenVINO or ONNX: the lent GPU image has torch but none of those (bench/gpu_check.py's
torch-only steps, bench/model_throughput.py among them, run there)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT

ON_THE_GPU_IMAGE = """
import sys
import torch
from resseg_ray.device import DevicePolicy
from resseg_ray.models import build_model, load_bundle, save_bundle
from resseg_ray.runtime import select_engine
net = build_model("prop18", in_bands=4)
policy = DevicePolicy.resolve("cpu")
engine = select_engine(net, policy, "auto", "auto", (1, 4, 64, 64))  # torch only: nothing else here
assert engine.runtime == "torch", engine.describe()
assert engine.forward(torch.zeros(1, 4, 64, 64).numpy()).shape == (1, 2, 64, 64)
sys.path.insert(0, "bench")
import model_throughput  # the GPU check's model steps
print(policy.describe()["device"], type(net).__name__)
"""


GPU_IMAGE = str(ROOT / "tests" / "gpu_image")
"""A sitecustomize that hides the packages the GPU image lacks (see its docstring)."""


def _gpu_image_env(tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "RESSEG_CACHE_DIR": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([GPU_IMAGE, str(ROOT)]),
    }


def test_networks_bundles_the_device_policy_and_runtimes_need_no_gdal_ray_or_mlflow(tmp_path) -> None:
    env = _gpu_image_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", ON_THE_GPU_IMAGE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "cpu"


def test_the_gpu_checks_torch_only_steps_run_on_the_gpu_image(tmp_path) -> None:
    """bench/gpu_check.py as it runs on the lent GPU machine (``PYTHONPATH=. python3
    bench/gpu_check.py``), in its CPU dry run: its DDP and model steps run with torch alone, the
    steps that need Ray are recorded as not run, naming what they need. A lent GPU minute is
    too rare to find an import error with."""
    import json

    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--quick", "--out", str(out),
         "--only", "ddp_prop18", "model_fp32", "train_prop18"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=_gpu_image_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    steps = json.loads(out.read_text())["steps"]
    assert steps["ddp_prop18"]["status"] == "ok", steps["ddp_prop18"]
    assert steps["ddp_prop18"]["figures"]["steps_per_s"] > 0
    assert steps["model_fp32"]["status"] == "ok", steps["model_fp32"]
    assert steps["train_prop18"]["status"].startswith("not run: needs ray"), steps["train_prop18"]
