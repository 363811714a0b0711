"""Mamba-1 mixer and BiMamba, with the parameter names of mamba_ssm's mamba_simple.Mamba.

A Mamba mixer runs in either direction: `reverse=True` scans from the end and uses the mirrored (anti-causal) short
convolution, which is what the original computes as flip(mamba(flip(x))), without materialising any flip.

Which implementation runs each op (reference, numba CPU kernels, mamba-ssm CUDA kernels, whole fused mixers) is decided
in `caduceus_hf.backends`, from the `scan_backend` name each module holds (set by `set_scan_backend` on the model).
Long sequences without autograd run in time chunks (`BiMamba.forward_chunked`), so that memory grows with
length x (d_model + 2 d_inner) rather than with the mixer's many length x d_inner intermediates, and each chunk's
intermediates stay in cache; `backends.chunked` decides when.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import backends
from .backends import MixerBackend
from .configuration_caduceus import CaduceusConfig
from .ops import precision

Rows = Callable[[int, int], torch.Tensor]
"""rows(start, stop) -> the mixer input (batch, stop - start, d_model) at those time steps, computed on demand."""
Write = Callable[[int, int, torch.Tensor], None]
"""write(start, stop, out) stores the mixer output (batch, stop - start, d_model) of those time steps."""


_buffers: contextvars.ContextVar[dict | None] = contextvars.ContextVar("caduceus_hf_chunk_buffers", default=None)


@contextlib.contextmanager
def reused_buffers() -> Iterator[None]:
    """Within it, forward_chunked takes its two (batch, length, d_inner) buffers from the layer before rather than
    allocating them: at 131k steps, faulting in fresh pages for one costs about 4 % of a layer. Released on exit.
    Nothing to do in traced graphs, which never take the chunked path (`backends.chunked`)."""
    if torch.compiler.is_compiling():
        yield
        return
    token = _buffers.set({})
    try:
        yield
    finally:
        _buffers.reset(token)


def _buffer(like: torch.Tensor, name: str, *shape: int) -> torch.Tensor:
    """An uninitialised tensor of `shape` with like's dtype and device; reused within `reused_buffers` (one per name,
    shape, dtype and device)."""
    cache = _buffers.get()
    if cache is None:
        return like.new_empty(shape)
    key = (name, shape, like.dtype, like.device)
    if key not in cache:
        cache[key] = like.new_empty(shape)
    return cache[key]


def _linear_rows(linear: nn.Linear, x: torch.Tensor, rows: slice) -> torch.Tensor:
    """linear(x) restricted to the output features `rows` (a contiguous slice of the weight: no copy)."""
    bias = None if linear.bias is None else linear.bias[rows]
    return precision.linear(x, linear.weight[rows], bias)


class Mamba(nn.Module):
    """One direction of a Caduceus mixer (mamba_simple.Mamba without the inference cache)."""

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        cfg = config.ssm_cfg
        self.d_model = config.d_model
        self.d_inner = config.d_inner
        self.d_state = cfg["d_state"]
        self.dt_rank = config.dt_rank
        self.in_proj = precision.Linear(self.d_model, 2 * self.d_inner, bias=cfg["bias"])
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=cfg["d_conv"],
            groups=self.d_inner,
            padding=cfg["d_conv"] - 1,
            bias=cfg["conv_bias"],
        )
        self.x_proj = precision.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = precision.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, self.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = precision.Linear(self.d_inner, self.d_model, bias=cfg["bias"])
        self.scan_backend = "auto"

    def ssm(
        self,
        x: torch.Tensor,
        z: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        reverse: bool = False,
        initial_state: torch.Tensor | None = None,
        return_final_state: bool = False,
        lead: int = 0,
        backend: MixerBackend | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The part between in_proj and out_proj: x and gate z (batch, length, d_inner) -> gated scan output, on
        `backend` (by default the one `scan_backend` resolves to for x's device).

        For a time chunk, x (and mask) also hold the neighbouring steps that the short convolution reads: `lead`
        steps before the chunk and any number after it; the chunk's length is then z's (or, without z, what the
        rest of x leaves), and the scan starts from initial_state (batch, d_inner, d_state) as the state carried in.
        """
        length = x.shape[1] - lead if z is None else z.shape[1]
        if backend is None:
            backend = backends.resolve(self.scan_backend, x.device)
        # 1. Padding contributes nothing: zero it before the convolution, and the scan skips masked steps.
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        x = backend.conv(x, self.conv1d.weight, self.conv1d.bias, reverse)
        if lead or x.shape[1] > length:
            x = x[:, lead : lead + length]
            mask = None if mask is None else mask[:, lead : lead + length]
        # 2. Input-dependent step size and projections.
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = precision.linear(dt, self.dt_proj.weight)
        # 3. Scan; the state and A stay float32 whatever the activations' dtype.
        A = -torch.exp(self.A_log.float())
        return backend.scan(
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
            initial_state=initial_state,
            return_final_state=return_final_state,
        )

    def forward(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None, reverse: bool = False
    ) -> torch.Tensor:
        """(batch, length, d_model) -> (batch, length, d_model): the backend's whole-mixer path where it has one (the
        CUDA backend's mamba_inner_fn, without a mask), else in_proj, `ssm` and out_proj."""
        backend = backends.resolve(self.scan_backend, hidden_states.device)
        fused = backend.mamba(self, hidden_states, mask, reverse)
        if fused is not None:
            return fused
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        return self.out_proj(self.ssm(x, z, mask, reverse, backend=backend))


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
        self.scan_backend = "auto"
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

        # The backend's whole-mixer path where it has one (CUDA: both directions in one scan launch).
        backend = backends.resolve(self.scan_backend, hidden_states.device)
        fused = backend.bimamba(self, hidden_states, mask, swap_directions)
        if fused is not None:
            return fused
        # 1. Shared input projection, once.
        x, z = self.mamba_fwd.in_proj(hidden_states).chunk(2, dim=-1)
        # 2. The two scans over the same projected input, in opposite directions.
        y_fwd = self.mamba_fwd.ssm(x, z, mask, reverse=swap_directions, backend=backend)
        y_rev = self.mamba_rev.ssm(x, z, mask, reverse=not swap_directions, backend=backend)
        # 3. Shared output projection: once for "add", per direction for "ew_multiply".
        return self.combine(y_fwd, y_rev)

    def combine(self, y_fwd: torch.Tensor, y_rev: torch.Tensor) -> torch.Tensor:
        """Both directions' scan outputs (batch, length, d_inner) -> the mixer output (batch, length, d_model)."""
        proj_fwd, proj_rev = self.mamba_fwd.out_proj, self.mamba_rev.out_proj
        if self.strategy == "ew_multiply":
            return proj_fwd(y_fwd) * proj_rev(y_rev)
        if not self.weight_tie:
            return proj_fwd(y_fwd) + proj_rev(y_rev)
        grad = torch.is_grad_enabled()
        out = proj_fwd(y_fwd + y_rev if grad else y_fwd.add_(y_rev))
        if proj_fwd.bias is None:
            return out
        return out + proj_fwd.bias if grad else out.add_(proj_fwd.bias)

    @torch.no_grad()
    def forward_chunked(
        self, rows: Rows, length: int, write: Write, mask: torch.Tensor | None = None, swap_directions: bool = False
    ) -> None:
        """The forward of rows(0, length) without autograd, backends.STREAM_CHUNK time steps at a time:
        write(start, stop, out) receives each chunk's output. Same values as `forward`. Once write has received steps
        start..stop, rows is never asked for them again, so write may overwrite what rows reads (the residual stream).

        A chunk's short convolution reads the d_conv - 1 neighbouring steps too, and each scan carries its state from
        the chunk before it in its own direction. One direction ascends, the other descends, and a chunk's output
        needs both: pass 1 runs the ascending direction through the chunks, keeping x (the in_proj half that the
        convolutions read) and the ascending scan's output before its gate, two (batch, length, d_inner) buffers;
        pass 2 walks the chunks downwards, running the descending direction, gating the kept output with z (computed
        then: it would be a third buffer) and combining. Nothing is computed twice but the norm of the input rows.
        """
        chunk = backends.STREAM_CHUNK
        bounds = [(start, min(start + chunk, length)) for start in range(0, length, chunk)]
        ctx = self.mamba_fwd.conv1d.kernel_size[0] - 1

        def mask_at(start: int, stop: int) -> torch.Tensor | None:
            return None if mask is None else mask[:, start:stop]

        if not self.bidirectional:
            self._single_direction_chunked(rows, write, mask_at, bounds, ctx, swap_directions)
            return
        # Which module runs which way: the mixer of a reverse-complemented strand swaps them (see forward).
        asc, desc = (self.mamba_rev, self.mamba_fwd) if swap_directions else (self.mamba_fwd, self.mamba_rev)
        d_inner = asc.d_inner
        x_half, z_half = slice(0, d_inner), slice(d_inner, 2 * d_inner)

        # Pass 1, ascending: x of the ascending direction everywhere (the descending one reads it in pass 2 when tied),
        # and the ascending scan's output before its gate, carrying the scan state from chunk to chunk.
        x_all = y_all = state = None
        for start, stop in bounds:
            x = _linear_rows(asc.in_proj, rows(start, stop), x_half)
            if x_all is None:
                x_all = _buffer(x, "x", x.shape[0], length, d_inner)
                y_all = _buffer(x, "y", x.shape[0], length, d_inner)
            x_all[:, start:stop] = x
            del x
            lo = max(0, start - ctx)
            y, state = asc.ssm(x_all[:, lo:stop], None, mask_at(lo, stop), False, state, True, lead=start - lo)
            y_all[:, start:stop] = y
            del y

        # Pass 2, descending: the descending direction of each chunk, the ascending one's gate, combined and written.
        state = ahead = None
        for start, stop in reversed(bounds):
            normed = rows(start, stop)
            z_asc = _linear_rows(asc.in_proj, normed, z_half)
            if self.weight_tie:
                z_desc, x_desc = z_asc, x_all[:, start : min(length, stop + ctx)]
            else:
                # Its own x: the steps after the chunk come from the chunk written before (`ahead`), not from rows.
                xz = desc.in_proj(normed)
                z_desc, x_desc = xz[..., z_half], _window(xz[..., x_half], ahead, after=True)
                ahead = x_desc[:, :ctx].clone()
            del normed
            y_asc = y_all[:, start:stop].mul_(F.silu(z_asc))
            y_desc, state = desc.ssm(x_desc, z_desc, mask_at(start, start + x_desc.shape[1]), True, state, True)
            y_fwd, y_rev = (y_desc, y_asc) if swap_directions else (y_asc, y_desc)
            write(start, stop, self.combine(y_fwd, y_rev))

    def _single_direction_chunked(self, rows, write, mask_at, bounds, ctx, reverse) -> None:
        """forward_chunked of a one-direction mixer: one pass, in the scan's direction, carrying its state and the
        convolution's context (the last ctx steps of x, which rows may no longer give once written)."""
        mamba = self.mamba_fwd
        d_inner = mamba.d_inner
        state = context = None
        for start, stop in reversed(bounds) if reverse else bounds:
            xz = mamba.in_proj(rows(start, stop))
            x = _window(xz[..., :d_inner], context, after=reverse)
            lo = stop - x.shape[1] if not reverse else start
            context = (x[:, :ctx] if reverse else x[:, x.shape[1] - ctx :]).clone()
            y, state = mamba.ssm(x, xz[..., d_inner:], mask_at(lo, lo + x.shape[1]), reverse, state, True, lead=start - lo)
            write(start, stop, mamba.out_proj(y))


def _window(x: torch.Tensor, context: torch.Tensor | None, after: bool) -> torch.Tensor:
    """A chunk's x (batch, n, d) with the convolution's context from the neighbouring chunk: after it, or before."""
    if context is None:
        return x
    return torch.cat([x, context] if after else [context, x], dim=1)
