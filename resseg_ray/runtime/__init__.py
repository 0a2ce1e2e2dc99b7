"""How a network runs: PyTorch, OpenVINO or ONNX Runtime, at fp32, bf16 or fp16, chosen per
machine (:func:`select_engine`), and the ONNX export shared by the runtimes and the portable
model export (:mod:`resseg_ray.runtime.onnx_graph`)."""

from resseg_ray.runtime.cpu import CpuInfo, cpu_info
from resseg_ray.runtime.engines import Engine
from resseg_ray.runtime.select import PRECISIONS, RUNTIMES, RuntimeFallback, candidates, select_engine

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "CpuInfo",
    "Engine",
    "RuntimeFallback",
    "candidates",
    "cpu_info",
    "select_engine",
]
