"""The parallel PyTorch scan (`caduceus_hf.ops.scan_chunked`) against the reference loop: outputs, final states and
gradients of every input under every option, dtypes, stability at extreme decays, the number of dispatched
operations, MPS when present, and the golden fixtures through it."""

from __future__ import annotations

import collections
import functools

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForMaskedLM

from caduceus_hf import backends
from caduceus_hf.ops import scan_chunked
from caduceus_hf.ops.scan_chunked import selective_scan_chunked
from caduceus_hf.ops.scan_reference import selective_scan_reference

from conftest import FIXTURES

# Small chunks and blocks, so that short test sequences span several chunks, a partial last chunk and several blocks.
SMALL = dict(chunk=8, block=2)


def make_inputs(batch=2, length=37, d_inner=6, d_state=5, dtype=torch.float32, seed=0, optional=True):
    """Realistic scales: softplus(delta + bias) around 1e-3..1e-1 plus N(0,1) noise, S4D-real A, unit-normal rest."""
    g = torch.Generator().manual_seed(seed)
    a_log = torch.log(torch.arange(1, d_state + 1).float()).repeat(d_inner, 1)
    return dict(
        u=torch.randn(batch, length, d_inner, generator=g).to(dtype),
        delta=torch.randn(batch, length, d_inner, generator=g).to(dtype),
        A=-torch.exp(a_log + 0.1 * torch.randn(d_inner, d_state, generator=g)),
        B=torch.randn(batch, length, d_state, generator=g).to(dtype),
        C=torch.randn(batch, length, d_state, generator=g).to(dtype),
        D=torch.randn(d_inner, generator=g) if optional else None,
        z=torch.randn(batch, length, d_inner, generator=g).to(dtype) if optional else None,
        delta_bias=torch.log(torch.expm1(torch.empty(d_inner).uniform_(1e-3, 1e-1, generator=g)))
        if optional
        else None,
    )


def make_mask(batch, length, kind):
    """1 for real tokens: padding on the left of row 0, on the right of the last row, or gaps inside both."""
    mask = torch.ones(batch, length)
    if kind in ("left", "both"):
        mask[0, : length // 3] = 0
    if kind in ("right", "both"):
        mask[-1, length - length // 4 :] = 0
    if kind == "gaps":
        mask[:, 3:5] = 0
        mask[0, 11:20] = 0
        mask[-1, length // 2] = 0
    return mask


def run(fn, inputs, initial_state=None, **kwargs):
    """(y, final state, gradients of every tensor input and of the initial state) for a loss on y and the state."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    h0 = None if initial_state is None else initial_state.detach().clone().requires_grad_(True)
    y, h = fn(**leaves, initial_state=h0, return_final_state=True, **kwargs)
    g = torch.Generator().manual_seed(1)
    weight_y, weight_h = (torch.randn(t.shape, generator=g).to(t.device) for t in (y, h))
    loss = (y.float() * weight_y).sum() + (h * weight_h).sum()
    wrt = {k: v for k, v in leaves.items() if v is not None}
    if h0 is not None:
        wrt["initial_state"] = h0
    grads = torch.autograd.grad(loss, list(wrt.values()))
    return y, h, dict(zip(wrt, grads))


def close(actual, expected, rtol=1e-4, atol=1e-5):
    """Relative agreement, with an absolute floor scaled to the tensor's magnitude (entries near 0 after sums)."""
    scale = expected.detach().abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * max(1.0, scale))


def assert_matches_reference(inputs, rtol=1e-4, atol=1e-5, chunk_options=SMALL, **kwargs):
    """Outputs, final states and gradients through autograd's kernel, and outputs and final states through the
    in-place one (what runs without a gradient to record)."""
    y, h, grads = run(functools.partial(selective_scan_chunked, **chunk_options), inputs, **kwargs)
    y_ref, h_ref, grads_ref = run(selective_scan_reference, inputs, **kwargs)
    with torch.no_grad():
        y_inference, h_inference = selective_scan_chunked(**inputs, **chunk_options, **kwargs, return_final_state=True)
    assert y.dtype == y_ref.dtype == y_inference.dtype and h.dtype == h_inference.dtype == torch.float32
    for actual, actual_h in ((y, h), (y_inference, h_inference)):
        close(actual.float(), y_ref.float(), rtol, atol)
        close(actual_h, h_ref, rtol, atol)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == grads_ref[name].dtype, name
        close(grads[name].float(), grads_ref[name].float(), rtol, atol)


# --- against the reference -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("mask", [None, "left", "right", "both", "gaps"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
def test_outputs_states_and_gradients_match_the_reference(reverse, mask, with_state):
    inputs = make_inputs()
    h0 = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(2)) if with_state else None
    assert_matches_reference(
        inputs, mask=None if mask is None else make_mask(2, 37, mask), reverse=reverse, initial_state=h0
    )


@pytest.mark.parametrize("absent", ["D", "z", "delta_bias", "all"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_optional_inputs_may_be_absent(absent, reverse):
    inputs = make_inputs()
    for name in ("D", "z", "delta_bias") if absent == "all" else (absent,):
        inputs[name] = None
    assert_matches_reference(inputs, mask=make_mask(2, 37, "gaps"), reverse=reverse)


@pytest.mark.parametrize(
    "length, chunk, block",
    [(1, 8, 2), (2, 8, 2), (8, 8, 2), (9, 8, 2), (37, 1, 1), (37, 4, 4), (37, 64, 8), (300, 512, 8), (70, 16, 16)],
)
def test_lengths_chunks_and_blocks(length, chunk, block):
    """Length 1, exactly one chunk, one step past it, chunks of one step, blocks as long as the chunk, the default
    chunk on a sequence shorter than it."""
    inputs = make_inputs(length=length, seed=length)
    for reverse in (False, True):
        assert_matches_reference(
            inputs, chunk_options=dict(chunk=chunk, block=block), mask=make_mask(2, length, "left"), reverse=reverse
        )


def test_the_published_shape_with_the_default_chunk():
    inputs = make_inputs(batch=1, length=520, d_inner=16, d_state=16, seed=3)
    assert_matches_reference(inputs, chunk_options={}, mask=make_mask(1, 520, "gaps"), reverse=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_follow_the_reference_on_the_same_inputs(dtype):
    """Both compute in float32 from the same rounded inputs and round y (and the input gradients) to the input
    dtype at the end: they differ by an ulp of that dtype where float32 sums in another order round differently,
    hence rtol 1e-2 (bfloat16 has 8 bits of mantissa: one ulp is 2^-8 = 3.9e-3 relative)."""
    inputs = make_inputs(dtype=dtype)
    assert_matches_reference(inputs, rtol=1e-2, atol=1e-2, mask=make_mask(2, 37, "right"))


def test_state_carry_across_calls_equals_one_scan():
    """Scanning in two calls with initial_state / return_final_state is one scan, gradients included."""
    inputs = make_inputs(length=40)
    cut = 23

    def two_calls(initial_state=None, return_final_state=True, **x):
        first = {k: v if v is None or v.dim() < 3 else v[:, :cut] for k, v in x.items()}
        second = {k: v if v is None or v.dim() < 3 else v[:, cut:] for k, v in x.items()}
        y1, h1 = selective_scan_chunked(**first, initial_state=initial_state, return_final_state=True, **SMALL)
        y2, h2 = selective_scan_chunked(**second, initial_state=h1, return_final_state=True, **SMALL)
        return torch.cat([y1, y2], 1), h2

    y, h, grads = run(two_calls, inputs)
    y_one, h_one, grads_one = run(functools.partial(selective_scan_chunked, **SMALL), inputs)
    close(y, y_one)
    close(h, h_one)
    for name in grads:
        close(grads[name], grads_one[name])


def test_extreme_decays_stay_finite_and_exact():
    """Decays far below float32's range inside one chunk (dt A down to -2000 per step): a prefix product in (0, 1]
    underflows to 0 as the loop's state does, where a cumulative-sum formulation would divide by exp(-sum) and
    overflow."""
    inputs = make_inputs(seed=5)
    inputs["delta"] = inputs["delta"] * 10 + 5
    inputs["A"] = inputs["A"] * 50
    y, h, grads = run(functools.partial(selective_scan_chunked, chunk=64, block=4), inputs)
    y_ref, h_ref, grads_ref = run(selective_scan_reference, inputs)
    with torch.no_grad():
        y_inference, h_inference = selective_scan_chunked(**inputs, chunk=64, block=4, return_final_state=True)
    for actual, actual_h in ((y, h), (y_inference, h_inference)):
        assert torch.isfinite(actual).all() and torch.isfinite(actual_h).all()
        close(actual, y_ref)
        close(actual_h, h_ref)
    for name in grads:
        assert torch.isfinite(grads[name]).all(), name
        close(grads[name], grads_ref[name])


def test_padding_does_not_change_the_real_tokens():
    inputs = make_inputs(batch=1, length=24)
    pad = 7
    padded = {k: v if v is None or v.dim() < 3 else torch.cat([v[:, :pad] * 3.0, v], 1) for k, v in inputs.items()}
    mask = torch.ones(1, 24 + pad)
    mask[:, :pad] = 0
    for reverse in (False, True):
        with torch.no_grad():
            y = selective_scan_chunked(**inputs, reverse=reverse, **SMALL)
            y_padded = selective_scan_chunked(**padded, mask=mask, reverse=reverse, **SMALL)
        close(y_padded[:, pad:], y)


def test_empty_sequence():
    inputs = make_inputs(length=0)
    h0 = torch.randn(2, 6, 5)
    y, h = selective_scan_chunked(**inputs, initial_state=h0, return_final_state=True)
    assert y.shape == (2, 0, 6)
    torch.testing.assert_close(h, h0)


def test_chunk_and_block_must_be_powers_of_two():
    with pytest.raises(ValueError, match="powers of two"):
        selective_scan_chunked(**make_inputs(), chunk=12)
    with pytest.raises(ValueError, match="powers of two"):
        selective_scan_chunked(**make_inputs(), block=3)


# --- dispatched operations -----------------------------------------------------------------------------------------


class CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched inside it, by name."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self):
        return sum(self.counts.values())


def count_ops(fn, length, **kwargs):
    inputs = make_inputs(batch=1, length=length, d_inner=8, d_state=4)
    with torch.no_grad(), CountOps() as counter:
        fn(**inputs, mask=make_mask(1, length, "gaps"), **kwargs)
    return counter


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_operations_grow_with_chunks_not_steps(reverse):
    """Four times the length, four times the chunks: at most four times the operations. The loop dispatches
    operations per step; here a chunk of 128 steps costs fewer than the loop spends on 16 of them."""
    chunked = functools.partial(selective_scan_chunked, chunk=128, block=8, reverse=reverse)
    short, long = count_ops(chunked, 512).total, count_ops(chunked, 2048).total
    assert long <= 4 * short
    per_chunk = long / (2048 // 128)
    reference_per_step = count_ops(selective_scan_reference, 2048, reverse=reverse).total / 2048
    assert per_chunk < 16 * reference_per_step, (per_chunk, reference_per_step)


def test_no_host_synchronisation():
    """No .item(), bool() or data-dependent shapes: nothing reads a tensor's value back to Python (which is what
    would break torch.export and stall an accelerator's queue)."""
    counts = count_ops(functools.partial(selective_scan_chunked, chunk=8, block=2), 37).counts
    assert not {"_local_scalar_dense", "nonzero", "item", "is_nonzero"} & counts.keys(), counts


def test_exports_and_the_exported_program_matches():
    """torch.export traces it without graph breaks (no data-dependent branch, no host read) for a fixed length."""

    class Scan(torch.nn.Module):
        def forward(self, u, delta, A, B, C, D, z, delta_bias, mask):
            return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, mask, reverse=True, chunk=8, block=4)

    inputs = (*make_inputs(length=13).values(), make_mask(2, 13, "gaps"))
    program = torch.export.export(Scan(), inputs)
    torch.testing.assert_close(program.module()(*inputs), Scan()(*inputs), rtol=0, atol=0)


# --- devices -------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="MPS is not available")
def test_on_mps_matches_the_reference_on_cpu():
    inputs = make_inputs(length=300, d_inner=32, d_state=16)
    mask = make_mask(2, 300, "both")
    h0 = torch.randn(2, 32, 16)
    for reverse in (False, True):
        y_ref, h_ref, grads_ref = run(selective_scan_reference, inputs, initial_state=h0, mask=mask, reverse=reverse)
        on_mps = {k: None if v is None else v.to("mps") for k, v in inputs.items()}
        y, h, grads = run(
            selective_scan_chunked, on_mps, initial_state=h0.to("mps"), mask=mask.to("mps"), reverse=reverse
        )
        assert y.device.type == "mps"
        close(y.cpu(), y_ref)
        close(h.cpu(), h_ref)
        for name in grads:
            close(grads[name].cpu(), grads_ref[name])


# --- selection and the models' golden outputs through this scan ----------------------------------------------------


def test_auto_picks_it_for_devices_without_a_faster_scan():
    assert backends.resolve("chunked", torch.device("cpu")).name == "chunked"
    for device in ("mps", "xpu", "meta"):
        assert backends.resolve("auto", torch.device(device)).name == "chunked", device
    if backends.BACKENDS["cuda"].unavailable(torch.device("cuda")) is not None:
        assert backends.resolve("auto", torch.device("cuda")).name == "chunked"
    assert backends.resolve("auto", torch.device("cpu")).name != "chunked"


def test_selected_by_name_through_the_dispatcher():
    inputs = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            backends.selective_scan(**inputs, backend="chunked"), selective_scan_chunked(**inputs), rtol=0, atol=0
        )


@pytest.mark.parametrize("mode", ["fused", "nonfused"])
@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps"])
def test_mlm_fixtures_through_the_chunked_scan(name, mode, monkeypatch):
    """scan_backend="chunked", with chunks short enough that the fixtures' sequences (64 and 300) span several."""
    calls = collections.Counter()

    def counted(*args, **kwargs):
        calls["chunked"] += 1
        return selective_scan_chunked(*args, **kwargs)

    monkeypatch.setattr(scan_chunked, "CHUNK", 32)
    monkeypatch.setattr(scan_chunked, "BLOCK", 4)
    monkeypatch.setattr(backends, "selective_scan_chunked", counted)
    inputs = load_file(FIXTURES / name / "inputs.safetensors")
    expected = load_file(FIXTURES / name / f"expected_{mode}.safetensors")
    model = AutoModelForMaskedLM.from_pretrained(
        FIXTURES / name, fused_add_norm=mode == "fused", scan_backend="chunked"
    ).eval()
    with torch.no_grad():
        logits_a = model(inputs["input_ids_a"]).logits
        logits_b = model(inputs["input_ids_b"]).logits
        hidden = model.caduceus(inputs["input_ids_a"]).last_hidden_state
    assert calls["chunked"] > 0
    torch.testing.assert_close(logits_a, expected["mlm_logits_a"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits_b, expected["mlm_logits_b"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hidden, expected["last_hidden_state_a"], rtol=1e-4, atol=1e-5)
