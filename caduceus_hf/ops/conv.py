"""Depthwise short convolution of the Mamba mixer, channels-last, causal or anti-causal: the PyTorch reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def short_conv_silu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool = False
) -> torch.Tensor:
    """silu(depthwise conv1d(x)) over (batch, length, channels) with a (channels, 1, k) kernel.

    Causal (output t sees inputs t-k+1..t, zeros before the start) as in mamba_simple.Mamba; with reverse=True the
    mirror image (inputs t..t+k-1 with the kernel reversed), which equals flip(conv(flip(x))) without the flips.
    The faster implementations of the same contract (`conv_cpu.py`, `kernels.py`) are chosen in
    `caduceus_hf.backends`.
    """
    channels, kernel = weight.shape[0], weight.shape[-1]
    xt = x.transpose(1, 2)
    if reverse:
        xt = F.pad(xt, (0, kernel - 1))
        weight = weight.flip(-1)
    else:
        xt = F.pad(xt, (kernel - 1, 0))
    out = F.conv1d(xt, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), groups=channels)
    return F.silu(out).transpose(1, 2)
