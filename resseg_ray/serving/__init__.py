"""The segmentation service on Ray Serve: the HTTP API and the batched model deployment.

Importing the package loads nothing more: each name below is imported on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resseg_ray.serving.app import build_app, model_uri

__all__ = [
    "build_app",
    "model_uri",
]

_EXPORTS = {
    "build_app": "resseg_ray.serving.app",
    "model_uri": "resseg_ray.serving.app",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
