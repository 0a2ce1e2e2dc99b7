"""Shared by the benchmarks: a description of the machine and writing the results JSON."""

from __future__ import annotations

import json
import os
import platform


def machine() -> dict:
    """Platform, CPU count, torch version and GPU name (None without CUDA)."""
    import torch

    return {
        "platform": platform.platform(),
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
