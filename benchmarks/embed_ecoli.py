"""Throughput of `caduceus-hf embed` over the E. coli K-12 MG1655 genome (4,639,675 bp) in 1 kb windows.

Runs the command (bundled demo model unless --model is given) on $CADUCEUS_DATA_DIR/genomes/ecoli_K12_MG1655.fasta.gz,
4,640 windows of 1,000 bases (the last one 675), and reports:

* wall time of the whole command (reading the gzipped FASTA, loading the model, embedding, writing the output) and
  the embedding throughput in bases/s and tokens/s (tokens = bases + one [SEP] per window, what the model runs on);
* peak resident memory of the process (getrusage ru_maxrss, Linux: KiB);
* a sanity check that the vectors carry sequence information: |Spearman rho| between the embeddings' first principal
  component and the windows' GC content.

    python benchmarks/embed_ecoli.py [--model DIR_OR_REPO] [--batch-size 32] [--rc-average] [--out /tmp/ecoli.npz]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from caduceus_hf.cli import main as cli_main

from data_dir import data_dir, skipped  # benchmarks/data_dir.py

FASTA = data_dir() / "genomes" / "ecoli_K12_MG1655.fasta.gz"


def _ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(len(x))
    return ranks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory or Hub id (default: the bundled demo model)")
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rc-average", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ecoli_embeddings.npz"))
    args = parser.parse_args()
    if not FASTA.is_file():
        print(skipped(FASTA))
        return 0

    argv = ["embed", "--fasta", str(FASTA), "--out", str(args.out), "--window", str(args.window),
            "--batch-size", str(args.batch_size)]
    argv += ["--rc-average"] if args.rc_average else []
    argv += ["--model", args.model] if args.model else []
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")
    print(f"$ caduceus-hf {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    if cli_main(argv) != 0:
        return 1
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    data = np.load(args.out)
    lengths = data["end"] - data["start"]
    bases, windows = int(lengths.sum()), len(lengths)
    tokens = bases + windows
    print(f"whole command: {seconds:.1f} s; {bases / seconds:,.0f} bases/s, {tokens / seconds:,.0f} tokens/s "
          f"({windows:,} windows, {tokens:,} tokens); peak RSS {peak_kib / 1024:,.0f} MiB")

    with gzip.open(FASTA, "rt") as fh:
        genome = "".join(line.strip() for line in fh if not line.startswith(">")).upper()
    gc = np.asarray([
        sum(genome.count(b, int(s), int(e)) for b in "GC") / (e - s) for s, e in zip(data["start"], data["end"])
    ])
    vectors = data["embeddings"] - data["embeddings"].mean(0)
    pc1 = vectors @ np.linalg.svd(vectors, full_matrices=False)[2][0]
    rho = np.corrcoef(_ranks(pc1), _ranks(gc))[0, 1]
    print(f"embeddings {data['embeddings'].shape}; |Spearman rho| of PC1 with window GC content: {abs(rho):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
