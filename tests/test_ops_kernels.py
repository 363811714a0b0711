"""The CUDA backend on CPU: its dispatch with mocked kernel packages, and its layout work driven through the real
Python layers of mamba-ssm and causal-conv1d (selective_scan_fn, mamba_inner_fn, causal_conv1d_fn from their source
distributions in ../shared/gpu, extracted at test time), with stand-ins only for their compiled modules
(selective_scan_cuda, causal_conv1d_cuda: the reference math, with the argument checks of the CUDA code), forward and
backward. Tensors stay on the CPU throughout."""

from __future__ import annotations

import copy
import importlib
import importlib.abc
import importlib.util
import logging
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from caduceus_hf import CaduceusForMaskedLM, backends
from caduceus_hf.ops import kernels
from caduceus_hf.ops.conv import short_conv_silu
from caduceus_hf.ops.scan_reference import selective_scan_reference

from conftest import on_backend, perturb, random_ids, tiny_config

KERNEL_PACKAGES = ("mamba_ssm", "causal_conv1d", "selective_scan_cuda", "causal_conv1d_cuda")
LOGGER = kernels.__name__
ROOT = Path(__file__).resolve().parents[1]
# The source distributions: ../shared/gpu beside the checkout, or .gpu/ where scripts/gpu_check.sh copied them.
SDIST_DIRS = (ROOT.parent / "shared" / "gpu", ROOT / ".gpu")
MODEL_OPTIONS = [dict(), dict(rcps=True), dict(bidirectional_weight_tie=False),
                 dict(bidirectional_weight_tie=False, bidirectional_strategy="ew_multiply"), dict(bidirectional=False)]


@pytest.fixture(autouse=True)
def fresh_kernels():
    """Each test imports (or fails to import) the kernel packages afresh."""
    kernels.load.cache_clear()
    yield
    kernels.load.cache_clear()


# --- stand-ins for the compiled modules, with the argument checks of the CUDA code ------------------------------


def _scan_math(u, delta, A, B, C, D, z, delta_bias, softplus):
    """selective_scan_cuda's arithmetic in float32: u, delta, z (b, d, l); B, C (b, g, n, l), channel c reading
    group c // (d / g). Returns the output before the gate, the gated output (or None) and the last state."""
    batch, dim, length = u.shape
    B, C = (t.float().repeat_interleave(dim // t.shape[1], dim=1) for t in (B, C))
    dt = delta.float() if delta_bias is None else delta.float() + delta_bias[:, None]
    if softplus:
        dt = F.softplus(dt)
    h = u.new_zeros(batch, dim, A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t].float())[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    out = torch.stack(ys, -1)
    if D is not None:
        out = out + u.float() * D[:, None]
    return out, None if z is None else out * F.silu(z.float()), h


def _check_scan_args(u, delta, A, B, C, D, z, delta_bias):
    """What selective_scan_fwd checks (csrc/selective_scan/selective_scan.cpp)."""
    batch, dim, length = u.shape
    assert A.dtype == torch.float32 and A.shape == (dim, B.shape[2])
    for t in (u, delta, z):
        assert t is None or (t.shape == (batch, dim, length) and t.stride(-1) == 1 and t.dtype == u.dtype)
    for t in (B, C):
        assert t.dim() == 4 and t.shape[0] == batch and t.shape[3] == length and dim % t.shape[1] == 0
        assert t.stride(-1) == 1 and t.dtype == u.dtype
    assert all(t is None or (t.dtype == torch.float32 and t.shape == (dim,)) for t in (D, delta_bias))


def make_selective_scan_cuda(calls: list) -> types.ModuleType:
    module = types.ModuleType("selective_scan_cuda")

    def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
        calls.append(("scan", delta_softplus, delta_bias is not None))
        out, out_z, h = _scan_math(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        # The intermediate x holds (decay, state) pairs per chunk; the wrappers read the last state at [..., 1::2].
        x = torch.stack([torch.zeros_like(h), h], dim=-1).reshape(*h.shape[:2], 1, -1)
        return [out.to(u.dtype), x] + ([] if z is None else [out_z.to(u.dtype)])

    def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z):
        _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
        assert dout.shape == u.shape and dout.stride(-1) == 1
        inputs = [t.detach().float().requires_grad_() if t is not None else None
                  for t in (u, delta, A, B, C, D, z, delta_bias)]
        with torch.enable_grad():
            out_pre, out_z, _ = _scan_math(*inputs, delta_softplus)
            target = out_pre if z is None else out_z
            leaves = [t for t in inputs if t is not None]
            grads = iter(torch.autograd.grad(target, leaves, dout.float()))
        du, ddelta, dA, dB, dC, dD, dz_new, ddelta_bias = (
            next(grads).to(t.dtype) if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)
        )
        result = [du, ddelta, dA, dB, dC, dD, ddelta_bias]
        if z is not None:
            result.append(dz_new if dz is None else dz.copy_(dz_new))
        if recompute_out_z:
            result.append(out_z.detach().to(u.dtype))
        return result

    module.fwd, module.bwd = fwd, bwd
    return module


def _conv_math(x, weight, bias, silu):
    width = weight.shape[-1]
    out = F.conv1d(F.pad(x.float(), (width - 1, 0)), weight.float().unsqueeze(1),
                   None if bias is None else bias.float(), groups=x.shape[1])
    return F.silu(out) if silu else out


def _check_conv_args(x, weight, bias, calls=None):
    """What causal_conv1d_fwd checks: (b, c, l) with unit stride along length, or channel-last with its alignment."""
    channels, width = weight.shape
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    assert x.stride(2) == 1 or channel_last
    if channel_last:
        assert channels % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0
    assert 2 <= width <= 4 and x.shape[1] == channels and (bias is None or bias.shape == (channels,))
    if calls is not None:
        calls.append(("conv", "channel_last" if channel_last else "channel_first"))


def make_causal_conv1d_cuda(calls: list) -> types.ModuleType:
    module = types.ModuleType("causal_conv1d_cuda")

    def causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, out, final_states_out, silu_activation):
        assert seq_idx is None and initial_states is None and final_states_out is None
        _check_conv_args(x, weight, bias, calls)
        out.copy_(_conv_math(x, weight, bias, silu_activation))

    def causal_conv1d_bwd(x, weight, bias, dout, seq_idx, initial_states, dfinal_states, dx, dweight, dbias,
                          dinitial_states, silu_activation):
        _check_conv_args(x, weight, bias)
        # causal-conv1d calls this from a torch custom op, below autograd: the gradients are written out.
        channels, width = weight.shape
        pre = _conv_math(x, weight, bias, silu=False)
        g = dout.float()
        if silu_activation:
            sig = torch.sigmoid(pre)
            g = g * sig * (1 + pre * (1 - sig))
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g, F.pad(x.float(), (width - 1, 0)), weight.float().unsqueeze(1), [channels], [1], [0], [1], False, [0],
            channels, [True, True, True],
        )
        dx.copy_(gx[..., width - 1:])
        dweight.add_(gw[:, 0])
        if dbias is not None:
            dbias.add_(gb)

    module.causal_conv1d_fwd, module.causal_conv1d_bwd = causal_conv1d_fwd, causal_conv1d_bwd
    return module


# --- the real Python layers on top of the stand-ins -------------------------------------------------------------


def _sdist(prefix: str) -> Path | None:
    return next((p for d in SDIST_DIRS if d.is_dir() for p in sorted(d.glob(f"{prefix}-*.tar.gz"))), None)


@pytest.fixture(scope="module")
def real_layers(tmp_path_factory):
    """The modules of mamba-ssm's and causal-conv1d's Python layers, imported from their sdists over the stand-ins;
    the calls the stand-ins received go to the returned list. Imported once: causal-conv1d registers torch ops."""
    pytest.importorskip("einops", reason="mamba-ssm's Python layer imports einops (pip install einops)")
    mamba_sdist, conv_sdist = _sdist("mamba_ssm"), _sdist("causal_conv1d")
    if mamba_sdist is None or conv_sdist is None:
        pytest.skip("needs the mamba-ssm and causal-conv1d sdists in ../shared/gpu (or .gpu/)")
    root = tmp_path_factory.mktemp("sdists")
    for sdist in (mamba_sdist, conv_sdist):
        with tarfile.open(sdist) as tar:
            tar.extractall(root, filter="data")
    (mamba_dir,), (conv_dir,) = root.glob("mamba_ssm-*"), root.glob("causal_conv1d-*")
    calls: list = []
    saved = {name: sys.modules.get(name) for name in list(sys.modules) if name.split(".")[0] in KERNEL_PACKAGES}
    for name in saved:
        del sys.modules[name]
    # Only what the wrappers need: mamba_ssm's package __init__ imports every model (and Triton), so the package is
    # an empty shell over its real directory; its Triton layer norm is not on the paths under test.
    shell = types.ModuleType("mamba_ssm")
    shell.__path__ = [str(mamba_dir / "mamba_ssm")]
    layer_norm = types.ModuleType("mamba_ssm.ops.triton.layer_norm")
    layer_norm._layer_norm_fwd = None
    stand_ins = {
        "selective_scan_cuda": make_selective_scan_cuda(calls),
        "causal_conv1d_cuda": make_causal_conv1d_cuda(calls),
        "mamba_ssm": shell,
        "mamba_ssm.ops.triton.layer_norm": layer_norm,
    }
    sys.modules.update(stand_ins)
    sys.path.insert(0, str(conv_dir))
    try:
        importlib.import_module("causal_conv1d")
        interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        assert interface.causal_conv1d_fwd_function is not None
        modules = {name: m for name, m in sys.modules.items() if name.split(".")[0] in KERNEL_PACKAGES}
    except RuntimeError as error:
        # An installed causal-conv1d imported earlier in this process has registered the same torch ops.
        pytest.skip(f"the sdists' Python layers cannot be imported next to the installed ones: {error}")
    finally:
        sys.path.remove(str(conv_dir))
        for name in [n for n in sys.modules if n.split(".")[0] in KERNEL_PACKAGES]:
            del sys.modules[name]
        sys.modules.update({name: m for name, m in saved.items() if m is not None})
    return modules, calls


@pytest.fixture
def stand_ins(real_layers, monkeypatch):
    """The real layers importable for this test; yields the list of calls the compiled stand-ins receive."""
    modules, calls = real_layers
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    calls.clear()
    assert kernels.load().mamba_inner_fn is not None and kernels.load().causal_conv1d_fn is not None
    return calls


class CudaOnCpu(backends.CudaKernels):
    """The CUDA backend, allowed to run CPU tensors: what the model does on a GPU, here."""

    name = "cuda-on-cpu"

    def unavailable(self, device: torch.device) -> str | None:
        return None


@pytest.fixture
def cuda_on_cpu(stand_ins):
    backends.register(CudaOnCpu)
    yield stand_ins
    del backends.BACKENDS[CudaOnCpu.name]


def _scan_inputs(dtype=torch.float32, batch=2, length=13, d=6, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype).requires_grad_()

    # B and C as slices of one projection, the way the mixer produces them.
    BC = torch.randn(batch, length, 2 * n + 1, generator=gen).to(dtype)
    return dict(
        u=rand(batch, length, d), delta=rand(batch, length, d, scale=0.5),
        A=(-torch.rand(d, n, generator=gen) - 0.2).requires_grad_(),
        B=BC[..., 1:n + 1].requires_grad_(), C=BC[..., n + 1:].requires_grad_(),
        D=torch.randn(d, generator=gen).requires_grad_(), z=rand(batch, length, d),
        delta_bias=(torch.randn(d, generator=gen) * 0.3).requires_grad_(),
    )


def _grads(out, tensors):
    return torch.autograd.grad(out.square().sum(), [t for t in tensors if t.requires_grad], allow_unused=True)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("optional", ["all", "none"])
def test_selective_scan_through_selective_scan_fn(stand_ins, reverse, masked, optional):
    inputs = _scan_inputs()
    if optional == "none":
        inputs.update(D=None, z=None, delta_bias=None)
    mask = None
    if masked:
        mask = torch.ones(2, 13)
        mask[0, :4] = 0
        mask[1, -3:] = 0
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    got, got_state = kernels.selective_scan_cuda(*args, mask, reverse, True)
    want, want_state = selective_scan_reference(*args, mask=mask, reverse=reverse, return_final_state=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_state, want_state, rtol=1e-5, atol=1e-5)
    assert got_state.dtype == torch.float32 and not got_state.requires_grad
    # The softplus goes to the kernel unless a mask has to be folded into delta first.
    assert stand_ins == [("scan", not masked, not masked and optional == "all")]
    tensors = [t for t in args if t is not None]
    for g, w in zip(_grads(got, tensors), _grads(want, tensors)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_selective_scan_through_selective_scan_fn_in_bfloat16(stand_ins):
    inputs = _scan_inputs(dtype=torch.bfloat16)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    got = kernels.selective_scan_cuda(*args, None, True)
    want = selective_scan_reference(*args, reverse=True)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("channels", [16, 12])
@pytest.mark.parametrize("bias", [True, False])
def test_short_convolution_through_causal_conv1d_fn(stand_ins, reverse, channels, bias):
    gen = torch.Generator().manual_seed(channels)
    # x as the first half of a wider projection, like the mixer's x from in_proj.
    wide = torch.randn(2, 9, 2 * channels, generator=gen).requires_grad_()
    x = wide[..., :channels]
    weight = torch.randn(channels, 1, 4, generator=gen).requires_grad_()
    b = torch.randn(channels, generator=gen).requires_grad_() if bias else None
    got = kernels.causal_conv_silu_cuda(x, weight, b, reverse)
    want = short_conv_silu(x, weight, b, reverse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # Channel-last input is read in place where causal_conv1d allows it (channels a multiple of 8).
    assert stand_ins == [("conv", "channel_last" if channels % 8 == 0 else "channel_first")]
    tensors = [t for t in (wide, weight, b) if t is not None]
    for g, w in zip(_grads(got, tensors), _grads(want, tensors)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_mixer_through_mamba_inner_fn(cuda_on_cpu, reverse, bias):
    config = tiny_config(ssm_cfg={"d_state": 4, "bias": bias}, bidirectional_weight_tie=False)
    model = perturb(CaduceusForMaskedLM(config), seed=2)
    mamba = model.caduceus.backbone.layers[0].mixer.mamba_rev
    hidden = torch.randn(2, 10, config.d_model, generator=torch.Generator().manual_seed(3))
    got = backends.BACKENDS["cuda-on-cpu"].mamba(mamba, hidden, None, reverse)
    assert [c[0] for c in cuda_on_cpu] == ["conv", "scan"]
    mamba.scan_backend = "reference"
    want = mamba(hidden, reverse=reverse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    params = list(mamba.parameters())
    for g, w in zip(_grads(got, params), _grads(want, params)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("options", [dict(), dict(bidirectional_strategy="ew_multiply"),
                                     dict(ssm_cfg={"d_state": 4, "bias": True, "conv_bias": False, "d_conv": 3})],
                         ids=str)
def test_one_launch_bimamba_through_selective_scan_fn(cuda_on_cpu, options, masked, swap):
    model = perturb(CaduceusForMaskedLM(tiny_config(**options)), seed=6)
    bimamba = model.caduceus.backbone.layers[1].mixer
    hidden = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(7))
    mask = None
    if masked:
        mask = torch.ones(2, 12)
        mask[0, :3] = 0
        mask[1, -2:] = 0
    got = backends.BACKENDS["cuda-on-cpu"].bimamba(bimamba, hidden, mask, swap)
    # One convolution (on the kernel layout, read in place) and one scan launch for both directions.
    assert [c[:2] for c in cuda_on_cpu] == [("conv", "channel_first"), ("scan", not masked)]
    want = on_backend(model, "reference").caduceus.backbone.layers[1].mixer(hidden, mask, swap)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    params = list(bimamba.parameters())
    for g, w in zip(_grads(got, params), _grads(want, params)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options", MODEL_OPTIONS, ids=str)
def test_model_on_the_cuda_backend_matches_the_reference(cuda_on_cpu, options):
    """The whole model through the real kernel layers: logits and every gradient, with and without padding."""
    model = perturb(CaduceusForMaskedLM(tiny_config(**options)), seed=4)
    reference = on_backend(copy.deepcopy(model), "reference")
    model.set_scan_backend("cuda-on-cpu")
    ids = random_ids(2, 15, seed=5)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    want = [reference(ids, attention_mask=m, labels=ids) for m in (None, mask)]
    sum(out.loss for out in want).backward()
    got = [model(ids, attention_mask=m, labels=ids) for m in (None, mask)]
    sum(out.loss for out in got).backward()
    for g, w in zip(got, want):
        torch.testing.assert_close(g.logits, w.logits, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    # Tied bidirectional mixers: one scan per layer and pass (a PS model's two strands ride in one batch); untied or
    # one-direction mixers: the fused mixer (its own scan) per direction without a mask, a scan per direction with one.
    scans = sum(c[0] == "scan" for c in cuda_on_cpu)
    tied = options.get("bidirectional") is not False and options.get("bidirectional_weight_tie") is not False
    directions = 1 if options.get("bidirectional") is False else 2
    assert scans == 2 * 2 * (1 if tied else directions)


# --- dispatch with mocked packages --------------------------------------------------------------------------------


def _explode(*args, **kwargs):
    raise AssertionError("a CPU tensor reached a CUDA kernel")


def install_fake_packages(monkeypatch, scan_fn, inner_fn, conv_fn, conv_functions=True):
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = scan_fn
    interface.mamba_inner_fn = inner_fn
    interface.causal_conv1d_fwd_function = object() if conv_functions else None
    causal = types.ModuleType("causal_conv1d")
    causal.causal_conv1d_fn = conv_fn
    for name, module in {
        "mamba_ssm": types.ModuleType("mamba_ssm"),
        "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
        "mamba_ssm.ops.selective_scan_interface": interface,
        "causal_conv1d": causal,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)


class BrokenInstall(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the kernel packages and fails while executing them, as a build with undefined symbols does."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name.split(".")[0] in KERNEL_PACKAGES else None

    def exec_module(self, module):
        raise self.error


class NotInstalled(importlib.abc.MetaPathFinder):
    """Hides the kernel packages as an environment without them does, even where they are installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in KERNEL_PACKAGES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def hide_kernel_packages(monkeypatch, finder: importlib.abc.MetaPathFinder) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in KERNEL_PACKAGES]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [finder] + sys.meta_path)


def kernel_records(caplog):
    return [r for r in caplog.records if r.name == LOGGER]


CUDA = torch.device("cuda")


@pytest.mark.parametrize("options", MODEL_OPTIONS, ids=str)
def test_cpu_tensors_never_reach_the_kernels(monkeypatch, options):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    model = perturb(CaduceusForMaskedLM(tiny_config(**options)), seed=1)
    ids = random_ids(2, 11)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    model(ids, labels=ids).loss.backward()
    model(ids, attention_mask=mask, labels=ids).loss.backward()
    # Not only unused: the kernel packages were never even imported for CPU tensors.
    assert kernels.load.cache_info().misses == 0


def test_forcing_cuda_with_cpu_tensors_is_a_clear_error(monkeypatch):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    model = on_backend(CaduceusForMaskedLM(tiny_config(bidirectional_weight_tie=False)), "cuda")
    with pytest.raises(RuntimeError, match="scan_backend 'cuda' cannot run here: it needs CUDA tensors, got tensors"):
        model(random_ids(1, 6))
    assert kernels.load.cache_info().misses == 0


def test_working_packages_are_found_for_cuda_devices(monkeypatch, caplog):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert backends.resolve("auto", CUDA).name == "cuda"
        assert backends.resolve("cuda", CUDA).name == "cuda"
        assert kernels.load() == kernels.Kernels(_explode, _explode, _explode)
    assert not kernel_records(caplog)


def test_without_causal_conv1d_the_fused_mixer_is_off(monkeypatch, caplog):
    hide_kernel_packages(monkeypatch, NotInstalled())
    install_fake_packages(monkeypatch, _explode, _explode, _explode, conv_functions=False)
    monkeypatch.delitem(sys.modules, "causal_conv1d")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        loaded = kernels.load()
        kernels.load()
    assert loaded == kernels.Kernels(selective_scan_fn=_explode)
    (record,) = kernel_records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("caduceus_hf: causal-conv1d is not installed; CUDA tensors use the PyTorch "
                                          "short convolution")
    # Each op on the CUDA backend falls back alone: the convolution and the fused mixer, not the scan.
    x = torch.randn(1, 5, 8)
    assert not kernels.causal_conv1d_supports(x, torch.randn(8, 1, 4))


def test_missing_packages_fall_back_with_one_info_line(monkeypatch, caplog):
    hide_kernel_packages(monkeypatch, NotInstalled())
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert backends.resolve("auto", CUDA).name == "chunked"
        with pytest.raises(RuntimeError, match="scan_backend 'cuda' cannot run here: mamba-ssm is not usable"):
            backends.resolve("cuda", CUDA)
    (record,) = kernel_records(caplog)
    assert record.levelno == logging.INFO
    assert "mamba-ssm is not installed; causal-conv1d is not installed" in record.getMessage()
    assert "\n" not in record.getMessage()


@pytest.mark.parametrize(
    "error",
    [
        OSError("libtorch_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi"),
        RuntimeError("The NVIDIA driver on your system is too old (found version 11040)"),
        ImportError("selective_scan_cuda.cpython-312-x86_64-linux-gnu.so: undefined symbol: _ZN2at4_ops"),
        ModuleNotFoundError("No module named 'selective_scan_cuda'", name="selective_scan_cuda"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_broken_install_falls_back_and_logs_exactly_one_line(monkeypatch, caplog, error):
    hide_kernel_packages(monkeypatch, BrokenInstall(error))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for _ in range(3):
            assert backends.resolve("auto", CUDA).name == "chunked"
        with pytest.raises(RuntimeError, match="mamba-ssm is not usable"):
            backends.resolve("cuda", CUDA)
    (record,) = kernel_records(caplog)
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "mamba-ssm is installed but failed to import" in message and str(error) in message
    assert "\n" not in message
    assert kernels.load() == kernels.Kernels()
