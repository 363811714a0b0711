"""RMSNorm / LayerNorm over the last axis, computed in float32 as mamba-ssm's norm kernels do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight; no bias (mamba-ssm's RMSNorm)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return norm(x, self.weight, self.bias, self.eps, rms=True)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    eps: float,
    rms: bool,
    flip_channels: bool = False,
) -> torch.Tensor:
    """RMSNorm (rms=True) or LayerNorm of x (..., d) in float32, returned in the weight's dtype.

    flip_channels normalises the second strand of a PS hidden state: RC(norm(RC(x))) equals norm(x) with the weight
    (and bias) reversed along channels, because the norm acts position by position.
    """
    if flip_channels:
        weight = weight.flip(0)
        bias = None if bias is None else bias.flip(0)
    xf = x.float()
    if rms:
        # One fused pass (torch's rms_norm) rather than five: the same float32 result, x * rsqrt(mean(x^2) + eps) * w.
        out = F.rms_norm(xf, (x.shape[-1],), weight.float(), eps)
        if bias is not None:
            out = out + bias.float()
    else:
        out = F.layer_norm(xf, (x.shape[-1],), weight.float(), None if bias is None else bias.float(), eps)
    return out.to(weight.dtype)
