"""The mixer's CPU paths: the numba kernels against the reference backend, and the chunked inference path for long
sequences (`backends.chunked`) against the whole-sequence path, on tiny configs with the chunk size lowered."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch

from caduceus_hf import CaduceusForMaskedLM, backends
from caduceus_hf.ops import scan_cpu
from caduceus_hf.rcps import swap_strands, swap_strands_

from conftest import perturb, random_ids, tiny_config

LENGTH = 29
CHUNKED_OPTIONS = [
    dict(rcps=rcps, fused_add_norm=fused, bidirectional_strategy=strategy)
    for rcps, fused, strategy in itertools.product([False, True], [True, False], ["add", "ew_multiply"])
    if fused or rcps
] + [
    dict(bidirectional_weight_tie=False),
    dict(bidirectional_weight_tie=False, bidirectional_strategy="ew_multiply", rcps=True),
    dict(bidirectional=False),
    dict(bidirectional=False, rcps=True),
    dict(rms_norm=False, residual_in_fp32=True, rcps=True),
    dict(ssm_cfg=dict(d_state=5, d_conv=5, expand=3, dt_rank="auto", bias=True), n_layer=3),
    dict(ssm_cfg=dict(d_state=3, d_conv=2, expand=1, dt_rank=3, bias=True, conv_bias=False), rcps=True),
]


def _mask(side):
    mask = torch.ones(2, LENGTH, dtype=torch.long)
    if side == "left":
        mask[0, :6] = 0
    elif side == "right":
        mask[1, -9:] = 0
    return mask if side else None


def _run(model, ids, mask, chunk, monkeypatch, **kwargs):
    monkeypatch.setattr(backends, "STREAM_CHUNK", chunk)
    with torch.no_grad():
        return model(ids, attention_mask=mask, output_hidden_states=True, **kwargs)


# Every option with one padding side, in turn: none, left, right.
CHUNKED_CASES = [(options, side) for options, side in zip(CHUNKED_OPTIONS, itertools.cycle([None, "left", "right"]))]


@pytest.mark.parametrize(
    "options,side", CHUNKED_CASES, ids=[f"{json.dumps(o, sort_keys=True)}-{s}" for o, s in CHUNKED_CASES]
)
def test_chunked_inference_equals_the_whole_sequence(options, side, monkeypatch):
    """Chunks of 6 steps (the last one shorter), so every chunk's convolution reads its neighbours' steps and every
    scan carries its state across four boundaries; hidden states after every block included."""
    model = perturb(CaduceusForMaskedLM(tiny_config(**options)), seed=1).eval()
    ids, mask = random_ids(2, LENGTH, seed=2, low=0), _mask(side)
    want = _run(model, ids, mask, LENGTH, monkeypatch)
    got = _run(model, ids, mask, 6, monkeypatch)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    assert len(got.hidden_states) == len(want.hidden_states)
    for a, b in zip(got.hidden_states, want.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [dict(), dict(rcps=True), dict(bidirectional_weight_tie=False)], ids=str)
def test_one_step_chunks(options, monkeypatch):
    """The extreme: chunks of one step, where the convolution's context comes entirely from other chunks."""
    model = perturb(CaduceusForMaskedLM(tiny_config(**options)), seed=3).eval()
    ids = random_ids(1, 9, seed=4)
    want = _run(model, ids, None, 9, monkeypatch)
    got = _run(model, ids, None, 1, monkeypatch)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rcps", [False, True])
def test_chunked_path_leaves_the_callers_tensors_alone(rcps, monkeypatch):
    """Blocks reuse the buffers handed to them, never the caller's inputs_embeds nor returned hidden states."""
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=rcps, n_layer=3)), seed=5).eval()
    ids = random_ids(2, LENGTH, seed=6)
    embeds = model.get_input_embeddings()(ids).detach()
    kept = embeds.clone()
    want = _run(model, None, None, LENGTH, monkeypatch, inputs_embeds=embeds)
    got = _run(model, None, None, 6, monkeypatch, inputs_embeds=embeds)
    assert torch.equal(embeds, kept)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(got.hidden_states, want.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_model_chunked(monkeypatch):
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=True, residual_in_fp32=True)), seed=7).eval()
    model = model.to(torch.bfloat16)
    ids = random_ids(2, LENGTH, seed=8)
    want = _run(model, ids, _mask("left"), LENGTH, monkeypatch)
    got = _run(model, ids, _mask("left"), 6, monkeypatch)
    # Different chunk boundaries round bf16 matmul outputs differently only where blocking changes; stay within 1 ulp.
    torch.testing.assert_close(got.logits, want.logits, rtol=2e-2, atol=2e-2)


def test_chunking_is_inference_only(monkeypatch):
    """With autograd on, long inputs take the whole-sequence path: gradients are the same whatever the chunk size."""
    model = perturb(CaduceusForMaskedLM(tiny_config()), seed=9)
    ids = random_ids(2, LENGTH, seed=10)
    grads = []
    for chunk in (LENGTH, 6):
        monkeypatch.setattr(backends, "STREAM_CHUNK", chunk)
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    x = torch.randn(1, LENGTH, 8)
    assert not backends.chunked(x)
    with torch.no_grad():
        assert backends.chunked(x)
        assert not backends.chunked(x[:, :6])


@pytest.mark.parametrize("options", [dict(), dict(rcps=True), dict(rcps=True, residual_in_fp32=True)], ids=str)
def test_chunked_block_adds_into_the_residual_stream_in_place(options, monkeypatch):
    """A chunked block handed its inputs returns (hidden + residual + mixer output, None) in the hidden input's own
    buffer: one hidden-size tensor per layer. Equal to the whole-sequence block's hidden + residual."""
    block = perturb(CaduceusForMaskedLM(tiny_config(**options)), seed=11).caduceus.backbone.layers[1].eval()
    width = block.norm.weight.shape[0] * (2 if options.get("rcps") else 1)
    hidden, residual = torch.randn(2, LENGTH, width), torch.randn(2, LENGTH, width)
    with torch.no_grad():
        out, res = block(hidden.clone(), residual.clone(), None)
        want = out + res
        monkeypatch.setattr(backends, "STREAM_CHUNK", 6)
        given = hidden.clone()
        got, none = block(given, residual.clone(), None, reuse_inputs=True)
    assert none is None and got.data_ptr() == given.data_ptr()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_swap_strands_in_place():
    h = torch.randn(2, 17, 10)
    want = swap_strands(h)
    assert swap_strands_(h) is h
    torch.testing.assert_close(h, want, rtol=0, atol=0)


# --- the numba kernels against the reference backend -------------------------------------------------------------


@pytest.mark.skipif(not scan_cpu.is_available(), reason="numba is not installed")
@pytest.mark.parametrize(
    "options,dtype",
    [(dict(), torch.float32), (dict(rcps=True, bidirectional_weight_tie=False), torch.float32),
     (dict(rcps=True), torch.bfloat16)],
    ids=str,
)
def test_cpu_kernels_agree_with_the_reference_backend(options, dtype):
    """The whole model, outputs and gradients: the numba scan and convolution (backend "auto" on CPU) against the
    plain PyTorch ops (backend "reference") on the same weights and inputs, padding included."""
    model = perturb(CaduceusForMaskedLM(tiny_config(ssm_cfg={"d_state": 16}, **options)), seed=11).to(dtype)
    reference = copy.deepcopy(model)
    reference.set_scan_backend("reference")
    ids, mask = random_ids(2, 13, seed=12), torch.tensor([[1] * 13, [1] * 9 + [0] * 4])
    out, out_ref = (m(ids, attention_mask=mask, labels=ids) for m in (model, reference))
    out.loss.backward()
    out_ref.loss.backward()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(out.logits, out_ref.logits, **tol)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        scale = max(1.0, q.grad.float().abs().max().item())
        torch.testing.assert_close(p.grad.float(), q.grad.float(), rtol=tol["rtol"], atol=tol["atol"] * scale, msg=name)
