"""The selective scan in plain PyTorch with parallel primitives: a few hundred operations per sequence, not per step.

For devices without a faster kernel (MPS, XPU, ROCm, CUDA without mamba-ssm). Same contract as
`caduceus_hf.ops.scan_reference.selective_scan_reference`; differentiable by autograd.

Algorithm. The recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(dt_t A), b_t = dt_t u_t B_t, all (d_state, d_inner)) is
the composition of the affine maps h -> a_t h + b_t, which is associative:

    (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)        (apply 1, then 2)

The sequence runs in chunks of CHUNK steps (the last one padded with identity steps, dt = 0: a = 1, b = 0, to a
power of two), the state carried from one chunk to the next; a chunk is K blocks of BLOCK consecutive steps. Per chunk:
  1. every block's own map from a zero state: a loop over the BLOCK step positions, each step one set of operations
     on all K blocks at once (its end state), and its total decay exp(A sum dt) in closed form;
  2. the state entering each block: a prefix scan of the K block maps from the carried state, by recursive pairing
     (`_scan`: pair neighbours into one map, scan the half-length sequence, recover the even elements from the odd
     state before them), log2(K) levels of a few operations each, linear work;
  3. the loop over the BLOCK step positions again from those states, contracting each state with C as it is made.
Two kernels do this: without a gradient to record (inference), `_chunk_inference` writes every (K, d_state, d_inner)
intermediate in place into two buffers and scans in time order either way (4 operations per step position in loop 1,
5 in loop 3); with one, `_chunk` makes fresh tensors for autograd and scans each chunk flipped when reverse.
Operations dispatched: about 9 x BLOCK + 12 log2(K) + 30 per chunk, whatever the sequence length.

Stability. dt >= 0 (a softplus, times a 0/1 mask) and A < 0, so every a_t is in (0, 1], and so is every product of
them the scan forms (the block decays exp(A sum dt) too): nothing overflows, and a product that underflows to 0 is
a decay that the sequential loop also takes below float32's range. There is no division by a cumulative decay (the
log-space shortcut h_t = P_t sum_s b_s / P_s, P_t = exp(A cumsum dt), overflows once a chunk's total decay passes
e^-88), and every state is a sum of the same terms the loop adds, bracketed differently: they agree to rounding.

Cost. No (length x d_state x d_inner) tensor exists, not even per chunk: the largest intermediates are
(batch, K, d_state, d_inner), made and used step by step, so memory is bounded by the chunk without autograd (with
autograd, what backward needs: a few states per step). Every state element costs two exponentials (one per loop)
and about eight passes of eager elementwise work over cache-resident (K, d_state, d_inner) buffers, where a fused
kernel makes one: benchmarks/README.md has the measurements and why this stays a few times faster than the
step-by-step loop on CPU rather than ten. exp2 of dt times a pre-scaled A replaces exp: torch's exp2 is about 3x
faster on CPU, and the scaling by log2(e) costs one float32 rounding of A.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CHUNK = 8192
"""Time steps per chunk (a power of two): larger chunks dispatch fewer operations (kernel launches), smaller ones keep
less for autograd."""
BLOCK = 64
"""Steps per block inside a chunk (a power of two): each block is a step of the sequential loops, run for all the
chunk's blocks at once. 64 makes a chunk of 8192 steps 128 blocks, whose (K, d_state, d_inner) buffers (4 MB at
d_inner 512) stay in cache; operations per chunk grow with it (measured in benchmarks/README.md)."""


def _scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """All states of h_k = a_k h_{k-1} + b_k from h0: a, b (batch, K, ...) with K a power of two, h0 (batch, ...)
    -> (batch, K, ...), by recursive pairing: log2(K) levels, about twice the sequential loop's work."""
    if a.shape[1] == 1:
        return torch.addcmul(b, a, h0.unsqueeze(1))
    a_even, a_odd = a.unflatten(1, (-1, 2)).unbind(2)
    b_even, b_odd = b.unflatten(1, (-1, 2)).unbind(2)
    # 1. Each pair (2i, 2i + 1) as one map: the states after the pairs are the states at the odd steps.
    h_odd = _scan(a_odd * a_even, torch.addcmul(b_odd, a_odd, b_even), h0)
    # 2. An even step starts from the odd state before it (h0 for the first).
    h_even = torch.addcmul(b_even, a_even, torch.cat([h0.unsqueeze(1), h_odd[:, :-1]], dim=1))
    return torch.stack([h_even, h_odd], dim=2).flatten(1, 2)


def _chunk(
    dt: torch.Tensor, dtu: torch.Tensor, B: torch.Tensor, C: torch.Tensor, A2: torch.Tensor, h: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk in scan order: dt, dtu = dt * u (batch, T, d); B, C (batch, T, n); A2 = A^T log2(e) (n, d); state h
    (batch, n, d) -> (the chunk's scan output before D and z (batch, T, d), the state after it). T = K * block."""
    batch, length, d_inner = dt.shape
    d_state = B.shape[-1]
    K = length // block
    # States are laid out (n, d): every broadcast then runs along d, the contiguous dimension.
    dt_steps = dt.view(batch, K, block, 1, d_inner).unbind(2)
    dtu_steps = dtu.view(batch, K, block, 1, d_inner).unbind(2)
    B_steps = B.reshape(batch, K, block, d_state, 1).unbind(2)
    C_steps = C.reshape(batch * K, block, 1, d_state).unbind(1)

    def step(j: int, state: torch.Tensor) -> torch.Tensor:
        """Step j of every block: exp(dt A) state + B (dt u), the factors made here rather than for the whole chunk."""
        decay = (dt_steps[j] * A2).exp2_()
        return torch.addcmul(decay * state, B_steps[j], dtu_steps[j])

    # 1. Each block's own map: its end state from zero, and its total decay exp(A sum dt).
    end = B_steps[0] * dtu_steps[0]
    for j in range(1, block):
        end = step(j, end)
    decay = (dt.view(batch, K, block, d_inner).sum(2).unsqueeze(-2) * A2).exp2_()
    # 2. The state entering each block: a scan over the blocks' maps.
    ends = _scan(decay, end, h)
    state = torch.cat([h.unsqueeze(1), ends[:, :-1]], dim=1)
    # 3. The steps of all blocks at once, each state contracted with C as it is made.
    ys = []
    for j in range(block):
        state = step(j, state)
        ys.append(torch.bmm(C_steps[j], state.view(batch * K, d_state, d_inner)))
    y = torch.cat(ys, dim=1).view(batch, length, d_inner)
    return y, state[:, -1]


def _chunk_inference(
    dt: torch.Tensor,
    dtu: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    A2: torch.Tensor,
    h: torch.Tensor,
    block: int,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_chunk` without autograd, in time order (scanned backwards when reverse): the same arithmetic in the same
    order, but every (K, n, d) intermediate written in place into one of two buffers, so that each step position
    costs four operations (five with the output) and allocates nothing."""
    batch, length, d_inner = dt.shape
    d_state = B.shape[-1]
    K = length // block
    # Step j of every block is a strided view (no copy into a step-major layout), all made by one operation each.
    dt_steps = dt.view(batch * K, block, 1, d_inner).unbind(1)
    dtu_steps = dtu.view(batch * K, block, 1, d_inner).unbind(1)
    B_steps = B.reshape(batch * K, block, d_state, 1).unbind(1)
    C_steps = C.reshape(batch * K, block, 1, d_state).unbind(1)
    order = range(block - 1, -1, -1) if reverse else range(block)
    decay = dt.new_empty(batch * K, d_state, d_inner)

    def step(j: int, state: torch.Tensor) -> None:
        torch.mul(dt_steps[j], A2, out=decay)
        state.mul_(decay.exp2_()).addcmul_(B_steps[j], dtu_steps[j])

    # 1. Each block's own map: its end state from zero, and its total decay exp(A sum dt).
    state = torch.mul(B_steps[order[0]], dtu_steps[order[0]])
    for j in order[1:]:
        step(j, state)
    total = (dt.view(batch, K, block, 1, d_inner).sum(2) * A2).exp2_()
    # 2. The state entering each block, by a scan over the blocks' maps in scan order.
    ends = state.view(batch, K, d_state, d_inner)
    if reverse:
        total, ends = total.flip(1), ends.flip(1)
    ends = _scan(total, ends, h)
    state = torch.cat([h.unsqueeze(1), ends[:, :-1]], dim=1)
    if reverse:
        state = state.flip(1)
    state = state.view(batch * K, d_state, d_inner)
    # 3. The steps of all blocks at once, each state contracted with C as it is made, into a step-major output.
    y = dt.new_empty(block, batch * K, 1, d_inner)
    y_steps = y.unbind(0)
    for j in order:
        step(j, state)
        torch.bmm(C_steps[j], state, out=y_steps[j])
    y = y.view(block, batch, K, d_inner).permute(1, 2, 0, 3).reshape(batch, length, d_inner)
    return y, ends[:, -1]


def selective_scan_chunked(
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
    chunk: int | None = None,
    block: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """See `caduceus_hf.ops.scan_reference.selective_scan_reference` for the contract; all arithmetic in float32. `chunk` and `block` default to
    CHUNK and BLOCK, read at each call (tests lower them)."""
    chunk = CHUNK if chunk is None else chunk
    block = BLOCK if block is None else block
    if chunk < 1 or chunk & (chunk - 1) or block < 1 or block & (block - 1):
        raise ValueError(f"selective_scan_chunked: chunk and block must be powers of two, got {chunk} and {block}")
    batch, length, d_inner = u.shape
    A2 = (A.float() * math.log2(math.e)).t().contiguous()
    bias = None if delta_bias is None else delta_bias.float()
    D_f = None if D is None else D.float()
    # Without a gradient to record, the in-place kernel scans in time order, reverse included; autograd's needs
    # fresh tensors, and scans each chunk flipped.
    inference = not (
        torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))
    )

    if initial_state is None:
        h = u.new_zeros(batch, A.shape[1], d_inner, dtype=torch.float32)
    else:
        h = initial_state.float().transpose(1, 2)
    y = u.new_empty(batch, length, d_inner)
    starts = range(0, length, chunk)
    for start in reversed(starts) if reverse else starts:
        stop = min(start + chunk, length)
        # 1. The chunk's inputs, float32 (flipped into scan order for autograd's kernel).
        steps = [u[:, start:stop], delta[:, start:stop], B[:, start:stop], C[:, start:stop]]
        steps += [None if t is None else t[:, start:stop] for t in (z, mask)]
        if reverse and not inference:
            steps = [None if t is None else t.flip(1) for t in steps]
        u_c, dt, B_c, C_c, z_c, mask_c = (None if t is None else t.float() for t in steps)
        # 2. Step sizes; a masked step has dt = 0, which leaves the state untouched (a = 1, b = 0).
        if bias is not None:
            dt = dt + bias
        dt = F.softplus(dt)
        if mask_c is not None:
            dt = dt * mask_c.unsqueeze(-1)
        # 3. The scan, over the chunk padded with such identity steps to a power of two (a partial last chunk
        # costs less than twice its length), in blocks no longer than that.
        padded = min(chunk, 1 << max(0, math.ceil(math.log2(stop - start))))
        scanned = [dt, dt * u_c, B_c, C_c]
        if padded > stop - start:
            scanned = [F.pad(t, (0, 0, 0, padded - (stop - start))) for t in scanned]
        if inference:
            y_c, h = _chunk_inference(*scanned, A2, h, min(block, padded), reverse)
        else:
            y_c, h = _chunk(*scanned, A2, h, min(block, padded))
        y_c = y_c[:, : stop - start]
        # 4. Skip connection and gate.
        if D_f is not None:
            y_c = y_c.addcmul_(u_c, D_f) if inference else y_c + u_c * D_f
        if z_c is not None:
            y_c = y_c.mul_(F.silu(z_c)) if inference else y_c * F.silu(z_c)
        y[:, start:stop] = y_c.flip(1) if reverse and not inference else y_c
    return (y, h.transpose(1, 2)) if return_final_state else y
