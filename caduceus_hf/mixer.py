"""Mamba-1 mixer and BiMamba, with the parameter names of mamba_ssm's mamba_simple.Mamba.

A Mamba mixer runs in either direction: `reverse=True` scans from the end and uses the mirrored (anti-causal) short
convolution, which is what the original computes as flip(mamba(flip(x))), without materialising any flip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_caduceus import CaduceusConfig
from .ops import kernels
from .ops.conv import short_conv_silu
from .ops.scan import selective_scan


class Mamba(nn.Module):
    """One direction of a Caduceus mixer (mamba_simple.Mamba without the inference cache)."""

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        cfg = config.ssm_cfg
        self.d_model = config.d_model
        self.d_inner = config.d_inner
        self.d_state = cfg["d_state"]
        self.dt_rank = config.dt_rank
        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=cfg["bias"])
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=cfg["d_conv"],
            groups=self.d_inner,
            padding=cfg["d_conv"] - 1,
            bias=cfg["conv_bias"],
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, self.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=cfg["bias"])
        self.scan_backend = config.scan_backend

    def ssm(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        mask: torch.Tensor | None = None,
        reverse: bool = False,
    ) -> torch.Tensor:
        """The part between in_proj and out_proj: (batch, length, d_inner) x and gate z -> gated scan output."""
        # 1. Padding contributes nothing: zero it before the convolution, and the scan skips masked steps.
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        x = short_conv_silu(x, self.conv1d.weight, self.conv1d.bias, reverse=reverse, backend=self.scan_backend)
        # 2. Input-dependent step size and projections.
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight)
        # 3. Scan; the state and A stay float32 whatever the activations' dtype.
        A = -torch.exp(self.A_log.float())
        return selective_scan(
            x,
            delta,
            A,
            B,
            C,
            D=self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            mask=mask,
            reverse=reverse,
            backend=self.scan_backend,
        )

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None, reverse: bool = False
    ) -> torch.Tensor:
        """(batch, length, d_model) -> (batch, length, d_model).

        On CUDA, without a mask, mamba-ssm's fused mamba_inner_fn runs the whole mixer when it is installed together
        with causal-conv1d and scan_backend allows kernels; a mask needs the unfused path, whose scan skips padding.
        """
        if mask is None:
            fused = kernels.mamba_inner_kernel(hidden_states, self.scan_backend, self.conv1d.kernel_size[0])
            if fused is not None:
                return kernels.run_mamba_inner(fused, self, hidden_states, reverse)
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        return self.out_proj(self.ssm(x, z, mask, reverse))


class BiMamba(nn.Module):
    """A forward and a reverse Mamba, combined by "add" or "ew_multiply" (Caduceus' BiMambaWrapper).

    With bidirectional_weight_tie the reverse mixer shares the forward one's in_proj and out_proj modules (as the
    original aliases their parameters), and the tied "add" case runs each projection once for both directions:
    in_proj is position-wise, and out_proj(a) + out_proj(b) = out_proj(a + b) + bias.
    """

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        self.bidirectional = config.bidirectional
        self.strategy = config.bidirectional_strategy
        self.weight_tie = config.bidirectional and config.bidirectional_weight_tie
        self.mamba_fwd = Mamba(config)
        if self.bidirectional:
            self.mamba_rev = Mamba(config)
            if self.weight_tie:
                self.mamba_rev.in_proj = self.mamba_fwd.in_proj
                self.mamba_rev.out_proj = self.mamba_fwd.out_proj
                # Declared so that save_pretrained writes each shared tensor once, under the mamba_fwd name, as the
                # published files do; loading needs nothing since the modules themselves are shared.
                self._tied_weights_keys = {
                    f"mamba_rev.{name}": f"mamba_fwd.{name}"
                    for name, _ in self.mamba_fwd.named_parameters()
                    if name.startswith(("in_proj.", "out_proj."))
                }
        else:
            self.mamba_rev = None

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None, swap_directions: bool = False
    ) -> torch.Tensor:
        """(batch, length, d_model) -> (batch, length, d_model).

        swap_directions runs mamba_fwd backwards and mamba_rev forwards: the mixer of a reverse-complemented input,
        seen from the forward strand (see rcps.py).
        """
        if not self.bidirectional:
            return self.mamba_fwd(hidden_states, mask, reverse=swap_directions)
        if not self.weight_tie:
            out_fwd = self.mamba_fwd(hidden_states, mask, reverse=swap_directions)
            out_rev = self.mamba_rev(hidden_states, mask, reverse=not swap_directions)
            return out_fwd + out_rev if self.strategy == "add" else out_fwd * out_rev

        # On CUDA with mamba-ssm, both directions run in one scan launch in the kernels' layout.
        scan_kernel = kernels.bimamba_scan_kernel(hidden_states, self.mamba_fwd.scan_backend)
        if scan_kernel is not None:
            return kernels.run_bimamba(scan_kernel, self, hidden_states, mask, swap_directions, short_conv_silu)
        # 1. Shared input projection, once.
        x, z = self.mamba_fwd.in_proj(hidden_states).chunk(2, dim=-1)
        # 2. The two scans over the same projected input, in opposite directions.
        y_fwd = self.mamba_fwd.ssm(x, z, mask, reverse=swap_directions)
        y_rev = self.mamba_rev.ssm(x, z, mask, reverse=not swap_directions)
        # 3. Shared output projection: once for "add", per direction for "ew_multiply".
        out_proj = self.mamba_fwd.out_proj
        if self.strategy == "ew_multiply":
            return out_proj(y_fwd) * out_proj(y_rev)
        out = out_proj(y_fwd + y_rev)
        return out if out_proj.bias is None else out + out_proj.bias
