"""`caduceus-hf embed`, `caduceus-hf score-variants` and `caduceus-hf fill-mask`: the applications on the command line.

Every subcommand runs the bundled demo model unless --model names another one, so they work offline after install.
Errors in input files (ValueError subclasses naming the file and line) are printed by `caduceus_hf.cli.main`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ..extras import MissingExtraError
from .models import DEVICES, DTYPES


def _add_common(p: argparse.ArgumentParser, batch_size: int) -> None:
    g = p.add_argument_group("model and runtime")
    g.add_argument("--model", metavar="DIR_OR_REPO",
                   help="a Caduceus checkpoint: local directory or Hub repo id (default: the demo model bundled with "
                        "the package, caduceus_hf/pretrained/caduceus-demo)")
    g.add_argument("--device", default="auto", metavar="DEVICE",
                   help=f"where to run: {', '.join(DEVICES)} or cuda:N (default auto: cuda, else mps, else cpu)")
    g.add_argument("--dtype", default="float32", choices=tuple(DTYPES), help="model weights dtype (default float32)")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"sequences per forward pass (default {batch_size})")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--allow-missing", action="store_true",
                   help="accept a checkpoint that lacks some weights (initialised as new); default: refuse it")


def _run(command: str, body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from transformers.utils import logging as hf_logging

        # transformers' per-tensor "Loading weights" bar is noise next to this command's own progress bar.
        hf_logging.disable_progress_bar()
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be a positive integer, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        try:
            return body(args)
        except MissingExtraError as err:
            # An ImportError, which the top-level handler would let through as a traceback.
            print(f"caduceus-hf {command}: error: {err}", file=sys.stderr)
            return 1

    return run


def _embed(args: argparse.Namespace) -> int:
    from ..genomics import check_output_file
    from .embed import OUTPUT_FORMATS, embed_fasta

    check_output_file(args.out, OUTPUT_FORMATS, "--out")
    start = time.perf_counter()
    result = embed_fasta(
        args.fasta, args.model, bed=args.bed, window=args.window, stride=args.stride, rc_average=args.rc_average,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, progress=True,
        allow_missing=args.allow_missing,
    )
    seconds = time.perf_counter() - start
    result.save(args.out)
    bases = int((result.end - result.start).sum())
    what = "windows" if args.window else "sequences"
    print(
        f"embedded {len(result):,} {what} ({bases:,} bases) of {args.fasta}"
        f"{f' (regions of {args.bed})' if args.bed else ''} -> {args.out}: {result.vectors.shape[1]} dimensions, "
        f"rc-average {'on' if args.rc_average else 'off'}, {bases / seconds:,.0f} bases/s ({seconds:.1f} s)"
    )
    return 0


def _score_variants(args: argparse.Namespace) -> int:
    from ..genomics import check_output_file, require
    from .variants import score_variants

    if args.roc_png and not args.label_key:
        raise ValueError("--roc-png needs --label-key (the ROC curve plots labelled variants)")
    check_output_file(args.out, None, "--out")
    if args.roc_png:
        check_output_file(args.roc_png, (".png",), "--roc-png")
        require("matplotlib", "the ROC plot")
        require("sklearn.metrics", "the ROC curve")
    circular: bool | set[str] = False if args.circular is None else (set(args.circular) or True)
    result = score_variants(
        args.vcf, args.fasta, args.model, window=args.window, rc_average=args.rc_average,
        embedding_distance=args.embedding_distance, circular=circular, label_key=args.label_key,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, progress=True,
        allow_missing=args.allow_missing,
    )
    if args.roc_png and result.auroc() is None:
        # Before anything is written: a failing run leaves no output.
        raise ValueError(f"--roc-png: the ROC curve needs labelled variants of both classes ({args.label_key} 0 and 1)")
    result.write_tsv(args.out)
    print(result.summary())
    print(f"wrote {len(result.variants):,} rows to {args.out}")
    if args.roc_png:
        result.plot_roc(args.roc_png)
        print(f"wrote the ROC curve to {args.roc_png}")
    return 0


def _fill_mask(args: argparse.Namespace) -> int:
    from .fill_mask import fill_mask, fill_mask_fasta

    options = dict(top_k=args.top_k, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                   allow_missing=args.allow_missing)
    if args.fasta:
        predictions = fill_mask_fasta(args.fasta, args.model, **options)
    else:
        predictions = fill_mask(args.sequence, args.model, **options)
    for prediction in predictions:
        print(prediction)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `embed`, `score-variants` and `fill-mask` subcommands to the `caduceus-hf` parser."""
    p = subparsers.add_parser(
        "embed",
        help="mean embeddings of FASTA sequences, BED regions or windows (.npz or .parquet)",
        description="Embed every record of a FASTA file (or, with --bed, every interval of a reference FASTA) as the "
        "mean of the model's final per-token states over its bases ([SEP] and padding excluded; PS models: the mean "
        "of the two strands' halves). Long sequences go in windows (--window, --stride). The output (.npz or "
        ".parquet, by extension) holds ids, chrom, 0-based start and end, and the embeddings. Needs the [apps] extra.",
    )
    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or bgzip); the reference with --bed")
    p.add_argument("--bed", help="BED file of regions of --fasta to embed (name column used as id)")
    p.add_argument("--out", required=True, help="output file, .npz or .parquet")
    p.add_argument("--window", type=int, help="embed windows of this many bases (default: whole sequences)")
    p.add_argument("--stride", type=int, help="bases between window starts (default: --window, no overlap)")
    p.add_argument("--rc-average", action="store_true",
                   help="average with the reverse complement's embedding (strand-invariant embeddings)")
    _add_common(p, batch_size=16)
    p.set_defaults(func=_run("embed", _embed))

    p = subparsers.add_parser(
        "score-variants",
        help="zero-shot SNV scores log p(alt) - log p(ref) from a VCF and a reference FASTA (TSV)",
        description="Score every SNV of a VCF against a reference FASTA with the masked language model: "
        "log p(ALT) - log p(REF) at the masked variant position of a --window centred on it (negative: ALT less "
        "likely). Checks REF against the reference (mismatches are reported and flagged), skips and counts "
        "non-SNVs, truncates windows at linear contig ends and wraps them on --circular contigs. With --label-key "
        "prints the AUROC of -score for label 1 against label 0. Needs the [apps] extra.",
    )
    p.add_argument("--vcf", required=True, help="VCF file (plain, bgzip or BCF)")
    p.add_argument("--fasta", required=True, help="reference FASTA (plain or gzip; indexed .fai used if present)")
    p.add_argument("--out", required=True, help="output TSV, one row per scored SNV")
    p.add_argument("--window", type=int, default=512, help="bases of context centred on the variant (default 512)")
    p.add_argument("--rc-average", action="store_true",
                   help="average with the score of the reverse-complement window (complemented alleles)")
    p.add_argument("--embedding-distance", action="store_true",
                   help="also report the Euclidean distance between the REF and ALT windows' mean embeddings")
    p.add_argument("--circular", nargs="*", metavar="CONTIG",
                   help="wrap windows around contig ends: the named contigs, or every contig if none is named "
                        "(mitochondrial, bacterial, plasmid genomes)")
    p.add_argument("--label-key", metavar="KEY", help="INFO key of a 0/1 label; prints the AUROC")
    p.add_argument("--roc-png", metavar="FILE", help="with --label-key: write the ROC curve to this PNG")
    _add_common(p, batch_size=16)
    p.set_defaults(func=_run("score-variants", _score_variants))

    p = subparsers.add_parser(
        "fill-mask",
        help="top-k nucleotides with probabilities at each [MASK] of a sequence",
        description="Predict the bases hidden by [MASK] tokens, e.g. --sequence ACGT[MASK]ACG, or in the records "
        "of a FASTA file. Prints, per [MASK], its 1-based position and the top-k nucleotides with their "
        "probabilities (softmax over A, C, G, T).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", nargs="+", metavar="SEQ", help="sequence(s) with [MASK] tokens")
    source.add_argument("--fasta", help="FASTA file whose sequences contain [MASK] tokens")
    p.add_argument("--top-k", type=int, default=4, help="nucleotides to print per mask, 1-4 (default 4)")
    _add_common(p, batch_size=16)
    p.set_defaults(func=_run("fill-mask", _fill_mask))


__all__ = ["register"]
