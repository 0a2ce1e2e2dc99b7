"""Device handling in one place: which device, which memory format, which precision.

Training, inference, evaluation and serving all obtain a :class:`DevicePolicy` from
:meth:`DevicePolicy.resolve` and use its methods to place models and batches and to
enter autocast. Nothing else in the package chooses a device or a dtype.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from resseg_ray.errors import ConfigError

_PRECISIONS = {"auto", "fp32", "bf16", "fp16"}
_ALLOCATOR_TUNED: bool | None = None

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def tune_cpu_allocator() -> bool:
    """Keep freed CPU memory in the process heap instead of returning it to the OS.

    glibc serves every allocation above 32 MiB with a fresh mmap, so each large
    activation of a full-resolution decoder is page-faulted and zeroed again on
    every forward pass. Measured on the 2-core CPU: prop18 at 512x512, batch 4,
    went from 106 to 168 GFLOP/s (bench/model_throughput.py). Like a GPU caching
    allocator, the process then keeps its peak memory reserved. Called once by
    :meth:`DevicePolicy.resolve`; set ``RESSEG_MALLOC_TUNING=0`` to opt out.
    Returns whether the tuning is in effect (False on non-glibc systems).

    Threads other than the main one allocate from their own glibc arenas, whose heaps
    cannot exceed 64 MiB, so their large blocks are mmap'd afresh on every pass whatever
    the settings above: Ray Data actors and Ray Train workers run their code in such a
    thread (prop18 forward 1.4 s instead of 1.0 s per batch of 4 windows). One arena for
    all threads fixes that; it must be in force when a thread first allocates, so Ray
    workers get it as ``MALLOC_ARENA_MAX`` (:func:`worker_env_vars`), and this process
    asks for it here as well.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = False
    if os.environ.get("RESSEG_MALLOC_TUNING", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    if ok and "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, 1)
    _ALLOCATOR_TUNED = ok
    return ok


def worker_env_vars() -> dict[str, str]:
    """Environment variables for Ray worker processes (the job's ``runtime_env``): one
    glibc malloc arena (see :func:`tune_cpu_allocator`), unless ``RESSEG_MALLOC_TUNING=0``
    or ``MALLOC_ARENA_MAX`` is already set (then the user's value is kept)."""
    if os.environ.get("RESSEG_MALLOC_TUNING", "1") == "0" or "MALLOC_ARENA_MAX" in os.environ:
        return {}
    return {"MALLOC_ARENA_MAX": "1"}


TRAIN_POLL_S = "0.5"
"""How often Ray Train's controller asks its workers how they are (Ray's default: 2 s). Each
ask is one small call per worker; at 2 s, a run's start, each epoch's report and its end reach
the job up to 2 s late, several seconds of every short refinement (measured: a one-epoch run
25.7 -> 22.6 s)."""


def ray_runtime_env() -> dict:
    """The ``runtime_env`` every ``ray.init`` of the project passes (merged by Ray with a
    submitted job's own runtime environment, per environment variable): :func:`worker_env_vars`
    and Ray Train's poll interval (:data:`TRAIN_POLL_S`), unless the user set one."""
    poll = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_POLL_S)
    return {"env_vars": {**worker_env_vars(), "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": poll}}


@dataclass(frozen=True)
class DevicePolicy:
    """Resolved placement: device, memory format and autocast dtype (None = fp32)."""

    device: torch.device
    channels_last: bool
    amp_dtype: torch.dtype | None

    @classmethod
    def resolve(
        cls,
        device: str = "auto",
        channels_last: bool | str = "auto",
        precision: str = "auto",
    ) -> DevicePolicy:
        """Resolve user settings into a policy.

        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        channels_last: True/False or "auto" (on: measured ~2x faster on CPU, and
        the layout tensor cores want on GPU).
        precision: "auto" (bf16 autocast on CUDA when supported, else fp16; fp32 on
        CPU), "fp32", "bf16" or "fp16".
        """
        if device == "auto":
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            try:
                dev = torch.device(device)
            except (RuntimeError, TypeError) as exc:
                raise ConfigError(
                    f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
                ) from exc
            if dev.type not in ("cpu", "cuda"):
                raise ConfigError(f"device={device!r}: only 'cpu' and 'cuda' are supported")
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ConfigError(
                    f"device={device!r} was requested but CUDA is not available on this "
                    "machine; use device='auto' or 'cpu'"
                )
            if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ConfigError(
                    f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                    "use cuda:0 .. cuda:N-1 or 'auto'"
                )
        if dev.type == "cpu":
            tune_cpu_allocator()
        if precision not in _PRECISIONS:
            raise ConfigError(f"precision={precision!r} is not one of {sorted(_PRECISIONS)}")
        if precision == "auto":
            if dev.type == "cuda":
                amp: torch.dtype | None = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                amp = None
        elif precision == "fp32":
            amp = None
        elif precision == "bf16":
            amp = torch.bfloat16
        else:
            if dev.type == "cpu":
                raise ConfigError("precision='fp16' is only supported on CUDA; use 'bf16' on CPU")
            amp = torch.float16
        if isinstance(channels_last, str):
            if channels_last != "auto":
                raise ConfigError(f"channels_last={channels_last!r}: use true, false or 'auto'")
            cl = True
        else:
            cl = bool(channels_last)
        return cls(device=dev, channels_last=cl, amp_dtype=amp)

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format models and 4-D batches are kept in."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move a model to the device and memory format (in place; returned for chaining)."""
        # Module.to takes memory_format (as Tensor.to does) though torch's overloads omit it
        return model.to(device=self.device, memory_format=self.memory_format)  # type: ignore[call-overload]

    def prepare_for_inference(self, model: nn.Module) -> nn.Module:
        """An inference copy of ``model``: eval mode, BatchNorm folded into the
        convolutions (:func:`resseg_ray.models.fuse.fold_batchnorm`), on the device
        in the policy's memory format. The original model is not modified."""
        from resseg_ray.models.fuse import fold_batchnorm

        return self.prepare_model(fold_batchnorm(model.eval()))

    def prepare_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move an image batch (N x D x H x W) to the device in the policy's layout."""
        x = x.to(self.device, non_blocking=True)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        return x

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
            yield

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Gradient scaler for training: enabled only for fp16 autocast."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    def describe(self) -> dict[str, str]:
        """Plain-text description, for logs and MLflow params."""
        return {
            "device": str(self.device),
            "channels_last": str(self.channels_last),
            "precision": "fp32" if self.amp_dtype is None else str(self.amp_dtype).split(".")[-1],
            "cpu_allocator_tuned": str(bool(_ALLOCATOR_TUNED)),
        }
