"""The mamba-ssm / causal-conv1d kernel path on a real GPU: golden outputs, the PyTorch path, bf16, symmetries.

Arrangements of the same weights: "tied" (the published models: both directions in one scan launch, the CUDA
backend's `bimamba`, with in_proj / out_proj once) and "untied" (each direction through Mamba.forward, i.e.
mamba_inner_fn where available). The PyTorch path to compare with is the same model on scan_backend "reference".

Every test is skipped without a CUDA device and an importable mamba-ssm (scripts/gpu_check.sh builds it on the lent
GPU machine); tests of the short-convolution kernel and the fused mixer also need causal-conv1d.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from caduceus_hf import CaduceusConfig, CaduceusForMaskedLM, backends
from caduceus_hf.dna import DNA_COMPLEMENT_MAP, reverse_complement_ids
from caduceus_hf.ops import kernels
from caduceus_hf.ops.conv import short_conv_silu
from caduceus_hf.ops.scan_reference import selective_scan_reference

from conftest import FIXTURES, on_backend, perturb, random_ids

HAS_KERNELS = torch.cuda.is_available() and kernels.load().selective_scan_fn is not None
HAS_CONV = HAS_KERNELS and kernels.load().causal_conv1d_fn is not None
HAS_INNER = HAS_KERNELS and kernels.load().mamba_inner_fn is not None

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_KERNELS, reason="needs a CUDA device and mamba-ssm's kernels"),
]
needs_causal_conv = pytest.mark.skipif(not HAS_CONV, reason="needs causal-conv1d's kernel")
needs_inner = pytest.mark.skipif(not HAS_INNER, reason="needs mamba_inner_fn (mamba-ssm with causal-conv1d)")

CUDA = "cuda"
# mamba-ssm's own kernel-vs-reference tolerances in float32.
KERNEL_CLOSE = dict(rtol=6e-4, atol=2e-3)
# Two float32 kernel arrangements of the same arithmetic (fused vs unfused, padded vs not, a strand vs its RC).
SAME_MATH = dict(rtol=1e-4, atol=1e-4)
MODES = {"fused": True, "nonfused": False}


@pytest.fixture(autouse=True)
def strict_float32():
    """No TF32: the float32 tolerances above assume float32 matmuls and convolutions."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def to_cuda(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(CUDA) for k, v in tensors.items()}


def untied(model):
    """The same weights with bidirectional_weight_tie=False, so each direction runs Mamba.forward (fused mixer)."""
    config = copy.deepcopy(model.config)
    config.bidirectional_weight_tie = False
    twin = type(model)(config)
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin.to(CUDA).eval()


def arrange(model, arrangement: str, monkeypatch: pytest.MonkeyPatch):
    """`model` on the GPU in eval mode, run in the given arrangement (see the module docstring)."""
    if arrangement == "untied":
        return untied(model)
    return model.to(CUDA).eval()


ARRANGEMENTS = ["tied", "untied"]


def config(**options) -> CaduceusConfig:
    kwargs = dict(d_model=64, n_layer=2, vocab_size=12, ssm_cfg={"d_state": 16})
    kwargs.update(options)
    return CaduceusConfig(**kwargs)


# --- golden outputs of the original -------------------------------------------------------------------------------


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps"])
def test_mlm_fixtures_through_the_kernels(monkeypatch, name, mode, arrangement):
    inputs = to_cuda(load_file(FIXTURES / name / "inputs.safetensors"))
    expected = to_cuda(load_file(FIXTURES / name / f"expected_{mode}.safetensors"))
    model = arrange(AutoModelForMaskedLM.from_pretrained(FIXTURES / name, fused_add_norm=MODES[mode],
                                                         scan_backend="cuda"), arrangement, monkeypatch)
    with torch.no_grad():
        out_a = model(inputs["input_ids_a"])
        out_b = model(inputs["input_ids_b"])
        base = model.caduceus(inputs["input_ids_a"])
    torch.testing.assert_close(out_a.logits, expected["mlm_logits_a"], **KERNEL_CLOSE)
    torch.testing.assert_close(out_b.logits, expected["mlm_logits_b"], **KERNEL_CLOSE)
    torch.testing.assert_close(base.last_hidden_state, expected["last_hidden_state_a"], **KERNEL_CLOSE)


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["cls_ph", "cls_ps"])
def test_sequence_classification_fixtures_through_the_kernels(monkeypatch, name, mode, arrangement):
    inputs = to_cuda(load_file(FIXTURES / name / "inputs.safetensors"))
    expected = to_cuda(load_file(FIXTURES / name / f"expected_{mode}.safetensors"))
    intended = to_cuda(load_file(FIXTURES / name / f"expected_{mode}_intended_first_last.safetensors"))
    combos = ["mean", "max", "first", "last"] + (["conjoin_mean", "conjoin_max"] if name == "cls_ph" else [])
    for combo in combos:
        pooling = combo.removeprefix("conjoin_")
        model = arrange(AutoModelForSequenceClassification.from_pretrained(
            FIXTURES / name, fused_add_norm=MODES[mode], pooling_strategy=pooling, conjoin_eval=combo != pooling,
            scan_backend="cuda"), arrangement, monkeypatch)
        reference = expected if f"logits_a.{combo}" in expected else intended
        for part in ("a", "b"):
            ids = inputs[f"input_ids_{part}_conjoin"] if combo != pooling else inputs[f"input_ids_{part}"]
            with torch.no_grad():
                out = model(ids, labels=inputs[f"labels_{part}"])
            torch.testing.assert_close(out.logits, reference[f"logits_{part}.{combo}"], **KERNEL_CLOSE)
            torch.testing.assert_close(out.loss.reshape(1), reference[f"loss_{part}.{combo}"], **KERNEL_CLOSE)


def test_auto_backend_really_runs_the_kernels(monkeypatch):
    """No silent fallback: with scan_backend="auto" every available kernel is called on CUDA tensors."""
    loaded = kernels.load()
    calls = {"scan": 0, "inner": 0, "conv": 0}

    def spy(name, fn):
        if fn is None:
            return None

        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return counted

    spies = kernels.Kernels(spy("scan", loaded.selective_scan_fn), spy("inner", loaded.mamba_inner_fn),
                            spy("conv", loaded.causal_conv1d_fn))
    monkeypatch.setattr(kernels, "load", lambda: spies)
    ids = random_ids(2, 64).to(CUDA)
    with torch.no_grad():
        perturb(CaduceusForMaskedLM(config()), seed=1).to(CUDA).eval()(ids)
        perturb(CaduceusForMaskedLM(config(bidirectional_weight_tie=False)), seed=1).to(CUDA).eval()(ids)
    # 2 layers: the tied model launches one scan (and one conv) per layer for both directions; the untied one runs
    # the fused mixer per direction where it can, else a scan and a conv per direction.
    untied_unfused = 0 if HAS_INNER else 4
    assert calls == {"scan": 2 + untied_unfused, "conv": (2 + untied_unfused) * HAS_CONV, "inner": 4 * HAS_INNER}


# --- the kernel path against the PyTorch path, on the GPU ---------------------------------------------------------


OPTION_GRID = [
    dict(),
    dict(rcps=True),
    dict(rcps=True, fused_add_norm=False),
    dict(bidirectional_weight_tie=False),
    dict(bidirectional_weight_tie=False, bidirectional_strategy="ew_multiply", rcps=True),
    dict(bidirectional_strategy="ew_multiply"),
    dict(bidirectional=False),
    dict(ssm_cfg={"d_state": 16, "bias": True, "expand": 3}, bidirectional_weight_tie=False),
]


def batch_with_padding(length: int = 300, pad: int = 37):
    ids = random_ids(2, length, seed=11).to(CUDA)
    mask = torch.ones_like(ids)
    mask[0, :pad] = 0
    mask[1, -pad:] = 0
    return ids, mask


def loss_and_grads(model, ids, mask):
    model.zero_grad(set_to_none=True)
    labels = ids.masked_fill(mask == 0, -100) if mask is not None else ids
    out = model(ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(got: dict, want: dict, rel: float = 5e-3) -> None:
    """Per parameter, within rel of the largest entry of the wanted gradient (float32 sums over 600 tokens)."""
    assert got.keys() == want.keys()
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=rel, atol=rel * w.abs().max().item() + 1e-8, msg=name)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("options", OPTION_GRID, ids=str)
def test_kernel_path_matches_the_pytorch_path(options, masked):
    model = perturb(CaduceusForMaskedLM(config(**options)), seed=2).to(CUDA).train()
    ids, mask = batch_with_padding()
    mask = mask if masked else None
    logits, grads = loss_and_grads(model, ids, mask)
    want_logits, want_grads = loss_and_grads(on_backend(model, "reference"), ids, mask)
    torch.testing.assert_close(logits, want_logits, **KERNEL_CLOSE)
    assert_grads_close(grads, want_grads)


def scan_tolerance(dtype: torch.dtype, want: torch.Tensor) -> dict[str, float]:
    """mamba-ssm's kernel-vs-reference bounds: KERNEL_CLOSE in float32; in bfloat16 rtol 3e-2, atol 5e-2, with atol
    at least one bf16 unit roundoff (2^-8: 8 significant bits) of the largest |output|. The kernel reads its inputs
    in bf16 (with a mask, the discretised step too), and every output is an inner product over states of the scale
    of the largest outputs, so an element's rounding error follows that scale, not its own (possibly cancelled)
    value: on an H200, 1 element of 89600 with |y| < 1 was 0.08 off where the largest |y| was about 60."""
    if dtype == torch.float32:
        return KERNEL_CLOSE
    return dict(rtol=3e-2, atol=max(5e-2, 2**-8 * want.abs().max().item()))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_scan_kernel_against_the_reference(reverse, masked, dtype):
    gen = torch.Generator(device=CUDA).manual_seed(3)
    batch, length, d, n = 2, 700, 64, 16

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device=CUDA) * scale).to(dtype).requires_grad_()

    u, delta, z = rand(batch, length, d), rand(batch, length, d, scale=0.5), rand(batch, length, d)
    B, C = rand(batch, length, n), rand(batch, length, n)
    A = (-torch.rand(d, n, generator=gen, device=CUDA) * 2 - 0.1).requires_grad_()
    D = torch.randn(d, generator=gen, device=CUDA).requires_grad_()
    bias = (torch.randn(d, generator=gen, device=CUDA) * 0.3).requires_grad_()
    mask = None
    if masked:
        mask = torch.ones(batch, length, device=CUDA)
        mask[0, :100] = 0
        mask[1, -50:] = 0
    args = (u, delta, A, B, C, D, z, bias)
    assert backends.resolve("auto", u.device).name == "cuda"
    got, got_state = backends.selective_scan(*args, mask=mask, reverse=reverse, return_final_state=True)
    want, want_state = selective_scan_reference(*args, mask=mask, reverse=reverse, return_final_state=True)
    assert got.dtype == dtype and got_state.dtype == torch.float32
    torch.testing.assert_close(got.float(), want.float(), **scan_tolerance(dtype, want))
    torch.testing.assert_close(got_state, want_state, **scan_tolerance(dtype, want_state))
    if dtype == torch.float32:
        probe = torch.randn(got.shape, generator=gen, device=CUDA)
        g_got = torch.autograd.grad((got * probe).sum(), args)
        g_want = torch.autograd.grad((want * probe).sum(), args)
        assert_grads_close(dict(enumerate(g_got)), dict(enumerate(g_want)))


@needs_causal_conv
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("channels", [64, 36])
def test_causal_conv_kernel_against_the_pytorch_conv(reverse, channels):
    gen = torch.Generator(device=CUDA).manual_seed(4)
    wide = torch.randn(2, 257, 2 * channels, generator=gen, device=CUDA).requires_grad_()
    x = wide[..., :channels]
    weight = torch.randn(channels, 1, 4, generator=gen, device=CUDA).requires_grad_()
    bias = torch.randn(channels, generator=gen, device=CUDA).requires_grad_()
    assert kernels.causal_conv1d_supports(x, weight)
    got = backends.short_conv_silu(x, weight, bias, reverse)
    want = short_conv_silu(x, weight, bias, reverse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    probe = torch.randn(got.shape, generator=gen, device=CUDA)
    g_got = torch.autograd.grad((got * probe).sum(), (wide, weight, bias))
    g_want = torch.autograd.grad((want * probe).sum(), (wide, weight, bias))
    assert_grads_close(dict(enumerate(g_got)), dict(enumerate(g_want)), rel=1e-4)


# --- the fused mixer (mamba_inner_fn) against the unfused path ----------------------------------------------------


@needs_inner
@pytest.mark.parametrize("options", [dict(bidirectional_weight_tie=False), dict(bidirectional=False),
                                     dict(rcps=True, bidirectional_weight_tie=False, ssm_cfg={"bias": True})], ids=str)
def test_fused_mixer_matches_the_unfused_mixer(monkeypatch, options):
    model = perturb(CaduceusForMaskedLM(config(**options)), seed=5).to(CUDA).train()
    ids = random_ids(2, 300, seed=6).to(CUDA)
    logits, grads = loss_and_grads(model, ids, None)
    monkeypatch.setattr(backends.CudaKernels, "mamba", lambda self, mamba, hidden_states, mask, reverse: None)
    want_logits, want_grads = loss_and_grads(model, ids, None)
    torch.testing.assert_close(logits, want_logits, **SAME_MATH)
    assert_grads_close(grads, want_grads, rel=1e-3)


# --- bf16 ---------------------------------------------------------------------------------------------------------


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


@pytest.mark.parametrize(
    "options, arrangement",
    [(dict(), "tied"), (dict(rcps=True), "tied"), (dict(bidirectional_weight_tie=False), "tied"),
     (dict(rcps=True, fused_add_norm=False), "tied")],
    ids=str,
)
def test_bfloat16_is_finite_and_close_to_float32(monkeypatch, options, arrangement):
    model = arrange(perturb(CaduceusForMaskedLM(config(**options)), seed=7), arrangement, monkeypatch)
    ids = random_ids(2, 500, seed=8).to(CUDA)
    with torch.no_grad():
        want = model(ids).logits
        with torch.autocast(CUDA, dtype=torch.bfloat16):
            autocast = model(ids).logits
        bf16_model = copy.deepcopy(model).to(torch.bfloat16)
        cast = bf16_model(ids).logits
    for got in (autocast, cast):
        assert torch.isfinite(got).all()
        assert relative_error(got, want) < 0.05
    bf16_model.train()
    loss = bf16_model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in bf16_model.parameters())


# --- symmetries ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("fused", [True, False])
def test_ps_is_rc_equivariant_on_gpu(monkeypatch, fused, arrangement):
    model = perturb(CaduceusForMaskedLM(config(rcps=True, fused_add_norm=fused)), seed=9)
    model = arrange(model, arrangement, monkeypatch)
    ids = random_ids(3, 257, seed=10, low=0).to(CUDA)
    comp = torch.tensor([DNA_COMPLEMENT_MAP.get(i, i) for i in range(16)], device=CUDA)
    rc_ids = reverse_complement_ids(ids)
    with torch.no_grad():
        logits, rc_logits = model(ids).logits, model(rc_ids).logits
        hidden = model.caduceus(ids).last_hidden_state
        rc_hidden = model.caduceus(rc_ids).last_hidden_state
    torch.testing.assert_close(rc_logits, logits.flip(1)[..., comp], **SAME_MATH)
    torch.testing.assert_close(rc_hidden, hidden.flip(1, 2), **SAME_MATH)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    "options, arrangement",
    [(dict(), "tied"), (dict(rcps=True), "tied"), (dict(rcps=True, fused_add_norm=False), "tied"),
     (dict(bidirectional=False), "tied"), (dict(bidirectional_strategy="ew_multiply"), "tied"),
     (dict(bidirectional_weight_tie=False), "tied")],
    ids=str,
)
def test_padding_does_not_change_real_tokens_on_gpu(monkeypatch, options, arrangement, side):
    model = arrange(perturb(CaduceusForMaskedLM(config(**options)), seed=12), arrangement, monkeypatch)
    short, long = random_ids(1, 150, seed=13).to(CUDA), random_ids(1, 200, seed=14).to(CUDA)
    pad = torch.full((1, 50), 4, dtype=short.dtype, device=CUDA)
    ones, zeros = torch.ones_like(short), torch.zeros_like(pad)
    padded, mask = (torch.cat([pad, short], 1), torch.cat([zeros, ones], 1)) if side == "left" else (
        torch.cat([short, pad], 1), torch.cat([ones, zeros], 1))
    real = mask[0].bool()
    with torch.no_grad():
        together = model(torch.cat([padded, long]), attention_mask=torch.cat([mask, torch.ones_like(long)])).logits
        alone, alone_long = model(short).logits[0], model(long).logits[0]
    torch.testing.assert_close(together[0][real], alone, **SAME_MATH)
    torch.testing.assert_close(together[1], alone_long, **SAME_MATH)
