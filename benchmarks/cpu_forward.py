"""Full-model CPU throughput of the Caduceus-131k shape against transformers' MambaModel on its CPU path.

    python benchmarks/cpu_forward.py                       # the whole table (5 minutes on 2 quiet cores, plus up to
                                                           # --baseline-timeout for the baseline's 8k fwd+bwd)
    python benchmarks/cpu_forward.py --points ph-8k mamba-8k --repeats 5
    python benchmarks/cpu_forward.py --points --first-call   # only the first-call (numba compile) cost
    python benchmarks/cpu_forward.py --points ph-8k-pair ph-8k ph-8k-bf16 --repeats 5     # bf16 / fp32 at 8k
    python benchmarks/cpu_forward.py --points train-ph16-fp32 train-ph16-bf16 train-ph4-fp32 train-ph4-bf16 \
        train-mamba1-fp32 train-mamba1-bf16                 # training throughput, batch 32 x 512
    OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_forward.py   # on a machine shared with other jobs (see below)
    python benchmarks/cpu_forward.py --long-sequences --baseline-python /work/wt/base/.venv/bin/python
                                                           # Ph and PS at 8k and 131k, here and in another tree

Long sequences (`--long-sequences`: points ph-8k, ph-131k, ps-8k, ps-131k): the throughput at 131k over that at 8k
(Ph and PS), PS time over Ph time at 131k, and peak RSS. `--baseline-python PY` runs the same points with another
tree's interpreter (its own installed caduceus_hf, e.g. the previous main), each point right after ours so that both
see the same machine load, and prints our time over theirs per point.

Shape: d_model 256, 16 layers, d_state 16, expand 2, vocab 16, random weights, fp32, batch 1, `--threads` intra-op
threads (2 by default). Caduceus runs both directions (BiMamba, in_proj and out_proj tied); the baseline is
transformers.MambaModel(MambaConfig(hidden_size=256, num_hidden_layers=16, state_size=16, expand=2, vocab_size=16))
in ONE direction, on the path it takes without mamba-ssm (a Python loop over time steps).

Points named *-bf16 run the model converted with .to(torch.bfloat16) (projections in bf16 on CPUs with bf16 matrix
units, else in float32: `caduceus_hf.ops.precision`; scans and norms in float32); the header names the CPU and its
units. "ph-8k-pair" times the fp32 and the bf16 model in ONE process, alternating run by run, and reports the ratio of
their medians: the least noisy bf16 / fp32 number on a shared machine. The train-* points are fine-tuning steps
(forward + backward of a loss on the last hidden state, no optimizer) at batch 32 x 512 tokens, for the 16-layer shape
and the published d_model 256 / 4-layer shape; their baseline is ONE MambaModel layer of the same width at the same
batch and length (fp32, and bf16 where its no-kernel path runs), scaled by the layer count.

Every point runs in its own subprocess, so peak RSS (ru_maxrss: the whole process, imports and model included) and
allocator state do not leak between points. A point builds its model, warms up on a short input (numba kernels load
from their cache, oneDNN/MKL initialise), then times `--repeats` runs (`--long-repeats` at 131k) and reports the
median; forwards run under torch.inference_mode. "tok/cpu-s" divides by the process's CPU time (all threads): on a
busy machine wall time depends on what else runs, CPU time far less; on an idle one, wall rate = CPU rate x threads x
their utilisation. Ratios are ours / baseline, measured in the same run.

Allocator (`--allocator`, "keep" by default): each point's process first calls caduceus_hf.keep_freed_memory(), as
the caduceus-hf command does, so that a layer's intermediate tensors reuse the pages the layer before freed instead of
faulting in fresh ones (caduceus_hf/ops/allocator.py); "default" leaves glibc's settings, as a library user gets
without the call. A --baseline-python tree whose package predates the setting runs with glibc's defaults (its lines
say so).

First call: numba compiles the CPU kernels (scan and convolution, forward and backward) on their first use and caches
them on disk. `--first-call` measures that cost in a subprocess with an empty NUMBA_CACHE_DIR (the model's first
forward + backward at 1k tokens, compile included), then the same in a second process that loads the kernels from
that cache, against the steady-state time of the same step.

Not measured, said so in the table: the baseline at 131k (its loop materialises two (length x d_inner x d_state)
float32 tensors per layer, 4.3 GB each at 131k, and would take minutes), and the baseline's forward+backward at 8k
with all 16 layers: autograd through its loop costs a full-size gradient per time step, so its backward grows
quadratically with length. It is measured instead for ONE layer at 8k (minutes; its layers cost the same, so 16
layers take 16 times as long), and for one layer at two short lengths to show the growth exponent.

On a shared machine: torch's OpenMP threads spin for milliseconds after each parallel region, and with more runnable
threads than cores every region can then cost a scheduler time slice. OMP_WAIT_POLICY=PASSIVE (set before Python
starts) makes them sleep instead; the subprocesses inherit the environment, so both models run under the same policy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(d_model=256, n_layer=16, d_state=16, expand=2, vocab=16)
K, L8, L131 = 1024, 8192, 131072
TRAIN_BATCH, TRAIN_LENGTH = 32, 512

# name -> (model, mode, length); what differs from fp32, batch 1, 16 layers is in OPTIONS
POINTS = {
    "ph-1k": ("ph", "fwd", K),
    "mamba-1k": ("mamba", "fwd", K),
    "ph-8k": ("ph", "fwd", L8),
    "mamba-8k": ("mamba", "fwd", L8),
    "ph-131k": ("ph", "fwd", L131),
    "ps-8k": ("ps", "fwd", L8),
    "ps-131k": ("ps", "fwd", L131),
    "ph-fwdbwd-8k": ("ph", "fwdbwd", L8),
    "mamba1-fwdbwd-256": ("mamba1", "fwdbwd", 256),
    "mamba1-fwdbwd-512": ("mamba1", "fwdbwd", 512),
    "mamba1-fwdbwd-8k": ("mamba1", "fwdbwd", L8),
    "ph-8k-bf16": ("ph", "fwd", L8),
    "ph-8k-pair": ("ph", "pair", L8),
    "train-ph16-fp32": ("ph", "fwdbwd", TRAIN_LENGTH),
    "train-ph16-bf16": ("ph", "fwdbwd", TRAIN_LENGTH),
    "train-ph4-fp32": ("ph", "fwdbwd", TRAIN_LENGTH),
    "train-ph4-bf16": ("ph", "fwdbwd", TRAIN_LENGTH),
    "train-mamba1-fp32": ("mamba1", "fwdbwd", TRAIN_LENGTH),
    "train-mamba1-bf16": ("mamba1", "fwdbwd", TRAIN_LENGTH),
}
_TRAIN = dict(batch=TRAIN_BATCH)
OPTIONS = {
    "ph-8k-bf16": dict(dtype="bf16"),
    "train-ph16-fp32": _TRAIN,
    "train-ph16-bf16": dict(_TRAIN, dtype="bf16"),
    "train-ph4-fp32": dict(_TRAIN, layers=4),
    "train-ph4-bf16": dict(_TRAIN, layers=4, dtype="bf16"),
    "train-mamba1-fp32": _TRAIN,
    "train-mamba1-bf16": dict(_TRAIN, dtype="bf16"),
}


LONG_POINTS = ["ph-8k", "ph-131k", "ps-8k", "ps-131k"]


def build(model: str, layers: int = SHAPE["n_layer"], dtype: str = "fp32"):
    import torch

    torch.manual_seed(0)
    if model.startswith("mamba"):
        from transformers import MambaConfig, MambaModel

        config = MambaConfig(hidden_size=SHAPE["d_model"], num_hidden_layers=1 if model == "mamba1" else layers,
                             state_size=SHAPE["d_state"], expand=SHAPE["expand"],
                             vocab_size=SHAPE["vocab"])  # fmt: skip
        built = MambaModel(config).eval()
    else:
        from caduceus_hf import Caduceus, CaduceusConfig

        ssm_cfg = {"d_state": SHAPE["d_state"], "expand": SHAPE["expand"]}
        config = CaduceusConfig(d_model=SHAPE["d_model"], n_layer=layers, vocab_size=SHAPE["vocab"], ssm_cfg=ssm_cfg,
                                rcps=model == "ps")  # fmt: skip
        built = Caduceus(config).eval()
    return built.to(torch.bfloat16) if dtype == "bf16" else built


def apply_allocator(allocator: str) -> str:
    """What the point's process runs with: freed memory kept (`caduceus_hf.keep_freed_memory`, what the caduceus-hf
    command sets) or glibc's defaults; a tree whose package predates the setting runs with the defaults."""
    if allocator == "keep":
        try:
            from caduceus_hf import keep_freed_memory
        except ImportError:
            return "glibc default (not in this tree)"
        if keep_freed_memory():
            return "kept"
    return "glibc default"


def run_point(model_name: str, mode: str, length: int, repeats: int, threads: int, batch: int = 1,
              layers: int = SHAPE["n_layer"], dtype: str = "fp32") -> dict:  # fmt: skip
    import torch

    torch.set_num_threads(threads)
    ids = torch.randint(7, 11, (batch, length), generator=torch.Generator().manual_seed(1))
    if mode == "pair":
        return run_pair(model_name, ids, repeats, layers)
    model = build(model_name, layers, dtype)

    def step(x: torch.Tensor) -> None:
        if mode == "fwd":
            with torch.inference_mode():
                model(x)
        else:
            model.zero_grad(set_to_none=True)
            model(x).last_hidden_state.float().square().mean().backward()

    step(ids[:2, : min(length, 512)])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(ids)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    import caduceus_hf

    return dict(
        package=str(Path(caduceus_hf.__file__).parent),
        wall_s=statistics.median(wall),
        cpu_s=statistics.median(cpu),
        runs=repeats,
        rss_before_mb=rss_before,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def run_pair(model_name: str, ids, repeats: int, layers: int) -> dict:
    """The fp32 model and its bf16 copy in one process, forwards alternating run by run: the medians of each and
    their ratios (wall and CPU time), so that both see the same machine load."""
    import copy

    import torch

    fp32 = build(model_name, layers)
    models = {"fp32": fp32, "bf16": copy.deepcopy(fp32).to(torch.bfloat16)}
    times = {name: ([], []) for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(ids[:, :512])
        for _ in range(repeats):
            for name, model in models.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                model(ids)
                times[name][0].append(time.perf_counter() - start)
                times[name][1].append(time.process_time() - start_cpu)
    wall = {name: statistics.median(t[0]) for name, t in times.items()}
    cpu = {name: statistics.median(t[1]) for name, t in times.items()}
    return dict(
        wall_s=wall["bf16"], cpu_s=cpu["bf16"], fp32_wall_s=wall["fp32"], fp32_cpu_s=cpu["fp32"],
        ratio=wall["fp32"] / wall["bf16"], cpu_ratio=cpu["fp32"] / cpu["bf16"], runs=repeats,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )  # fmt: skip


def run_first_call(threads: int) -> dict:
    """Seconds of the first, second and third forward + backward of the Ph model at 1k tokens in this process."""
    import torch

    torch.set_num_threads(threads)
    model = build("ph")
    ids = torch.randint(7, 11, (1, K), generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(ids).last_hidden_state.square().mean().backward()
        times.append(time.perf_counter() - start)
    return dict(first_s=times[0], steady_s=statistics.median(times[1:]))


def first_call_costs(threads: int) -> tuple[dict, dict]:
    """(cold: compiling into an empty cache, warm: loading from it), each in its own process."""
    import tempfile

    cmd = [sys.executable, __file__, "--_first_call", "--threads", str(threads)]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env) for _ in range(2)]
    cold, warm = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    return cold, warm


def subprocess_point(name: str, repeats: int, threads: int, timeout: float | None = None,
                     python: str | None = None, allocator: str = "keep") -> dict:  # fmt: skip
    """The point measured in its own process (with interpreter `python`: another tree's installed caduceus_hf); past
    `timeout` seconds it is stopped and reported as a lower bound (wall_s None, timed_out_s: the timeout; the warm-up
    and every repeat count against it)."""
    model, mode, length = POINTS[name]
    load = os.getloadavg()[0]
    cmd = [python or sys.executable, __file__, "--_point", name, "--repeats", str(repeats), "--threads", str(threads),
           "--allocator", allocator]  # fmt: skip
    if python:
        cmd.append("--_installed")
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        result = dict(wall_s=None, cpu_s=None, runs=0, peak_rss_mb=None, timed_out_s=timeout)
    result.update(name=name, model=model, mode=mode, length=length, load=load)
    return result


def report_bf16(results: dict) -> None:
    """bf16 / fp32 at 8k: from the alternating pair (one process), and from the separate ph-8k and ph-8k-bf16."""
    pair, fp32, bf16 = (results.get(n) for n in ("ph-8k-pair", "ph-8k", "ph-8k-bf16"))
    if pair:
        print(f"bf16 / fp32 speed at 8k, one process alternating ({pair['runs']} runs each): "
              f"{pair['ratio']:.2f}x wall ({pair['fp32_wall_s']:.2f} s -> {pair['wall_s']:.2f} s), "
              f"{pair['cpu_ratio']:.2f}x CPU time ({pair['fp32_cpu_s']:.2f} -> {pair['cpu_s']:.2f} s)")  # fmt: skip
    if fp32 and bf16:
        print(f"bf16 / fp32 speed at 8k, separate processes: {fp32['wall_s'] / bf16['wall_s']:.2f}x wall, "
              f"{fp32['cpu_s'] / bf16['cpu_s']:.2f}x CPU time; peak RSS {fp32['peak_rss_mb']:,.0f} -> "
              f"{bf16['peak_rss_mb']:,.0f} MB")  # fmt: skip


def report_training(results: dict) -> None:
    """Fine-tuning throughput at batch 32 x 512: ours against one MambaModel layer scaled to the same depth."""
    rows = [(f"{layers} layers, {dtype}", f"train-ph{layers}-{dtype}", f"train-mamba1-{dtype}", layers)
            for layers in (16, 4) for dtype in ("fp32", "bf16")]  # fmt: skip
    if not any(results.get(row[1]) or results.get(row[2]) for row in rows):
        return
    tokens = TRAIN_BATCH * TRAIN_LENGTH

    def rate(r: dict | None, key: str) -> str:
        return f"{tokens / r[key]:,.0f}" if r else "-"

    def rss(r: dict | None) -> str:
        return f"{r['peak_rss_mb']:,.0f} MB" if r else "-"

    print()
    header = (f"{'fwd+bwd, 32 x 512, Ph':22s} {'ours tok/s':>10} {'tok/cpu-s':>9} | {'Mamba tok/s':>11} "
              f"{'tok/cpu-s':>9} | {'ratio':>6} {'cpu ratio':>9} | {'peak RSS ours':>13} "
              f"{'Mamba 1 layer':>13}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for label, ours_name, base_name, layers in rows:
        ours, one = results.get(ours_name), results.get(base_name)
        one = one if one and one["wall_s"] is not None else None
        # One layer measured; the model's layers all cost the same.
        base = dict(one, wall_s=one["wall_s"] * layers, cpu_s=one["cpu_s"] * layers) if one else None
        print(f"{label:22s} {rate(ours, 'wall_s'):>10} {rate(ours, 'cpu_s'):>9} | {rate(base, 'wall_s'):>11} "
              f"{rate(base, 'cpu_s'):>9} | {fmt_ratio(ours, base):>6} {fmt_ratio(ours, base, 'cpu_s'):>9} | "
              f"{rss(ours):>13} {rss(one):>13}")  # fmt: skip
    print("Mamba: transformers' MambaModel, same width, one direction, no-kernel path; ONE layer measured at the same "
          "batch and length, times the layer count.")  # fmt: skip


def fmt_rate(r: dict | None, key: str = "wall_s") -> str:
    return f"{r['length'] / r[key]:,.0f}" if r else "-"


def fmt_ratio(ours: dict | None, base: dict | None, key: str = "wall_s") -> str:
    return f"{base[key] / ours[key]:.1f}x" if ours and base else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="*", choices=list(POINTS), default=list(POINTS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per point (median)")
    parser.add_argument("--long-repeats", type=int, default=1, help="timed runs per point at 131k")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-timeout", type=float, default=1800,
                        help="seconds after which the one-layer baseline forward+backward at 8k (and each train-mamba1 "
                             "point) is stopped and reported as a lower bound (default 1800)")
    parser.add_argument("--first-call", action="store_true",
                        help="also measure the first call's cost (numba compiling into an empty cache, then loading)")
    parser.add_argument("--long-sequences", action="store_true",
                        help=f"the long-sequence points {LONG_POINTS} and their ratios (131k/8k, PS/Ph)")
    parser.add_argument("--baseline-python", metavar="PY",
                        help="also run the --long-sequences points with this interpreter (another tree's venv), "
                             "alternating with ours, and print the time ratios")
    parser.add_argument("--allocator", choices=["keep", "default"], default="keep",
                        help="keep: each point's process keeps freed memory for reuse (caduceus_hf.keep_freed_memory, "
                             "what the caduceus-hf command sets); default: glibc's defaults, as a library user gets "
                             "without calling it")
    parser.add_argument("--_point", help=argparse.SUPPRESS)
    parser.add_argument("--_installed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_first_call", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args._installed:  # another tree's interpreter runs its own installed package
        sys.path.insert(0, str(ROOT))

    if args._first_call:
        print(json.dumps(run_first_call(args.threads)))
        return
    if args._point:
        model, mode, length = POINTS[args._point]
        allocator = apply_allocator(args.allocator)
        result = run_point(model, mode, length, args.repeats, args.threads, **OPTIONS.get(args._point, {}))
        print(json.dumps(dict(result, allocator=allocator)))
        return

    if args.long_sequences or args.baseline_python:
        long_sequences(args)
        return

    from caduceus_hf.ops import precision

    print(f"Caduceus-131k shape, fp32 unless named bf16, batch 1 unless named train-, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; medians of "
          f"{args.repeats} runs ({args.long_repeats} at 131k)")  # fmt: skip
    matmuls = "on those units" if precision.bf16_matmul_native() else "computed in float32 (no bf16 units)"
    print(f"CPU: {precision.cpu_features().describe()}; bf16 projections {matmuls}; allocator: {args.allocator}")
    results = {}
    for name in args.points:
        repeats = args.long_repeats if POINTS[name][2] == L131 else args.repeats
        timeout = args.baseline_timeout if name == "mamba1-fwdbwd-8k" or name.startswith("train-mamba") else None
        results[name] = r = subprocess_point(name, repeats, args.threads, timeout, allocator=args.allocator)
        if r["wall_s"] is None:
            print(f"  {name:18s} stopped after {timeout:.0f} s (not finished)", flush=True)
            continue
        print(f"  {name:18s} {r['wall_s']:8.2f} s  cpu {r['cpu_s']:8.2f} s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
              f"(load {r['load']:.1f})", flush=True)  # fmt: skip

    get = results.get
    header = (f"{'point':26s} {'ours tok/s':>10} {'tok/cpu-s':>9} | {'baseline':>9} {'tok/cpu-s':>9} | "
              f"{'ratio':>6} {'cpu ratio':>9} | {'peak RSS ours':>13} {'baseline':>8} | runs")  # fmt: skip
    print()
    print(header)
    print("-" * len(header))
    rows = [
        ("forward 1k, Ph", "ph-1k", "mamba-1k"),
        ("forward 8k, Ph", "ph-8k", "mamba-8k"),
        ("forward 8k, Ph bf16", "ph-8k-bf16", "mamba-8k"),
        ("forward 131k, Ph", "ph-131k", None),
        ("forward 8k, PS", "ps-8k", None),
        ("forward 131k, PS", "ps-131k", None),
        ("forward+backward 8k, Ph", "ph-fwdbwd-8k", None),
    ]
    for label, ours_name, base_name in rows:
        ours, base = get(ours_name), get(base_name) if base_name else None
        if not ours and not base:
            continue
        rss = f"{ours['peak_rss_mb']:,.0f} MB" if ours else "-"
        base_rss = f"{base['peak_rss_mb']:,.0f}" if base else "-"
        print(f"{label:26s} {fmt_rate(ours):>10} {fmt_rate(ours, 'cpu_s'):>9} | {fmt_rate(base):>9} "
              f"{fmt_rate(base, 'cpu_s'):>9} | {fmt_ratio(ours, base):>6} {fmt_ratio(ours, base, 'cpu_s'):>9} | "
              f"{rss:>13} {base_rss:>8} | {ours['runs'] if ours else base['runs']}")  # fmt: skip
    print("baseline at 131k: not run (two 4.3 GB (length x d_inner x d_state) tensors per layer; minutes).")
    report_bf16(results)
    report_training(results)

    short, long = get("mamba1-fwdbwd-256"), get("mamba1-fwdbwd-512")
    ours = get("ph-fwdbwd-8k")
    if short and long:
        exponent = math.log2(long["wall_s"] / short["wall_s"])
        predicted = long["wall_s"] * (L8 / long["length"]) ** exponent * SHAPE["n_layer"]
        line = (f"baseline forward+backward at 8k: not run; one layer takes {short['wall_s']:.1f} s at 256 and "
                f"{long['wall_s']:.1f} s at 512 tokens (time ~ length^{exponent:.2f}), so 16 layers at 8k would "
                f"take >= {predicted / 3600:.1f} h")  # fmt: skip
        if ours:
            line += f": ours is >= {predicted / ours['wall_s']:,.0f}x faster"
        print(line + ".")

    one_layer = get("mamba1-fwdbwd-8k")
    if one_layer and one_layer["wall_s"] is not None:
        total = one_layer["wall_s"] * SHAPE["n_layer"]
        line = (f"baseline forward+backward at 8k, ONE layer measured: {one_layer['wall_s']:.1f} s (peak RSS "
                f"{one_layer['peak_rss_mb']:,.0f} MB); its 16 layers would take {total:.0f} s")  # fmt: skip
        if ours:
            line += f": ours (16 layers, {ours['wall_s']:.1f} s) is {total / ours['wall_s']:,.0f}x faster"
        print(line + ".")
    elif one_layer:
        total = one_layer["timed_out_s"] * SHAPE["n_layer"]
        line = (f"baseline forward+backward at 8k, ONE layer: not finished after {one_layer['timed_out_s']:.0f} s "
                f"(warm-up at 512 tokens included), so its 16 layers take more than {total:.0f} s")  # fmt: skip
        if ours:
            line += f": ours (16 layers, {ours['wall_s']:.1f} s) is more than {total / ours['wall_s']:,.0f}x faster"
        print(line + ".")

    if args.first_call:
        cold, warm = first_call_costs(args.threads)
        print(f"first forward+backward of the Ph model at 1k tokens: {cold['first_s']:.1f} s compiling the numba "
              f"kernels into an empty cache, {warm['first_s']:.2f} s in a new process loading them from the cache; "
              f"steady state {warm['steady_s']:.2f} s.")  # fmt: skip


def long_sequences(args: argparse.Namespace) -> None:
    """Ph and PS at 8k and 131k (with --points, those of them named), here and with --baseline-python: throughput
    ratios 131k/8k, PS/Ph at 131k, peak RSS, and our time over the baseline's."""
    import torch

    names = [n for n in LONG_POINTS if n in args.points] if args.points != list(POINTS) else LONG_POINTS
    torch.set_num_threads(args.threads)
    from caduceus_hf.ops import precision

    print(f"CPU: {precision.cpu_features().describe()}")
    print(f"Caduceus-131k shape, fp32, batch 1, forward under inference_mode, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; medians of "
          f"{args.repeats} runs at 8k, {args.long_repeats} at 131k; each point its own process"
          + (f"; baseline: {args.baseline_python}, right after ours" if args.baseline_python else ""))  # fmt: skip
    ours, base = {}, {}
    for name in names:
        repeats = args.long_repeats if POINTS[name][2] == L131 else args.repeats
        runs = [("ours", ours, None)] + ([("baseline", base, args.baseline_python)] if args.baseline_python else [])
        for who, results, python in runs:
            results[name] = r = subprocess_point(name, repeats, args.threads, python=python, allocator=args.allocator)
            print(f"  {who:8s} {name:8s} {r['wall_s']:7.2f} s {r['length'] / r['wall_s']:8,.0f} tok/s  cpu "
                  f"{r['cpu_s']:7.2f} s  peak RSS {r['peak_rss_mb']:6,.0f} MB  (load {r['load']:.1f}; "
                  f"{r['package']}; allocator {r['allocator']})", flush=True)  # fmt: skip

    def rate(r: dict) -> float:
        return r["length"] / r["wall_s"]

    print()
    for label, results in (("ours", ours), ("baseline", base)):
        if not results:
            continue
        lines = []
        for model in ("ph", "ps"):
            short, long = results.get(f"{model}-8k"), results.get(f"{model}-131k")
            if short and long:
                lines.append(f"{model.upper()} 131k/8k throughput {rate(long) / rate(short):.2f} "
                             f"({rate(long):,.0f} / {rate(short):,.0f} tok/s)")  # fmt: skip
        ph, ps = results.get("ph-131k"), results.get("ps-131k")
        if ph and ps:
            lines.append(f"PS/Ph time at 131k {ps['wall_s'] / ph['wall_s']:.2f}")
        if ph:
            lines.append(f"Ph 131k peak RSS {ph['peak_rss_mb']:,.0f} MB")
        print(f"{label}: " + "; ".join(lines))
    for name in names:
        if name in base:
            print(f"{name}: ours / baseline time {ours[name]['wall_s'] / base[name]['wall_s']:.2f} "
                  f"({ours[name]['wall_s']:.2f} s / {base[name]['wall_s']:.2f} s), cpu time "
                  f"{ours[name]['cpu_s'] / base[name]['cpu_s']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
