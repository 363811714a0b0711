"""Mixed precision on CPU: whether bfloat16 matrix products pay on this machine, decided at run time.

A model in bfloat16 (`from_pretrained(..., dtype=torch.bfloat16)` or `.to(torch.bfloat16)`) runs its projections in
bfloat16 and its scans and norms in float32 (`scan_cpu.py`, `conv_cpu.py`, `norm.py`). bf16 matrix products are
about 3x faster than float32 on CPUs with bf16 dot-product instructions (x86 AVX512_BF16 or AMX, Arm BF16); without
them torch emulates bf16 and is slower than float32, so the projections then compute in float32 on the bf16 values
(`linear`) and round once. The decision reads the CPU's flags once per process and is not saved with the model;
CADUCEUS_HF_BF16_MATMUL=1 or 0 overrides it.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# /proc/cpuinfo flags that name bf16 (and neighbouring) matrix units; the first group makes bf16 products fast.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "bf16")


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers for the model's arithmetic: its name, the matrix-unit flags, torch's SIMD level."""

    model: str
    flags: tuple[str, ...]
    torch_capability: str

    @property
    def bf16_units(self) -> tuple[str, ...]:
        return tuple(flag for flag in self.flags if flag in BF16_FLAGS)

    def describe(self) -> str:
        units = ", ".join(self.bf16_units) or "none"
        return (f"{self.model}; flags {' '.join(self.flags) or '-'}; torch CPU capability {self.torch_capability}; "
                f"bf16 matrix units: {units}")  # fmt: skip


@functools.cache
def cpu_features() -> CpuFeatures:
    """The CPU's name and flags from /proc/cpuinfo (Linux; elsewhere the platform's name and no flags)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and model in (platform.processor(), platform.machine()):
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    return CpuFeatures(model, tuple(f for f in REPORTED_FLAGS if f in flags), capability)


@torch.compiler.assume_constant_result
def bf16_matmul_native() -> bool:
    """Whether bfloat16 matrix products run on bf16 units here (else `linear` computes them in float32)."""
    forced = os.environ.get("CADUCEUS_HF_BF16_MATMUL")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(cpu_features().bf16_units)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear; for bfloat16 CPU tensors on a CPU without bf16 matrix units, in float32 and rounded once."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu" and not bf16_matmul_native():
        out = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
        return out.to(x.dtype)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters and names) whose bfloat16 products follow `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
