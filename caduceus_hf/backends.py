"""Which implementation runs the mixer: every kernel choice of the model is made in this file.

A backend implements the mixer's two sequence ops, the short convolution + SiLU and the selective scan, in the
channels-last contract of `caduceus_hf.ops` (`conv.short_conv_silu`, `scan_reference.selective_scan_reference`), and
may run a whole mixer another way (`mamba`, `bimamba`: the CUDA backend's fused kernels). A model picks one by name at
run time, like transformers' attention implementations: `from_pretrained(..., scan_backend=name)` or
`model.set_scan_backend(name)`; the name is not saved with the model.

Names:
    "reference"  plain PyTorch (`ops/scan_reference.py`, `ops/conv.py`): any device, the ground truth.
    "cpu"        numba kernels (`ops/scan_cpu.py`, `ops/conv_cpu.py`): CPU tensors, when numba works.
    "cuda"       mamba-ssm / causal-conv1d kernels (`ops/kernels.py`): CUDA tensors, when mamba-ssm imports.
    "auto"       for the tensors' device, the first registered backend whose `auto` accepts it, else "reference":
                 "cuda" for CUDA tensors with mamba-ssm, "cpu" for CPU tensors with numba.

Rules, the same for every op:
* A named backend that cannot run on the tensors' device (other device, package missing or broken) is an error that
  says why; "auto" never errors.
* A backend that runs takes every input of the contract: an input its kernel lacks (float64, a convolution width
  causal-conv1d lacks, an initial state for mamba-ssm's scan, a d_state over 256 on CPU) goes to the reference op.
* Long CPU sequences without autograd run in time chunks (`chunked`, the one place that decides), calling the same
  ops; compiled and exported graphs never take that path.

Adding a backend is one class in this file: subclass `MixerBackend`, implement `unavailable` (and `auto` if "auto"
should pick it) and the ops it accelerates (`scan`, `conv`; the others default to the reference), and decorate it with
`@register`. Registration order is "auto"'s order of preference. For example, a device-agnostic scan that "auto" takes
wherever neither kernel backend runs:

    @register
    class ChunkedScan(MixerBackend):
        name = "pscan"

        def auto(self, device):
            return device.type != "cpu"  # registered after "cuda": CUDA without mamba-ssm, MPS, XPU, ...

        def scan(self, *args, **kwargs):
            return selective_scan_chunked(*args, **kwargs)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .ops import conv_cpu, kernels, scan_cpu
from .ops.conv import short_conv_silu as _conv_reference
from .ops.scan_chunked import selective_scan_chunked
from .ops.scan_reference import selective_scan_reference

if TYPE_CHECKING:
    from .mixer import BiMamba, Mamba

logger = logging.getLogger(__name__)

STREAM_CHUNK = 8192
"""Time steps per chunk of the chunked inference path; a module constant so that tests can lower it. 2048-step chunks
(whose intermediates stay in a 32 MB L3 cache) were faster on a loaded machine with OMP_WAIT_POLICY=PASSIVE, but on a
quiet one with the default wait policy they made an 8k forward 1.25x slower than one pass and a 32k forward 1.1x
slower than 8192-step chunks (benchmarks/README.md): every chunk costs a round of OpenMP parallel regions."""


def chunked(hidden_states: torch.Tensor) -> bool:
    """Whether a mixer input (batch, length, d) runs in time chunks (`BiMamba.forward_chunked`): CPU tensors, no
    autograd, longer than a chunk, eager mode.

    Only inference: the chunked path recomputes one direction instead of keeping it, which autograd cannot see.
    CUDA tensors keep their kernels' one-launch paths; torch.compile and torch.export trace the whole-sequence path,
    which has no Python loop over chunks and no length-dependent branch.
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return not torch.is_grad_enabled() and hidden_states.device.type == "cpu" and hidden_states.shape[1] > STREAM_CHUNK


class MixerBackend:
    """One implementation of the mixer's ops; the defaults are the PyTorch reference."""

    name: str = ""

    def unavailable(self, device: torch.device) -> str | None:
        """None when this backend can run tensors on `device`, else why not (shown in the error)."""
        return None

    def auto(self, device: torch.device) -> bool:
        """Whether "auto" picks this backend for `device` (asked in registration order; it must be available)."""
        return False

    def scan(
        self,
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
        """The selective scan; contract of `ops.scan_reference.selective_scan_reference`."""
        return selective_scan_reference(
            u, delta, A, B, C, D, z, delta_bias, mask, reverse, initial_state, return_final_state
        )

    def conv(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool = False
    ) -> torch.Tensor:
        """silu(depthwise conv1d(x)); contract of `ops.conv.short_conv_silu`."""
        return _conv_reference(x, weight, bias, reverse)

    def mamba(
        self, mamba: Mamba, hidden_states: torch.Tensor, mask: torch.Tensor | None, reverse: bool
    ) -> torch.Tensor | None:
        """A whole one-direction mixer (batch, length, d_model) -> same, or None to run it op by op."""
        return None

    def bimamba(
        self, bimamba: BiMamba, hidden_states: torch.Tensor, mask: torch.Tensor | None, swap_directions: bool
    ) -> torch.Tensor | None:
        """A whole tied bidirectional mixer (batch, length, d_model) -> same, or None to run it op by op."""
        return None


BACKENDS: dict[str, MixerBackend] = {}
"""Registered backends by name, in "auto"'s order of preference."""


def register(cls: type[MixerBackend]) -> type[MixerBackend]:
    """Class decorator: add a backend under `cls.name`."""
    if not cls.name or cls.name == "auto" or cls.name in BACKENDS:
        raise ValueError(f"backend name {cls.name!r} is empty, reserved or taken")
    BACKENDS[cls.name] = cls()
    return cls


def names() -> tuple[str, ...]:
    """Every name `scan_backend` accepts."""
    return ("auto", *BACKENDS)


def check_name(name: str) -> str:
    """`name` if it is a backend name, else a ValueError listing them."""
    if name not in names():
        raise ValueError(f"unknown scan_backend {name!r}; choose one of {names()}")
    return name


@torch.compiler.assume_constant_result
def _resolve_name(name: str, device: torch.device) -> str:
    """The backend that runs `name` on `device`. Traced graphs take the answer as a constant: availability checks
    import packages and run kernels, which must not be traced."""
    if name == "auto":
        return next((b.name for b in BACKENDS.values() if b.auto(device)), "reference")
    reason = BACKENDS[check_name(name)].unavailable(device)
    if reason is not None:
        raise RuntimeError(f"scan_backend {name!r} cannot run here: {reason}")
    return name


def resolve(name: str, device: torch.device) -> MixerBackend:
    """The backend object for scan_backend `name` and tensors on `device`, by the rules in the module docstring."""
    return BACKENDS[_resolve_name(name, device)]


def selective_scan(*args, backend: str = "auto", **kwargs):
    """`selective_scan_reference`'s contract on the backend `backend` picks for u's device."""
    u = args[0] if args else kwargs["u"]
    return resolve(backend, u.device).scan(*args, **kwargs)


def short_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool = False,
                    backend: str = "auto") -> torch.Tensor:  # fmt: skip
    """`ops.conv.short_conv_silu`'s contract on the backend `backend` picks for x's device."""
    return resolve(backend, x.device).conv(x, weight, bias, reverse)


# --- the built-in backends, in "auto"'s order -------------------------------------------------------------------


@register
class CudaKernels(MixerBackend):
    """mamba-ssm's selective scan and mamba_inner_fn, causal-conv1d's convolution, on CUDA tensors."""

    name = "cuda"

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cuda":
            return f"it needs CUDA tensors, got tensors on {device}"
        if kernels.load().selective_scan_fn is None:
            return "mamba-ssm is not usable (see the log line above); pip install 'caduceus-hf[cuda]'"
        return None

    def auto(self, device: torch.device) -> bool:
        return self.unavailable(device) is None

    def scan(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, mask=None, reverse=False, initial_state=None,
             return_final_state=False):  # fmt: skip
        if u.dtype not in kernels.KERNEL_DTYPES or initial_state is not None:
            return super().scan(u, delta, A, B, C, D, z, delta_bias, mask, reverse, initial_state, return_final_state)
        return kernels.selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, mask, reverse, return_final_state)

    def conv(self, x, weight, bias, reverse=False):
        if not kernels.causal_conv1d_supports(x, weight):
            return super().conv(x, weight, bias, reverse)
        return kernels.causal_conv_silu_cuda(x, weight, bias, reverse)

    def mamba(self, mamba, hidden_states, mask, reverse):
        """mamba_inner_fn (needs causal-conv1d too); not with a mask, which the fused kernel cannot skip. The reverse
        direction runs on the time-flipped input, as the original does (in_proj is position-wise)."""
        if (
            mask is not None
            or kernels.load().mamba_inner_fn is None
            or hidden_states.dtype not in kernels.KERNEL_DTYPES
            or mamba.conv1d.kernel_size[0] not in kernels.CONV_WIDTHS
        ):
            return None
        if reverse:
            hidden_states = hidden_states.flip(1)
        # out_proj's bias is added here: mamba_inner_fn's backward returns a 0-d gradient for it (mamba-ssm 2.3.2
        # sums a 2-d tensor over dims (0, 1)), which autograd rejects.
        out = kernels.mamba_inner_cuda(
            _in_proj_kernel_layout(mamba.in_proj, hidden_states), mamba.conv1d.weight, mamba.conv1d.bias,
            mamba.x_proj.weight, mamba.dt_proj.weight, mamba.out_proj.weight, None,
            -torch.exp(mamba.A_log.float()), mamba.D.float(), mamba.dt_proj.bias.float(),
        )  # fmt: skip
        if mamba.out_proj.bias is not None:
            out = out + mamba.out_proj.bias
        return out.flip(1) if reverse else out

    def bimamba(self, bimamba, hidden_states, mask, swap_directions):
        """Both directions of a tied BiMamba in one selective_scan_fn launch.

        The two directions are stacked along channels, (batch, 2 * d_inner, length), the reverse one flipped in time;
        their separate B and C ride in the kernel's groups (batch, 2, d_state, length) and A, D, delta_bias are
        concatenated. At batch 1 the scan runs one thread block per channel and is latency-bound, so twice the
        channels in one launch costs little more than one direction. Everything stays in the kernels' layout: the
        projections are batched matmuls that write it directly, so the only copies are the flips and the stackings.
        """
        if hidden_states.dtype not in kernels.KERNEL_DTYPES:
            return None
        fwd, rev = bimamba.mamba_fwd, bimamba.mamba_rev
        batch, length, _ = hidden_states.shape
        d_inner, d_state, rank = fwd.d_inner, fwd.d_state, fwd.dt_rank
        flips = (swap_directions, not swap_directions)

        # 1. Shared in_proj, straight into the kernels' layout; both directions stacked along channels.
        x, z = _in_proj_kernel_layout(fwd.in_proj, hidden_states).chunk(2, dim=1)
        if mask is not None:
            x = x * mask.unsqueeze(1).to(x.dtype)
        x = torch.cat([_time_flip(x, f) for f in flips], dim=1)
        z = torch.cat([_time_flip(z, f) for f in flips], dim=1)
        conv_weight = torch.cat([fwd.conv1d.weight, rev.conv1d.weight])
        conv_bias = None if fwd.conv1d.bias is None else torch.cat([fwd.conv1d.bias, rev.conv1d.bias])
        # The kernel reads (batch, channels, length) with unit time stride; a channels-last conv result needs a copy.
        x = self.conv(x.transpose(1, 2), conv_weight, conv_bias).transpose(1, 2).contiguous()

        # 2. (2, r + 2n, d_inner) @ (batch, 2, d_inner, length): each direction's x_proj, in the kernel's layout.
        x_dbl = torch.stack([fwd.x_proj.weight, rev.x_proj.weight]) @ x.reshape(batch, 2, d_inner, length)
        dt, B, C = x_dbl.split([rank, d_state, d_state], dim=2)
        delta = (torch.stack([fwd.dt_proj.weight, rev.dt_proj.weight]) @ dt).reshape(batch, 2 * d_inner, length)
        A = -torch.exp(torch.cat([fwd.A_log, rev.A_log]).float())
        D = torch.cat([fwd.D, rev.D]).float()
        delta_bias = torch.cat([fwd.dt_proj.bias, rev.dt_proj.bias]).float()
        softplus = True
        if mask is not None:
            # As in kernels.selective_scan_cuda: masked steps get dt = 0, so the softplus is applied here.
            halves = torch.stack([_time_flip(mask.to(torch.float32), f) for f in flips], dim=1)  # (batch, 2, length)
            delta = F.softplus(delta.float() + delta_bias.unsqueeze(-1)) * halves.repeat_interleave(d_inner, dim=1)
            delta, delta_bias, softplus = delta.to(x.dtype), None, False

        # 3. Both scans in one launch, then back to channels-last and the shared out_proj.
        y = kernels.selective_scan_kernel_layout(x, delta, A, B, C, D, z, delta_bias, softplus)
        y_fwd, y_rev = (_time_flip(half, f).transpose(1, 2) for half, f in zip(y.chunk(2, dim=1), flips))
        return bimamba.combine(y_fwd, y_rev)


def _in_proj_kernel_layout(in_proj: torch.nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
    """in_proj of (batch, length, d_model) straight into the kernels' (batch, 2 * d_inner, length) layout.

    W x^T is (2 * d_inner, batch * length), so length keeps unit stride without a transposing copy (as mamba_simple).
    """
    batch, length, _ = hidden_states.shape
    xz = (in_proj.weight @ hidden_states.reshape(batch * length, -1).t()).view(-1, batch, length).transpose(0, 1)
    return xz if in_proj.bias is None else xz + in_proj.bias.to(xz.dtype).unsqueeze(-1)


def _time_flip(t: torch.Tensor, flip: bool) -> torch.Tensor:
    return t.flip(-1) if flip else t


@register
class CpuKernels(MixerBackend):
    """The numba scan and convolution, forward and backward, registered as torch custom ops."""

    name = "cpu"

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cpu":
            return f"it needs CPU tensors, got tensors on {device}"
        if not scan_cpu.is_available():
            return "its numba kernels are unavailable (numba missing or failing: see the log); pip install numba"
        return None

    def auto(self, device: torch.device) -> bool:
        return self.unavailable(device) is None

    def scan(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, mask=None, reverse=False, initial_state=None,
             return_final_state=False):  # fmt: skip
        return scan_cpu.selective_scan_cpu(
            u, delta, A, B, C, D, z, delta_bias, mask, reverse, initial_state, return_final_state
        )

    def conv(self, x, weight, bias, reverse=False):
        if not conv_cpu.supports(x, weight):
            return super().conv(x, weight, bias, reverse)
        return conv_cpu.short_conv_silu_cpu(x, weight, bias, reverse)


@register
class Chunked(MixerBackend):
    """The parallel selective scan in plain PyTorch (`ops/scan_chunked.py`): any device, no compiled extension.
    "auto" picks it for every device but the CPU that no backend before it accepts (MPS, XPU, ROCm, CUDA without
    mamba-ssm); the convolution stays the reference's."""

    name = "chunked"

    def auto(self, device: torch.device) -> bool:
        return device.type != "cpu"

    def scan(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, mask=None, reverse=False, initial_state=None,
             return_final_state=False):  # fmt: skip
        return selective_scan_chunked(
            u, delta, A, B, C, D, z, delta_bias, mask, reverse, initial_state, return_final_state
        )


@register
class Reference(MixerBackend):
    """Plain PyTorch: the defaults of `MixerBackend`."""

    name = "reference"
