"""Which engine runs a network: the options ``runtime`` and ``precision`` resolved on this
machine, ``auto`` measured once per network and machine and cached, and a guard that keeps
a faster engine only while its masks agree with fp32 PyTorch.

``auto`` on CUDA is PyTorch with the device policy's autocast (bf16 where supported, else
fp16). On the CPU it times every candidate that is installed and sensible here on a
calibration batch of the run's window shape: PyTorch, OpenVINO and ONNX Runtime in fp32, and
PyTorch and OpenVINO in bf16 where the CPU has bf16 units (AMX or AVX512_BF16; elsewhere bf16
is emulated and slower). The fastest wins; the choice and all timings are cached in
``<cache>/choices/`` (keyed by the network's architecture, bands and classes, window shape,
batch, threads, CPU model and flags, and runtime versions: speed does not depend on the
weights, so a refined model reuses its parent's measurement). A bf16 winner then runs its first
real batch beside fp32 PyTorch: below :data:`MIN_AGREEMENT` of pixels with the same class it is
dropped (a warning says so, the cache remembers it for those weights) and the fastest fp32
candidate runs instead, so ``auto`` never gives a silently different map.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from resseg_ray.config import PRECISIONS, RUNTIMES
from resseg_ray.device import DevicePolicy
from resseg_ray.errors import ConfigError
from resseg_ray.models.base import SegmentationNet
from resseg_ray.models.fuse import fold_batchnorm
from resseg_ray.runtime.cpu import cpu_info
from resseg_ray.runtime.engines import Engine, OnnxRuntimeEngine, OpenVINOEngine, TorchEngine
from resseg_ray.runtime.onnx_graph import OPSET, ProbabilityGraph, export_onnx, model_digest

#: Share of pixels whose class must agree with fp32 PyTorch for ``auto`` to keep a bf16 engine.
MIN_AGREEMENT = 0.995
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}


class RuntimeFallback(UserWarning):
    """``auto`` dropped a faster engine whose output disagreed with fp32 PyTorch."""


@dataclass(frozen=True)
class Choice:
    """A runtime at a precision."""

    runtime: str
    precision: str

    def __str__(self) -> str:
        return f"{self.runtime} {self.precision}"


def cache_dir() -> str:
    """Where exported graphs, OpenVINO's compiled models and runtime choices are kept:
    ``RESSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/resseg-ray`` (``~/.cache/resseg-ray``)."""
    explicit = os.environ.get("RESSEG_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "resseg-ray")


def installed(runtime: str) -> bool:
    """Whether a runtime's package can be imported here (PyTorch always can)."""
    if runtime == "torch":
        return True
    try:
        return importlib.util.find_spec(_PACKAGES[runtime]) is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as none
        return False


def runtime_versions() -> dict[str, str]:
    """Installed versions of the runtimes' packages ("-" when not installed)."""
    versions = {}
    for package in ("torch", "openvino", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "-"
    return versions


def candidates(runtime: str, precision: str, device: torch.device) -> list[Choice]:
    """What ``runtime`` x ``precision`` may run as on ``device``, fp32 first; an explicit
    request this machine cannot honour raises :class:`ConfigError` naming the alternative."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        if runtime not in ("auto", "torch"):
            raise ConfigError(
                f"--runtime {runtime} runs on the CPU only; on {device} use --runtime torch (or auto), "
                "or --device cpu"
            )
        return [Choice("torch", precision)]
    cpu = cpu_info()
    if precision == "fp16":
        raise ConfigError(
            "--precision fp16 is for CUDA GPUs; on the CPU use --precision bf16 (on a CPU with bf16 "
            "units) or fp32, or auto"
        )
    if precision == "bf16" and cpu.bf16_units is None:
        raise ConfigError(
            f"--precision bf16: this CPU ({cpu.model}) has no bf16 units (AMX or AVX512_BF16), so bf16 "
            "would be slower than fp32 here; use --precision fp32 or auto"
        )
    if runtime != "auto" and not installed(runtime):
        raise ConfigError(
            f"--runtime {runtime}: the {_PACKAGES[runtime]} package is not installed; "
            f"pip install {_PACKAGES[runtime]}, or use --runtime torch or auto"
        )
    if runtime == "onnxruntime" and precision == "bf16":
        raise ConfigError(
            "--runtime onnxruntime runs fp32 only on the CPU; for bf16 use --runtime openvino or torch"
        )
    runtimes = (
        [runtime] if runtime != "auto" else [r for r in ("torch", "openvino", "onnxruntime") if installed(r)]
    )
    if precision != "auto":
        precisions = [precision]
    else:
        precisions = ["fp32", "bf16"] if cpu.bf16_units is not None else ["fp32"]
    return [Choice(r, p) for p in precisions for r in runtimes if not (r == "onnxruntime" and p == "bf16")]


class EngineFactory:
    """Builds engines of one network: PyTorch ones directly, graph ones from the network's
    ONNX export, made once and cached by the network's digest (or in a temporary folder when
    ``cache`` is off, e.g. for a network adapted to one scene)."""

    def __init__(self, net: torch.nn.Module, policy: DevicePolicy, cache: bool = True) -> None:
        self.net, self.policy, self.cache = net, policy, cache
        self.threads = torch.get_num_threads()
        self._digest: str | None = None
        self._inference: torch.nn.Module | None = None  # torch engines' shared inference copy
        self._graph: str | None = None  # the exported graph's path
        self._tmp: tempfile.TemporaryDirectory[str] | None = None  # holds it when not cached

    @property
    def digest(self) -> str:
        """The network's :func:`model_digest` (computed once)."""
        if self._digest is None:
            self._digest = model_digest(self.net)
        return self._digest

    def build(self, choice: Choice) -> Engine:
        """An engine of ``choice`` (already checked by :func:`candidates`)."""
        if choice.runtime == "torch":
            p = self.policy
            policy = DevicePolicy.resolve(str(p.device), p.channels_last, choice.precision)
            if self._inference is None:  # BatchNorm folded once for every precision
                self._inference = p.prepare_for_inference(self.net)
            return TorchEngine(self._inference, policy)
        net = cast(SegmentationNet, self.net)  # only SegmentationNets get graph candidates
        path, multiple = self._graph_path(net), net.size_multiple
        if choice.runtime == "onnxruntime":
            return OnnxRuntimeEngine(path, multiple, self.threads)
        ov_cache = os.path.join(cache_dir(), "openvino") if self.cache else None
        return OpenVINOEngine(path, multiple, self.threads, choice.precision, ov_cache)

    def _graph_path(self, net: SegmentationNet) -> str:
        """The network's ONNX graph, exported on first need: in the cache (found again by the
        network's digest) or, uncached, in a folder that lives as long as this factory."""
        if self._graph is not None:
            return self._graph
        if self.cache:
            name = f"{self.digest[:32]}-torch{torch.__version__.split('+')[0]}-opset{OPSET}.onnx"
            path = os.path.join(cache_dir(), "graphs", name)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="resseg-graph-")
            path = os.path.join(self._tmp.name, "model.onnx")
        if not (self.cache and _cached_graph_ok(path, self.digest)):
            m = net.size_multiple
            graph = ProbabilityGraph(cast(SegmentationNet, fold_batchnorm(net)))
            export_onnx(graph, path, (1, net.spec.in_bands, 2 * m, 2 * m), dynamic_sides=True)
            if self.cache:
                _write_text_atomic(path + ".sha256", f"{_file_sha256(path)} {self.digest}\n")
        self._graph = path
        return path


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached_graph_ok(path: str, digest: str) -> bool:
    """Whether the cached graph at ``path`` is whole and this network's: its content matches the
    digest written beside it when it was exported, for this network. A graph swapped for
    another network's, truncated, or without its digest is exported again."""
    try:
        with open(path + ".sha256", encoding="utf-8") as f:
            content, network = f.read().split()
        return network == digest and _file_sha256(path) == content
    except (OSError, ValueError):
        return False


def _write_text_atomic(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".digest-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _timing(engine: Engine, x: np.ndarray, repeats: int = 2) -> float:
    engine.forward(x)  # warm-up (compiles, allocates)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        engine.forward(x)
        best = min(best, time.perf_counter() - t)
    return best


class GuardedEngine(Engine):
    """A bf16 engine chosen by ``auto``, kept only if its first batch's classes agree with fp32
    PyTorch (``reference``) on at least :data:`MIN_AGREEMENT` of pixels; else the engine
    ``fallback()`` builds (fp32) runs from that batch on. ``on_verdict(kept, agreement)`` is
    called once."""

    def __init__(
        self,
        chosen: Engine,
        reference: Engine,
        fallback: Callable[[], Engine],
        on_verdict: Callable[[bool, float], None],
    ) -> None:
        self.chosen: Engine | None = chosen
        self.reference: Engine | None = reference
        self._fallback, self._on_verdict = fallback, on_verdict
        self.active: Engine | None = None
        self.agreement: float | None = None
        self.runtime, self.precision = chosen.runtime, chosen.precision

    @property
    def _current(self) -> Engine:
        engine = self.active or self.chosen
        assert engine is not None
        return engine

    def forward(self, tiles: np.ndarray) -> np.ndarray:
        if self.active is not None:
            return self.active.forward(tiles)
        assert self.chosen is not None and self.reference is not None
        probs = self.chosen.forward(tiles)
        ref = self.reference.forward(tiles)
        self.agreement = float((probs.argmax(1) == ref.argmax(1)).mean())
        kept = self.agreement >= MIN_AGREEMENT
        if kept:
            self.active = self.chosen
        else:
            self.active = self._fallback()
            if isinstance(self.active, TorchEngine) and self.active.precision == "fp32":
                probs = ref
            else:
                probs = self.active.forward(tiles)
        self.chosen = self.reference = None  # only the active engine stays in memory
        self.runtime, self.precision = self.active.runtime, self.active.precision
        self._on_verdict(kept, self.agreement)
        return probs

    def describe(self) -> dict[str, str]:
        d = self._current.describe()
        if self.agreement is not None:
            d["agreement_with_fp32"] = f"{self.agreement:.4f}"
        return d


def _machine_key(factory: EngineFactory, shape: tuple[int, ...], cands: list[Choice]) -> str:
    cpu = cpu_info()
    key = {
        # speed is the architecture's on this machine, whatever its weights: a refined model (or
        # another training of the same network) reuses the measurement
        "architecture": cast(SegmentationNet, factory.net).spec.to_dict(),
        "shape": list(shape),
        "threads": factory.threads,
        "device": str(factory.policy.device),
        "cpu": cpu.model,
        "flags": list(cpu.flags),
        "versions": runtime_versions(),
        "candidates": [str(c) for c in cands],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _read_record(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(path: str, record: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".choice-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: str | None) -> Iterator[None]:
    """An exclusive lock on ``path`` + ``.lock`` (none for None), across processes."""
    if path is None:
        yield
        return
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def calibrate(factory: EngineFactory, cands: list[Choice], shape: tuple[int, ...]) -> dict[str, float]:
    """Seconds per calibration batch (``shape``, seeded normal values) of each candidate."""
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    timings = {}
    for choice in cands:
        engine = factory.build(choice)
        timings[str(choice)] = _timing(engine, x)
        del engine
    return timings


def select_engine(
    net: torch.nn.Module,
    policy: DevicePolicy,
    runtime: str = "auto",
    precision: str = "auto",
    shape: tuple[int, ...] | None = None,
    cache: bool = True,
) -> Engine:
    """The engine that runs ``net`` for ``runtime`` x ``precision`` on ``policy``'s device.

    One candidate (an explicit request, CUDA, or only PyTorch installed): that engine.
    Several: the fastest on a calibration batch of ``shape`` (N, D, H, W), measured once and
    cached with ``cache``, guarded against disagreement with fp32 PyTorch when not fp32.
    """
    cands = candidates(runtime, precision, policy.device)
    if not isinstance(net, SegmentationNet):  # a network the exporter does not know: PyTorch only,
        # fp32 unless asked otherwise
        cands = [
            Choice("torch", "fp32" if precision == "auto" and policy.device.type == "cpu" else precision)
        ]
    factory = EngineFactory(net, policy, cache)
    if len(cands) == 1:
        return factory.build(cands[0])
    shape = shape or (4, cast(SegmentationNet, net).spec.in_bands, 512, 512)
    path = os.path.join(cache_dir(), "choices", _machine_key(factory, shape, cands) + ".json")
    with _locked(path if cache else None):  # processes starting together measure once, choose alike
        record = _read_record(path) if cache else {}
        timings: dict[str, float] = record.get("timings") or {}
        if set(timings) != {str(c) for c in cands}:
            timings = calibrate(factory, cands, shape)
            record = {"timings": timings, "verdicts": {}, "cpu": cpu_info().describe(), "shape": list(shape)}
            if cache:
                _write_record(path, record)
    # agreement is the weights' own: verdicts are kept per network digest
    verdicts = (record.get("verdicts") or {}).get(factory.digest) or {}
    rejected = {c for c, v in verdicts.items() if not v.get("kept", True)}
    ranked = sorted((c for c in cands if str(c) not in rejected), key=lambda c: timings[str(c)])
    best = ranked[0] if ranked else Choice("torch", "fp32")
    if best.precision == "fp32":
        return factory.build(best)
    fp32 = [c for c in ranked if c.precision == "fp32"] or [Choice("torch", "fp32")]

    def verdict(kept: bool, agreement: float) -> None:
        if cache:
            with _locked(path):
                now = _read_record(path) or record
                now.setdefault("verdicts", {}).setdefault(factory.digest, {})[str(best)] = {
                    "kept": kept,
                    "agreement": agreement,
                }
                _write_record(path, now)
        if not kept:
            warnings.warn(
                f"runtime auto: {best} gave another class than fp32 PyTorch on {100 * (1 - agreement):.2f} % "
                f"of the first windows' pixels (more than {100 * (1 - MIN_AGREEMENT):.1f} %); "
                f"using {fp32[0]} instead",
                RuntimeFallback,
                stacklevel=2,
            )

    reference = factory.build(Choice("torch", "fp32"))
    return GuardedEngine(factory.build(best), reference, lambda: factory.build(fp32[0]), verdict)


def engine_like(engine: Engine, net: SegmentationNet, policy: DevicePolicy) -> Engine:
    """An engine of another network (e.g. adapted to one scene) at ``engine``'s runtime and
    precision, its graph not cached. When ``engine`` is ``auto``'s guarded choice, the new one
    is guarded too (falling back to fp32 PyTorch, with a warning)."""
    factory = EngineFactory(net, policy, cache=False)
    built = factory.build(Choice(engine.runtime, engine.precision))
    if not isinstance(engine, GuardedEngine) or engine.precision == "fp32":
        return built

    def verdict(kept: bool, agreement: float) -> None:
        if not kept:
            warnings.warn(
                f"runtime auto: {engine.runtime} {engine.precision} of the scene-adapted network gave "
                f"another class than fp32 PyTorch on {100 * (1 - agreement):.2f} % of the first windows' "
                "pixels; using torch fp32 for this scene",
                RuntimeFallback,
                stacklevel=2,
            )

    reference = factory.build(Choice("torch", "fp32"))
    return GuardedEngine(built, reference, lambda: reference, verdict)
