"""The networks, model bundles and device policy import without GDAL, Ray or MLflow: the lent
GPU image has torch but none of those (bench/gpu_check.py's torch-only steps run there)."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import importlib.abc, sys
HEAVY = {"rasterio", "ray", "mlflow", "geopandas", "shapely", "pystac", "dask", "s3fs", "pyarrow"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is not on the GPU image")
sys.meta_path.insert(0, Block())
import torch
from resseg_ray.device import DevicePolicy
from resseg_ray.models import build_model, load_bundle, save_bundle
net = build_model("prop18", in_bands=4)
print(DevicePolicy.resolve("cpu").describe()["device"], type(net).__name__)
"""


def test_networks_bundles_and_the_device_policy_need_no_gdal_ray_or_mlflow() -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "cpu"
