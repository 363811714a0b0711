"""mamba-ssm and causal-conv1d CUDA kernels in the channels-last contract of the other ops: tensors in, tensors out.

Nothing in mamba_ssm imports without its compiled extension, and a broken build fails at import time with whatever
the loader raises (undefined symbols, a CUDA mismatch), so the packages are imported once, lazily, inside
try/except (`load`). Which op runs on which kernel is decided in `caduceus_hf.backends` (backend "cuda"), which asks
`load()` only for CUDA tensors; the functions here do the layout work around each kernel: the model is channels-last
(batch, length, channels), the kernels want (batch, channels, length) with unit stride along length; the reverse
direction is a flip in time; an attention mask is folded into delta. They run on whatever tensors they get, so the
CPU tests drive them through mamba-ssm's and causal-conv1d's real Python layers with stand-ins for the compiled
modules.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# The dtypes every kernel here is compiled for; others (float64) take the PyTorch path.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# causal_conv1d supports widths 2..4 only (mamba's d_conv is 4).
CONV_WIDTHS = range(2, 5)


@dataclass(frozen=True)
class Kernels:
    """The kernel entry points that imported; None for each that did not."""

    selective_scan_fn: Callable | None = None
    mamba_inner_fn: Callable | None = None
    causal_conv1d_fn: Callable | None = None


def _import_failure(package: str, module: str, err: BaseException) -> tuple[str, bool]:
    """A short description of why `module` did not import, and whether the package is installed but broken."""
    absent = isinstance(err, ModuleNotFoundError) and err.name == module
    if absent:
        return f"{package} is not installed", False
    first_line = next(iter(str(err).splitlines()), "")
    return f"{package} is installed but failed to import ({type(err).__name__}: {first_line})", True


@functools.cache
def load() -> Kernels:
    """Import the kernels once; a missing or broken install logs one line and leaves those entry points None.

    A package that is simply not installed is reported at INFO: the [cuda] extra is optional and the PyTorch path is
    correct. One that is installed but fails to import is reported at WARNING: its user asked for the kernels and
    would otherwise get the much slower path without a word. (Forcing scan_backend="cuda" without a usable kernel is
    an error raised by `caduceus_hf.backends`, louder than either.)
    """
    problems: list[str] = []
    broken = False
    scan_fn = inner_fn = conv_fn = None
    try:
        interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        scan_fn = interface.selective_scan_fn
        # mamba_inner_fn needs causal-conv1d's compiled functions, which mamba_ssm sets to None when they are missing.
        if getattr(interface, "causal_conv1d_fwd_function", None) is not None:
            inner_fn = interface.mamba_inner_fn
    except Exception as err:  # noqa: BLE001 - a broken build can raise anything at import time
        problem, is_broken = _import_failure("mamba-ssm", "mamba_ssm", err)
        problems.append(problem)
        broken |= is_broken
    try:
        conv_fn = importlib.import_module("causal_conv1d").causal_conv1d_fn
    except Exception as err:  # noqa: BLE001
        problem, is_broken = _import_failure("causal-conv1d", "causal_conv1d", err)
        problems.append(problem)
        broken |= is_broken
    if problems:
        fallbacks = [name for name, fn in (("selective scan", scan_fn), ("short convolution", conv_fn)) if fn is None]
        logger.log(
            logging.WARNING if broken else logging.INFO,
            "caduceus_hf: %s; CUDA tensors use the PyTorch %s (pip install 'caduceus-hf[cuda]' for the kernels)",
            "; ".join(problems),
            " and ".join(fallbacks),
        )
    return Kernels(scan_fn, inner_fn, conv_fn)


def _kernel_layout(t: torch.Tensor, reverse: bool) -> torch.Tensor:
    """(batch, length, c) -> (batch, c, length) with unit stride along length, reversed in time if asked.

    No copy when t is already a transposed view of (batch, c, length) memory (short_conv_silu's output is).
    """
    t = t.transpose(1, 2)
    return (t.flip(-1) if reverse else t).contiguous()


def selective_scan_cuda(
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
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The channels-last scan of `caduceus_hf.ops.scan_reference` (without an initial state, which the kernel lacks)
    through mamba-ssm's selective_scan_fn, for u of a `KERNEL_DTYPES` dtype.

    The final state (batch, d_inner, d_state) carries no gradient: the kernel ignores it in its backward pass, so it
    is returned detached rather than silently wrong.
    """
    dtype = u.dtype
    if mask is None:
        softplus, bias = True, None if delta_bias is None else delta_bias.float()
    else:
        # A masked step must leave the state untouched: dt = 0 after the softplus, which the kernel cannot express,
        # so the discretised step goes in whole and the kernel skips its softplus.
        dt = delta.float() if delta_bias is None else delta.float() + delta_bias.float()
        delta = F.softplus(dt) * mask.to(torch.float32).unsqueeze(-1)
        softplus, bias = False, None
    out = load().selective_scan_fn(
        _kernel_layout(u, reverse),
        _kernel_layout(delta.to(dtype), reverse),
        A.float().contiguous(),
        _kernel_layout(B.to(dtype), reverse),
        _kernel_layout(C.to(dtype), reverse),
        None if D is None else D.float(),
        None if z is None else _kernel_layout(z.to(dtype), reverse),
        bias,
        softplus,
        return_final_state,
    )
    y, state = out if return_final_state else (out, None)
    y = (y.flip(-1) if reverse else y).transpose(1, 2)
    return (y, state.float().detach()) if return_final_state else y


def selective_scan_kernel_layout(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> torch.Tensor:
    """selective_scan_fn itself, in the kernel's layout: u, delta, z (batch, d, length) and B, C (batch, n, length)
    or in groups (batch, g, n, length), channel c reading group c // (d / g); A, D, delta_bias float32."""
    return load().selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, False)


# --- short convolution ------------------------------------------------------------------------------------------


def causal_conv1d_supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """causal-conv1d imported and has a kernel for this call: x (batch, length, channels) of a kernel dtype and a
    (channels, 1, width) weight of a supported width."""
    return (
        x.dtype in KERNEL_DTYPES
        and weight.shape[-1] in CONV_WIDTHS
        and load().causal_conv1d_fn is not None
    )


def _channel_last_ok(xt: torch.Tensor) -> bool:
    """causal_conv1d's own conditions for reading (batch, channels, length) with unit channel stride in place."""
    return (
        xt.stride(1) == 1
        and xt.shape[1] % 8 == 0
        and xt.stride(0) % 8 == 0
        and xt.stride(2) % 8 == 0
        and xt.data_ptr() % 16 == 0
    )


def causal_conv_silu_cuda(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool = False
) -> torch.Tensor:
    """`caduceus_hf.ops.conv.short_conv_silu` through causal_conv1d_fn(x (b, c, l), weight (c, w), bias, activation);
    only where `causal_conv1d_supports`."""
    xt = x.transpose(1, 2)
    if reverse:
        # The anti-causal convolution is the causal one in reversed time.
        xt = xt.flip(-1)
    if xt.stride(2) != 1 and not _channel_last_ok(xt):
        xt = xt.contiguous()
    out = load().causal_conv1d_fn(xt, weight[:, 0], bias, activation="silu")
    return (out.flip(-1) if reverse else out).transpose(1, 2)


# --- fused mixer ------------------------------------------------------------------------------------------------


def mamba_inner_cuda(
    xz: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    x_proj_weight: torch.Tensor,
    dt_proj_weight: torch.Tensor,
    out_proj_weight: torch.Tensor,
    out_proj_bias: torch.Tensor | None,
    A: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
) -> torch.Tensor:
    """mamba-ssm's mamba_inner_fn: in_proj's output xz (batch, 2 * d_inner, length) -> (batch, length, d_model), the
    causal direction, without a mask (the fused kernel cannot skip padded steps); A, D, delta_bias float32."""
    return load().mamba_inner_fn(
        xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, out_proj_weight, out_proj_bias, A, None, None, D,
        delta_bias=delta_bias, delta_softplus=True,
    )  # fmt: skip
