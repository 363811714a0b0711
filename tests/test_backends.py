"""The backend registry (`caduceus_hf.backends`): names, "auto", the error and fallback rules, run-time selection on
the model (not saved with it), a backend added from outside, and torch.compile of the mixers on each CPU backend."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch

from caduceus_hf import CaduceusForMaskedLM, backends
from caduceus_hf.mixer import BiMamba, Mamba
from caduceus_hf.ops import scan_cpu
from caduceus_hf.ops.scan_reference import selective_scan_reference

from conftest import on_backend, perturb, random_ids, tiny_config

needs_numba = pytest.mark.skipif(not scan_cpu.is_available(), reason="numba is not installed")
CPU, META = torch.device("cpu"), torch.device("meta")


def backend_names(model) -> set[str]:
    return {m.scan_backend for m in model.modules() if isinstance(m, (Mamba, BiMamba))}


# --- names and resolution -------------------------------------------------------------------------------------------


def test_builtin_names_in_auto_order():
    assert backends.names() == ("auto", "cuda", "cpu", "chunked", "reference")


@needs_numba
def test_auto_picks_the_numba_kernels_for_cpu_tensors_and_the_chunked_scan_elsewhere():
    assert backends.resolve("auto", CPU).name == "cpu"
    assert backends.resolve("auto", META).name == "chunked"
    assert backends.resolve("reference", META).name == "reference"


@pytest.mark.parametrize(
    "name, device, message",
    [("cuda", CPU, "scan_backend 'cuda' cannot run here: it needs CUDA tensors, got tensors on cpu"),
     ("cpu", META, "scan_backend 'cpu' cannot run here: it needs CPU tensors, got tensors on meta")],
)
def test_a_named_backend_that_cannot_run_is_an_error(name, device, message):
    with pytest.raises(RuntimeError, match=message):
        backends.resolve(name, device)


def test_unknown_names_are_refused_with_the_list():
    with pytest.raises(ValueError, match=r"unknown scan_backend 'gpu'; choose one of \('auto', 'cuda'"):
        backends.resolve("gpu", CPU)
    with pytest.raises(ValueError, match="unknown scan_backend 'gpu'"):
        CaduceusForMaskedLM(tiny_config()).set_scan_backend("gpu")


def test_without_numba_every_op_follows_the_same_rule(monkeypatch):
    """Named "cpu": an error for the scan and the convolution alike; "auto": the reference for both."""
    monkeypatch.setattr(scan_cpu, "is_available", lambda: False)
    x, weight = torch.randn(1, 5, 8), torch.randn(8, 1, 4)
    for op in (lambda b: backends.short_conv_silu(x, weight, None, backend=b),
               lambda b: backends.selective_scan(x, x, -torch.rand(8, 2), x[..., :2], x[..., :2], backend=b)):
        with pytest.raises(RuntimeError, match="scan_backend 'cpu' cannot run here: its numba kernels are unavailable"):
            op("cpu")
        assert backends.resolve("auto", CPU).name == "reference"
        op("auto")


# --- run-time selection on the model --------------------------------------------------------------------------------


def test_set_scan_backend_reaches_every_mixer_and_is_not_saved(tmp_path):
    model = CaduceusForMaskedLM(tiny_config(rcps=True, bidirectional_weight_tie=False))
    assert backend_names(model) == {"auto"} and model.scan_backend == "auto"
    model.set_scan_backend("reference")
    assert backend_names(model) == {"reference"} and model.scan_backend == "reference"
    model.save_pretrained(tmp_path)
    assert "scan_backend" not in json.loads((tmp_path / "config.json").read_text())
    assert backend_names(CaduceusForMaskedLM.from_pretrained(tmp_path)) == {"auto"}
    loaded = CaduceusForMaskedLM.from_pretrained(tmp_path, scan_backend="reference")
    assert backend_names(loaded) == {"reference"}


def test_a_config_saved_with_cuda_loads_and_runs_on_cpu(tmp_path, caplog):
    """Older files carry scan_backend in config.json: an info line, then "auto"."""
    model = perturb(CaduceusForMaskedLM(tiny_config()), seed=1).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "scan_backend": "cuda"}))
    with caplog.at_level(logging.INFO, logger="caduceus_hf.configuration_caduceus"):
        loaded = CaduceusForMaskedLM.from_pretrained(tmp_path).eval()
    assert any("ignoring scan_backend='cuda'" in r.getMessage() for r in caplog.records)
    assert backend_names(loaded) == {"auto"}
    ids = random_ids(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


# --- a backend added from outside: one class, one decorator ---------------------------------------------------------


@pytest.fixture
def counting_backend():
    """A scan-only backend, registered as a fourth one would be (and removed afterwards)."""
    calls = []

    @backends.register
    class Counting(backends.MixerBackend):
        name = "counting"

        def auto(self, device):
            return device.type == "meta"

        def scan(self, *args, **kwargs):
            calls.append(args[0].shape)
            return selective_scan_reference(*args, **kwargs)

    # First in "auto"'s order, ahead of the built-in catch-all for other devices ("chunked").
    ordered = list(backends.BACKENDS.items())
    backends.BACKENDS.clear()
    backends.BACKENDS.update([ordered[-1], *ordered[:-1]])
    yield calls
    del backends.BACKENDS["counting"]


def test_a_registered_backend_is_selectable_by_name_and_by_auto(counting_backend):
    assert backends.names()[1] == "counting"
    assert backends.resolve("auto", META).name == "counting"
    assert backends.resolve("auto", CPU).name != "counting"
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=True)), seed=2)
    reference = on_backend(copy.deepcopy(model), "reference")
    model.set_scan_backend("counting")
    ids = random_ids(2, 7)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    # 2 layers x 2 directions, each call scanning both strands of the batch (4 rows); the convolution falls back to
    # the reference.
    assert counting_backend == [torch.Size([4, 7, model.config.d_inner])] * 4


# --- torch.compile ----------------------------------------------------------------------------------------------------


def _compiled_matches_eager(backend: str, options: dict, compiler: str, monkeypatch) -> None:
    """The backbone compiled with fullgraph=True (no graph break) against eager: outputs and gradients, and under
    no_grad with a chunk size the input exceeds (traced graphs must not take the chunked path)."""
    torch._dynamo.reset()
    model = perturb(on_backend(CaduceusForMaskedLM(tiny_config(**options)), backend), seed=3)
    backbone = model.caduceus.backbone
    compiled = torch.compile(backbone, fullgraph=True, backend=compiler)
    ids, mask = random_ids(2, 9, seed=4), torch.tensor([[1] * 9, [0] * 3 + [1] * 6])
    got, _ = compiled(ids, mask=mask)
    want, _ = backbone(ids, mask=mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    probe = torch.randn(got.shape, generator=torch.Generator().manual_seed(5))
    params = list(backbone.parameters())
    grads = (torch.autograd.grad((out * probe).sum(), params) for out in (got, want))
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(backends, "STREAM_CHUNK", 4)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, mask=mask)[0], backbone(ids, mask=mask)[0], rtol=1e-5, atol=1e-5)


@needs_numba
def test_compile_fullgraph_with_the_numba_custom_ops(monkeypatch):
    """Quick: the numba kernels are single custom ops to the compiler (aot_eager checks their fake and autograd
    registrations without inductor's code generation)."""
    _compiled_matches_eager("cpu", dict(n_layer=1), "aot_eager", monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, options",
    [pytest.param("cpu", options, marks=needs_numba) for options in (dict(), dict(rcps=True))]
    # Inductor unrolls the reference scan's loop over time: minutes per configuration.
    + [("reference", dict(rcps=True, bidirectional_weight_tie=False))],
    ids=str,
)
def test_compile_fullgraph_with_inductor(backend, options, monkeypatch):
    _compiled_matches_eager(backend, options, "inductor", monkeypatch)


@pytest.mark.slow
@needs_numba
def test_export_with_dynamic_batch_and_length_on_the_numba_custom_ops(monkeypatch):
    """torch.export of the backbone (no autograd, chunk size below the input's length: the exported graph must not
    take the chunked path) with dynamic batch and length, against eager at the traced and at another shape."""
    model = perturb(on_backend(CaduceusForMaskedLM(tiny_config(rcps=True, n_layer=1)), "cpu"), seed=6).eval()
    backbone = model.caduceus.backbone

    class Backbone(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.backbone(ids, mask=mask)[0]

    monkeypatch.setattr(backends, "STREAM_CHUNK", 4)
    batch, length = torch.export.Dim("batch", min=2), torch.export.Dim("length", min=5)
    ids, mask = random_ids(2, 9, seed=7), torch.tensor([[1] * 9, [0] * 3 + [1] * 6])
    with torch.no_grad():
        program = torch.export.export(Backbone(), (ids, mask), dynamic_shapes=({0: batch, 1: length},) * 2)
        for ids, mask in ((ids, mask), (random_ids(3, 13, seed=8), torch.ones(3, 13, dtype=torch.long))):
            torch.testing.assert_close(program.module()(ids, mask), Backbone()(ids, mask), rtol=1e-5, atol=1e-5)
