"""Depthwise short convolution of the Mamba mixer, channels-last, causal or anti-causal."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import conv_cpu, kernels


def short_conv_silu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    reverse: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """silu(depthwise conv1d(x)) over (batch, length, channels) with a (channels, 1, k) kernel.

    Causal (output t sees inputs t-k+1..t, zeros before the start) as in mamba_simple.Mamba; with reverse=True the
    mirror image (inputs t..t+k-1 with the kernel reversed), which equals flip(conv(flip(x))) without the flips.
    CUDA tensors go through causal-conv1d's fused conv + silu kernel when it is installed and `backend` (the model's
    scan_backend) allows kernels ("auto" or "cuda"); `kernels.disabled()` turns it off too. CPU tensors go through the
    numba kernel (`conv_cpu.py`: x read in place, contiguous output) for backend "auto" or "cpu" when numba is
    usable. Otherwise, and always for backend "reference", the PyTorch path below runs: the reference.
    """
    fused = kernels.causal_conv1d_kernel(x, weight) if backend in ("auto", "cuda") else None
    if fused is not None:
        return kernels.run_causal_conv_silu(fused, x, weight, bias, reverse)
    if backend in ("auto", "cpu") and conv_cpu.supports(x, weight):
        return conv_cpu.short_conv_silu_cpu(x, weight, bias, reverse)
    channels, kernel = weight.shape[0], weight.shape[-1]
    xt = x.transpose(1, 2)
    if reverse:
        xt = F.pad(xt, (0, kernel - 1))
        weight = weight.flip(-1)
    else:
        xt = F.pad(xt, (kernel - 1, 0))
    out = F.conv1d(xt, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), groups=channels)
    return F.silu(out).transpose(1, 2)
