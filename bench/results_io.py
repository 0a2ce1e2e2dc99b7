"""Shared by the benchmarks: a description of the machine and writing the results JSON."""

from __future__ import annotations

import json
import os
import platform


def cpu() -> dict:
    """The CPU model and its vector/matrix flags (AVX2, AVX-512, AMX) from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = sorted(x for x in value.split() if x.startswith(("avx", "amx", "fma")))
                    break
    except OSError:
        pass
    return {"model": model, "flags": flags}


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
