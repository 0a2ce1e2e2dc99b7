"""Inference engines: one network run by one runtime at one precision, windows in,
class probabilities out, every engine giving the network's own output for any window size.

- :class:`TorchEngine`: the network in PyTorch on the device policy's device, with its
  autocast (fp32, bf16, or fp16 on CUDA).
- :class:`OpenVINOEngine`: the exported graph compiled by OpenVINO's CPU plugin, fp32 or bf16
  (``INFERENCE_PRECISION_HINT`` set explicitly: the plugin would pick bf16 by itself on AMX
  CPUs), one compiled model per window size, OpenVINO's own cache of compiled blobs.
- :class:`OnnxRuntimeEngine`: the exported graph in ONNX Runtime's CPU provider (fp32).

The exported graphs take windows whose sides are multiples of the network's size multiple:
these engines pad other windows exactly as the network does
(:func:`~resseg_ray.models.base.pad_aligned`) and crop the output back.
"""

from __future__ import annotations

import abc
import collections
import threading
from typing import Any

import numpy as np
import torch

from resseg_ray.device import DevicePolicy
from resseg_ray.models.base import pad_aligned

_COMPILED_SHAPES = 8  # OpenVINO models compiled per engine (window sizes) before the oldest goes


class Engine(abc.ABC):
    """Normalised windows ``(N, D, H, W)`` float32 -> class probabilities ``(N, C, H, W)`` float32."""

    runtime: str
    precision: str

    @abc.abstractmethod
    def forward(self, tiles: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch of normalised windows."""

    def describe(self) -> dict[str, str]:
        """Which runtime and precision run the network (logs, STAC items, benchmark JSON)."""
        return {"runtime": self.runtime, "precision": self.precision}


class TorchEngine(Engine):
    """The network in PyTorch under a device policy (its device, layout and autocast).

    ``model``: the network's inference copy (:meth:`DevicePolicy.prepare_for_inference`), which
    engines of several precisions on one device share."""

    runtime = "torch"

    def __init__(self, model: torch.nn.Module, policy: DevicePolicy) -> None:
        self.policy = policy
        self.model = model
        dtype = policy.amp_dtype
        self.precision = "fp32" if dtype is None else {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]

    def forward(self, tiles: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), self.policy.autocast():
            logits = self.model(self.policy.prepare_batch(torch.from_numpy(tiles)))
        return torch.softmax(logits.float(), 1).cpu().numpy()

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "device": str(self.policy.device)}


class _GraphEngine(Engine):
    """Common part of the engines of an exported graph: padding and cropping, one call at a time."""

    def __init__(self, multiple: int) -> None:
        self.multiple = multiple
        self._lock = threading.Lock()

    def forward(self, tiles: np.ndarray) -> np.ndarray:
        h, w = tiles.shape[-2:]
        x = np.ascontiguousarray(pad_aligned(torch.from_numpy(tiles), self.multiple).numpy(), np.float32)
        with self._lock:
            probs = self._run(x)
        return probs[..., :h, :w] if probs.shape[-2:] != (h, w) else probs

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray: ...


class OnnxRuntimeEngine(_GraphEngine):
    """An exported graph in ONNX Runtime's CPU execution provider (fp32 only)."""

    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(self, onnx_path: str, multiple: int, threads: int) -> None:
        import onnxruntime as ort

        super().__init__(multiple)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.version = ort.__version__

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {"image": x})[0], np.float32)

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "device": "cpu", "version": self.version}


class OpenVINOEngine(_GraphEngine):
    """An exported graph compiled by OpenVINO's CPU plugin at fp32 or bf16, per window size
    (batch dynamic), with OpenVINO's compiled-model cache in ``cache_dir``."""

    runtime = "openvino"

    def __init__(
        self, onnx_path: str, multiple: int, threads: int, precision: str, cache_dir: str | None
    ) -> None:
        import openvino as ov

        super().__init__(multiple)
        self.precision = precision
        self.core = ov.Core()
        self.version = ov.get_version()
        self.source = self.core.read_model(onnx_path)
        self.config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,  # Ray workers share the cores
        }
        if cache_dir:
            self.core.set_property({"CACHE_DIR": cache_dir})
        self._compiled: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()

    def _model_for(self, shape: tuple[int, ...]) -> Any:
        compiled = self._compiled.get(shape)
        if compiled is None:
            import openvino as ov

            model = self.source.clone()
            model.reshape({0: ov.PartialShape([-1, *shape])})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._compiled[shape] = compiled
            while len(self._compiled) > _COMPILED_SHAPES:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(shape)
        return compiled

    def _run(self, x: np.ndarray) -> np.ndarray:
        compiled = self._model_for(tuple(x.shape[1:]))
        return np.asarray(compiled(x)[0], np.float32)

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "device": "cpu", "version": self.version}
