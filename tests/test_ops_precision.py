"""Mixed precision on CPU (`caduceus_hf.ops.precision`): the CPU's bf16 units read at run time, and bfloat16
projections computed in float32 where the CPU has none."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from caduceus_hf import CaduceusForMaskedLM
from caduceus_hf.ops import precision

from conftest import perturb, random_ids, tiny_config


class MatmulDtypes(TorchDispatchMode):
    """Records the dtype of every matrix product dispatched."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default):
            self.dtypes.append(args[-1].dtype)
        return func(*args, **(kwargs or {}))


def test_cpu_features_name_the_flags_of_proc_cpuinfo():
    features = precision.cpu_features()
    try:
        with open("/proc/cpuinfo") as info:
            lines = [line for line in info if line.lower().startswith(("flags", "features"))]
        flags = {flag for line in lines for flag in line.split(":")[1].split()}
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert set(features.flags) == flags & set(precision.REPORTED_FLAGS)
    assert features.torch_capability == torch.backends.cpu.get_cpu_capability()
    assert ("none" in features.describe()) == (not features.bf16_units)


@pytest.mark.parametrize("native", ["1", "0"])
def test_bfloat16_projections_run_in_bfloat16_only_on_bf16_units(monkeypatch, native):
    """With bf16 units the model's products run in bf16; without (CADUCEUS_HF_BF16_MATMUL=0 stands in for such a
    CPU) in float32 on the same bf16 values, rounded once, which is the bf16 product up to that product's rounding."""
    monkeypatch.setenv("CADUCEUS_HF_BF16_MATMUL", native)
    model = perturb(CaduceusForMaskedLM(tiny_config()), seed=3).eval().to(torch.bfloat16)
    ids = random_ids(2, 24)
    with torch.no_grad(), MatmulDtypes() as seen:
        logits = model(ids).logits
    # Every mixer projection follows the CPU; the LM head (16 columns, one product) stays a bf16 product.
    expected = torch.float32 if native == "0" else torch.bfloat16
    assert seen.dtypes[:-1] and set(seen.dtypes[:-1]) == {expected}
    assert seen.dtypes[-1] == torch.bfloat16
    monkeypatch.setenv("CADUCEUS_HF_BF16_MATMUL", "1")
    with torch.no_grad():
        other = model(ids).logits
    torch.testing.assert_close(logits, other, rtol=0.05, atol=0.05)


def test_linear_in_float32_is_the_float32_product_rounded_once(monkeypatch):
    monkeypatch.setenv("CADUCEUS_HF_BF16_MATMUL", "0")
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g).to(torch.bfloat16) for s in ((3, 5, 8), (4, 8), (4,)))
    out = precision.linear(x, w, b)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.linear(x.float(), w.float(), b.float()).to(torch.bfloat16))
    assert torch.equal(precision.linear(x.float(), w.float()), F.linear(x.float(), w.float()))
