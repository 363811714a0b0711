"""Forward throughput and peak GPU memory of Caduceus on the Caduceus-131k shape, three ways on one GPU:

  kernels   the model as it runs: mamba-ssm's selective scan (and causal-conv1d where installed); tied BiMamba blocks
            project once for both directions and run both scans in one launch (backends.CudaKernels.bimamba).
  pytorch   the same model on scan_backend "reference": the reference scan, a Python loop over time (launch-bound,
            so only short sequences are measured; --pytorch-max-tokens).
  original  the original's arrangement of the same modules on the same kernels: each direction with its own
            in_proj / out_proj calls and the reverse one on materialised flips,
            out = mamba_fwd(x) + flip(mamba_rev(flip(x))), and the RC strand of PS models flipped along length too.

Medians of --runs timed forwards (inference mode, after a warm-up, torch.cuda.synchronize around each), tokens/s
and torch.cuda.max_memory_allocated (weights included). The issue's goal: kernels >= 1.3x original at 131k tokens.

usage: python benchmarks/gpu_forward.py [--budget-s 240] [--runs 3] [--dtypes fp32,bf16] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from caduceus_hf import Caduceus, CaduceusConfig
from caduceus_hf.mixer import BiMamba
from caduceus_hf.ops import kernels

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_model_forward = BiMamba.forward


def caduceus_131k(rcps: bool) -> CaduceusConfig:
    """kuleshov-group/caduceus-{ph,ps}_seqlen-131k_d_model-256_n_layer-16, random weights."""
    return CaduceusConfig(d_model=256, n_layer=16, ssm_cfg={"d_state": 16, "expand": 2}, rcps=rcps)


def _original_forward(
    self: BiMamba, hidden_states: torch.Tensor, mask: torch.Tensor | None = None, swap_directions: bool = False
) -> torch.Tensor:
    """BiMambaWrapper.forward of the original (no mask), on this BiMamba's modules."""
    if mask is not None:
        raise ValueError("the original arrangement has no attention mask")
    if swap_directions:
        # The original's RC strand: flip(mixer(flip(x))) along length, materialised.
        return _original_forward(self, hidden_states.flip(1)).flip(1)
    out = self.mamba_fwd(hidden_states)
    if not self.bidirectional:
        return out
    out_rev = self.mamba_rev(hidden_states.flip(1)).flip(1)
    return out + out_rev if self.strategy == "add" else out * out_rev


@contextlib.contextmanager
def original_arrangement() -> Iterator[None]:
    """Within this context every BiMamba runs as the original does (see `_original_forward`)."""
    BiMamba.forward = _original_forward
    try:
        yield
    finally:
        BiMamba.forward = _model_forward


@contextlib.contextmanager
def reference_backend(model: Caduceus) -> Iterator[None]:
    """Within this context the model runs on the PyTorch reference ops (scan_backend "reference")."""
    model.set_scan_backend("reference")
    try:
        yield
    finally:
        model.set_scan_backend("auto")


def path_context(model: Caduceus, path: str) -> contextlib.AbstractContextManager:
    if path == "original":
        return original_arrangement()
    if path == "pytorch":
        return reference_backend(model)
    return contextlib.nullcontext()


@dataclass
class Result:
    model: str
    dtype: str
    batch: int
    length: int
    path: str
    ms: float | None = None
    tokens_per_s: float | None = None
    peak_mib: float | None = None
    note: str = ""


def measure(model: Caduceus, ids: torch.Tensor, path: str, runs: int) -> tuple[float, float]:
    """Median seconds per forward and peak MiB, after one warm-up forward."""
    with path_context(model, path), torch.inference_mode():
        model(ids)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(runs):
            torch.cuda.synchronize()
            start = time.perf_counter()
            model(ids)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**20


def check_arrangements_agree(model: Caduceus) -> dict[str, float]:
    """Relative difference ||theirs - ours|| / ||ours|| of each arrangement's final states from the model's, 1k tokens."""
    ids = torch.randint(7, 11, (2, 1024), device="cuda")
    diffs = {}
    with torch.inference_mode():
        ours = model(ids).last_hidden_state.float()
        for path in ("original",):
            with path_context(model, path):
                theirs = model(ids).last_hidden_state.float()
            diffs[path] = ((theirs - ours).norm() / ours.norm()).item()
    return diffs


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, int, str]]:
    """(model, dtype, batch, length, path) in priority order: 131k first, the kernel paths before the PyTorch one."""
    points = [tuple(map(int, p.split("x"))) for p in args.points.split(",")]
    ps_points = [tuple(map(int, p.split("x"))) for p in args.ps_points.split(",") if p]
    points.sort(key=lambda p: -p[1])
    todo = []
    for batch, length in points:
        for name, pts in (("Ph", points), ("PS", ps_points)):
            if (batch, length) in pts:
                for dtype in args.dtypes.split(","):
                    todo += [(name, dtype, batch, length, path) for path in ("kernels", "original")]
    for batch, length in sorted(points, key=lambda p: p[1]):
        for dtype in args.dtypes.split(","):
            todo.append(("Ph", dtype, batch, length, "pytorch"))
    return todo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop starting new measurements after this")
    parser.add_argument("--runs", type=int, default=3, help="timed forwards per measurement (median reported)")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--points", default="1x1024,1x8192,1x131072,64x1024", help="batch x length, Ph")
    parser.add_argument("--ps-points", default="1x131072", help="batch x length, PS")
    parser.add_argument("--pytorch-max-tokens", type=int, default=1024,
                        help="longest sequence for the PyTorch path (its scan is a Python loop over time)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3")
    if not torch.cuda.is_available():
        sys.exit("gpu_forward.py needs a CUDA device: torch.cuda.is_available() is False")
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # shows why a kernel did not import
    loaded = kernels.load()
    if loaded.selective_scan_fn is None:
        sys.exit("gpu_forward.py needs mamba-ssm's CUDA kernels (pip install 'caduceus-hf[cuda]'), see above")

    t0 = time.monotonic()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"causal-conv1d: {'yes' if loaded.causal_conv1d_fn else 'no'}, "
          f"mamba_inner_fn: {'yes (original arrangement uses it)' if loaded.mamba_inner_fn else 'no'}, "
          f"TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}, TF32 cuDNN: {torch.backends.cudnn.allow_tf32}",
          flush=True)
    models: dict[tuple[str, str], Caduceus] = {}
    results: list[Result] = []
    print(f"{'model':5} {'dtype':5} {'batch x length':>15} {'path':9} {'ms/forward':>11} {'tokens/s':>11} "
          f"{'peak MiB':>9}", flush=True)
    for name, dtype, batch, length, path in plan(args):
        result = Result(name, dtype, batch, length, path)
        results.append(result)
        if path == "pytorch" and length > args.pytorch_max_tokens:
            result.note = f"skipped: the reference scan loops over {length} steps in Python (--pytorch-max-tokens)"
        elif time.monotonic() - t0 > args.budget_s:
            result.note = "skipped: time budget spent (--budget-s)"
        else:
            key = (name, dtype)
            if key not in models:
                torch.manual_seed(0)
                models[key] = Caduceus(caduceus_131k(rcps=name == "PS")).to("cuda", DTYPES[dtype]).eval()
                # Same function, other rounding: float32 agrees to ~1e-6, bfloat16 to ~1e-2.
                tolerance = 1e-4 if dtype == "fp32" else 5e-2
                for other, diff in check_arrangements_agree(models[key]).items():
                    verdict = "agrees with" if diff <= tolerance else "WARNING: DISAGREES with"
                    print(f"# {name} {dtype}: {other} {verdict} the model (relative difference {diff:.1e})",
                          flush=True)
            ids = torch.randint(7, 11, (batch, length), device="cuda")
            try:
                seconds, peak = measure(models[key], ids, path, args.runs)
                result.ms, result.tokens_per_s, result.peak_mib = seconds * 1e3, batch * length / seconds, peak
            except torch.cuda.OutOfMemoryError:
                result.note = "out of GPU memory"
            torch.cuda.empty_cache()
        if result.ms is None:
            print(f"{name:5} {dtype:5} {batch:>6} x {length:<6} {path:9} {result.note}", flush=True)
        else:
            print(f"{name:5} {dtype:5} {batch:>6} x {length:<6} {path:9} {result.ms:11.2f} {result.tokens_per_s:11.4g} "
                  f"{result.peak_mib:9.0f}", flush=True)

    print("\nthroughput ratios (same model, dtype and point; the issue's goal: kernels >= 1.3x original at 131k):")
    by_key = {(r.model, r.dtype, r.batch, r.length, r.path): r for r in results}
    for path, other in (("kernels", "original"), ("kernels", "pytorch")):
        for r in results:
            o = by_key.get((r.model, r.dtype, r.batch, r.length, other))
            if r.path == path and r.tokens_per_s and o is not None and o.tokens_per_s:
                print(f"  {path:>10} / {other:<8} {r.model} {r.dtype} {r.batch:>3}x{r.length:<6} "
                      f"{r.tokens_per_s / o.tokens_per_s:6.2f}x")
    print(f"total wall: {time.monotonic() - t0:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)


if __name__ == "__main__":
    main()
