"""The CUDA-kernel path on CPU: dispatch with mocked kernel packages, and the layout work around each kernel checked
against the reference with stand-ins that follow the kernels' interfaces (tensors stay on the CPU throughout)."""

from __future__ import annotations

import copy
import functools
import importlib.abc
import importlib.util
import logging
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from caduceus_hf import CaduceusForMaskedLM
from caduceus_hf.ops import kernels, scan
from caduceus_hf.ops.conv import short_conv_silu
from caduceus_hf.ops.scan_chunked import selective_scan_chunked
from caduceus_hf.ops.scan_reference import selective_scan_reference

from conftest import perturb, random_ids, tiny_config

KERNEL_PACKAGES = ("mamba_ssm", "causal_conv1d")
LOGGER = kernels.__name__


# --- stand-ins for the kernels, with the argument checks of the CUDA code ---------------------------------------


def fake_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, calls=None):
    """mamba_ssm's selective_scan_ref: u, delta, z (b, d, l), B, C (b, n, l) or in groups (b, g, n, l), channel c
    reading group c // (d / g); asserts what selective_scan_cuda checks."""
    batch, dim, length = u.shape
    for t in (u, delta, z):
        if t is not None:
            assert t.shape == (batch, dim, length) and t.stride(-1) == 1 and t.dtype == u.dtype
    groups = 1 if B.dim() == 3 else B.shape[1]
    for t in (B, C):
        assert t.shape[-2:] == (A.shape[1], length) and t.stride(-1) == 1 and t.dtype == u.dtype
        assert t.shape[0] == batch and dim % groups == 0 and (t.dim() == 3 or t.shape[1] == groups)
    B, C = (t.view(batch, 1, *t.shape[-2:]) if t.dim() == 3 else t.repeat_interleave(dim // groups, dim=1)
            for t in (B, C))
    assert A.dtype == torch.float32 and all(t is None or t.dtype == torch.float32 for t in (D, delta_bias))
    if calls is not None:
        calls.append(dict(delta_softplus=delta_softplus, delta_bias=delta_bias is not None))
    dt = delta.float() if delta_bias is None else delta.float() + delta_bias[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    h = u.new_zeros(batch, dim, A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t].float())[..., None] * B[..., t].float()
        ys.append((h * C[..., t].float()).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + u.float() * D[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y


def fake_causal_conv1d_fn(x, weight, bias=None, activation=None, layouts=None):
    """causal_conv1d_fn: x (b, c, l), weight (c, w); asserts causal_conv1d_fwd's layout conditions."""
    channels, width = weight.shape
    channel_last = x.stride(1) == 1 and x.stride(2) > 1
    assert x.stride(2) == 1 or channel_last
    if channel_last:
        assert channels % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(2) % 8 == 0
    assert 2 <= width <= 4 and (bias is None or bias.dtype == weight.dtype)
    if layouts is not None:
        layouts.append("channel_last" if channel_last else "channel_first")
    out = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1).to(x.dtype), bias, groups=channels)
    return F.silu(out) if activation == "silu" else out


def fake_mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                        out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, B_proj_bias=None,
                        C_proj_bias=None, delta_softplus=True):
    """mamba_ssm's mamba_inner_ref: xz (b, 2d, l) -> (b, l, d_model)."""
    assert xz.stride(-1) == 1 and B is None and C is None and delta_softplus
    batch, _, length = xz.shape
    rank, n = delta_proj_weight.shape[1], A.shape[1]
    x, z = xz.chunk(2, dim=1)
    x = fake_causal_conv1d_fn(x, conv1d_weight[:, 0], conv1d_bias, activation="silu")
    x_dbl = F.linear(x.transpose(1, 2).reshape(batch * length, -1), x_proj_weight)
    delta = (delta_proj_weight @ x_dbl[:, :rank].t()).view(-1, batch, length).transpose(0, 1)
    B = x_dbl[:, rank:rank + n].view(batch, length, n).transpose(1, 2)
    C = x_dbl[:, -n:].view(batch, length, n).transpose(1, 2)
    y = fake_selective_scan_fn(x.contiguous(), delta.contiguous(), A, B.contiguous(), C.contiguous(), D,
                               z=z.contiguous(), delta_bias=delta_bias, delta_softplus=True)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def _explode(*args, **kwargs):
    raise AssertionError("a CPU tensor reached a CUDA kernel")


@pytest.fixture(autouse=True)
def fresh_kernels():
    """Each test imports (or fails to import) the kernel packages afresh."""
    kernels.load.cache_clear()
    yield
    kernels.load.cache_clear()


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


# --- dispatch -------------------------------------------------------------------------------------------------------

MODEL_OPTIONS = [dict(), dict(rcps=True), dict(bidirectional_weight_tie=False),
                 dict(bidirectional_weight_tie=False, bidirectional_strategy="ew_multiply"), dict(bidirectional=False)]


@pytest.mark.parametrize("options", MODEL_OPTIONS, ids=str)
def test_cpu_tensors_never_reach_the_kernels(monkeypatch, options):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    model = perturb(CaduceusForMaskedLM(tiny_config(scan_backend="auto", **options)), seed=1)
    ids = random_ids(2, 11)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    model(ids, labels=ids).loss.backward()
    model(ids, attention_mask=mask, labels=ids).loss.backward()
    # Not only unused: the kernel packages were never even imported for CPU tensors.
    assert kernels.load.cache_info().misses == 0


def test_selectors_look_at_the_device_first(monkeypatch):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    weight = torch.randn(8, 1, 4)
    for device in ("cpu", "meta"):
        x = torch.randn(1, 5, 8, device=device)
        assert kernels.causal_conv1d_kernel(x, weight.to(device)) is None
        assert kernels.mamba_inner_kernel(x, "auto", 4) is None
        assert kernels.mamba_inner_kernel(x, "cuda", 4) is None
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            kernels.selective_scan_cuda(x, x, torch.randn(8, 2, device=device), x[..., :2], x[..., :2])
    assert kernels.load.cache_info().misses == 0


def test_forcing_cuda_with_cpu_tensors_is_a_clear_error(monkeypatch):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    u = torch.randn(1, 5, 4)
    with pytest.raises(ValueError, match="scan backend 'cuda' needs CUDA tensors, got tensors on cpu"):
        scan.selective_scan(u, u, -torch.rand(4, 2), torch.randn(1, 5, 2), torch.randn(1, 5, 2), backend="cuda")
    model = CaduceusForMaskedLM(tiny_config(scan_backend="cuda", bidirectional_weight_tie=False))
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        model(random_ids(1, 6))


def test_working_packages_are_found_for_cuda_devices(monkeypatch, caplog):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert scan.resolve_backend("auto", torch.device("cuda")) is kernels.selective_scan_cuda
        assert scan.resolve_backend("cuda", torch.device("cuda")) is kernels.selective_scan_cuda
        assert kernels.load() == kernels.Kernels(_explode, _explode, _explode)
        with kernels.disabled():
            assert not kernels.selective_scan_available()
            assert scan.resolve_backend("auto", torch.device("cuda")) is selective_scan_chunked
        assert kernels.selective_scan_available()
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


def test_missing_packages_fall_back_with_one_info_line(monkeypatch, caplog):
    hide_kernel_packages(monkeypatch, NotInstalled())
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert scan.resolve_backend("auto", torch.device("cuda")) is selective_scan_chunked
        assert not kernels.selective_scan_available()
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
            assert scan.resolve_backend("auto", torch.device("cuda")) is selective_scan_chunked
            assert not kernels.selective_scan_available()
        with pytest.raises(RuntimeError, match="mamba-ssm is not usable"):
            scan.resolve_backend("cuda", torch.device("cuda"))
    (record,) = kernel_records(caplog)
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "mamba-ssm is installed but failed to import" in message and str(error) in message
    assert "\n" not in message
    assert kernels.load() == kernels.Kernels()


# --- layout work around each kernel, against the reference ------------------------------------------------------


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
def test_selective_scan_wrapper_matches_the_reference(reverse, masked, optional):
    inputs = _scan_inputs()
    if optional == "none":
        inputs.update(D=None, z=None, delta_bias=None)
    mask = None
    if masked:
        mask = torch.ones(2, 13)
        mask[0, :4] = 0
        mask[1, -3:] = 0
    calls = []
    kernel = functools.partial(fake_selective_scan_fn, calls=calls)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    got, got_state = kernels.run_selective_scan(kernel, *args, mask, reverse, None, True)
    want, want_state = selective_scan_reference(*args, mask=mask, reverse=reverse, return_final_state=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_state, want_state, rtol=1e-5, atol=1e-5)
    assert got_state.dtype == torch.float32 and not got_state.requires_grad
    # The softplus goes to the kernel unless a mask has to be folded into delta first.
    assert calls == [dict(delta_softplus=not masked, delta_bias=not masked and optional == "all")]
    tensors = [t for t in args if t is not None]
    for g, w in zip(_grads(got, tensors), _grads(want, tensors)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_selective_scan_wrapper_in_bfloat16():
    inputs = _scan_inputs(dtype=torch.bfloat16)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    got = kernels.run_selective_scan(fake_selective_scan_fn, *args, None, True, None, False)
    want = selective_scan_reference(*args, reverse=True)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0.02, atol=0.02)


def test_selective_scan_wrapper_refuses_an_initial_state():
    inputs = _scan_inputs()
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with pytest.raises(NotImplementedError, match="no initial-state input; use scan_backend='reference'"):
        kernels.run_selective_scan(fake_selective_scan_fn, *args, None, False, torch.zeros(2, 6, 3), False)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("channels", [16, 12])
@pytest.mark.parametrize("bias", [True, False])
def test_causal_conv_wrapper_matches_the_pytorch_conv(reverse, channels, bias):
    gen = torch.Generator().manual_seed(channels)
    # x as the first half of a wider projection, like the mixer's x from in_proj.
    wide = torch.randn(2, 9, 2 * channels, generator=gen).requires_grad_()
    x = wide[..., :channels]
    weight = torch.randn(channels, 1, 4, generator=gen).requires_grad_()
    b = torch.randn(channels, generator=gen).requires_grad_() if bias else None
    layouts = []
    kernel = functools.partial(fake_causal_conv1d_fn, layouts=layouts)
    got = kernels.run_causal_conv_silu(kernel, x, weight, b, reverse)
    want = short_conv_silu(x, weight, b, reverse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # Channel-last input is read in place where causal_conv1d allows it (channels a multiple of 8).
    assert layouts == ["channel_last" if channels % 8 == 0 else "channel_first"]
    tensors = [t for t in (wide, weight, b) if t is not None]
    for g, w in zip(_grads(got, tensors), _grads(want, tensors)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_mamba_inner_wrapper_matches_the_unfused_mixer(reverse, bias):
    config = tiny_config(ssm_cfg={"d_state": 4, "bias": bias}, bidirectional_weight_tie=False)
    model = perturb(CaduceusForMaskedLM(config), seed=2)
    mamba = model.caduceus.backbone.layers[0].mixer.mamba_rev
    hidden = torch.randn(2, 10, config.d_model, generator=torch.Generator().manual_seed(3))
    got = kernels.run_mamba_inner(fake_mamba_inner_fn, mamba, hidden, reverse)
    want = mamba(hidden, reverse=reverse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    params = list(mamba.parameters())
    for g, w in zip(_grads(got, params), _grads(want, params)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


# --- the whole model with every kernel stand-in wired in ------------------------------------------------------


@pytest.mark.parametrize("options", MODEL_OPTIONS, ids=str)
def test_model_through_the_kernel_hooks_matches_the_pytorch_path(monkeypatch, options):
    """The selectors are forced to hand out the stand-ins for CPU tensors; every hook must give the PyTorch path."""
    model = perturb(CaduceusForMaskedLM(tiny_config(scan_backend="auto", **options)), seed=4)
    hooked = copy.deepcopy(model)
    ids = random_ids(2, 15, seed=5)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    want = [model(ids, attention_mask=m, labels=ids) for m in (None, mask)]
    sum(out.loss for out in want).backward()

    inner_calls = []

    def inner_selector(x, backend, width):
        inner_calls.append(backend)
        return fake_mamba_inner_fn

    bimamba_calls = []

    def bimamba_selector(x, backend):
        bimamba_calls.append(backend)
        return fake_selective_scan_fn

    monkeypatch.setattr(kernels, "mamba_inner_kernel", inner_selector)
    monkeypatch.setattr(kernels, "bimamba_scan_kernel", bimamba_selector)
    monkeypatch.setattr(kernels, "causal_conv1d_kernel", lambda x, weight: fake_causal_conv1d_fn)
    monkeypatch.setattr(scan, "resolve_backend",
                        lambda backend, device: functools.partial(kernels.run_selective_scan, fake_selective_scan_fn))
    got = [hooked(ids, attention_mask=m, labels=ids) for m in (None, mask)]
    sum(out.loss for out in got).backward()
    for g, w in zip(got, want):
        torch.testing.assert_close(g.logits, w.logits, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(hooked.named_parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    # The fused mixer serves Mamba.forward (untied or single-direction mixers), and only the pass without a mask.
    directions = 1 if options.get("bidirectional") is False else 2
    uses_mamba_forward = directions == 1 or options.get("bidirectional_weight_tie") is False
    assert inner_calls == (["auto"] * 2 * directions if uses_mamba_forward else [])
    # Tied bidirectional mixers run both directions in one launch, with and without a mask.
    assert bimamba_calls == ([] if uses_mamba_forward else ["auto"] * 2 * (2 if options.get("rcps") else 1) * 2)


# --- both directions of a tied BiMamba in one scan launch -------------------------------------------------------


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("options", [dict(), dict(bidirectional_strategy="ew_multiply"),
                                     dict(ssm_cfg={"d_state": 4, "bias": True, "conv_bias": False, "d_conv": 3})],
                         ids=str)
def test_one_launch_bimamba_matches_the_model(options, masked, swap):
    model = perturb(CaduceusForMaskedLM(tiny_config(**options)), seed=6)
    bimamba = model.caduceus.backbone.layers[1].mixer
    hidden = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(7))
    mask = None
    if masked:
        mask = torch.ones(2, 12)
        mask[0, :3] = 0
        mask[1, -2:] = 0
    calls = []
    kernel = functools.partial(fake_selective_scan_fn, calls=calls)
    got = kernels.run_bimamba(kernel, bimamba, hidden, mask, swap, short_conv_silu)
    want = bimamba(hidden, mask, swap)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert calls == [dict(delta_softplus=not masked, delta_bias=not masked)]
    params = list(bimamba.parameters())
    for g, w in zip(_grads(got, params), _grads(want, params)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_one_launch_selector_looks_at_the_device_and_backend(monkeypatch):
    install_fake_packages(monkeypatch, _explode, _explode, _explode)
    assert kernels.bimamba_scan_kernel(torch.randn(1, 4, 8), "auto") is None
    assert kernels.bimamba_scan_kernel(torch.randn(1, 4, 8, device="meta"), "cuda") is None
    assert kernels.load.cache_info().misses == 0
