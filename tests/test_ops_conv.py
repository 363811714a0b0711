"""The numba short convolution (`caduceus_hf.ops.conv_cpu`) against the PyTorch path of `short_conv_silu`: outputs,
gradients, both directions, kernel widths, odd channel counts and lengths, layouts, dtypes, and the dispatch. Shapes
stay tiny: the kernels compile once per process (or load from numba's cache)."""

from __future__ import annotations

import pytest
import torch

from caduceus_hf import backends
from caduceus_hf.ops import conv_cpu, scan_cpu

pytestmark = pytest.mark.skipif(not scan_cpu.is_available(), reason="numba is not installed")


def make_inputs(batch=2, length=23, channels=16, width=4, bias=True, dtype=torch.float32, seed=0):
    """x as the first channels of a wider projection (as the mixer's x from in_proj), weight, bias, all leaves."""
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(batch, length, 2 * channels + 3, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(channels, 1, width, generator=g).to(dtype).requires_grad_()
    b = torch.randn(channels, generator=g).to(dtype).requires_grad_() if bias else None
    return wide, wide[..., :channels], weight, b


def both(wide, x, weight, bias, reverse, grad_out=None):
    """(output, gradients of wide, weight and bias) of the numba kernel and of the PyTorch path."""
    results = []
    for backend in ("cpu", "reference"):
        y = backends.short_conv_silu(x, weight, bias, reverse=reverse, backend=backend)
        gy = grad_out if grad_out is not None else torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        leaves = [t for t in (wide, weight, bias) if t is not None]
        results.append((y, torch.autograd.grad(y, leaves, gy.to(y.dtype))))
    return results


def close(actual, expected, rtol=1e-5, atol=1e-5):
    scale = expected.detach().abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * max(1.0, scale))


@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "anticausal"])
@pytest.mark.parametrize("width", [2, 3, 4, 5])
@pytest.mark.parametrize("channels,bias", [(16, True), (5, False), (33, True)])
def test_forward_and_gradients_match_the_pytorch_path(reverse, width, channels, bias):
    inputs = make_inputs(channels=channels, width=width, bias=bias, seed=width + channels)
    (y, g), (y_ref, g_ref) = both(*inputs, reverse)
    assert y.is_contiguous() and y.shape == y_ref.shape
    close(y, y_ref)
    for a, b in zip(g, g_ref):
        close(a, b)


@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "anticausal"])
@pytest.mark.parametrize("length", [1, 2, 3, 700])
def test_lengths_around_the_kernel_width_and_the_work_tiles(reverse, length):
    """Shorter than the kernel (every tap reads the zero padding), and several work items, whose tiles read each
    other's rows (the backward walks k-1 rows past its tile)."""
    inputs = make_inputs(batch=1, length=length, channels=20, width=4, seed=length)
    (y, g), (y_ref, g_ref) = both(*inputs, reverse)
    close(y, y_ref)
    for a, b in zip(g, g_ref):
        close(a, b)


def test_bfloat16_follows_the_pytorch_path_on_the_same_inputs():
    wide, x, weight, bias = make_inputs(channels=24, dtype=torch.bfloat16)
    (y, g), (y_ref, g_ref) = both(wide, x, weight, bias, reverse=True)
    assert y.dtype == torch.bfloat16
    assert all(a.dtype == torch.bfloat16 for a in g)
    # The kernel computes in float32 and rounds once; compare with float32 arithmetic on the same bf16 values.
    exact = backends.short_conv_silu(x.float(), weight.float(), bias.float(), reverse=True, backend="reference")
    close(y.float(), exact.to(torch.bfloat16).float(), rtol=1e-2, atol=1e-2)
    close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    for a, b in zip(g, g_ref):
        close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_strided_and_contiguous_inputs_give_the_same_bits():
    wide, x, weight, bias = make_inputs(batch=3, length=40, channels=16)
    transposed = x.detach().transpose(1, 2).contiguous().transpose(1, 2)  # unit time stride: one copy in the kernel
    with torch.no_grad():
        want = backends.short_conv_silu(x.detach().contiguous(), weight, bias, backend="cpu")
        for layout in (x.detach(), transposed):
            got = backends.short_conv_silu(layout, weight, bias, backend="cpu")
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_thread_count_does_not_change_the_result():
    """Weight and bias gradients are per-work-item partial sums reduced in a fixed order: bitwise reproducible."""
    inputs = make_inputs(batch=2, length=1500, channels=40, seed=3)
    threads = torch.get_num_threads()
    outputs = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            outputs.append(both(*inputs, reverse=False)[0])
    finally:
        torch.set_num_threads(threads)
    for y, g in outputs[1:]:
        torch.testing.assert_close(y, outputs[0][0], rtol=0, atol=0)
        for a, b in zip(g, outputs[0][1]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_inference_and_training_paths_agree():
    wide, x, weight, bias = make_inputs()
    with torch.no_grad():
        y_inference = backends.short_conv_silu(x, weight, bias, backend="cpu")
    y_training = backends.short_conv_silu(x, weight, bias, backend="cpu")
    torch.testing.assert_close(y_training.detach(), y_inference, rtol=0, atol=0)


def test_gradients_through_a_modified_input_are_refused():
    wide, x, weight, bias = make_inputs(length=5)
    y = backends.short_conv_silu(x, weight, bias, backend="cpu")
    with torch.no_grad():
        wide.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# --- dispatch ------------------------------------------------------------------------------------------------------


def _explode(*args, **kwargs):
    raise AssertionError("the numba kernel ran")


def test_auto_and_cpu_backends_take_the_kernel_on_cpu(monkeypatch):
    _, x, weight, bias = make_inputs()
    calls = []
    kernel = conv_cpu.short_conv_silu_cpu
    monkeypatch.setattr(conv_cpu, "short_conv_silu_cpu", lambda *a: calls.append(1) or kernel(*a))
    for backend in ("auto", "cpu"):
        backends.short_conv_silu(x, weight, bias, backend=backend)
    assert len(calls) == 2



@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "anticausal"])
def test_bfloat16_is_read_in_place_and_rounded_once(reverse):
    """A bf16 x reaches the kernel without a float32 copy, and the bf16 output and x gradient are the float32
    kernel's on the same values, rounded once (within half a bf16 spacing, 2^-8 relative)."""
    wide, x, weight, bias = make_inputs(channels=32, dtype=torch.bfloat16)
    assert conv_cpu._x_view(x, torch.bfloat16)[0].ctypes.data == x.data_ptr()
    results = []
    for w in (wide, wide.detach().float().requires_grad_()):
        y = conv_cpu.short_conv_silu_cpu(w[..., :32], weight, bias, reverse)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16).to(y.dtype)
        results.append((y, torch.autograd.grad(y, w, gy)[0]))
    for a, b in zip(*results):
        assert a.dtype == torch.bfloat16
        err = (a.float() - b).abs()
        assert (err <= b.abs() * 2.0**-8 + 1e-6).all(), err.max()

@pytest.mark.parametrize("case", ["reference backend", "float64", "kernel too large"])
def test_the_pytorch_path_runs_otherwise(monkeypatch, case):
    _, x, weight, bias = make_inputs(channels=8)
    backend = "reference" if case == "reference backend" else "auto"
    if case == "float64":
        x, weight, bias = x.double(), weight.double(), bias.double()
    if case == "kernel too large":
        monkeypatch.setattr(conv_cpu, "_MAX_RING", 8 * 4 - 1)
    monkeypatch.setattr(conv_cpu, "short_conv_silu_cpu", _explode)
    y = backends.short_conv_silu(x, weight, bias, backend=backend)
    assert y.dtype == x.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_custom_op_registration_passes_opcheck(bias, dtype):
    """The schema, fake (meta) implementation and autograd registration that torch.compile and torch.export use."""
    _, x, weight, b = make_inputs(length=9, bias=bias, dtype=dtype)
    torch.library.opcheck(torch.ops.caduceus_hf.short_conv_silu_cpu.default, (x, weight, b, True))
