"""Experiments built on the stages below: the depth comparison of the paper's Table II.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.experiments.compare_depths import PAPER_ARCHS, Comparison, compare_architectures

__all__ = [
    "PAPER_ARCHS",
    "Comparison",
    "compare_architectures",
]

_EXPORTS = {
    "PAPER_ARCHS": "resseg_ray.experiments.compare_depths",
    "Comparison": "resseg_ray.experiments.compare_depths",
    "compare_architectures": "resseg_ray.experiments.compare_depths",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
