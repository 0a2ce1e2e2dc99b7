"""The networks, model bundles, device policy and runtimes import without GDAL, Ray, MLflow,
PyYAML, OpenVINO or ONNX: the lent GPU image has torch but none of those (bench/gpu_check.py's
torch-only steps, bench/model_throughput.py among them, run there)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT

BLOCKER = """
import importlib.abc, sys
HEAVY = {"rasterio", "ray", "mlflow", "geopandas", "shapely", "pystac", "dask", "s3fs", "pyarrow", "yaml",
         "openvino", "onnxruntime", "onnx", "safetensors"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is not on the GPU image")
sys.meta_path.insert(0, Block())
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


def test_networks_bundles_the_device_policy_and_runtimes_need_no_gdal_ray_or_mlflow(tmp_path) -> None:
    env = {**os.environ, "RESSEG_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "cpu"
