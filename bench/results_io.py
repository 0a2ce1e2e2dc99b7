"""Shared by the benchmarks: a description of the machine and writing the results JSON."""

from __future__ import annotations

import json
import os
import platform


def cpu() -> dict:
    """The CPU model, its inference-relevant flags (AVX2, AVX-512, AMX) and bf16 units
    (:func:`resseg_ray.runtime.cpu_info`, the one reader of /proc/cpuinfo)."""
    from resseg_ray.runtime import cpu_info

    info = cpu_info()
    return {"model": info.model, "flags": list(info.flags), "bf16_units": info.bf16_units}


def machine() -> dict:
    """Platform, CPU model and flags, CPU count, torch version and GPU name (None without CUDA)."""
    import torch

    return {
        "platform": platform.platform(),
        "cpu": cpu(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_results(path: str, summary: dict) -> None:
    """Write ``summary`` as indented JSON to ``path`` (folders created) and say so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {path}")
