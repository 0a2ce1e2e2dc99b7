"""Python start-up hook that makes this interpreter look like the lent GPU image: torch is
there, but not GDAL's rasterio, Ray, MLflow, PyYAML, OpenVINO, ONNX or the other packages of
HEAVY. Put this folder first on PYTHONPATH: every ``import`` of them then fails with
ModuleNotFoundError, and ``importlib.util.find_spec`` answers None, as for a package that is
not installed (torch's own optional-import probes use it)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

HEAVY = {
    "rasterio", "ray", "mlflow", "geopandas", "shapely", "pystac", "dask", "s3fs", "pyarrow", "yaml",
    "openvino", "onnxruntime", "onnx", "safetensors",
}  # fmt: skip


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name.split(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU image)", name=name)
        return None


_find_spec = importlib.util.find_spec


def _find_spec_absent(name, package=None):  # type: ignore[no-untyped-def]
    if name.split(".")[0] in HEAVY:
        return None
    return _find_spec(name, package)


sys.meta_path.insert(0, _Absent())
importlib.util.find_spec = _find_spec_absent
