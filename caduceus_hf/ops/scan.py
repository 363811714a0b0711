"""One entry point for the selective scan, dispatching to the best backend for the tensors' device.

Backends:
    "reference": plain PyTorch (`scan_reference.py`), any device, the ground truth.
    "cpu":       the fast CPU kernels (`scan_cpu.py`), CPU tensors only.
    "cuda":      mamba-ssm's selective_scan_fn (`kernels.py`), CUDA tensors only, when the [cuda] extra is installed.
    "chunked":   plain PyTorch with parallel primitives (`scan_chunked.py`), any device: operations per chunk of
                 steps, not per step.
    "auto":      "cuda" for CUDA tensors when the kernel imports, "cpu" for CPU tensors when it is available, the
                 reference for other CPU tensors, "chunked" for every other device (MPS, XPU, CUDA without
                 mamba-ssm).
"""

from __future__ import annotations

import torch

from .scan_chunked import selective_scan_chunked
from .scan_reference import selective_scan_reference

BACKENDS = ("auto", "reference", "cpu", "cuda", "chunked")


def _cpu_backend():
    from . import scan_cpu

    return scan_cpu.selective_scan_cpu if scan_cpu.is_available() else None


def _cuda_backend():
    from . import kernels

    return kernels.selective_scan_cuda if kernels.selective_scan_available() else None


def resolve_backend(backend: str, device: torch.device):
    """The scan function for `backend` on `device`; an explicit backend that cannot run there is an error."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose one of {BACKENDS}")
    if backend == "reference":
        return selective_scan_reference
    if backend == "chunked":
        return selective_scan_chunked
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"scan backend 'cuda' needs CUDA tensors, got tensors on {device}")
        fn = _cuda_backend()
        if fn is None:
            raise RuntimeError("scan backend 'cuda' requested but mamba-ssm is not usable; pip install 'caduceus-hf[cuda]'")
        return fn
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"scan backend 'cpu' needs CPU tensors, got tensors on {device}")
        fn = _cpu_backend()
        if fn is None:
            raise RuntimeError("scan backend 'cpu' requested but its kernels are unavailable (numba missing?)")
        return fn
    if device.type == "cuda":
        return _cuda_backend() or selective_scan_chunked
    if device.type == "cpu":
        return _cpu_backend() or selective_scan_reference
    return selective_scan_chunked


def selective_scan(
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
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan with softplus discretisation, channels-last.

    Shapes: u, delta, z (batch, length, d_inner); B, C (batch, length, d_state); A (d_inner, d_state);
    D, delta_bias (d_inner,); mask (batch, length), 1 for real tokens; initial_state (batch, d_inner, d_state).

        dt_t = softplus(delta_t + delta_bias) * mask_t
        h_t  = exp(dt_t * A) * h_{t-1} + (dt_t * u_t) B_t       (t ascending, or descending when reverse)
        y_t  = (h_t . C_t + D * u_t) * silu(z_t)

    A masked step leaves the state untouched, so padding on either side does not change the real tokens' outputs.
    The state is float32 whatever the input dtype; y has u's dtype. Returns y, or (y, final state) when
    return_final_state.
    """
    fn = resolve_backend(backend, u.device)
    return fn(
        u,
        delta,
        A,
        B,
        C,
        D=D,
        z=z,
        delta_bias=delta_bias,
        mask=mask,
        reverse=reverse,
        initial_state=initial_state,
        return_final_state=return_final_state,
    )
