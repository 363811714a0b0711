"""Throughput of the numba CPU selective scan against the PyTorch reference, one layer-direction at a time.

    python benchmarks/scan_cpu.py                      # L in (1024, 8192), 1 and 2 threads
    python benchmarks/scan_cpu.py --lengths 8192 --threads 2 --repeats 5

Each (length, threads) configuration runs in its own subprocess, so thread settings, allocator state and peak RSS do
not leak between them; a first pair of subprocesses with an empty NUMBA_CACHE_DIR measures the compile cost (first
call) and the cost of loading the compiled kernels from numba's disk cache (a second process). Shapes are those of
the Caduceus 131k model (d_inner 512, d_state 16), batch 1, with x and z as channel slices of one in_proj output as
in the mixer. Reported numbers are medians over the repeats; the machine is shared, so compare ratios measured in
the same run.

Columns: "fwd" is inference (no autograd), "fwd+bwd" a forward with autograd plus the gradients of every argument.
"/cpu-s" are tokens per second of process CPU time, which other processes on a busy machine disturb far less than
wall-clock time; on an idle machine, wall-clock rate = CPU rate x threads x the threads' utilisation. "x fwd" and
"x f+b" are speed-ups over the reference (autograd through it for f+b, timed up to --reference-max). "RSS +MB" is
how far the subprocess's peak RSS rose over the CPU kernel's runs, inputs excluded (outputs, gradients, checkpoints
and numba's loaded code included), next to the size a (length x d_inner x d_state) float32 state tensor would have.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(length: int, d_inner: int, d_state: int, requires_grad: bool):
    import torch

    g = torch.Generator().manual_seed(0)
    xz = torch.randn(1, length, 2 * d_inner, generator=g)
    bc = torch.randn(1, length, 2 * d_state, generator=g)
    a_log = torch.log(torch.arange(1, d_state + 1).float()).repeat(d_inner, 1)
    leaves = dict(
        xz=xz,
        delta=torch.randn(1, length, d_inner, generator=g),
        A_log=a_log + 0.1 * torch.randn(d_inner, d_state, generator=g),
        bc=bc,
        D=torch.randn(d_inner, generator=g),
        delta_bias=torch.log(torch.expm1(torch.empty(d_inner).uniform_(1e-3, 1e-1, generator=g))),
    )
    for v in leaves.values():
        v.requires_grad_(requires_grad)
    return leaves


def scan_args(leaves, d_inner: int, d_state: int):
    import torch

    xz, bc = leaves["xz"], leaves["bc"]
    return dict(
        u=xz[..., :d_inner],
        delta=leaves["delta"],
        A=-torch.exp(leaves["A_log"]),
        B=bc[..., :d_state],
        C=bc[..., d_state:],
        D=leaves["D"],
        z=xz[..., d_inner:],
        delta_bias=leaves["delta_bias"],
    )


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of fn() over `repeats` runs after one warm-up run."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def run_config(length: int, threads: int, repeats: int, d_inner: int, d_state: int, reference_max: int) -> dict:
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    from caduceus_hf.ops.scan_cpu import selective_scan_cpu
    from caduceus_hf.ops.scan_reference import selective_scan_reference

    result = dict(length=length, threads=threads)
    inputs = make_inputs(length, d_inner, d_state, requires_grad=False)
    leaves = make_inputs(length, d_inner, d_state, requires_grad=True)
    grad_out = torch.randn(1, length, d_inner, generator=torch.Generator().manual_seed(1))
    result["rss_before_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    for name, fn in (("cpu", selective_scan_cpu), ("reference", selective_scan_reference)):

        def forward():
            with torch.no_grad():
                fn(**scan_args(inputs, d_inner, d_state))

        def forward_backward():
            # Gradients of the scan's own arguments: slicing x and z out of xz costs the same on any backend.
            args = scan_args(leaves, d_inner, d_state)
            y = fn(**args)
            torch.autograd.grad(y, list(args.values()), grad_out)

        result[f"{name}_fwd_s"], result[f"{name}_fwd_cpu_s"] = timed(forward, repeats)
        if name == "reference" and length > reference_max:
            continue
        result[f"{name}_fwdbwd_s"], result[f"{name}_fwdbwd_cpu_s"] = timed(forward_backward, repeats)
        if name == "cpu":
            result["cpu_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_compile(d_inner: int, d_state: int) -> dict:
    """First forward and backward call in this process: compile, or load from the cache when it has the kernels."""
    start = time.perf_counter()
    import torch

    from caduceus_hf.ops.scan_cpu import selective_scan_cpu

    imported = time.perf_counter()
    leaves = make_inputs(64, d_inner, d_state, requires_grad=True)
    t0 = time.perf_counter()
    y = selective_scan_cpu(**scan_args(leaves, d_inner, d_state))
    t1 = time.perf_counter()
    torch.autograd.grad(y.sum(), list(leaves.values()))
    t2 = time.perf_counter()
    return dict(import_s=imported - start, first_forward_s=t1 - t0, first_backward_s=t2 - t1)


def subprocess_json(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--d-inner", type=int, default=512)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument(
        "--reference-max", type=int, default=1024, help="longest L at which the reference's forward+backward is timed"
    )
    parser.add_argument("--skip-compile", action="store_true", help="do not measure compile and cache-load cost")
    parser.add_argument("--_config", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    if args._config:
        length, threads = args._config
        print(json.dumps(run_config(length, threads, args.repeats, args.d_inner, args.d_state, args.reference_max)))
        return
    if args._compile:
        print(json.dumps(run_compile(args.d_inner, args.d_state)))
        return

    shape = ["--d-inner", str(args.d_inner), "--d-state", str(args.d_state)]
    print(f"selective scan, one layer-direction: batch 1, d_inner {args.d_inner}, d_state {args.d_state}, "
          f"medians of {args.repeats}; {os.cpu_count()} CPUs")  # fmt: skip
    if not args.skip_compile:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            first = subprocess_json(["--_compile", *shape], env)
            cached = subprocess_json(["--_compile", *shape], env)
        print(
            f"compile (empty cache):  first forward {first['first_forward_s']:.2f} s, "
            f"first backward {first['first_backward_s']:.2f} s   (import {first['import_s']:.2f} s)"
        )
        print(
            f"cached (2nd process):   first forward {cached['first_forward_s']:.2f} s, "
            f"first backward {cached['first_backward_s']:.2f} s   (import {cached['import_s']:.2f} s)"
        )

    header = (
        f"{'L':>6} {'thr':>3} | {'fwd tok/s':>10} {'fwd+bwd tok/s':>13} | {'fwd /cpu-s':>10} {'f+b /cpu-s':>10} | "
        f"{'ref fwd':>9} {'ref f+b':>9} | "
        f"{'x fwd':>6} {'x f+b':>6} | {'RSS +MB':>7} {'LxDxN MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        for threads in args.threads:
            r = subprocess_json(
                ["--_config", str(length), str(threads), "--repeats", str(args.repeats),
                 "--reference-max", str(args.reference_max), *shape]
            )  # fmt: skip

            def rate(key):
                return f"{length / r[key]:,.0f}" if key in r else "-"

            rss = r["cpu_peak_rss_mb"] - r["rss_before_mb"]
            state_mb = length * args.d_inner * args.d_state * 4 / 2**20

            def ratio(a, b):
                return f"{r[b] / r[a]:.1f}" if a in r and b in r else "-"

            print(
                f"{length:>6} {threads:>3} | {rate('cpu_fwd_s'):>10} {rate('cpu_fwdbwd_s'):>13} | "
                f"{rate('cpu_fwd_cpu_s'):>10} {rate('cpu_fwdbwd_cpu_s'):>10} | "
                f"{rate('reference_fwd_s'):>9} {rate('reference_fwdbwd_s'):>9} | "
                f"{ratio('cpu_fwd_s', 'reference_fwd_s'):>6} {ratio('cpu_fwdbwd_s', 'reference_fwdbwd_s'):>6} | "
                f"{rss:>7,.0f} {state_mb:>8,.0f}"
            )


if __name__ == "__main__":
    main()
