"""Zero-shot scoring of ClinVar mitochondrial SNVs, end to end through `caduceus-hf score-variants`.

Data ($CADUCEUS_DATA_DIR, see benchmarks/data_dir.py; not committed): 1,686 ClinVar chrM SNVs, 255 pathogenic / likely
pathogenic (INFO LABEL=1) and 1,431 benign / likely benign (LABEL=0), against the rCRS mitochondrial genome
NC_012920.1 (circular, so windows wrap around its ends).

Runs the command twice, without and with --rc-average, with the bundled demo model unless --model is given, and
checks that every SNV was scored with no REF mismatch. The demo model never saw human mitochondrial DNA (nor much
human DNA at all): its AUROC is out of domain and is reported as it comes out, not as a claim about Caduceus.

    python benchmarks/clinvar_chrM.py [--model DIR_OR_REPO] [--window 512] [--out-dir /tmp/clinvar_chrM]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from caduceus_hf.cli import main as cli_main

from data_dir import data_dir, skipped  # benchmarks/data_dir.py

DATA = data_dir()
VCF = DATA / "variants" / "clinvar_chrM_SNV_PLP_vs_BLB.vcf"
FASTA = DATA / "genomes" / "human_mtDNA_rCRS_NC_012920.1.fa"
EXPECTED_SNVS = 1686


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory or Hub id (default: the bundled demo model)")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/clinvar_chrM"))
    args = parser.parse_args()
    if not VCF.is_file() or not FASTA.is_file():
        print(skipped(VCF, FASTA))
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)

    failures = []
    for rc_average in (False, True):
        tag = "rc" if rc_average else "fwd"
        out = args.out_dir / f"clinvar_chrM_{tag}.tsv"
        argv = ["score-variants", "--vcf", str(VCF), "--fasta", str(FASTA), "--out", str(out), "--circular",
                "--label-key", "LABEL", "--window", str(args.window), "--batch-size", str(args.batch_size),
                "--roc-png", str(args.out_dir / f"clinvar_chrM_{tag}_roc.png")]
        argv += ["--rc-average"] if rc_average else []
        argv += ["--model", args.model] if args.model else []
        print(f"$ caduceus-hf {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        if cli_main(argv) != 0:
            return 1
        seconds = time.perf_counter() - start
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        mismatches = sum(row["ref_match"] != "1" for row in rows)
        print(f"({seconds:.1f} s, {len(rows) / seconds:.1f} SNVs/s)\n", flush=True)
        if len(rows) != EXPECTED_SNVS or mismatches:
            failures.append(f"{tag}: {len(rows)} SNVs scored (expected {EXPECTED_SNVS}), {mismatches} REF mismatches")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print(f"all {EXPECTED_SNVS:,} SNVs scored in both runs, 0 REF mismatches")
    # Context for the AUROCs above: what the substitution type alone gives, with no model.
    labels = [int(row["label"]) for row in rows]
    transversion = [int({row["ref"], row["alt"]} not in ({"A", "G"}, {"C", "T"})) for row in rows]
    print(f"baseline without a model: AUROC {roc_auc_score(labels, transversion):.4f} of a transversion indicator "
          f"(transversions are {sum(t for t, y in zip(transversion, labels) if y) / sum(labels):.1%} of label 1, "
          f"{sum(t for t, y in zip(transversion, labels) if not y) / (len(labels) - sum(labels)):.1%} of label 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
