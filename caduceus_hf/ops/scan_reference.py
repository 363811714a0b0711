"""The Mamba-1 selective scan in plain PyTorch: the reference every faster implementation is tested against.

Readable, differentiable by autograd, any device and dtype. It materialises the discretised (L x d x n) factors one
time chunk at a time, so its memory grows with the chunk, not the sequence, when no gradient is recorded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._higher_order_ops.scan import scan

# Time steps whose decay factors are materialised at once; bounds memory in inference.
_CHUNK = 256


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reverse: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan with softplus discretisation, channels-last; all arithmetic in float32.

    Shapes: u, delta, z (batch, length, d_inner); B, C (batch, length, d_state); A (d_inner, d_state);
    D, delta_bias (d_inner,); mask (batch, length), 1 for real tokens; initial_state (batch, d_inner, d_state).

        dt_t = softplus(delta_t + delta_bias) * mask_t
        h_t  = exp(dt_t * A) * h_{t-1} + (dt_t * u_t) B_t       (t ascending, or descending when reverse)
        y_t  = (h_t . C_t + D * u_t) * silu(z_t)

    A masked step leaves the state untouched, so padding on either side does not change the real tokens' outputs.
    The state is float32 whatever the input dtype; y has u's dtype. Returns y, or (y, final state) when
    return_final_state. Every other scan implementation has this signature and contract.
    """
    batch, d_inner = u.shape[0], u.shape[2]
    out_dtype = u.dtype
    u_f, B_f, C_f = u.float(), B.float(), C.float()
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    dt = F.softplus(dt)
    if mask is not None:
        dt = dt * mask.to(dt.dtype).unsqueeze(-1)
    A_f = A.float()

    if initial_state is None:
        h = u_f.new_zeros(batch, d_inner, A.shape[1])
    else:
        h = initial_state.float()
    # torch.export traces the recurrence as one scan operator, so that the length can stay dynamic. torch.compile
    # unrolls the loop instead: inductor cannot yet lower that operator's autograd (aliasing check, torch 2.13).
    if torch.compiler.is_exporting():
        y, h = _scan_traced(dt, u_f, B_f, C_f, A_f, h, reverse)
    else:
        y, h = _scan_loop(dt, u_f, B_f, C_f, A_f, h, reverse)

    if D is not None:
        y = y + u_f * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(out_dtype)
    return (y, h) if return_final_state else y


def _scan_loop(dt, u_f, B_f, C_f, A_f, h, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence as a Python loop over time: y (batch, length, d_inner) and the final state."""
    batch, length, d_inner = u_f.shape
    ys = [None] * length
    starts = range(0, length, _CHUNK)
    for start in reversed(starts) if reverse else starts:
        stop = min(start + _CHUNK, length)
        decay = torch.exp(dt[:, start:stop, :, None] * A_f)  # (b, T, d, n)
        drive = (dt[:, start:stop] * u_f[:, start:stop])[..., None] * B_f[:, start:stop, None, :]
        steps = range(stop - start)
        for t in reversed(steps) if reverse else steps:
            h = decay[:, t] * h + drive[:, t]
            ys[start + t] = torch.einsum("bdn,bn->bd", h, C_f[:, start + t])
    y = torch.stack(ys, dim=1) if length else u_f.new_zeros(batch, 0, d_inner)
    return y, h


def _scan_traced(dt, u_f, B_f, C_f, A_f, h, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The same recurrence as one torch scan operator, for torch.export: a Python loop would be unrolled into the
    graph and fix the sequence length."""

    def step(state, inputs):
        dt_t, dtu_t, B_t, C_t = inputs
        state = torch.exp(dt_t[..., None] * A_f) * state + dtu_t[..., None] * B_t[:, None, :]
        return state, (state * C_t[:, None, :]).sum(-1)

    # B and C may be views of one x_proj output, and the scan operator must not see aliased inputs.
    h, y = scan(step, h, (dt, dt * u_f, B_f.clone(), C_f.clone()), dim=1, reverse=reverse)
    return y, h
