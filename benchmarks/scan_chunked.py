"""The parallel PyTorch scan (ops/scan_chunked.py) against the reference loop and the fast CPU (numba) scan.

    python benchmarks/scan_chunked.py                          # the whole CPU table (about 10 minutes on 2 cores)
    python benchmarks/scan_chunked.py --points layer-8k model-8k --repeats 5
    python benchmarks/scan_chunked.py --device cuda --points layer-8k layer-131k   # against mamba-ssm's kernel
    python benchmarks/scan_chunked.py --threads 1 --primitives --repeats 20   # ns per element of each loop operation

Points: "layer-<L>" is one scan (one layer, one direction) of the published shape, d_inner 512, d_state 16, batch 1,
with D, z and delta_bias, no autograd; "model-<L>" is a forward of the whole 16-layer d_model 256 Caduceus-Ph
(bidirectional, tied in/out projections, random weights) under inference_mode, the scan (and, for "reference" and
"chunked", the short convolution too) in the named backend. The "cpu" backend is the numba scan and convolution
("auto" on CPU); "cuda" is mamba-ssm's selective_scan_fn.

Every (point, backend) runs in its own subprocess: warm-up on a short input (numba loads its kernels), then
`--repeats` timed runs, median wall-clock and process-CPU seconds; then one untimed run that counts the aten
operations dispatched (a TorchDispatchMode) and one that records the peak resident memory (VmHWM, reset just before
it through /proc/self/clear_refs, so it is the peak of that call, inputs and model included; on CUDA,
max_memory_allocated). The reference loop at a layer point longer than `--reference-prefix` steps is timed and
counted on a prefix of that many steps and extrapolated linearly (its cost is exactly per step), marked "~"; its
peak memory is then not measured. The machine may be shared: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D_MODEL, N_LAYER, D_INNER, D_STATE = 256, 16, 512, 16
POINTS = {
    "layer-1k": ("layer", 1024),
    "layer-8k": ("layer", 8192),
    "layer-131k": ("layer", 131072),
    "model-1k": ("model", 1024),
    "model-8k": ("model", 8192),
}


def layer_inputs(length: int, device: str) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    xz = torch.randn(1, length, 2 * D_INNER, generator=g)
    bc = torch.randn(1, length, 2 * D_STATE, generator=g)
    a_log = torch.log(torch.arange(1, D_STATE + 1).float()).repeat(D_INNER, 1)
    inputs = dict(
        u=xz[..., :D_INNER],
        delta=torch.randn(1, length, D_INNER, generator=g),
        A=-torch.exp(a_log + 0.1 * torch.randn(D_INNER, D_STATE, generator=g)),
        B=bc[..., :D_STATE],
        C=bc[..., D_STATE:],
        D=torch.randn(D_INNER, generator=g),
        z=xz[..., D_INNER:],
        delta_bias=torch.log(torch.expm1(torch.empty(D_INNER).uniform_(1e-3, 1e-1, generator=g))),
    )
    return {k: v.to(device) for k, v in inputs.items()}


def scan_function(backend: str):
    import torch

    from caduceus_hf import backends

    return backends.resolve(backend, torch.device(_DEVICE)).scan


def build_model(backend: str):
    import torch

    from caduceus_hf import Caduceus, CaduceusConfig

    torch.manual_seed(0)
    config = CaduceusConfig(d_model=D_MODEL, n_layer=N_LAYER, vocab_size=16, ssm_cfg={"d_state": D_STATE})
    model = Caduceus(config).eval().to(_DEVICE)
    model.set_scan_backend(backend)
    return model


class CountOps:
    """aten operations dispatched inside it (a TorchDispatchMode, imported lazily)."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode

        class Counter(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.total = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                self.total += 1
                return func(*args, **(kwargs or {}))

        return Counter()


def peak_rss_mb(fn) -> float | None:
    """Peak resident memory (MB) of the process during fn(): VmHWM reset before it, None where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    fn()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def run_point(point: str, backend: str, repeats: int, prefix: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)

    kind, length = POINTS[point]
    sync = torch.cuda.synchronize if _DEVICE == "cuda" else (lambda: None)
    extrapolate = kind == "layer" and backend == "reference" and length > prefix
    steps = prefix if extrapolate else length
    if kind == "layer":
        fn, inputs = scan_function(backend), layer_inputs(steps, _DEVICE)

        def call(n: int | None = None):
            with torch.no_grad():
                fn(**{k: v if v.dim() < 3 else v[:, :n] for k, v in inputs.items()})

        warm = lambda: call(64)  # noqa: E731
        full = call
    else:
        model = build_model(backend)
        ids = torch.randint(7, 11, (1, length), generator=torch.Generator().manual_seed(1)).to(_DEVICE)

        def full():
            with torch.inference_mode():
                model(ids)

        def warm():
            with torch.inference_mode():
                model(ids[:, :64])

    warm()
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        full()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    with CountOps() as counter:
        full()
    scale = length / steps
    result = dict(wall_s=statistics.median(wall) * scale, cpu_s=statistics.median(cpu) * scale,
                  ops=counter.total * scale, extrapolated_from=steps if extrapolate else None)  # fmt: skip
    if _DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
        full()
        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    elif not extrapolate:
        result["peak_mb"] = peak_rss_mb(full)
    return result


def primitives(repeats: int) -> None:
    """Process-CPU ns per state element of each operation of the chunked scan's step loops, alone, on the buffers
    they use at 8k (K = 8192 / BLOCK blocks of (d_state, d_inner)): the floor of its per-element cost in eager
    PyTorch. Out-of-place twins of the in-place operations keep the values fixed (an in-place exp2 or decay repeated
    would run into infinities or denormals)."""
    import torch

    from caduceus_hf.ops import scan_chunked

    K = 8192 // scan_chunked.BLOCK
    g = torch.Generator().manual_seed(0)
    dt = torch.rand(K, scan_chunked.BLOCK, 1, D_INNER, generator=g)[:, 1]  # one step of every block, strided
    A2 = -torch.rand(D_STATE, D_INNER, generator=g) * 20
    B, C = torch.randn(K, D_STATE, 1, generator=g), torch.randn(K, 1, D_STATE, generator=g)
    state = torch.randn(K, D_STATE, D_INNER, generator=g)
    log_decay, decay, product = (torch.empty_like(state) for _ in range(3))
    y = torch.empty(K, 1, D_INNER)
    torch.exp2(torch.mul(dt, A2, out=log_decay), out=decay)
    operations = {
        "mul(dt, A2, out=)": lambda: torch.mul(dt, A2, out=log_decay),
        "exp2_": lambda: torch.exp2(log_decay, out=decay),
        "mul_(decay)": lambda: torch.mul(state, decay, out=product),
        "addcmul_(B, dt u)": lambda: product.addcmul_(B, dt),
        "bmm(C, state, out=)": lambda: torch.bmm(C, state, out=y),
    }
    costs = {}
    for name, fn in operations.items():
        fn()
        times = []
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(20):
                fn()
            times.append((time.process_time() - start) / 20)
        costs[name] = statistics.median(times) / state.numel() * 1e9
    print(f"{torch.get_num_threads()} thread(s), buffers ({K}, {D_STATE}, {D_INNER}); process-CPU ns per element:")
    for name, cost in costs.items():
        print(f"  {name:<22} {cost:.3f}")
    loop1 = sum(costs.values()) - costs["bmm(C, state, out=)"]
    print(f"  loop 1, 4 operations   {loop1:.3f}\n  loop 3, 5 operations   {loop1 + costs['bmm(C, state, out=)']:.3f}")
    print(f"  per element            {2 * loop1 + costs['bmm(C, state, out=)']:.3f} (of which exp2 {2 * costs['exp2_']:.3f})")


def subprocess_point(point: str, backend: str, args) -> dict | None:
    cmd = [sys.executable, __file__, "--_point", point, backend, "--repeats", str(args.repeats),
           "--reference-prefix", str(args.reference_prefix), "--device", args.device]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        print(f"  {point} {backend}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


_DEVICE = "cpu"


def main() -> None:
    global _DEVICE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--reference-prefix", type=int, default=8192,
                        help="longest layer scan the reference runs; longer ones are extrapolated from it")  # fmt: skip
    parser.add_argument("--primitives", action="store_true",
                        help="time each operation of the chunked scan's step loops alone, per element, and stop")  # fmt: skip
    parser.add_argument("--_point", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    _DEVICE = args.device
    if args._point:
        print(json.dumps(run_point(*args._point, args.repeats, args.reference_prefix, args.threads)))
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.primitives:
        primitives(args.repeats)
        return
    backends = ["reference", "cuda" if args.device == "cuda" else "cpu", "chunked"]
    print(f"device {args.device}, torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
          f"threads; medians of {args.repeats}; ~: reference scaled up from {args.reference_prefix} steps")  # fmt: skip
    header = (f"{'point':>10} {'backend':>9} | {'wall s':>8} {'cpu s':>8} {'ops':>10} {'peak MB':>8} | "
              f"{'ref/this wall':>13} {'ref/this cpu':>12} {'ref/this ops':>12} {'peak/fast':>9}")  # fmt: skip
    print(header)
    print("-" * len(header))
    results = collections.defaultdict(dict)
    for point in args.points:
        for backend in backends:
            if point.startswith("model") and backend == "cuda":
                continue  # the model's CUDA path also swaps in the fused mixer kernels: not a scan comparison
            results[point][backend] = r = subprocess_point(point, backend, args)
            if r is None:
                continue
            ref, fast = results[point].get("reference"), results[point].get(backends[1])
            mark = "~" if r["extrapolated_from"] else " "
            ratio = lambda a, b: f"{a / b:.1f}" if a and b else "-"  # noqa: E731
            peak = r.get("peak_mb")
            measured = f"{r['wall_s']:>7.3f}{mark} {r['cpu_s']:>7.3f}{mark} {r['ops']:>9,.0f}{mark}"
            print(
                f"{point:>10} {backend:>9} | {measured} {'-' if peak is None else f'{peak:,.0f}':>8} | "
                f"{ratio(ref and ref['wall_s'], r['wall_s']):>13} {ratio(ref and ref['cpu_s'], r['cpu_s']):>12} "
                f"{ratio(ref and ref['ops'], r['ops']):>12} {ratio(peak, fast and fast.get('peak_mb')):>9}"
            )


if __name__ == "__main__":
    main()
