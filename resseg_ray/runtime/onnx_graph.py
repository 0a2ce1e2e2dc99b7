"""The one ONNX export of the project's networks: for the CPU runtimes' cached graphs
(:mod:`resseg_ray.runtime.engines`) and for portable models (``jobs/export_onnx.py``).

Graphs end in a softmax (class probabilities out, as :class:`~resseg_ray.inference.predictor.
ScenePredictor` and QGIS's Deepness plugin use them). They are traced with torch's
TorchScript exporter: its dynamo exporter fails on the prop networks' transposed-convolution
shapes with dynamic sides (torch 2.13: "The inequality ... cannot be solved"), while the
TorchScript trace of :meth:`SegmentationNet.forward_aligned` has no shape-dependent branch
and exports every architecture with dynamic batch, height and width.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from resseg_ray.errors import ConfigError
from resseg_ray.models.base import SegmentationNet

#: ONNX operator set of the exported graphs (ONNX Runtime >= 1.14, OpenVINO >= 2023.0).
OPSET = 17


class ProbabilityGraph(nn.Module):
    """A network as exported: optional input scaling and normalisation folded in, then the
    network, then a softmax over classes.

    ``aligned``: the input's sides are multiples of the network's size multiple (the engines
    pad windows first, :func:`~resseg_ray.models.base.pad_aligned`), so one graph serves any
    window size; otherwise the network's own padding is traced for the example's size.
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(
        self,
        net: SegmentationNet,
        *,
        aligned: bool = True,
        scale: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.net, self.aligned, self.scale = net, aligned, float(scale)
        self.fold = mean is not None and std is not None
        d = net.spec.in_bands
        m = torch.tensor(list(mean) if mean is not None else [0.0] * d, dtype=torch.float32)
        s = torch.tensor(list(std) if std is not None else [1.0] * d, dtype=torch.float32)
        self.register_buffer("mean", m.view(1, d, 1, 1))
        self.register_buffer("inv_std", (1.0 / s).view(1, d, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold:
            x = (x * self.scale - self.mean) * self.inv_std
        logits = self.net.forward_aligned(x) if self.aligned else self.net(x)
        return torch.softmax(logits, 1)


def model_digest(net: nn.Module) -> str:
    """SHA-256 of a network's architecture and weights: the key of its cached graphs and
    runtime choices (the same for a bundle loaded from a file, an MLflow URI or memory)."""
    h = hashlib.sha256()
    spec = getattr(net, "spec", None)
    if spec is not None:
        h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_onnx(
    graph: ProbabilityGraph,
    path: str | os.PathLike[str],
    example_shape: tuple[int, int, int, int],
    *,
    dynamic_sides: bool,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``graph`` as an ONNX model at ``path`` (atomically: a failed export leaves nothing).

    Input ``image`` (N x D x H x W float32), output ``probabilities`` (N x C x H x W); the batch
    is always dynamic, height and width with ``dynamic_sides``. ``metadata`` becomes the
    model's ``metadata_props`` (string values). Raises :class:`ConfigError` naming the network
    when torch cannot export it.
    """
    path = os.fspath(path)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_sides else {0: "batch"}
    net = graph.net
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        example = torch.zeros(example_shape, dtype=torch.float32)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                graph.eval(),
                (example,),
                tmp,
                dynamo=False,
                input_names=["image"],
                output_names=["probabilities"],
                dynamic_axes={"image": axes, "probabilities": axes},
                opset_version=OPSET,
            )
        if metadata:
            import onnx

            proto = onnx.load(tmp)
            for key, value in metadata.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(proto, tmp)
        os.replace(tmp, path)
    except Exception as exc:
        name = getattr(getattr(net, "spec", None), "name", type(net).__name__)
        raise ConfigError(
            f"exporting {name} to ONNX failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "use --runtime torch (or serve.runtime: torch)"
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
