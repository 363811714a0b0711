"""The numba CPU scan (`caduceus_hf.ops.scan_cpu`) against the PyTorch reference: outputs, gradients, dtypes, masks,
direction, state carry, odd layouts and shapes, and the dispatcher's choice. Shapes stay tiny: the kernels compile
once per process (or load from numba's cache), and everything else here runs in milliseconds."""

from __future__ import annotations

import pytest
import torch

from caduceus_hf.ops import scan_cpu
from caduceus_hf.ops.scan_reference import selective_scan_reference

pytestmark = pytest.mark.skipif(not scan_cpu.is_available(), reason="numba is not installed")

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch=2, length=37, d_inner=32, d_state=5, dtype=torch.float32, seed=0, optional=True):
    """Realistic scales: softplus(delta + bias) around 1e-3..1e-1 plus N(0,1) noise, S4D-real A, unit-normal rest.

    u and z are channel slices of one tensor and B, C state slices of another, as in the mixer; with d_inner a
    multiple of 16 the kernels read them in place, otherwise through a padded copy (test_odd_shapes)."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, length, 2 * d_inner, generator=g).to(dtype)
    bc = torch.randn(batch, length, 3 + 2 * d_state, generator=g).to(dtype)
    a_log = torch.log(torch.arange(1, d_state + 1).float()).repeat(d_inner, 1) + 0.1 * torch.randn(
        d_inner, d_state, generator=g
    )
    inputs = dict(
        u=xz[..., :d_inner],
        delta=torch.randn(batch, length, d_inner, generator=g).to(dtype),
        A=-torch.exp(a_log),
        B=bc[..., 3 : 3 + d_state],
        C=bc[..., 3 + d_state :],
        D=torch.randn(d_inner, generator=g) if optional else None,
        z=xz[..., d_inner:] if optional else None,
        delta_bias=torch.log(torch.expm1(torch.empty(d_inner).uniform_(1e-3, 1e-1, generator=g)))
        if optional
        else None,
    )
    return inputs


def padding_mask(batch, length, side):
    mask = torch.ones(batch, length)
    if side == "left":
        mask[0, : length // 3] = 0
    elif side == "right":
        mask[-1, length - length // 4 :] = 0
    return mask


def close(actual, expected, rtol=1e-5, atol=1e-5):
    """Relative agreement, with an absolute floor scaled to the tensor's magnitude (entries near 0 after sums)."""
    scale = expected.detach().abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * max(1.0, scale))


def leaves(inputs):
    """Fresh tensors that require grad, laid out as given: a view (u and z of one tensor, B and C of another, or a
    transposed or expanded layout) stays that view of a fresh leaf, so the kernels' in-place reads are exercised."""
    out, bases = {}, {}
    for k, v in inputs.items():
        if v is None:
            out[k] = None
        elif v._base is None:
            out[k] = v.detach().clone().requires_grad_(True)
        else:
            if id(v._base) not in bases:
                bases[id(v._base)] = v._base.detach().clone().requires_grad_(True)
            out[k] = bases[id(v._base)].as_strided(v.shape, v.stride(), v.storage_offset())
    return out


def both(inputs, grad_out=None, **kwargs):
    """(outputs, grads) of the CPU kernel and of the reference on the same leaves."""
    results = []
    for fn in (scan_cpu.selective_scan_cpu, selective_scan_reference):
        x = leaves(inputs)
        out = fn(**x, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        wrt = [v for v in x.values() if v is not None]
        gy = grad_out if grad_out is not None else torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(y, wrt, gy.to(y.dtype))
        results.append((out, grads))
    return results


# --- forward and gradients against the reference --------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("side", [None, "left", "right"], ids=["nomask", "leftpad", "rightpad"])
def test_forward_and_gradients_match_the_reference(reverse, side):
    inputs = make_inputs()
    mask = padding_mask(2, 37, side) if side else None
    (y, g), (y_ref, g_ref) = both(inputs, mask=mask, reverse=reverse)
    close(y, y_ref)
    for a, b in zip(g, g_ref):
        close(a, b, atol=2e-5)


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 3, 1), (3, 5, 16, 16), (2, 9, 33, 3), (1, 70, 4, 2), (4, 2, 17, 7), (1, 20, 4, 140), (1, 6, 4, 300)],
    ids=lambda s: "b{}-L{}-d{}-n{}".format(*s),
)
def test_odd_shapes(shape):
    """Length 1, several batch rows, d_inner below, at and past a 16-channel block, d_state of any size (a large
    one shortens the backward's checkpoint interval; past 256 the reference runs), several checkpoint intervals."""
    batch, length, d_inner, d_state = shape
    inputs = make_inputs(batch, length, d_inner, d_state, seed=sum(shape))
    (y, g), (y_ref, g_ref) = both(inputs, mask=padding_mask(batch, length, "left"))
    close(y, y_ref)
    for a, b in zip(g, g_ref):
        close(a, b, atol=2e-5)


def test_without_the_optional_inputs():
    inputs = make_inputs(optional=False)
    (y, g), (y_ref, g_ref) = both(inputs, reverse=True)
    close(y, y_ref)
    for a, b in zip(g, g_ref):
        close(a, b, atol=2e-5)


def test_bfloat16_inputs_follow_the_reference_on_the_same_inputs():
    inputs = make_inputs(dtype=torch.bfloat16)
    (y, g), (y_ref, g_ref) = both(inputs, mask=padding_mask(2, 37, "right"))
    assert y.dtype == torch.bfloat16
    close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    for a, b, name in zip(g, g_ref, NAMES):
        assert a.dtype == inputs[name].dtype, name
        close(a.float(), b.float(), rtol=2e-2, atol=2e-2)



def rounded_once(actual, exact):
    """actual (bf16) is exact (float32) rounded once to bfloat16: within half a bf16 spacing, 2^-8 relative (plus a
    floor for the float32 kernels' own last-bit differences, such as the bf16 scan's shorter decay exp)."""
    scale = exact.detach().abs().max().item() if exact.numel() else 1.0
    assert actual.dtype == torch.bfloat16
    err = (actual.float() - exact).abs()
    assert (err <= exact.abs() * 2.0**-8 + 1e-5 * max(scale, 1.0)).all(), err.max()


@pytest.mark.parametrize("d_inner", [32, 20], ids=["in-place", "padded"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_bfloat16_is_read_in_place_and_rounded_once(d_inner, reverse):
    """bf16 activations reach the kernels without a float32 copy, and every bf16 output (y, and the gradients of
    u, delta, B, C, z) is what the float32 kernels give on the same values, rounded once; the float32 parameter
    gradients (A, D, delta_bias) agree with theirs."""
    inputs = make_inputs(d_inner=d_inner, dtype=torch.bfloat16)
    prepared = scan_cpu._Prepared(*(inputs[k] for k in NAMES), mask=None)
    assert prepared.dtype == torch.bfloat16
    if d_inner % 16 == 0:
        for name in ("u", "delta", "z", "B", "C"):
            assert prepared.__dict__[name][0].ctypes.data == inputs[name].data_ptr(), name
    wide = {k: v.float() if v is not None and v.dtype == torch.bfloat16 else v for k, v in inputs.items()}
    results = []
    for x in (leaves(inputs), leaves(wide)):
        y = scan_cpu.selective_scan_cpu(**x, mask=padding_mask(2, 37, "left"), reverse=reverse)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16).to(y.dtype)
        results.append((y, torch.autograd.grad(y, list(x.values()), gy)))
    (y16, g16), (y32, g32) = results
    rounded_once(y16, y32)
    for name, a, b in zip(NAMES, g16, g32):
        if inputs[name].dtype == torch.bfloat16:
            rounded_once(a, b)
        else:
            close(a, b, rtol=1e-4, atol=1e-5)

# --- semantics ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_padding_does_not_change_the_real_tokens(reverse):
    inputs = make_inputs(batch=1, length=24)
    pad = 7
    padded = {k: v if v is None or v.dim() < 3 else torch.cat([v[:, :pad] * 3.0, v], 1) for k, v in inputs.items()}
    mask = torch.ones(1, 24 + pad)
    mask[:, :pad] = 0
    with torch.no_grad():
        y = scan_cpu.selective_scan_cpu(**inputs, reverse=reverse)
        y_padded = scan_cpu.selective_scan_cpu(**padded, mask=mask, reverse=reverse)
    close(y_padded[:, pad:], y)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_state_carry_across_time_chunks_equals_one_scan(reverse):
    """Scanning in two time chunks with initial_state/return_final_state is one scan, gradients included."""
    inputs = make_inputs(length=40)
    cut = 23
    x = leaves(inputs)
    y_full, h_full = scan_cpu.selective_scan_cpu(**x, reverse=reverse, return_final_state=True)
    wrt = [v for v in x.values() if v is not None]
    gy = torch.randn(y_full.shape, generator=torch.Generator().manual_seed(3))
    g_full = torch.autograd.grad((y_full * gy).sum() + h_full.sum(), wrt)

    x = leaves(inputs)
    first, second = (slice(cut, None), slice(None, cut)) if reverse else (slice(None, cut), slice(cut, None))

    def part(sl, state):
        sub = {k: v if v is None or v.dim() < 3 else v[:, sl] for k, v in x.items()}
        return scan_cpu.selective_scan_cpu(**sub, reverse=reverse, initial_state=state, return_final_state=True)

    y1, h1 = part(first, None)
    y2, h2 = part(second, h1)
    y_parts = torch.cat([y2, y1], 1) if reverse else torch.cat([y1, y2], 1)
    close(y_parts, y_full)
    close(h2, h_full)
    g_parts = torch.autograd.grad((y_parts * gy).sum() + h2.sum(), [v for v in x.values() if v is not None])
    for a, b in zip(g_parts, g_full):
        close(a, b, atol=2e-5)


def test_initial_state_and_final_state_gradients_match_the_reference():
    inputs = make_inputs(length=19)
    h0 = torch.randn(2, 32, 5, generator=torch.Generator().manual_seed(4))
    results = []
    for fn in (scan_cpu.selective_scan_cpu, selective_scan_reference):
        x = leaves(inputs)
        state = h0.clone().requires_grad_(True)
        y, h = fn(**x, mask=padding_mask(2, 19, "left"), initial_state=state, return_final_state=True)
        loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum() + (h**2).sum()
        results.append((y, h, torch.autograd.grad(loss, [state, x["A"], x["u"]])))
    (y, h, g), (y_ref, h_ref, g_ref) = results
    close(y, y_ref)
    close(h, h_ref)
    for a, b in zip(g, g_ref):
        close(a, b, atol=2e-5)


def test_any_strided_layout_is_accepted():
    """Transposed (channel-strided) and expanded inputs give the same result as contiguous copies."""
    inputs = make_inputs(length=11, d_inner=16)
    odd = dict(inputs)
    odd["delta"] = inputs["delta"].transpose(1, 2).contiguous().transpose(1, 2)
    odd["B"] = inputs["B"][:1].expand(2, -1, -1)
    dense = {k: None if v is None else v.contiguous() for k, v in odd.items()}
    with torch.no_grad():
        close(scan_cpu.selective_scan_cpu(**odd), scan_cpu.selective_scan_cpu(**dense), rtol=0, atol=0)
    (y, g), (y_ref, g_ref) = both(odd)
    close(y, y_ref)
    for a, b in zip(g, g_ref):
        close(a, b, atol=2e-5)


def test_thread_count_does_not_change_the_result():
    """Work is claimed dynamically, but every partial sum has a fixed order: results are bitwise reproducible."""
    inputs = make_inputs(batch=3, length=300, d_inner=64, d_state=16)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            x = leaves(inputs)
            y = scan_cpu.selective_scan_cpu(**x)
            outputs.append((y, *torch.autograd.grad(y.sum(), [v for v in x.values() if v is not None])))
    finally:
        torch.set_num_threads(threads)
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_inference_and_training_paths_agree():
    inputs = make_inputs()
    with torch.no_grad():
        y_inference = scan_cpu.selective_scan_cpu(**inputs, mask=padding_mask(2, 37, "left"))
    y_training = scan_cpu.selective_scan_cpu(**leaves(inputs), mask=padding_mask(2, 37, "left"))
    torch.testing.assert_close(y_training.detach(), y_inference, rtol=0, atol=0)


def test_empty_sequence():
    inputs = make_inputs(length=0)
    y, h = scan_cpu.selective_scan_cpu(**inputs, return_final_state=True)
    assert y.shape == (2, 0, 32) and h.shape == (2, 32, 5) and not h.any()


def test_gradients_through_a_modified_input_are_refused():
    x = leaves(make_inputs(length=5))
    y = scan_cpu.selective_scan_cpu(**x)
    with torch.no_grad():
        x["delta"].add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_custom_op_registration_passes_opcheck(dtype):
    """The schema, fake (meta) implementation and autograd registration that torch.compile and torch.export use."""
    x = leaves(make_inputs(length=9, dtype=dtype))
    mask = padding_mask(2, 9, "left")
    h0 = torch.randn(2, 32, 5, generator=torch.Generator().manual_seed(6)).requires_grad_()
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], mask, h0, True, True)
    torch.library.opcheck(torch.ops.caduceus_hf.selective_scan_cpu.default, args)
