"""Accuracy of a model loaded in bfloat16 against the same model in float32, on the golden fixtures' models and inputs.

    python benchmarks/bf16_accuracy.py                 # every fixture, fused and non-fused, three backends
    python benchmarks/bf16_accuracy.py --backends cpu

For each MLM fixture (tests/fixtures/mlm_ph, mlm_ps: d_model 32, 2 layers, the original's weights plus noise) and
both of its inputs, the model runs in float32 and, loaded with dtype=torch.bfloat16, in bf16 (projections, LM head
and stored activations in bf16; scan state, decay factors, norms and accumulation in float32), on the named scan
backend. Printed per row: the largest absolute logit difference, the largest |logit| (for scale), and how many
positions pick the same top token. The gradient rows run one MLM loss backward in both precisions (labels = inputs)
and give, over all parameters, the largest relative difference ||g_bf16 - g_fp32|| / ||g_fp32|| of a parameter's
gradient. tests/test_modeling_caduceus.py asserts the bounds derived from these numbers (benchmarks/README.md, "bf16").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def compare(name: str, fused: bool, backend: str) -> list[dict]:
    """One row per input of fixture `name`: logit error and argmax agreement of bf16 against fp32."""
    from transformers import AutoModelForMaskedLM

    import caduceus_hf  # noqa: F401  (registers the model type)

    models = {
        dtype: AutoModelForMaskedLM.from_pretrained(
            FIXTURES / name, fused_add_norm=fused, scan_backend=backend, dtype=dtype
        ).eval()
        for dtype in (torch.float32, torch.bfloat16)
    }
    inputs = load_file(FIXTURES / name / "inputs.safetensors")
    rows = []
    for key in ("input_ids_a", "input_ids_b"):
        with torch.no_grad():
            ref, got = (models[d](inputs[key]).logits for d in (torch.float32, torch.bfloat16))
        rows.append(dict(
            fixture=name, fused=fused, backend=backend, input=key[-1], tokens=ref.shape[0] * ref.shape[1],
            max_abs=(got - ref).abs().max().item(), scale=ref.abs().max().item(),
            argmax=(got.argmax(-1) == ref.argmax(-1)).float().mean().item(),
        ))  # fmt: skip
    return rows


def gradient_error(name: str, backend: str) -> float:
    """max over parameters of ||g_bf16 - g_fp32|| / ||g_fp32|| for one MLM loss backward on input a."""
    from transformers import AutoModelForMaskedLM

    ids = load_file(FIXTURES / name / "inputs.safetensors")["input_ids_a"]
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForMaskedLM.from_pretrained(FIXTURES / name, scan_backend=backend, dtype=dtype)
        model(ids, labels=ids).loss.backward()
        grads[dtype] = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    ref, got = grads[torch.float32], grads[torch.bfloat16]
    return max(((got[n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in ref.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="*", default=["cpu", "reference", "chunked"])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from transformers.utils import logging as hf_logging

    from caduceus_hf.ops import precision

    hf_logging.disable_progress_bar()

    matmuls = "on bf16 units" if precision.bf16_matmul_native() else "computed in float32"
    print(f"CPU: {precision.cpu_features().describe()}; bf16 projections {matmuls}")
    header = (f"{'fixture':8s} {'mode':9s} {'backend':9s} {'input':5s} {'tokens':>6} | {'max |dlogit|':>12} "
              f"{'max |logit|':>11} | {'argmax agree':>12}")  # fmt: skip
    print(header)
    print("-" * len(header))
    worst = 0.0
    for backend in args.backends:
        for name in ("mlm_ph", "mlm_ps"):
            for fused in (True, False):
                for r in compare(name, fused, backend):
                    worst = max(worst, r["max_abs"])
                    mode = "fused" if fused else "nonfused"
                    print(f"{name:8s} {mode:9s} {backend:9s} {r['input']:5s} {r['tokens']:6d} | {r['max_abs']:12.4f} "
                          f"{r['scale']:11.2f} | {r['argmax']:12.2%}")  # fmt: skip
    print(f"largest logit error: {worst:.4f}")
    for backend in args.backends:
        for name in ("mlm_ph", "mlm_ps"):
            print(f"gradients, {name}, {backend}: max relative error over parameters "
                  f"{gradient_error(name, backend):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
