"""Portable ONNX models of a bundle, for other tools (QGIS's Deepness plugin, ONNX Runtime
anywhere): normalisation folded in (or recorded), a softmax at the end, Deepness's metadata,
and a check against PyTorch in ONNX Runtime before the file is published."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from resseg_ray import __version__
from resseg_ray.errors import ConfigError
from resseg_ray.models.base import SegmentationNet
from resseg_ray.models.bundle import ModelBundle
from resseg_ray.models.fuse import fold_batchnorm
from resseg_ray.runtime.onnx_graph import OPSET, ProbabilityGraph, export_onnx

ONNX_INPUTS = ("raw", "unit", "normalized")
"""What an exported model takes: ``raw`` band values as in the scenes (normalisation folded in),
``unit`` 8-bit values divided by 255 as QGIS's Deepness feeds them (x 255 and normalisation
folded in), or ``normalized`` values (normalisation recorded in the metadata only)."""
#: Largest |probability difference| between ONNX Runtime and PyTorch the check accepts.
MAX_DIFF = 1e-3


@dataclass
class OnnxExportReport:
    """What :func:`export_onnx_model` wrote and measured."""

    path: str
    size_bytes: int
    window: int
    input: str
    metadata: dict[str, str]
    max_abs_diff: float
    agreement: float
    seconds: float


def onnx_metadata(
    bundle: ModelBundle,
    window: int,
    overlap: int,
    input: str,
    resolution_cm: float | None,
    sha256: str | None,
) -> dict[str, str]:
    """The model's ``metadata_props``: Deepness's keys (JSON values: ``model_type``,
    ``class_names``, ``tile_size``, ``tiles_overlap`` in percent, ``resolution`` in cm/px,
    ``seg_thresh``) and ``resseg_*`` keys that say what the model expects."""
    info = bundle.info
    meta = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(i): n for i, n in enumerate(info.class_names)}),
        "tile_size": json.dumps(window),
        "tiles_overlap": json.dumps(round(100 * overlap / window)),
        "seg_thresh": json.dumps(0.5),
        "resseg_architecture": info.architecture,
        "resseg_band_names": json.dumps(info.band_names),
        "resseg_norm_mean": json.dumps(info.norm_mean),
        "resseg_norm_std": json.dumps(info.norm_std),
        "resseg_input": input,
        "resseg_normalization": str(info.extra.get("normalization", "pooled")),
        "resseg_version": __version__,
    }
    if resolution_cm is not None:
        meta["resolution"] = json.dumps(resolution_cm)
    if sha256:
        meta["resseg_model_sha256"] = sha256
    return meta


def check_onnx_options(window: int, overlap: int, input: str, resolution_cm: float | None) -> None:
    """Refuse options no export can honour (:class:`ConfigError` naming the flag)."""
    if input not in ONNX_INPUTS:
        raise ConfigError(f"--input must be one of {', '.join(ONNX_INPUTS)}, got {input!r}")
    if not 16 <= window <= 4096 or not 0 <= overlap < window:
        raise ConfigError(f"--window must be 16..4096 and --overlap 0..window-1, got {window} and {overlap}")
    if resolution_cm is not None and not (np.isfinite(resolution_cm) and resolution_cm > 0):
        raise ConfigError(f"--resolution-cm must be a number > 0, got {resolution_cm}")


def _check_window(bundle: ModelBundle, window: int, input: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded window of band values around the training statistics: (model input, PyTorch's
    probabilities through the bundle's own normalisation)."""
    info = bundle.info
    mean, std = np.asarray(info.norm_mean, np.float32), np.asarray(info.norm_std, np.float32)
    rng = np.random.default_rng(0)
    raw = rng.normal(mean[:, None, None], std[:, None, None], (2, info.in_bands, window, window))
    raw = np.clip(raw, 0, None).astype(np.float32)
    if input == "unit":
        raw = np.clip(np.round(raw), 0, 255).astype(np.float32)
    normalized = (raw - mean[:, None, None]) / std[:, None, None]
    with torch.inference_mode():
        want = torch.softmax(bundle.model.eval()(torch.from_numpy(normalized)), 1).numpy()
    given = {"raw": raw, "unit": raw / 255.0, "normalized": normalized}[input]
    return given.astype(np.float32), want


def export_onnx_model(
    bundle: ModelBundle,
    out: str | os.PathLike[str],
    *,
    window: int = 512,
    overlap: int = 112,
    input: str = "raw",
    resolution_cm: float | None = None,
    sha256: str | None = None,
    norm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> OnnxExportReport:
    """Write ``bundle`` as an ONNX model at ``out`` (windows of ``window`` pixels, batch dynamic)
    after checking it in ONNX Runtime against PyTorch on a seeded window; nothing is written
    when the export or the check fails (:class:`ConfigError`).

    ``norm``: the (mean, std) folded in instead of the bundle's, e.g. one scene's own statistics
    for a model trained with per-scene normalisation (recorded as ``resseg_norm_*``)."""
    import onnxruntime as ort

    check_onnx_options(window, overlap, input, resolution_cm)
    if norm is not None:
        mean, std = [float(v) for v in norm[0]], [float(v) for v in norm[1]]
        bundle = ModelBundle(bundle.model, dataclasses.replace(bundle.info, norm_mean=mean, norm_std=std))
    info = bundle.info
    net = cast(SegmentationNet, fold_batchnorm(bundle.model))
    if input == "normalized":
        graph = ProbabilityGraph(net, aligned=False)
    else:
        scale = 255.0 if input == "unit" else 1.0
        graph = ProbabilityGraph(net, aligned=False, scale=scale, mean=info.norm_mean, std=info.norm_std)
    meta = onnx_metadata(bundle, window, overlap, input, resolution_cm, sha256)
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=folder) as tmp:
        staged = os.path.join(tmp, "model.onnx")
        export_onnx(graph, staged, (1, info.in_bands, window, window), dynamic_sides=False, metadata=meta)
        session = ort.InferenceSession(staged, providers=["CPUExecutionProvider"])
        x, want = _check_window(bundle, window, input)
        got = np.asarray(session.run(None, {"image": x})[0])
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        agreement = float((got.argmax(1) == want.argmax(1)).mean()) if got.shape == want.shape else 0.0
        if not diff <= MAX_DIFF:
            raise ConfigError(
                f"the ONNX model of {info.architecture} differs from PyTorch by {diff:.3g} (> {MAX_DIFF}) "
                f"in ONNX Runtime {ort.__version__}; nothing written. Use the bundle with --runtime torch"
            )
        os.replace(staged, out)
    return OnnxExportReport(
        out, os.path.getsize(out), window, input, meta, diff, agreement, time.perf_counter() - start
    )


__all__ = [
    "ONNX_INPUTS",
    "OPSET",
    "OnnxExportReport",
    "check_onnx_options",
    "export_onnx_model",
    "onnx_metadata",
]
