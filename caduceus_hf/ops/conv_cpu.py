"""The mixer's short depthwise convolution + SiLU on CPU: numba kernels, forward and backward, channels-last.

Same contract as the PyTorch path of `caduceus_hf.ops.conv.short_conv_silu`: (batch, length, channels) in, a
(channels, 1, k) kernel, causal (output t sees inputs t-k+1..t) or anti-causal (reverse=True: inputs t..t+k-1 with
the kernel reversed), zeros outside the sequence, float32 arithmetic, output in x's dtype. A bfloat16 x is read in
place and the output (and x's gradient) written in bf16, rounded once, as in scan_cpu.py.

Why not F.conv1d: it wants (batch, channels, length), so the channels-last x (a channel slice of in_proj's output)
needs a padded, transposed copy, and oneDNN's depthwise kernel then takes about 30 ms for 8192 x 512 on this kind of
machine; this kernel reads x in place, writes a contiguous (batch, length, channels) result, and is bound by memory
traffic (about 1 ms there).

Layout, as in scan_cpu.py (which explains the numba idioms: unsigned indices, flat views with explicit strides, stack
scratch, 16-lane loops): a work item is a batch row and a tile of consecutive time steps; it walks its rows in order
and, within a row, the channels in 16-lane blocks (one AVX-512 register), so every load and store is unit-stride along
the row and the k input rows a step reads were touched a few steps before. A channel count that is not a multiple of
16 ends each row with a scalar remainder. The weight is passed transposed, (k, channels), so that a tap's weights are
unit-stride too.

Backward. With off_j the time offset of tap j (j - (k-1) causal, (k-1) - j anti-causal) and g the gradient of the
pre-activation a (the output's gradient times silu'(a), a recomputed from x), gx_s = sum_j w_j g_{s - off_j},
gw_j = sum_t g_t x_{t + off_j}, gbias = sum_t g_t. gx_s needs g at the k steps on the side the convolution looks
away from, so a work item walks its rows in that direction (descending for the causal convolution), starting k-1
rows beyond its tile, and keeps the last k rows of g in a ring of k x channels floats on its stack. Each work item
writes its own partial sums of gw and gbias, reduced afterwards in a fixed order: results are bitwise the same
whatever the thread count or timing. The tile length depends on the sequence length only, for the same reason.
"""

from __future__ import annotations

import torch

from . import scan_cpu
from .scan_cpu import _HAVE_NUMBA

_TILE = 256  # time steps per work item, at least
_MAX_TILES = 256  # per batch row: bounds the partial sums of the weight gradient (items x k x channels floats)
_MAX_RING = 1 << 16  # bound on k x channels: the backward's ring of pre-activation gradients stays under 256 KiB

if _HAVE_NUMBA:
    from numba import njit

    from .scan_cpu import _FASTMATH, _FASTMATH_REDUCE, _ONE, _U, _ZERO, _as, _claim, _exp, _f32, _jit, _stack

    # numba's cache keys a kernel on its own file only: after editing a helper imported from scan_cpu (such as
    # _exp), clear caduceus_hf/ops/__pycache__ so that these kernels are recompiled with it.

    @njit(inline="always", fastmath=_FASTMATH)
    def _preactivation(a, ab, x, xb, sx_t, w, bias, C, t, L, K, reverse):
        """a[ab:ab + C] = bias + the k taps of output step t, whole rows at a time."""
        for c in range(C):
            a[ab + c] = bias[c]
        for j in range(K):
            s = t + (K - 1 - j if reverse else j - (K - 1))
            if 0 <= s < L:
                xs = _U(xb + s * sx_t)
                wb = _U(j) * C
                for c in range(C):
                    a[ab + c] += w[wb + c] * _f32(x[xs + c])

    @_jit(fastmath=_FASTMATH, error_model="numpy", nogil=True)
    def _forward_worker(counter, x, sx_b, sx_t, w, bias, out, batch, L, C, K, reverse, tile):
        ntiles = (L + tile - 1) // tile
        Cu = _U(C)
        row = _stack(C)  # one output row's pre-activation, in float32 whatever out's element type
        for _ in range(batch * ntiles):
            item = _claim(counter)
            if item >= batch * ntiles:
                break
            b = item // ntiles
            t0 = (item % ntiles) * tile
            for t in range(t0, min(t0 + tile, L)):
                ob = _U(b * L + t) * Cu
                _preactivation(row, _U(0), x, b * sx_b, sx_t, w, bias, Cu, t, L, K, reverse)
                for c in range(Cu):
                    a = row[c]
                    out[ob + c] = _as(a / (_ONE + _exp(-a)), out)

    @_jit(fastmath=_FASTMATH_REDUCE, error_model="numpy", nogil=True)
    def _backward_worker(
        counter, x, sx_b, sx_t, gy, sg_b, sg_t, w, bias, gx, gw, gb, batch, L, C, K, reverse, tile,
    ):  # fmt: skip
        ntiles = (L + tile - 1) // tile
        Cu, Ku = _U(C), _U(K)
        ring = _stack(K * C)  # g of the last K rows walked, row r in slot r % K
        gwl = _stack(K * C)
        gbl = _stack(C)
        gxr = _stack(C)  # one row of gx, summed in float32
        for _ in range(batch * ntiles):
            item = _claim(counter)
            if item >= batch * ntiles:
                break
            b = item // ntiles
            t0 = (item % ntiles) * tile
            t1 = min(t0 + tile, L)
            for i in range(Ku * Cu):
                gwl[i] = _ZERO
            for c in range(Cu):
                gbl[c] = _ZERO
            # Walk away from where the convolution looks, from k-1 rows beyond the tile: the rows of g that gx of a
            # row needs are then in the ring.
            first = t0 - (K - 1) if reverse else t1 + K - 2
            for i in range(t1 - t0 + K - 1):
                r = first + i if reverse else first - i
                if r < 0 or r >= L:
                    continue
                slot = _U(r % K) * Cu
                gyb = _U(b * sg_b + r * sg_t)
                # 1. g_r = gy_r * silu'(a_r), a_r recomputed into the ring slot.
                _preactivation(ring, slot, x, b * sx_b, sx_t, w, bias, Cu, r, L, K, reverse)
                for c in range(Cu):
                    a = ring[slot + c]
                    sig = _ONE / (_ONE + _exp(-a))
                    ring[slot + c] = _f32(gy[gyb + c]) * sig * (_ONE + a * (_ONE - sig))
                if r < t0 or r >= t1:
                    continue
                # 2. The tile's own rows: partial sums of gbias and gw, and gx_r = sum_j w_j g_{r - off_j}.
                for c in range(Cu):
                    gbl[c] += ring[slot + c]
                ob = _U(b * L + r) * Cu
                for c in range(Cu):
                    gxr[c] = _ZERO
                for j in range(K):
                    s = r + (K - 1 - j if reverse else j - (K - 1))
                    if 0 <= s < L:
                        xb = _U(b * sx_b + s * sx_t)
                        wb = _U(j) * Cu
                        for c in range(Cu):
                            gwl[wb + c] += ring[slot + c] * _f32(x[xb + c])
                    q = r - (K - 1 - j if reverse else j - (K - 1))
                    if 0 <= q < L:
                        gsl = _U(q % K) * Cu
                        wb = _U(j) * Cu
                        for c in range(Cu):
                            gxr[c] += w[wb + c] * ring[gsl + c]
                for c in range(Cu):
                    gx[ob + c] = _as(gxr[c], gx)
            pb = _U(item) * Ku * Cu
            for i in range(Ku * Cu):
                gw[pb + i] = gwl[i]
            for c in range(Cu):
                gb[_U(item) * Cu + c] = gbl[c]


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernels take this call (numba's availability aside): CPU tensors of a float dtype up to 32 bits,
    and a small enough kernel. Looks at shapes and dtypes only."""
    return (
        x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and x.dim() == 3
        and weight.shape[-1] * x.shape[-1] <= _MAX_RING
    )


def _tile(length: int) -> int:
    return max(_TILE, -(-length // _MAX_TILES))


def _x_view(x: torch.Tensor, dtype: torch.dtype):
    """x in kernel form, elements of `dtype`: read in place when of that dtype with unit channel stride, else one
    copy."""
    if x.dtype != dtype or (x.shape[-1] > 1 and x.stride(-1) != 1):
        x = x.detach().to(dtype).contiguous()
    return scan_cpu._flat(x)


def _params(weight: torch.Tensor, bias: torch.Tensor | None, channels: int):
    """The (k, channels) transposed float32 weight and a float32 bias (zeros when absent), as flat numpy arrays."""
    wt = weight.detach().reshape(channels, -1).t().to(torch.float32).contiguous()
    b = torch.zeros(channels) if bias is None else bias.detach().to(torch.float32).contiguous()
    return wt.numpy().ravel(), b.numpy()


def _conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """The contiguous (batch, length, channels) output in x's dtype (bfloat16 read and written by the kernel)."""
    batch, length, channels = x.shape
    kernel = weight.shape[-1]
    dtype = scan_cpu.kernel_dtype(x)
    out = torch.empty(batch, length, channels, dtype=dtype)
    if out.numel():
        tile = _tile(length)
        items = batch * -(-length // tile)
        args = (*_x_view(x, dtype), *_params(weight, bias, channels), scan_cpu._flat(out)[0], batch, length, channels,
                kernel, reverse, tile)  # fmt: skip
        scan_cpu._run(_forward_worker, args, items, out.numel() * kernel)
    return out.to(x.dtype)


def _conv_forward_fake(x, weight, bias, reverse):
    return x.new_empty(x.shape)


def _conv_backward(
    gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of x, weight and bias (empty when bias is None), each in its input's dtype."""
    batch, length, channels = x.shape
    kernel = weight.shape[-1]
    tile = _tile(length)
    items = batch * -(-length // tile)
    dtype = scan_cpu.kernel_dtype(x)
    gx = torch.empty(batch, length, channels, dtype=dtype)
    gw = torch.empty(items, kernel, channels, dtype=torch.float32)
    gb = torch.empty(items, channels, dtype=torch.float32)
    if gx.numel():
        if gy.dtype != dtype or (channels > 1 and gy.stride(-1) != 1):
            gy = gy.to(dtype).contiguous()
        args = (
            *_x_view(x, dtype), *scan_cpu._flat(gy), *_params(weight, bias, channels), scan_cpu._flat(gx)[0],
            gw.numpy().ravel(), gb.numpy().ravel(), batch, length, channels, kernel, reverse, tile,
        )  # fmt: skip
        scan_cpu._run(_backward_worker, args, items, gx.numel() * kernel * 3)
    else:
        gw.zero_(), gb.zero_()
    grad_w = gw.sum(0).t().reshape(weight.shape).to(weight.dtype).contiguous()
    grad_b = torch.empty(0) if bias is None else gb.sum(0).to(bias.dtype)
    return gx.to(x.dtype), grad_w, grad_b


def _conv_backward_fake(gy, x, weight, bias, reverse):
    grad_b = x.new_empty(0, dtype=torch.float32) if bias is None else torch.empty_like(bias)
    return x.new_empty(x.shape), torch.empty_like(weight, memory_format=torch.contiguous_format), grad_b


def _conv_setup_context(ctx, inputs, output) -> None:
    x, weight, bias, reverse = inputs
    ctx.reverse = reverse
    # The kernel reads x through a view of its storage: autograd checks that nothing changed it in place.
    ctx.save_for_backward(x, weight, bias)


def _conv_autograd(ctx, gy):
    x, weight, bias = ctx.saved_tensors
    gx, gw, gb = torch.ops.caduceus_hf.short_conv_silu_cpu_backward(gy, x, weight, bias, ctx.reverse)
    need = ctx.needs_input_grad
    return gx if need[0] else None, gw if need[1] else None, gb if bias is not None and need[2] else None, None


if _HAVE_NUMBA:
    # Custom ops for torch.compile and torch.export, as in scan_cpu.py.
    _forward_op = torch.library.custom_op("caduceus_hf::short_conv_silu_cpu", mutates_args=(), device_types="cpu")(
        _conv_forward
    )
    _forward_op.register_fake(_conv_forward_fake)
    _backward_op = torch.library.custom_op(
        "caduceus_hf::short_conv_silu_cpu_backward", mutates_args=(), device_types="cpu"
    )(_conv_backward)
    _backward_op.register_fake(_conv_backward_fake)
    _forward_op.register_autograd(_conv_autograd, setup_context=_conv_setup_context)


def short_conv_silu_cpu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, reverse: bool = False
) -> torch.Tensor:
    """silu(depthwise conv1d(x)): x (batch, length, channels) with unit channel stride read in place (any batch and
    time strides), weight (channels, 1, k), bias (channels,) or None -> contiguous (batch, length, channels) in x's
    dtype. Causal, or anti-causal with reverse=True; see `caduceus_hf.ops.conv.short_conv_silu`."""
    return torch.ops.caduceus_hf.short_conv_silu_cpu(x, weight, bias, reverse)
