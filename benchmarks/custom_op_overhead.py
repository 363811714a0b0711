"""Cost of calling the numba CPU kernels as torch custom ops (what the model does, so that torch.compile and
torch.export see single ops) against calling their Python implementations directly (the pre-custom-op path), in one
process on the cpu_forward.py shape.

    python benchmarks/custom_op_overhead.py                  # Ph, 8k tokens, forward and forward + backward
    python benchmarks/custom_op_overhead.py --repeats 5 --modes fwd
    python benchmarks/custom_op_overhead.py --modes per-call  # dispatcher cost of one inference call, tiny shapes

The two paths alternate, one step each, so that a busy machine slows both alike; medians of --repeats steps each,
after one warm-up step each. "direct" replaces scan_cpu.selective_scan_cpu and conv_cpu.short_conv_silu_cpu (what the
"cpu" backend calls) by the same kernels behind a torch.autograd.Function, without the dispatcher.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from caduceus_hf import Caduceus, CaduceusConfig
from caduceus_hf.ops import conv_cpu, scan_cpu


class _DirectScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, mask, initial_state, reverse, save):
        y, h, ckpt = scan_cpu._scan_forward(u, delta, A, B, C, D, z, delta_bias, mask, initial_state, reverse, save)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, mask, ckpt)
        ctx.reverse = reverse
        return y, h

    @staticmethod
    def backward(ctx, gy, g_final):
        u, delta, A, B, C, D, z, delta_bias, mask, ckpt = ctx.saved_tensors
        grads = scan_cpu._scan_backward(gy, g_final, u, delta, A, B, C, D, z, delta_bias, mask, ckpt, ctx.reverse)
        return (*(g if t is not None else None for g, t in zip(grads[:8], (u, delta, A, B, C, D, z, delta_bias))),
                None, None, None, None)  # fmt: skip


class _DirectConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, reverse):
        ctx.save_for_backward(x, weight, bias)
        ctx.reverse = reverse
        return conv_cpu._conv_forward(x, weight, bias, reverse)

    @staticmethod
    def backward(ctx, gy):
        x, weight, bias = ctx.saved_tensors
        gx, gw, gb = conv_cpu._conv_backward(gy, x, weight, bias, ctx.reverse)
        return gx, gw, gb if bias is not None else None, None


def _direct_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, mask=None, reverse=False, initial_state=None,
                 return_final_state=False):  # fmt: skip
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z))
    args = (u, delta, A, B, C, D, z, delta_bias, mask, initial_state, reverse, save)
    y, h = _DirectScan.apply(*args) if save else scan_cpu._scan_forward(*args)[:2]
    return (y, h) if return_final_state else y


def _direct_conv(x, weight, bias, reverse=False):
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _DirectConv.apply(x, weight, bias, reverse)
    return conv_cpu._conv_forward(x, weight, bias, reverse)


def per_call() -> None:
    """Microseconds per inference call on tiny inputs, through the custom op and directly: the dispatcher's cost,
    which does not grow with the input (a 16-layer BiMamba forward makes 64 such calls)."""
    u, A, B = torch.randn(1, 4, 16), -torch.rand(16, 2), torch.randn(1, 4, 2)
    weight, bias = torch.randn(16, 1, 4), torch.randn(16)
    scan_args = (u, u, A, B, B, None, u, None, None, None, False, False)
    calls = {
        "scan": (lambda: torch.ops.caduceus_hf.selective_scan_cpu(*scan_args),
                 lambda: scan_cpu._scan_forward(*scan_args)),
        "conv": (lambda: torch.ops.caduceus_hf.short_conv_silu_cpu(u, weight, bias, False),
                 lambda: conv_cpu._conv_forward(u, weight, bias, False)),
    }
    with torch.inference_mode():
        for name, (op, direct) in calls.items():
            us = []
            for fn in (op, direct):
                fn()
                runs = []
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(2000):
                        fn()
                    runs.append((time.perf_counter() - start) / 2000 * 1e6)
                us.append(statistics.median(runs))
            print(f"per-call {name}: custom op {us[0]:.1f} us, direct {us[1]:.1f} us, overhead {us[0] - us[1]:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="fwd,fwdbwd")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Caduceus(CaduceusConfig(d_model=256, n_layer=16, vocab_size=16, ssm_cfg={"d_state": 16, "expand": 2}))
    model.set_scan_backend("cpu")
    ids = torch.randint(7, 11, (1, args.length), generator=torch.Generator().manual_seed(1))
    custom = (scan_cpu.selective_scan_cpu, conv_cpu.short_conv_silu_cpu)
    paths = {"custom op": custom, "direct": (_direct_scan, _direct_conv)}

    def step(mode: str, path: str) -> float:
        scan_cpu.selective_scan_cpu, conv_cpu.short_conv_silu_cpu = paths[path]
        try:
            start = time.perf_counter()
            if mode == "fwd":
                with torch.inference_mode():
                    model(ids)
            else:
                model.zero_grad(set_to_none=True)
                model(ids).last_hidden_state.square().mean().backward()
            return time.perf_counter() - start
        finally:
            scan_cpu.selective_scan_cpu, conv_cpu.short_conv_silu_cpu = custom

    for mode in args.modes.split(","):
        if mode == "per-call":
            per_call()
            continue
        times: dict[str, list[float]] = {path: [] for path in paths}
        for path in paths:
            step(mode, path)
        for _ in range(args.repeats):
            for path in paths:
                times[path].append(step(mode, path))
        medians = {path: statistics.median(t) for path, t in times.items()}
        print(f"{mode:7} L={args.length} " + "  ".join(f"{p}: {m:.3f} s (min {min(times[p]):.3f})"
                                                     for p, m in medians.items())
              + f"  custom op / direct: {medians['custom op'] / medians['direct']:.3f}", flush=True)


if __name__ == "__main__":
    main()
