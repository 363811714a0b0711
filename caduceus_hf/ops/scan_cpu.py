"""The selective scan on CPU: numba kernels for the forward and backward pass, registered as torch custom ops.

Same contract as `caduceus_hf.ops.scan_reference.selective_scan_reference`: float32 state and arithmetic, output in
u's dtype. bfloat16 activations (u, delta, z, B, C all bf16: a model in bf16) are read in place through int16 views of
their storage and widened inside the kernels (`_f32`), and the outputs are written as bf16, rounded once to nearest
even (`_as`): no float32 copy of a (length x d_inner) tensor is made. Other dtypes are converted to float32 once.

The "auto" backend (`caduceus_hf.backends`) uses it for CPU tensors whenever numba imports (numba ships wheels: a
plain pip install needs no compiler). As custom ops with fake implementations and an autograd formula
(`caduceus_hf::selective_scan_cpu` and its backward), the kernels are single opaque ops to torch.compile and
torch.export.

Layout. The unit of work is one batch row and a block of 16 consecutive channels, one AVX-512 register of float32. It
walks the whole sequence with its (d_state x 16) state in a stack array, so the (length x d_inner x d_state) state
tensor never exists. Everything per channel (softplus, the decay exp, the state update, the C contraction, the D skip,
the silu gate) runs in loops of constant trip count 16 over the channel lanes, which LLVM turns into single vector
instructions; B_t and C_t are per-step scalars that broadcast. What it takes for LLVM to do that from numba code:
  - inputs are flat float32 views of their storage indexed with explicit batch and time strides, so channel slices
    of a wider tensor (x and z are halves of in_proj's output, B and C slices of x_proj's) are read in place, and
    every call has the same argument types: one compilation, one cache entry;
  - indices are unsigned, so numba emits no negative-index wraparound (with it, the loads became gathers);
  - no array view is made inside a loop: each costs numba an atomic reference-count pair, which halved the speed;
  - scratch arrays are stack allocations, which alias nothing: LLVM vectorises their loops without runtime overlap
    checks (on the heap, their scalar fallbacks made the backward slower and its speed depend on where malloc put
    the buffers), and can keep the 16-lane ones in registers;
  - a d_inner that is not a multiple of 16 is zero-padded (one copy of u, delta, z), so no loop carries a lane mask.

exp. numba has no vector math library here (no SVML), so math.exp stays a scalar libm call in the loop. `_exp` is
Cephes' expf written out: k = round(x log2 e), r = x - k ln 2 with ln 2 in two parts, a degree-6 polynomial, 2^k set
in the exponent bits through a bitcast intrinsic. It is branch-free, so it vectorises; relative error below 1e-7
(3e-7 in the backward, which allows reassociation for its lane sums). The argument is clamped to [-87.3, 88.4]:
dt A <= 0 for the decay, and below -87.3 float32 leaves its normal range anyway. softplus is
max(x, 0) + log1p(exp(-|x|)) with log1p from the atanh series; past x = 20 the log1p term is under half an ulp of x,
which is torch's threshold=20 behaviour.

Threads. torch.get_num_threads() workers (fewer for little work) run nogil numba functions on a small thread pool, the
caller being one of them, and claim work items from a shared atomic counter, so that a thread the OS schedules late
on a busy machine simply does fewer items. numba's parallel=True would be the other way; even as a thin prange over
the same workers it compiles 2.5-3x slower (its parfor passes re-optimise the whole kernel), and it brings numba's
threading layer (OpenMP, TBB or workqueue, each with fork or nesting caveats) alongside torch's. A backward work item
is a batch row and a group of up to 1/8 of the channel blocks, with its own partial sums: results are bitwise the
same whatever the thread count or timing.

Backward. The forward saves the state every `chunk` steps (64 for d_state 16): batch x length/chunk x d_state x
d_inner floats. The backward walks the chunks from the last one scanned to the first: it recomputes the chunk's
states and decays from its checkpoint into stack scratch ((chunk + 1) x d_state x 16 floats, in L2), then runs the
adjoint recurrence gh_{t-1} = exp(dt_t A) (gh_t + gy'_t C_t) back through the chunk. Memory is
O(L d + (L / chunk) d n). Gradients summed over channels (B, C) are reduced across the 16 lanes every step into the
work item's partial sums; those summed over time (A, D, delta_bias) stay in lanes until a channel block ends. The
initial state's gradient is the adjoint left after the first step, and a final state's incoming gradient seeds the
recurrence, so scanning a long sequence in time chunks with initial_state / return_final_state trains end to end.
"""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:
    import numba

    _HAVE_NUMBA = True
except ImportError:  # the package works without numba; the dispatcher then uses the reference scan
    _HAVE_NUMBA = False

logger = logging.getLogger(__name__)

_CB = 16  # channels per work item: one 512-bit register of float32
_U = np.uint64  # kernel indices are unsigned, so numba emits no negative-index wraparound that would stop vectorising
_CBU = _U(_CB)
_CHUNK = 64  # scan steps between saved states for the backward pass (fewer for large d_state, see _Prepared)
_CHUNK_STATES = 2048  # bound on (chunk + 1) * d_state: the backward's per-chunk scratch stays under 256 KiB of stack
_MAX_STATE = 256  # larger d_state (not a Mamba-1 size) goes to the reference: bounds the kernels' stack use
_GROUPS = 8  # channel-block groups per batch row in the backward: its work items, each with its own partial sums
_MIN_WORK_PER_THREAD = 1 << 18  # state updates below which another thread costs more than it saves

_f = np.float32
_ZERO, _ONE, _TWO, _THREE = _f(0.0), _f(1.0), _f(2.0), _f(3.0)
_EXP_LO, _EXP_HI = _f(-87.33654), _f(88.37626)
_LOG2E = _f(1.4426950408889634)
_LN2_HI, _LN2_LO = _f(0.693359375), _f(-2.12194440e-4)
_E0, _E1, _E2, _E3, _E4, _E5 = (
    _f(1.9875691500e-4),
    _f(1.3981999507e-3),
    _f(8.3334519073e-3),
    _f(4.1665795894e-2),
    _f(1.6666665459e-1),
    _f(5.0000001201e-1),
)
# 2^f on [-1/2, 1/2], degree 5, fitted for relative error (2.4e-7 in float32 arithmetic): the bf16 scan's decay.
_P0, _P1, _P2, _P3, _P4, _P5 = (
    _f(1.0000001192092896),
    _f(0.6931469440460205),
    _f(0.24022120237350464),
    _f(0.05550713092088699),
    _f(0.009675541892647743),
    _f(0.001327647129073739),
)
_EXP_BIAS, _MANTISSA = _f(127.0), _f(8388608.0)
_LN2, _SQRT2_M1 = _f(0.6931471805599453), _f(0.41421356237309503)
_I3, _I5, _I7, _I9 = _f(1 / 3), _f(1 / 5), _f(1 / 7), _f(1 / 9)

# No 'reassoc' in the forward: it would fold the exp's two-part range reduction. The backward needs it to vectorise
# its sums across lanes; the exp's error grows from 8e-8 to 3e-7 there, far inside the 1e-5 budget.
_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}
_FASTMATH_REDUCE = _FASTMATH | {"reassoc"}


@functools.cache
def is_available() -> bool:
    """numba imports, is not disabled (NUMBA_DISABLE_JIT would run the kernels as Python, far slower than torch), and
    the forward kernel compiles (or loads from numba's cache) and runs: the first call in a process pays for that."""
    if not _HAVE_NUMBA or numba.config.DISABLE_JIT:
        return False
    try:
        with torch.no_grad():
            x = torch.ones(1, 2, _CB)
            selective_scan_cpu(x, x, -torch.ones(_CB, 1), x[..., :1], x[..., :1])
    except Exception as error:  # a broken LLVM or numba install: fall back rather than fail every CPU forward
        logger.warning("caduceus_hf: numba CPU scan unusable (%s); CPU tensors use the PyTorch scan", error)
        return False
    return True


if _HAVE_NUMBA:
    from llvmlite import ir
    from numba import carray, njit
    from numba.core import types
    from numba.extending import intrinsic, overload

    def _jit(**options):
        """njit with numba's on-disk cache: beside this file, or in the user cache dir when the package is read-only;
        in memory only when neither is writable (numba refuses cache=True then)."""

        def decorate(fn):
            try:
                return njit(cache=True, **options)(fn)
            except RuntimeError as error:
                if "no locator available" not in str(error):
                    raise
                return njit(**options)(fn)

        return decorate

    # Scratch arrays live on the worker's stack rather than numba's heap. LLVM knows a stack slot aliases nothing
    # else, so it vectorises the loops that touch them without runtime overlap checks (whose scalar fallbacks made
    # the speed depend on where malloc happened to put the buffers), and the 16-lane ones become registers.

    @intrinsic
    def _stack_ptr(typingctx, size):
        def codegen(context, builder, signature, args):
            slot = builder.alloca(ir.FloatType(), size=args[0])
            slot.align = 64
            return slot

        return types.CPointer(types.float32)(types.intp), codegen

    @njit(inline="always")
    def _stack(size):
        """A float32 scratch array of `size` on the stack, until the function returns: call it outside loops."""
        return carray(_stack_ptr(size), size)

    @intrinsic
    def _lanes_ptr(typingctx):
        def codegen(context, builder, signature, args):
            with builder.goto_entry_block():
                slot = builder.alloca(ir.ArrayType(ir.FloatType(), _CB))
                slot.align = 64
            return builder.bitcast(slot, ir.PointerType(ir.FloatType()))

        return types.CPointer(types.float32)(), codegen

    @njit(inline="always")
    def _lanes():
        """A 16-float scratch vector in a fixed stack slot, which LLVM can promote to a register."""
        return carray(_lanes_ptr(), _CB)

    @intrinsic
    def _claim(typingctx, counter):
        """Atomically take the next work item number from counter[0] (an int64 array shared by the workers)."""

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            return builder.atomic_rmw("add", ary.data, ir.Constant(ir.IntType(64), 1), "monotonic")

        return types.int64(counter), codegen

    @intrinsic
    def _int_bits_as_float(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    @intrinsic
    def _f32(typingctx, x):
        """An element of a kernel input as float32: a float32 as it is, a bfloat16 (its bits read as int16) widened
        exactly, by putting its 16 bits on top of a float32's. So bf16 tensors are read in place, with no copy."""
        if x == types.float32:
            return types.float32(x), lambda context, builder, signature, args: args[0]
        if x == types.int16:

            def codegen(context, builder, signature, args):
                i32 = ir.IntType(32)
                bits = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
                return builder.bitcast(bits, ir.FloatType())

            return types.float32(x), codegen
        return None

    @intrinsic
    def _as(typingctx, v, out):
        """The float32 v as an element of the output array `out`: as it is for float32, rounded to the nearest
        bfloat16 (ties to even, as torch rounds) for a bf16 output written through an int16 view."""
        if out.dtype == types.float32:
            return types.float32(types.float32, out), lambda context, builder, signature, args: args[0]
        if out.dtype == types.int16:

            def codegen(context, builder, signature, args):
                i32 = ir.IntType(32)
                bits = builder.bitcast(args[0], i32)
                odd = builder.and_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
                bits = builder.add(bits, builder.add(odd, ir.Constant(i32, 0x7FFF)))
                return builder.trunc(builder.lshr(bits, ir.Constant(i32, 16)), ir.IntType(16))

            return types.int16(types.float32, out), codegen
        return None

    @njit(inline="always", fastmath=_FASTMATH)
    def _exp(x):
        x = min(max(x, _EXP_LO), _EXP_HI)
        k = np.rint(x * _LOG2E)
        r = x - k * _LN2_HI
        r = r - k * _LN2_LO
        p = ((((_E0 * r + _E1) * r + _E2) * r + _E3) * r + _E4) * r + _E5
        p = p * (r * r) + r + _ONE
        return p * _int_bits_as_float(np.int32((k + _EXP_BIAS) * _MANTISSA))

    @njit(inline="always", fastmath=_FASTMATH)
    def _exp2_short(x):
        """2^x with a degree-5 polynomial for 2^f, f in [-1/2, 1/2]: relative error 2.4e-7, cheaper than `_exp`
        (no two-part ln 2 reduction: x - round(x) is exact)."""
        x = min(max(x, _f(-126.0)), _f(127.0))
        k = np.rint(x)
        f = x - k
        p = ((((_P5 * f + _P4) * f + _P3) * f + _P2) * f + _P1) * f + _P0
        return p * _int_bits_as_float(np.int32((k + _EXP_BIAS) * _MANTISSA))

    def _decay_rate(a, out):
        """A as the forward kernel keeps it: A itself for a float32 output; A log2(e) for a bfloat16 output, whose
        decay factors are then 2^(dt A log2 e) (`_decay`)."""

    def _decay(x, out):
        """The decay factor exp(dt A) from x = dt * _decay_rate(A): `_exp` for a float32 output (unchanged), the
        shorter `_exp2_short` for an output rounded to bfloat16, where its 2.4e-7 is far below the rounding (2^-8)."""

    @overload(_decay_rate, inline="always", fastmath=_FASTMATH)
    def _decay_rate_impl(a, out):
        if out.dtype == types.int16:
            return lambda a, out: a * _LOG2E
        return lambda a, out: a

    @overload(_decay, inline="always", fastmath=_FASTMATH)
    def _decay_impl(x, out):
        if out.dtype == types.int16:
            return lambda x, out: _exp2_short(x)
        return lambda x, out: _exp(x)

    @njit(inline="always", fastmath=_FASTMATH)
    def _log1p_unit(e):
        """log1p(e) for e in [0, 1]: 2 atanh(s) with |s| <= 0.172, where 1 + e = (1 + s) / (1 - s) or twice that."""
        upper = e > _SQRT2_M1
        s = (e - _ONE if upper else e) / (e + _THREE if upper else e + _TWO)
        w = s * s
        p = (((_I9 * w + _I7) * w + _I5) * w + _I3) * w + _ONE
        return (_LN2 if upper else _ZERO) + _TWO * s * p

    @_jit(fastmath=_FASTMATH, error_model="numpy", nogil=True)
    def _forward_worker(
        counter, u, su_b, su_t, dl, sd_b, sd_t, z, sz_b, sz_t, has_z, Bm, sB_b, sB_t, Cm, sC_b, sC_t,
        mask, has_mask, At, Dv, bias, h0, y, h_last, ckpt, chunk, save_ckpt, batch, L, d, N, reverse,
    ):  # fmt: skip
        nblk = d // _CB
        nck = (L + chunk - 1) // chunk
        Nu, du = _U(N), _U(d)
        h = _stack(N * _CB)
        Al = _stack(N * _CB)
        Db = _lanes()
        bl = _lanes()
        acc = _lanes()
        dtv = _lanes()
        duv = _lanes()
        uv = _lanes()
        # Items are claimed one at a time, so a thread that the OS runs late (a busy machine) does less of them.
        for _ in range(batch * nblk):
            item = _claim(counter)
            if item >= batch * nblk:
                break
            b = item // nblk
            c0 = _U((item % nblk) * _CB)
            sbase = _U(b * N) * du + c0
            for n in range(Nu):
                for c in range(_CBU):
                    h[n * _CBU + c] = h0[sbase + n * du + c]
                    Al[n * _CBU + c] = _decay_rate(At[n * du + c0 + c], y)
            for c in range(_CBU):
                Db[c] = Dv[c0 + c]
                bl[c] = bias[c0 + c]
            for s in range(L):
                t = L - 1 - s if reverse else s
                if save_ckpt and s % chunk == 0:
                    kbase = _U((b * nck + s // chunk) * N) * du + c0
                    for n in range(Nu):
                        for c in range(_CBU):
                            ckpt[kbase + n * du + c] = h[n * _CBU + c]
                m = mask[b * L + t] if has_mask else _ONE
                ub = _U(b * su_b + t * su_t) + c0
                db = _U(b * sd_b + t * sd_t) + c0
                for c in range(_CBU):
                    x = _f32(dl[db + c]) + bl[c]
                    dt = (max(x, _ZERO) + _log1p_unit(_exp(-abs(x)))) * m
                    uc = _f32(u[ub + c])
                    uv[c] = uc
                    dtv[c] = dt
                    duv[c] = dt * uc
                    acc[c] = _ZERO
                Bb = _U(b * sB_b + t * sB_t)
                Cb = _U(b * sC_b + t * sC_t)
                for n in range(Nu):
                    bn = _f32(Bm[Bb + n])
                    cn = _f32(Cm[Cb + n])
                    for c in range(_CBU):
                        i = n * _CBU + c
                        hv = _decay(dtv[c] * Al[i], y) * h[i] + duv[c] * bn
                        h[i] = hv
                        acc[c] += hv * cn
                yb = _U(b * L + t) * du + c0
                if has_z:
                    zb = _U(b * sz_b + t * sz_t) + c0
                    for c in range(_CBU):
                        zc = _f32(z[zb + c])
                        y[yb + c] = _as((acc[c] + Db[c] * uv[c]) * (zc / (_ONE + _exp(-zc))), y)
                else:
                    for c in range(_CBU):
                        y[yb + c] = _as(acc[c] + Db[c] * uv[c], y)
            for n in range(Nu):
                for c in range(_CBU):
                    h_last[sbase + n * du + c] = h[n * _CBU + c]

    @_jit(fastmath=_FASTMATH_REDUCE, error_model="numpy", nogil=True)
    def _backward_worker(
        counter, ngroups, gsize, u, su_b, su_t, dl, sd_b, sd_t, z, sz_b, sz_t, has_z, Bm, sB_b, sB_t, Cm, sC_b, sC_t,
        mask, has_mask, At, Dv, bias, ckpt, chunk, gy, sg_b, sg_t, g_last,
        gu, gdl, gz, gB, gC, gA, gD, gbias, g_h0, batch, L, d, N, reverse,
    ):  # fmt: skip
        nblk = d // _CB
        nck = (L + chunk - 1) // chunk
        Nu, du = _U(N), _U(d)
        NC = Nu * _CBU
        H = _stack((chunk + 1) * N * _CB)  # states of the chunk being differentiated
        decay = _stack(chunk * N * _CB)  # exp(dt A) of its steps
        dts = _stack(chunk * _CB)
        dsp = _stack(chunk * _CB)  # d dt / d delta = mask * sigmoid(delta + bias)
        us = _stack(chunk * _CB)
        yss = _stack(chunk * _CB)  # h_t . C_t, the pre-gate output without D u
        gh = _stack(N * _CB)
        Al = _stack(N * _CB)
        gAl = _stack(N * _CB)
        Db = _lanes()
        bl = _lanes()
        gDl = _lanes()
        gbl = _lanes()
        gp = _lanes()
        duv = _lanes()
        gdt = _lanes()
        sB = _lanes()
        # A work item is a batch row and a group of consecutive channel blocks, claimed like the forward's. The
        # group's sums over its channels (gB, gC) go to its own slice, and the per-channel ones (gA, gD, gbias) to
        # its batch row: every partial sum has one fixed order whatever the thread count or timing.
        for _ in range(batch * ngroups):
            item = _claim(counter)
            if item >= batch * ngroups:
                break
            b = item // ngroups
            grp = item % ngroups
            for blk in range(grp * gsize, min(grp * gsize + gsize, nblk)):
                c0 = _U(blk * _CB)
                sbase = _U(b * N) * du + c0
                for n in range(Nu):
                    for c in range(_CBU):
                        gh[n * _CBU + c] = g_last[sbase + n * du + c]
                        Al[n * _CBU + c] = At[n * du + c0 + c]
                        gAl[n * _CBU + c] = _ZERO
                for c in range(_CBU):
                    Db[c] = Dv[c0 + c]
                    bl[c] = bias[c0 + c]
                    gDl[c] = _ZERO
                    gbl[c] = _ZERO
                for k in range(nck - 1, -1, -1):
                    s0 = k * chunk
                    steps = min(chunk, L - s0)
                    kbase = _U((b * nck + k) * N) * du + c0
                    for n in range(Nu):
                        for c in range(_CBU):
                            H[n * _CBU + c] = ckpt[kbase + n * du + c]
                    # 1. Recompute the chunk's states, step sizes and pre-gate outputs from its checkpoint.
                    for j in range(steps):
                        s = s0 + j
                        t = L - 1 - s if reverse else s
                        m = mask[b * L + t] if has_mask else _ONE
                        ub = _U(b * su_b + t * su_t) + c0
                        db = _U(b * sd_b + t * sd_t) + c0
                        jb = _U(j) * _CBU
                        for c in range(_CBU):
                            x = _f32(dl[db + c]) + bl[c]
                            e = _exp(-abs(x))
                            dt = (max(x, _ZERO) + _log1p_unit(e)) * m
                            dsp[jb + c] = m * ((_ONE if x >= _ZERO else e) / (_ONE + e))
                            dts[jb + c] = dt
                            uc = _f32(u[ub + c])
                            us[jb + c] = uc
                            duv[c] = dt * uc
                            yss[jb + c] = _ZERO
                        Bb = _U(b * sB_b + t * sB_t)
                        Cb = _U(b * sC_b + t * sC_t)
                        hp = _U(j) * NC
                        for n in range(Nu):
                            bn = _f32(Bm[Bb + n])
                            cn = _f32(Cm[Cb + n])
                            for c in range(_CBU):
                                i = n * _CBU + c
                                a = _exp(dts[jb + c] * Al[i])
                                decay[hp + i] = a
                                hv = a * H[hp + i] + duv[c] * bn
                                H[hp + NC + i] = hv
                                yss[jb + c] += hv * cn
                    # 2. Adjoint sweep back through the chunk; gh holds dLoss/dh_t less the output's own term.
                    for j in range(steps - 1, -1, -1):
                        s = s0 + j
                        t = L - 1 - s if reverse else s
                        jb = _U(j) * _CBU
                        ob = _U(b * L + t) * du + c0
                        gyb = _U(b * sg_b + t * sg_t) + c0
                        if has_z:
                            zb = _U(b * sz_b + t * sz_t) + c0
                            for c in range(_CBU):
                                zc = _f32(z[zb + c])
                                sig = _ONE / (_ONE + _exp(-zc))
                                gate_grad = sig * (_ONE + zc * (_ONE - sig))
                                gz[ob + c] = _as(_f32(gy[gyb + c]) * (yss[jb + c] + Db[c] * us[jb + c]) * gate_grad, gz)
                                gp[c] = _f32(gy[gyb + c]) * zc * sig
                        else:
                            for c in range(_CBU):
                                gp[c] = _f32(gy[gyb + c])
                        for c in range(_CBU):
                            gDl[c] += gp[c] * us[jb + c]
                            duv[c] = dts[jb + c] * us[jb + c]
                            gdt[c] = _ZERO
                            sB[c] = _ZERO
                        Bb = _U(b * sB_b + t * sB_t)
                        Cb = _U(b * sC_b + t * sC_t)
                        gb = _U(((b * ngroups + grp) * L + t) * N)
                        hp = _U(j) * NC
                        for n in range(Nu):
                            bn = _f32(Bm[Bb + n])
                            cn = _f32(Cm[Cb + n])
                            red_c = _ZERO
                            red_b = _ZERO
                            for c in range(_CBU):
                                i = n * _CBU + c
                                g = gh[i] + gp[c] * cn
                                red_c += gp[c] * H[hp + NC + i]
                                a = decay[hp + i]
                                q = g * H[hp + i] * a
                                gdt[c] += q * Al[i]
                                gAl[i] += q * dts[jb + c]
                                red_b += g * duv[c]
                                sB[c] += g * bn
                                gh[i] = g * a
                            gC[gb + n] += red_c
                            gB[gb + n] += red_b
                        for c in range(_CBU):
                            gu[ob + c] = _as(gp[c] * Db[c] + sB[c] * dts[jb + c], gu)
                            gd = (gdt[c] + sB[c] * us[jb + c]) * dsp[jb + c]
                            gdl[ob + c] = _as(gd, gdl)
                            gbl[c] += gd
                for n in range(Nu):
                    for c in range(_CBU):
                        g_h0[sbase + n * du + c] = gh[n * _CBU + c]
                        gA[sbase + n * du + c] = gAl[n * _CBU + c]
                for c in range(_CBU):
                    gD[_U(b) * du + c0 + c] = gDl[c]
                    gbias[_U(b) * du + c0 + c] = gbl[c]


def _flat(t: torch.Tensor):
    """(flat numpy view from t's first element to its last, batch stride, time stride) of a float32 tensor, or of a
    bfloat16 one as int16 bits (numpy has no bfloat16; the kernels widen them with `_f32` and write them with `_as`)."""
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    flat = torch.as_strided(t.detach(), (span,), (1,))
    if flat.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return flat.numpy(), t.stride(0), t.stride(1)


def kernel_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The element type the kernels read and write for these inputs: bfloat16 when every one given is bfloat16 (read
    in place, outputs rounded once), else float32 (others converted once). Arithmetic is float32 either way."""
    given = [t for t in tensors if t is not None]
    return torch.bfloat16 if given and all(t.dtype == torch.bfloat16 for t in given) else torch.float32


def _channels(t: torch.Tensor, dpad: int, dtype: torch.dtype = torch.float32):
    """A (batch, length, channels) input in kernel form, elements of `dtype`: read in place when of that dtype with a
    unit-stride channel axis (whatever its other strides); converted once for other dtypes or layouts, zero-padded to
    dpad channels."""
    channels = t.shape[-1]
    if channels != dpad:
        padded = t.new_zeros(*t.shape[:-1], dpad, dtype=dtype)
        padded[..., :channels] = t.detach()
        t = padded
    elif t.dtype != dtype or (channels > 1 and t.stride(-1) != 1):
        t = t.detach().to(dtype).contiguous()
    return _flat(t)


def _states(B: torch.Tensor, dtype: torch.dtype = torch.float32):
    """B or C in kernel form, read in place under the same conditions."""
    if B.dtype != dtype or (B.shape[-1] > 1 and B.stride(-1) != 1):
        B = B.detach().to(dtype).contiguous()
    return _flat(B)


def _vector(v: torch.Tensor | None, dpad: int) -> np.ndarray:
    out = torch.zeros(dpad, dtype=torch.float32)
    if v is not None:
        out[: v.shape[0]] = v.detach()
    return out.numpy()


_NOTHING = {torch.float32: np.zeros(1, dtype=np.float32), torch.bfloat16: np.zeros(1, dtype=np.int16)}
_pool_state: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of at least `threads` threads; a forked child, which inherits none of them, makes its own."""
    global _pool_state
    if _pool_state is None or _pool_state[0] != os.getpid() or _pool_state[1] < threads:
        _pool_state = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="caduceus-scan"))
    return _pool_state[2]


def _run(worker, args, items: int, work: int) -> None:
    """worker(counter, *args) on up to torch.get_num_threads() threads (fewer for little work), which share the
    work-item counter. The workers are nogil numba functions, so plain threads run them in parallel; the caller is
    one of them."""
    counter = np.zeros(1, dtype=np.int64)
    nw = max(1, min(torch.get_num_threads(), items, work // _MIN_WORK_PER_THREAD))
    futures = [_pool(nw - 1).submit(worker, counter, *args) for _ in range(nw - 1)]
    worker(counter, *args)
    for f in futures:
        f.result()


class _Prepared:
    """One call's inputs in kernel form: flat views of `kernel_dtype` elements (float32 for the parameters and the
    mask), channels padded to a multiple of _CB."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, mask):
        self.batch, self.length, self.d = u.shape
        self.N = A.shape[1]
        self.dpad = -(-self.d // _CB) * _CB
        self.chunk = max(1, min(_CHUNK, _CHUNK_STATES // self.N - 1))
        self.dtype = dtype = kernel_dtype(u, delta, B, C, z)
        self.u, self.delta = _channels(u, self.dpad, dtype), _channels(delta, self.dpad, dtype)
        self.z = _channels(z, self.dpad, dtype) if z is not None else (_NOTHING[dtype], 0, 0)
        self.has_z = z is not None
        self.B, self.C = _states(B, dtype), _states(C, dtype)
        mask32 = None if mask is None else mask.detach().to(torch.float32).contiguous()
        self.mask = _NOTHING[torch.float32] if mask32 is None else mask32.numpy().ravel()
        self.has_mask = mask is not None
        At = torch.zeros(self.N, self.dpad, dtype=torch.float32)
        At[:, : self.d] = A.detach().t()
        self.At = At.numpy().ravel()
        self.D = _vector(D, self.dpad)
        self.bias = _vector(delta_bias, self.dpad)

    @property
    def blocks(self) -> int:
        return self.dpad // _CB

    @property
    def work(self) -> int:
        return self.batch * self.length * self.dpad * self.N

    def inputs(self):
        return (
            *self.u, *self.delta, *self.z, self.has_z, *self.B, *self.C,
            self.mask, self.has_mask, self.At, self.D, self.bias,
        )  # fmt: skip

    def state_in(self, state: torch.Tensor | None) -> torch.Tensor:
        """(batch, d, N) -> zero-padded (batch, N, dpad) float32."""
        out = torch.zeros(self.batch, self.N, self.dpad, dtype=torch.float32)
        if state is not None:
            out[:, :, : self.d] = state.detach().transpose(1, 2)
        return out

    def state_out(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, :, : self.d].transpose(1, 2).contiguous()

    def rows_out(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.dpad == self.d else t[..., : self.d].contiguous()

    def empty_rows(self) -> torch.Tensor:
        return torch.empty(self.batch, self.length, self.dpad, dtype=self.dtype)

    def flat(self, t: torch.Tensor) -> np.ndarray:
        """An output the kernels write (float32, or bfloat16 as int16 bits), as a flat numpy view."""
        flat = t.detach().reshape(-1)
        return (flat.view(torch.int16) if flat.dtype == torch.bfloat16 else flat).numpy()


def _forward(p: _Prepared, initial_state, reverse: bool, save_ckpt: bool):
    y = p.empty_rows()
    h_last = torch.empty(p.batch, p.N, p.dpad, dtype=torch.float32)
    nck = -(-p.length // p.chunk)
    ckpt = torch.empty(p.batch, nck, p.N, p.dpad, dtype=torch.float32) if save_ckpt else torch.empty(0)
    args = (
        *p.inputs(), p.state_in(initial_state).numpy().ravel(), p.flat(y), h_last.numpy().ravel(),
        ckpt.numpy().ravel(), p.chunk, save_ckpt, p.batch, p.length, p.dpad, p.N, reverse,
    )  # fmt: skip
    _run(_forward_worker, args, p.batch * p.blocks, p.work)
    return p.rows_out(y), h_last, ckpt


def _scan_forward(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None,
    z: torch.Tensor | None, delta_bias: torch.Tensor | None, mask: torch.Tensor | None,
    initial_state: torch.Tensor | None, reverse: bool, save_ckpt: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y (batch, length, d) in u's dtype, the final state (batch, d, N) and, if save_ckpt, the backward's checkpoints
    (batch, chunks, N, dpad) (else an empty tensor)."""
    p = _Prepared(u, delta, A, B, C, D, z, delta_bias, mask)
    y, h_last, ckpt = _forward(p, initial_state, reverse, save_ckpt)
    return y.to(u.dtype), p.state_out(h_last), ckpt


def _scan_forward_fake(u, delta, A, B, C, D, z, delta_bias, mask, initial_state, reverse, save_ckpt):
    batch, length, d = u.shape
    N = A.shape[1]
    dpad = -(-d // _CB) * _CB
    chunk = max(1, min(_CHUNK, _CHUNK_STATES // N - 1))
    ckpt_shape = (batch, -(-length // chunk), N, dpad) if save_ckpt else (0,)
    return (
        u.new_empty(batch, length, d),
        u.new_empty(batch, d, N, dtype=torch.float32),
        u.new_empty(ckpt_shape, dtype=torch.float32),
    )


def _scan_backward(
    gy: torch.Tensor, g_final: torch.Tensor | None, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
    B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
    mask: torch.Tensor | None, ckpt: torch.Tensor, reverse: bool,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
    torch.Tensor,
]:
    """Gradients of u, delta, A, B, C, D, z, delta_bias (each in its input's dtype; empty where the input is None)
    and of the initial state (float32)."""
    p = _Prepared(u, delta, A, B, C, D, z, delta_bias, mask)
    gu, gdelta = p.empty_rows(), p.empty_rows()
    gz = p.empty_rows() if p.has_z else torch.empty(0, dtype=p.dtype)
    g_last = p.state_in(g_final)
    g_h0 = torch.empty(p.batch, p.N, p.dpad, dtype=torch.float32)
    # Partial sums: over each group's channels for B and C, per batch row for A, D and delta_bias.
    group = -(-p.blocks // _GROUPS)
    groups = -(-p.blocks // group)
    gB = torch.zeros(p.batch, groups, p.length, p.N, dtype=torch.float32)
    gC = torch.zeros_like(gB)
    gA = torch.empty(p.batch, p.N, p.dpad, dtype=torch.float32)
    gD = torch.empty(p.batch, p.dpad, dtype=torch.float32)
    gbias = torch.empty_like(gD)
    args = (
        groups, group, *p.inputs(), ckpt.numpy().ravel(), p.chunk, *_channels(gy, p.dpad, p.dtype),
        g_last.numpy().ravel(), p.flat(gu), p.flat(gdelta), p.flat(gz), gB.numpy().ravel(),
        gC.numpy().ravel(), gA.numpy().ravel(), gD.numpy().ravel(), gbias.numpy().ravel(), g_h0.numpy().ravel(),
        p.batch, p.length, p.dpad, p.N, reverse,
    )  # fmt: skip
    _run(_backward_worker, args, p.batch * groups, p.work)

    def like(g: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        return torch.empty(0) if t is None else g.to(t.dtype).contiguous()

    return (
        like(p.rows_out(gu), u),
        like(p.rows_out(gdelta), delta),
        like(gA.sum(0)[:, : p.d].t(), A),
        like(gB.sum(1), B),
        like(gC.sum(1), C),
        like(gD.sum(0)[: p.d], D),
        like(p.rows_out(gz), z),
        like(gbias.sum(0)[: p.d], delta_bias),
        p.state_out(g_h0),
    )


def _scan_backward_fake(gy, g_final, u, delta, A, B, C, D, z, delta_bias, mask, ckpt, reverse):
    def like(t):
        if t is None:
            return gy.new_empty(0, dtype=torch.float32)
        return torch.empty_like(t, memory_format=torch.contiguous_format)

    batch, _, d = u.shape
    g_h0 = u.new_empty(batch, d, A.shape[1], dtype=torch.float32)
    return like(u), like(delta), like(A), like(B), like(C), like(D), like(z), like(delta_bias), g_h0


def _scan_setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, mask, initial_state, reverse, _ = inputs
    ctx.reverse = reverse
    ctx.state_dtype = None if initial_state is None else initial_state.dtype
    # The kernels read the inputs through views of their storage: keep them, and let autograd check that no in-place
    # operation changed them before the backward.
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, mask, output[2])


def _scan_autograd(ctx, gy, g_final, _g_ckpt):
    u, delta, A, B, C, D, z, delta_bias, mask, ckpt = ctx.saved_tensors
    grads = torch.ops.caduceus_hf.selective_scan_cpu_backward(
        gy, g_final, u, delta, A, B, C, D, z, delta_bias, mask, ckpt, ctx.reverse
    )
    # The op's inputs: u, delta, A, B, C, D, z, delta_bias, mask, initial_state, reverse, save_ckpt.
    need = ctx.needs_input_grad
    gu, gdelta, gA, gB, gC, gD, gz, gbias = (g if need[i] else None for i, g in enumerate(grads[:8]))
    g_h0 = grads[8].to(ctx.state_dtype) if need[9] else None
    return gu, gdelta, gA, gB, gC, gD, gz, gbias, None, g_h0, None, None


if _HAVE_NUMBA:
    # Custom ops, so that torch.compile and torch.export see each kernel as one opaque op (shapes from the fake
    # implementations) rather than tracing into numba, and autograd reaches the backward kernel through the registry.
    _forward_op = torch.library.custom_op("caduceus_hf::selective_scan_cpu", mutates_args=(), device_types="cpu")(
        _scan_forward
    )
    _forward_op.register_fake(_scan_forward_fake)
    _backward_op = torch.library.custom_op(
        "caduceus_hf::selective_scan_cpu_backward", mutates_args=(), device_types="cpu"
    )(_scan_backward)
    _backward_op.register_fake(_scan_backward_fake)
    _forward_op.register_autograd(_scan_autograd, setup_context=_scan_setup_context)


def selective_scan_cpu(
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
    """See `caduceus_hf.ops.scan_reference.selective_scan_reference` for the contract; CPU tensors, float32 or bfloat16.

    The state lives on the worker threads' stacks; a d_state above 256 (no Mamba-1 model has one) runs the reference.
    """
    batch, length, d = u.shape
    N = A.shape[-1]
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("z", z), ("mask", mask)):
        if t is not None and t.device.type != "cpu":
            raise ValueError(f"selective_scan_cpu needs CPU tensors; {name} is on {t.device}")
    if delta.shape != u.shape or (z is not None and z.shape != u.shape):
        raise ValueError(f"delta and z must have u's shape {tuple(u.shape)}")
    if A.shape != (d, N) or B.shape != (batch, length, N) or C.shape != (batch, length, N):
        raise ValueError(
            f"A must be (d_inner, d_state) and B, C (batch, length, d_state) for u of shape {tuple(u.shape)}; "
            f"got {tuple(A.shape)}, {tuple(B.shape)}, {tuple(C.shape)}"
        )
    if mask is not None and mask.shape != (batch, length):
        raise ValueError(f"mask must be (batch, length) = {(batch, length)}, got {tuple(mask.shape)}")
    if initial_state is not None and initial_state.shape != (batch, d, N):
        raise ValueError(
            f"initial_state must be (batch, d_inner, d_state) = {(batch, d, N)}, got {tuple(initial_state.shape)}"
        )
    if batch * length * d * N == 0:
        y = torch.zeros_like(u)
        h = torch.zeros(batch, d, N) if initial_state is None else initial_state.float()
        return (y, h) if return_final_state else y
    if N > _MAX_STATE:
        from .scan_reference import selective_scan_reference

        return selective_scan_reference(
            u, delta, A, B, C, D, z, delta_bias, mask, reverse, initial_state, return_final_state
        )
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    # Checkpoints for the backward only where autograd records the call.
    save_ckpt = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, h_last, _ = torch.ops.caduceus_hf.selective_scan_cpu(
        u, delta, A, B, C, D, z, delta_bias, mask, initial_state, reverse, save_ckpt
    )
    return (y, h_last) if return_final_state else y
