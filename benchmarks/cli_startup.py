"""Startup time of the `caduceus-hf` command: how long --help and --version take, against `python -c pass`.

Each point runs the installed console script (the `caduceus-hf` next to this Python) in a fresh subprocess, output
discarded, --repeats times; reported are the median and minimum wall-clock seconds, the median's ratio to the
`python -c pass` baseline measured in the same run, and the peak resident set size of the child (ru_maxrss). For the
training subcommands (whose parser is TrainingArguments') the reference is `python -c "from transformers import
TrainingArguments"`, the import they cannot avoid.

Run: `python benchmarks/cli_startup.py [--repeats 11]`. On a shared machine the numbers move with the load: compare
the ratios, and quote medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
SCRIPT = str(Path(PYTHON).with_name("caduceus-hf"))
POINTS = {
    "python -c pass (baseline)": [PYTHON, "-c", "pass"],
    "caduceus-hf --help": [SCRIPT, "--help"],
    "caduceus-hf --version": [SCRIPT, "--version"],
    "caduceus-hf embed --help": [SCRIPT, "embed", "--help"],
    "caduceus-hf score-variants --help": [SCRIPT, "score-variants", "--help"],
    "caduceus-hf fill-mask --help": [SCRIPT, "fill-mask", "--help"],
    "caduceus-hf convert --help": [SCRIPT, "convert", "--help"],
    "caduceus-hf push --help": [SCRIPT, "push", "--help"],
    "import TrainingArguments (training reference)": [PYTHON, "-c", "from transformers import TrainingArguments"],
    "caduceus-hf finetune --help": [SCRIPT, "finetune", "--help"],
    "caduceus-hf pretrain --help": [SCRIPT, "pretrain", "--help"],
}
TRAINING = ("caduceus-hf finetune --help", "caduceus-hf pretrain --help")


def run_once(command: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB of the child)."""
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as child:
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {child.returncode}")
    return seconds, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11, help="runs per point (default 11)")
    parser.add_argument("--skip-training", action="store_true", help="only the light commands (seconds, not minutes)")
    args = parser.parse_args()
    if not Path(SCRIPT).is_file():
        raise SystemExit(f"{SCRIPT} not found: install the package (pip install -e .) into this Python's environment")

    results: dict[str, tuple[float, float, int]] = {}
    for name, command in POINTS.items():
        if args.skip_training and ("finetune" in name or "pretrain" in name or "TrainingArguments" in name):
            continue
        run_once(command)  # warm the page cache
        runs = [run_once(command) for _ in range(args.repeats)]
        times = [t for t, _ in runs]
        results[name] = (statistics.median(times), min(times), max(rss for _, rss in runs))

    base = results["python -c pass (baseline)"][0]
    reference = results.get("import TrainingArguments (training reference)", (None,))[0]
    print(f"{args.repeats} runs per point, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    print("| command | median s | min s | x python -c pass | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, (median, low, rss) in results.items():
        ratio = f"{median / base:.1f}"
        if name in TRAINING and reference:
            ratio += f" ({median / reference:.2f} x the TrainingArguments import)"
        print(f"| `{name}` | {median:.3f} | {low:.3f} | {ratio} | {rss / 1024:.0f} |")


if __name__ == "__main__":
    main()
