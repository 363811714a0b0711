"""Genome-scale inference: scaling over torch.distributed ranks on this machine, and memory that does not grow with
the input (`caduceus-hf embed` / `score-variants`, streamed and sharded; caduceus_hf/apps/sharded.py).

Every point runs the command as a subprocess (torchrun --no-python caduceus-hf ... for several ranks) and reads back
the per-rank work time and items from the summary line the command prints ("rank r: B blocks (N records) in S s"), the
wall time of the whole command (start-up and model loading included) and the peak resident memory of the largest
process (getrusage of the children: the max over the ranks).

scaling: on ClinVar chrM (1,686 SNVs, score-variants, window 512, circular) and the E. coli genome (embed, 1 kb
windows), with the bundled demo model:
    A = 1 process x 2 threads, B = 2 ranks x 1 thread, C = 1 process x 1 thread
and prints throughput (items/s over the slowest rank's work time), per-rank throughput, and the ratios B/A (ranks
against threads on the same 2 cores) and B/C (2 ranks against 1, at 1 thread each). B's output is checked against
A's (same rows and order, values within 1e-5).

memory: peak RSS of score-variants on --small vs --large synthetic SNVs (window 16, default 10k vs 1M) and of embed
on --embed-small-mb vs --embed-large-mb Mb of synthetic sequence (default 1 vs 10; one record, 1 kb windows), one
process, 1 thread, with a tiny random model (d_model 16, 2 layers; the pipeline's memory is what is measured, not the
model's); inputs are generated in a temporary directory. Acceptance: large / small <= 1.2.

    python benchmarks/distributed_inference.py scaling [--ecoli-bases 4639675] [--window 512] [--batch-size 32]
    python benchmarks/distributed_inference.py memory [--small 10000] [--large 1000000]
        [--embed-small-mb 1] [--embed-large-mb 10]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_dir import data_dir, skipped  # benchmarks/data_dir.py

DATA = data_dir()
VCF = DATA / "variants" / "clinvar_chrM_SNV_PLP_vs_BLB.vcf"
MITO = DATA / "genomes" / "human_mtDNA_rCRS_NC_012920.1.fa"
ECOLI = DATA / "genomes" / "ecoli_K12_MG1655.fasta.gz"
CLI = Path(sys.executable).parent / "caduceus-hf"
RANK_LINE = re.compile(r"rank (\d+): [\d,]+ blocks? \(([\d,]+) \w+\) in ([\d.]+) s")
# Runs a command and prints, as JSON, its exit status, wall time and the peak RSS (KiB) of its largest descendant.
MEASURE = (
    "import json, resource, subprocess, sys, time; t = time.perf_counter(); "
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(json.dumps({'rc': p.returncode, 'wall': time.perf_counter() - t, "
    "'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'out': p.stdout, 'err': p.stderr[-3000:]}))"
)


def measure(command: list[str], ranks: int = 1, threads: int = 1) -> dict:
    """Run `caduceus-hf COMMAND` on `ranks` processes of `threads` threads; wall time, peak RSS, per-rank work."""
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                   "--no-python", str(CLI), *command]
    else:
        command = [str(CLI), *command]
    command += ["--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, env=env)
    result = json.loads(done.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"failed ({result['rc']}): {' '.join(command)}\n{result['out']}\n{result['err']}")
    work = {int(r): (int(n.replace(",", "")), float(s)) for r, n, s in RANK_LINE.findall(result["out"])}
    result["items"] = sum(n for n, _ in work.values())
    result["work_s"] = max(s for _, s in work.values())
    result["per_rank"] = [n / s for n, s in work.values()]
    return result


def report(name: str, points: dict[str, dict]) -> None:
    print(f"\n{name}")
    print("| point | items | wall s | work s (slowest rank) | items/s | per-rank items/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for label, r in points.items():
        print(f"| {label} | {r['items']:,} | {r['wall']:.1f} | {r['work_s']:.1f} | {r['items'] / r['work_s']:,.1f} | "
              f"{', '.join(f'{x:,.1f}' for x in r['per_rank'])} | {r['rss_kib'] / 1024:,.0f} |")
    rate = {label: r["items"] / r["work_s"] for label, r in points.items()}
    a, b, c = (rate[k] for k in ("A 1x2", "B 2x1", "C 1x1"))
    print(f"B/A (2 ranks x 1 thread vs 1 process x 2 threads): {b / a:.2f}; "
          f"B/C (2 ranks vs 1 rank, 1 thread each): {b / c:.2f} (ideal 2)")


def same_tsv(a: Path, b: Path) -> None:
    rows_a = [line.split("\t") for line in a.read_text().splitlines()]
    rows_b = [line.split("\t") for line in b.read_text().splitlines()]
    assert len(rows_a) == len(rows_b) and rows_a[0] == rows_b[0], "different rows"
    for x, y in zip(rows_a[1:], rows_b[1:]):
        assert x[:5] == y[:5] and x[6:] == y[6:], (x, y)
        assert abs(float(x[5]) - float(y[5])) <= 1e-5, (x, y)


def same_npz(a: Path, b: Path) -> None:
    x, y = np.load(a), np.load(b)
    assert sorted(x.files) == sorted(y.files)
    for key in x.files:
        if key == "embeddings":
            np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-5)
        else:
            assert np.array_equal(x[key], y[key]), key


def scaling(args: argparse.Namespace, work: Path) -> int:
    if not VCF.is_file() or not MITO.is_file() or not ECOLI.is_file():
        print(skipped(VCF, MITO, ECOLI))
        return 0
    runs = {"A 1x2": (1, 2), "B 2x1": (2, 1), "C 1x1": (1, 1)}
    points = {}
    for label, (ranks, threads) in runs.items():
        command = ["score-variants", "--vcf", str(VCF), "--fasta", str(MITO), "--circular", "--window",
                   str(args.window), "--batch-size", str(args.batch_size), "--block-size", str(args.block_size),
                   "--out", str(work / f"chrM_{label[0]}.tsv")]
        points[label] = measure(command, ranks, threads)
    same_tsv(work / "chrM_B.tsv", work / "chrM_A.tsv")
    report(f"score-variants, ClinVar chrM (1,686 SNVs, window {args.window}, batch {args.batch_size}, "
           f"block {args.block_size}); B's TSV equals A's", points)

    fasta = work / "ecoli.fa"
    with gzip.open(ECOLI, "rt") as fh, open(fasta, "w") as out:
        sequence = "".join(line.strip() for line in fh if not line.startswith(">"))[: args.ecoli_bases]
        out.write(">K-12-MG1655\n" + "\n".join(sequence[i : i + 80] for i in range(0, len(sequence), 80)) + "\n")
    points = {}
    for label, (ranks, threads) in runs.items():
        command = ["embed", "--fasta", str(fasta), "--window", "1000", "--batch-size", str(args.batch_size),
                   "--block-size", str(args.block_size), "--out", str(work / f"ecoli_{label[0]}.npz")]
        points[label] = measure(command, ranks, threads)
    same_npz(work / "ecoli_B.npz", work / "ecoli_A.npz")
    report(f"embed, E. coli ({len(sequence):,} bases, 1 kb windows, batch {args.batch_size}, block "
           f"{args.block_size}); B's npz equals A's", points)
    return 0


def tiny_model(path: Path) -> Path:
    import torch

    from caduceus_hf import CaduceusConfig, CaduceusForMaskedLM, CaduceusTokenizer

    torch.manual_seed(0)
    config = CaduceusConfig(d_model=16, n_layer=2, vocab_size=12, ssm_cfg={"d_state": 4})
    CaduceusForMaskedLM(config).save_pretrained(path)
    CaduceusTokenizer().save_pretrained(path)
    return path


def synthetic_vcf(path: Path, reference: str, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.integers(1, len(reference) + 1, n))
    with open(path, "w") as fh:
        fh.write(f"##fileformat=VCFv4.2\n##contig=<ID=syn,length={len(reference)}>\n"
                 "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for pos in positions:
            ref = reference[pos - 1]
            fh.write(f"syn\t{pos}\t.\t{ref}\t{'ACGT'[('ACGT'.index(ref) + 1) % 4]}\t.\t.\t.\n")
    return path


def synthetic_fasta(path: Path, bases: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        fh.write(">syn\n")
        for start in range(0, bases, 1_000_000):
            chunk = "".join(rng.choice(list("ACGT"), min(1_000_000, bases - start)))
            fh.write("\n".join(chunk[i : i + 80] for i in range(0, len(chunk), 80)) + "\n")
    return path


def memory(args: argparse.Namespace, work: Path) -> int:
    model = tiny_model(work / "tiny")
    reference = "".join(np.random.default_rng(0).choice(list("ACGT"), 100_000))
    (work / "ref.fa").write_text(">syn\n" + "\n".join(reference[i : i + 80] for i in range(0, len(reference), 80)))
    print("| run | items | wall s | items/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    rss = {}
    for n in (args.small, args.large):
        vcf = synthetic_vcf(work / f"v{n}.vcf", reference, n, seed=n)
        r = measure(["score-variants", "--vcf", str(vcf), "--fasta", str(work / "ref.fa"), "--window", "16",
                     "--batch-size", "512", "--model", str(model), "--out", str(work / f"s{n}.tsv")])
        rss[n] = r["rss_kib"]
        print(f"| score-variants {n:,} SNVs | {r['items']:,} | {r['wall']:.1f} | {r['items'] / r['work_s']:,.0f} | "
              f"{r['rss_kib'] / 1024:,.0f} |", flush=True)
        vcf.unlink()
    embed_rss = {}
    for mb in (args.embed_small_mb, args.embed_large_mb):
        fasta = synthetic_fasta(work / f"g{mb}.fa", int(mb * 1_000_000), seed=int(mb))
        r = measure(["embed", "--fasta", str(fasta), "--window", "1000", "--batch-size", "64", "--model", str(model),
                     "--out", str(work / f"e{mb}.npz")])
        embed_rss[mb] = r["rss_kib"]
        print(f"| embed {mb:g} Mb | {r['items']:,} windows | {r['wall']:.1f} | {r['items'] / r['work_s']:,.0f} | "
              f"{r['rss_kib'] / 1024:,.0f} |", flush=True)
        fasta.unlink()
    print(f"\npeak RSS ratio, score-variants {args.large:,} / {args.small:,} SNVs: "
          f"{rss[args.large] / rss[args.small]:.3f} (acceptance <= 1.2)")
    print(f"peak RSS ratio, embed {args.embed_large_mb:g} / {args.embed_small_mb:g} Mb: "
          f"{embed_rss[args.embed_large_mb] / embed_rss[args.embed_small_mb]:.3f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("point", choices=["scaling", "memory"])
    parser.add_argument("--window", type=int, default=512, help="scaling: score-variants window")
    parser.add_argument("--batch-size", type=int, default=32, help="scaling: sequences per forward pass")
    parser.add_argument("--block-size", type=int, default=64, help="scaling: items per block")
    parser.add_argument("--ecoli-bases", type=int, default=4_639_675, help="scaling: embed this many E. coli bases")
    parser.add_argument("--small", type=int, default=10_000, help="memory: SNVs of the small run")
    parser.add_argument("--large", type=int, default=1_000_000, help="memory: SNVs of the large run")
    parser.add_argument("--embed-small-mb", type=float, default=1, help="memory: Mb of the small embedding run")
    parser.add_argument("--embed-large-mb", type=float, default=10, help="memory: Mb of the large embedding run")
    parser.add_argument("--work-dir", type=Path, help="keep inputs and outputs here (default: a temporary directory)")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {args.point} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="caduceus-dist-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return scaling(args, work) if args.point == "scaling" else memory(args, work)


if __name__ == "__main__":
    sys.exit(main())
