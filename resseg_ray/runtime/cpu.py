"""What this machine's CPU is and which of its units matter for inference speed."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

#: CPU flags that decide the runtime and precision choice (and are printed by the benchmarks).
RELEVANT_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and its inference-relevant flags."""

    model: str
    flags: tuple[str, ...]

    @property
    def bf16_units(self) -> str | None:
        """The CPU's bf16 matrix units: ``amx`` (AMX tiles), ``avx512_bf16`` (bf16 dot
        products in AVX-512), or None when bf16 would only be emulated (slower than fp32)."""
        if "amx_bf16" in self.flags:
            return "amx"
        if "avx512_bf16" in self.flags:
            return "avx512_bf16"
        return None

    def describe(self) -> dict[str, str]:
        """Plain-text form for logs, benchmark JSON and caches."""
        return {"cpu": self.model, "cpu_flags": " ".join(self.flags), "bf16_units": self.bf16_units or "none"}


def parse_cpuinfo(text: str) -> CpuInfo:
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return CpuInfo(
        model or platform.processor() or platform.machine(), tuple(f for f in RELEVANT_FLAGS if f in flags)
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once from ``/proc/cpuinfo``; elsewhere, no flags known)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CpuInfo(platform.processor() or platform.machine(), ())
