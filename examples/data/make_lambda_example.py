"""Regenerate the example files of this folder from the phage lambda genome (NCBI NC_001416.1) in
$CADUCEUS_DATA_DIR/genomes (see benchmarks/README.md).

* lambda_phage.fa: the 48,502 bp genome, header shortened to `NC_001416.1` (the sequence is unchanged);
* lambda_snvs.vcf: 40 SNVs at random positions (seed 0) with REF taken from the genome, plus one deletion and one
  multi-allelic record (an SNV and an insertion), so that `caduceus-hf score-variants` shows what it skips.
  The variants are synthetic: they exist to exercise the tools, not to mean anything biologically.

Run from the repository root: python examples/data/make_lambda_example.py
"""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("CADUCEUS_DATA_DIR") or HERE.parents[2] / "shared" / "data")
SOURCE = DATA / "genomes" / "lambda_phage_NC_001416.1.fa.gz"
CONTIG = "NC_001416.1"


def main() -> None:
    with gzip.open(SOURCE, "rt") as fh:
        sequence = "".join(line.strip() for line in fh if not line.startswith(">"))
    fasta = [f">{CONTIG} Enterobacteria phage lambda, complete genome"]
    fasta += [sequence[i : i + 70] for i in range(0, len(sequence), 70)]
    (HERE / "lambda_phage.fa").write_text("\n".join(fasta) + "\n")

    rng = random.Random(0)
    rows = []
    for pos in sorted(rng.sample(range(1, len(sequence) + 1), 40)):
        ref = sequence[pos - 1]
        rows.append((pos, f"snv{len(rows) + 1}", ref, rng.choice([b for b in "ACGT" if b != ref])))
    rows.append((20001, "del1", sequence[20000:20003], sequence[20000]))
    ref = sequence[30000]
    rows.append((30001, "multi1", ref, f"{'ACGT'[('ACGT'.index(ref) + 1) % 4]},{ref}TT"))
    rows.sort()
    header = [
        "##fileformat=VCFv4.2",
        f"##contig=<ID={CONTIG},length={len(sequence)}>",
        "##source=examples/data/make_lambda_example.py (synthetic variants)",
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    body = [f"{CONTIG}\t{pos}\t{vid}\t{ref}\t{alt}\t.\t.\t." for pos, vid, ref, alt in rows]
    (HERE / "lambda_snvs.vcf").write_text("\n".join(header + body) + "\n")


if __name__ == "__main__":
    main()
