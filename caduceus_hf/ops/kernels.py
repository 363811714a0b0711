"""mamba-ssm and causal-conv1d CUDA kernels behind the PyTorch ops: used for CUDA tensors when they import.

Nothing in mamba_ssm imports without its compiled extension, and a broken build fails at import time with whatever
the loader raises (undefined symbols, a CUDA mismatch), so the packages are imported once, lazily, inside
try/except, and every caller keeps its PyTorch path as the fallback. Each selector below checks the tensors' device
before anything else, so CPU or MPS tensors never trigger the import, let alone reach a kernel.

Each `*_kernel` selector returns a kernel or None (then the caller runs its PyTorch path); each `run_*` function takes
the kernel as an argument and does all the layout work around it: the model is channels-last (batch, length,
channels), the kernels want (batch, channels, length) with unit stride along length; the reverse direction is a flip
in time; an attention mask is folded into delta. That keeps them testable on CPU, with reference implementations
standing in for the kernels. `disabled()` turns every kernel off, to compare with or benchmark the PyTorch path.

Tied BiMamba blocks run both directions in one scan launch (`run_bimamba`), staying in the kernels' layout; untied or
single-direction mixers without a mask run mamba_inner_fn (`run_mamba_inner`); everything else goes through the
channels-last ops with the scan and the short convolution on their kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .scan_reference import selective_scan_reference

if TYPE_CHECKING:
    from ..mixer import BiMamba, Mamba

logger = logging.getLogger(__name__)

# The dtypes every kernel here is compiled for; others (float64) take the PyTorch path.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# causal_conv1d supports widths 2..4 only (mamba's d_conv is 4).
CONV_WIDTHS = range(2, 5)

_disabled: contextvars.ContextVar[bool] = contextvars.ContextVar("caduceus_hf_kernels_disabled", default=False)


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
    an error raised by the dispatcher, louder than either.)
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


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this context CUDA tensors take the PyTorch path too (to compare the two, or to benchmark them)."""
    token = _disabled.set(True)
    try:
        yield
    finally:
        _disabled.reset(token)


def _usable(*tensors: torch.Tensor) -> bool:
    """All tensors are CUDA tensors of a kernel dtype and kernels are not disabled; checked before any import."""
    return not _disabled.get() and all(t.device.type == "cuda" and t.dtype in KERNEL_DTYPES for t in tensors)


# --- selective scan ---------------------------------------------------------------------------------------------


def selective_scan_available() -> bool:
    """mamba-ssm's selective_scan_fn imported (and kernels are not disabled). Ask only for CUDA tensors."""
    return not _disabled.get() and load().selective_scan_fn is not None


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
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`caduceus_hf.ops.selective_scan` through mamba-ssm's kernel; CUDA tensors only.

    The final state (batch, d_inner, d_state) carries no gradient: the kernel ignores it in its backward pass, so it
    is returned detached rather than silently wrong. float64 inputs, which the kernel lacks, use the reference.
    """
    if u.device.type != "cuda":
        raise ValueError(f"selective_scan_cuda needs CUDA tensors, got u on {u.device}")
    args = (u, delta, A, B, C, D, z, delta_bias, mask, reverse, initial_state, return_final_state)
    if u.dtype not in KERNEL_DTYPES:
        return selective_scan_reference(*args)
    kernel = load().selective_scan_fn
    if kernel is None:
        raise RuntimeError("selective_scan_cuda: mamba-ssm is not usable; pip install 'caduceus-hf[cuda]'")
    return run_selective_scan(kernel, *args)


def _kernel_layout(t: torch.Tensor, reverse: bool) -> torch.Tensor:
    """(batch, length, c) -> (batch, c, length) with unit stride along length, reversed in time if asked.

    No copy when t is already a transposed view of (batch, c, length) memory (short_conv_silu's output is).
    """
    t = t.transpose(1, 2)
    return (t.flip(-1) if reverse else t).contiguous()


def run_selective_scan(
    kernel: Callable,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    reverse: bool,
    initial_state: torch.Tensor | None,
    return_final_state: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The channels-last scan contract of `selective_scan` on top of `kernel`, a mamba-ssm `selective_scan_fn`.

    kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state) takes u, delta, z (b, d, l) and
    B, C (b, n, l), all of u's dtype, and A, D, delta_bias in float32.
    """
    if initial_state is not None:
        raise NotImplementedError(
            "mamba-ssm's selective_scan_fn has no initial-state input; use scan_backend='reference' for CUDA tensors "
            "with an initial_state"
        )
    dtype = u.dtype
    if mask is None:
        softplus, bias = True, None if delta_bias is None else delta_bias.float()
    else:
        # A masked step must leave the state untouched: dt = 0 after the softplus, which the kernel cannot express,
        # so the discretised step goes in whole and the kernel skips its softplus.
        dt = delta.float() if delta_bias is None else delta.float() + delta_bias.float()
        delta = F.softplus(dt) * mask.to(torch.float32).unsqueeze(-1)
        softplus, bias = False, None
    out = kernel(
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


# --- short convolution ------------------------------------------------------------------------------------------


def causal_conv1d_kernel(x: torch.Tensor, weight: torch.Tensor) -> Callable | None:
    """causal-conv1d's causal_conv1d_fn for x (batch, length, channels) and a (channels, 1, width) weight, or None."""
    if not _usable(x, weight) or weight.shape[-1] not in CONV_WIDTHS:
        return None
    return load().causal_conv1d_fn


def _channel_last_ok(xt: torch.Tensor) -> bool:
    """causal_conv1d's own conditions for reading (batch, channels, length) with unit channel stride in place."""
    return (
        xt.stride(1) == 1
        and xt.shape[1] % 8 == 0
        and xt.stride(0) % 8 == 0
        and xt.stride(2) % 8 == 0
        and xt.data_ptr() % 16 == 0
    )


def run_causal_conv_silu(
    kernel: Callable, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool
) -> torch.Tensor:
    """`short_conv_silu` on top of `kernel`, a causal_conv1d_fn(x (b, c, l), weight (c, w), bias, activation)."""
    xt = x.transpose(1, 2)
    if reverse:
        # The anti-causal convolution is the causal one in reversed time.
        xt = xt.flip(-1)
    if xt.stride(2) != 1 and not _channel_last_ok(xt):
        xt = xt.contiguous()
    out = kernel(xt, weight[:, 0], bias, activation="silu")
    return (out.flip(-1) if reverse else out).transpose(1, 2)


# --- fused mixer ------------------------------------------------------------------------------------------------


def _in_proj_kernel_layout(in_proj: torch.nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
    """in_proj of (batch, length, d_model) straight into the kernels' (batch, 2 * d_inner, length) layout.

    W x^T is (2 * d_inner, batch * length), so length keeps unit stride without a transposing copy (as mamba_simple).
    """
    batch, length, _ = hidden_states.shape
    xz = (in_proj.weight @ hidden_states.reshape(batch * length, -1).t()).view(-1, batch, length).transpose(0, 1)
    return xz if in_proj.bias is None else xz + in_proj.bias.to(xz.dtype).unsqueeze(-1)


def mamba_inner_kernel(x: torch.Tensor, backend: str, conv_width: int) -> Callable | None:
    """mamba-ssm's mamba_inner_fn for hidden states x on CUDA, or None when the unfused path must run.

    Needs causal-conv1d too, and a scan backend that allows the kernels ("auto" or "cuda").
    """
    if backend not in ("auto", "cuda") or not _usable(x) or conv_width not in CONV_WIDTHS:
        return None
    return load().mamba_inner_fn


def run_mamba_inner(kernel: Callable, mamba: Mamba, hidden_states: torch.Tensor, reverse: bool) -> torch.Tensor:
    """`mamba(hidden_states, reverse=reverse)` (batch, length, d_model) -> same, through `kernel`, a mamba_inner_fn.

    Without a mask only: the fused kernel has no way to skip padded steps. The reverse direction runs on the
    time-flipped input, as the original does; in_proj is position-wise, so that equals flipping xz.
    """
    if reverse:
        hidden_states = hidden_states.flip(1)
    out = kernel(
        _in_proj_kernel_layout(mamba.in_proj, hidden_states),
        mamba.conv1d.weight,
        mamba.conv1d.bias,
        mamba.x_proj.weight,
        mamba.dt_proj.weight,
        mamba.out_proj.weight,
        mamba.out_proj.bias,
        -torch.exp(mamba.A_log.float()),
        None,
        None,
        mamba.D.float(),
        delta_bias=mamba.dt_proj.bias.float(),
        delta_softplus=True,
    )
    return out.flip(1) if reverse else out


# --- both directions of a tied BiMamba in one scan launch ---------------------------------------------------------


def bimamba_scan_kernel(x: torch.Tensor, backend: str) -> Callable | None:
    """selective_scan_fn for `run_bimamba` on hidden states x, or None when the model's own path must run."""
    if backend not in ("auto", "cuda") or not _usable(x):
        return None
    return load().selective_scan_fn


def _time_flip(t: torch.Tensor, flip: bool) -> torch.Tensor:
    return t.flip(-1) if flip else t


def run_bimamba(
    kernel: Callable,
    bimamba: BiMamba,
    hidden_states: torch.Tensor,
    mask: torch.Tensor | None,
    swap_directions: bool,
    conv_silu: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """A tied BiMamba's forward (batch, length, d_model) -> same, both directions in one selective_scan_fn launch.

    The two directions are stacked along channels, (batch, 2 * d_inner, length), the reverse one flipped in time;
    their separate B and C ride in the kernel's groups (batch, 2, d_state, length) and A, D, delta_bias are
    concatenated. At batch 1 the scan runs one thread block per channel and is latency-bound, so twice the channels
    in one launch costs little more than one direction. Everything stays in the kernels' layout: the projections
    are batched matmuls that write it directly, so the only copies are the flips and the two stackings.
    `conv_silu` is the model's short convolution (ops.conv.short_conv_silu), channels-last.
    """
    fwd, rev = bimamba.mamba_fwd, bimamba.mamba_rev
    batch, length, _ = hidden_states.shape
    d_inner, d_state, rank = fwd.d_inner, fwd.d_state, fwd.dt_rank
    flips = (swap_directions, not swap_directions)

    x, z = _in_proj_kernel_layout(fwd.in_proj, hidden_states).chunk(2, dim=1)
    if mask is not None:
        x = x * mask.unsqueeze(1).to(x.dtype)
    x = torch.cat([_time_flip(x, f) for f in flips], dim=1)
    z = torch.cat([_time_flip(z, f) for f in flips], dim=1)
    conv_weight = torch.cat([fwd.conv1d.weight, rev.conv1d.weight])
    conv_bias = None if fwd.conv1d.bias is None else torch.cat([fwd.conv1d.bias, rev.conv1d.bias])
    # The kernel reads (batch, channels, length) with unit time stride; a channels-last conv result needs a copy.
    x = conv_silu(x.transpose(1, 2), conv_weight, conv_bias).transpose(1, 2).contiguous()

    # (2, r + 2n, d_inner) @ (batch, 2, d_inner, length): each direction's x_proj, in the kernel's layout.
    x_dbl = torch.stack([fwd.x_proj.weight, rev.x_proj.weight]) @ x.reshape(batch, 2, d_inner, length)
    dt, B, C = x_dbl.split([rank, d_state, d_state], dim=2)
    delta = (torch.stack([fwd.dt_proj.weight, rev.dt_proj.weight]) @ dt).reshape(batch, 2 * d_inner, length)
    A = -torch.exp(torch.cat([fwd.A_log, rev.A_log]).float())
    D = torch.cat([fwd.D, rev.D]).float()
    delta_bias = torch.cat([fwd.dt_proj.bias, rev.dt_proj.bias]).float()
    softplus = True
    if mask is not None:
        # As in run_selective_scan: masked steps get dt = 0, so the softplus is applied here.
        halves = torch.stack([_time_flip(mask.to(torch.float32), f) for f in flips], dim=1)  # (batch, 2, length)
        delta = F.softplus(delta.float() + delta_bias.unsqueeze(-1)) * halves.repeat_interleave(d_inner, dim=1)
        delta, delta_bias, softplus = delta.to(x.dtype), None, False
    y = kernel(x, delta, A, B, C, D, z, delta_bias, softplus, False)

    y_fwd, y_rev = (_time_flip(half, f).transpose(1, 2) for half, f in zip(y.chunk(2, dim=1), flips))
    out_proj = fwd.out_proj
    if bimamba.strategy == "ew_multiply":
        return out_proj(y_fwd) * out_proj(y_rev)
    out = out_proj(y_fwd + y_rev)
    return out if out_proj.bias is None else out + out_proj.bias
