"""What `caduceus-hf embed`, `score-variants` and `fill-mask` run (their arguments are defined in `caduceus_hf_cli`).

Every subcommand runs the bundled demo model unless --model names another one, so they work offline after install.
Errors in input files (ValueError subclasses naming the file and line) are printed by `caduceus_hf_cli.main`.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..cli import configure_process


def _prepare(args: argparse.Namespace) -> None:
    """The process settings of every subcommand (`configure_process`) and --threads (embed and score-variants apply
    --threads per rank themselves)."""
    configure_process()
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def run_embed(args: argparse.Namespace) -> int:
    from ..genomics import check_output_file
    from .embed import OUTPUT_FORMATS, embed_to_file

    _prepare(args)
    check_output_file(args.out, OUTPUT_FORMATS, "--out")
    start = time.perf_counter()
    run = embed_to_file(
        args.fasta, args.out, args.model, bed=args.bed, window=args.window, stride=args.stride,
        rc_average=args.rc_average, batch_size=args.batch_size, block_size=args.block_size, device=args.device,
        dtype=args.dtype, threads=args.threads, resume=args.resume, progress=sys.stderr.isatty(),
        allow_missing=args.allow_missing,
    )
    if run is None:  # not rank 0: rank 0 reports
        return 0
    seconds = time.perf_counter() - start
    result = run.merged
    what = "windows" if args.window else "sequences"
    print(
        f"embedded {result.rows:,} {what} ({result.bases:,} bases) of {args.fasta}"
        f"{f' (regions of {args.bed})' if args.bed else ''} -> {args.out}: {result.dim} dimensions, "
        f"rc-average {'on' if args.rc_average else 'off'}, {result.bases / seconds:,.0f} bases/s ({seconds:.1f} s)"
    )
    print(run.ranks_line())
    return 0


def run_score_variants(args: argparse.Namespace) -> int:
    from ..genomics import check_output_file, require
    from .variants import score_variants_to_file

    _prepare(args)
    if args.roc_png and not args.label_key:
        raise ValueError("--roc-png needs --label-key (the ROC curve plots labelled variants)")
    check_output_file(args.out, None, "--out")
    if args.roc_png:
        check_output_file(args.roc_png, (".png",), "--roc-png")
        require("matplotlib", "the ROC plot")
        require("sklearn.metrics", "the ROC curve")
    circular: bool | set[str] = False if args.circular is None else (set(args.circular) or True)
    run = score_variants_to_file(
        args.vcf, args.fasta, args.out, args.model, window=args.window, rc_average=args.rc_average,
        embedding_distance=args.embedding_distance, circular=circular, label_key=args.label_key,
        batch_size=args.batch_size, block_size=args.block_size, device=args.device, dtype=args.dtype,
        threads=args.threads, resume=args.resume, progress=sys.stderr.isatty(), allow_missing=args.allow_missing,
        roc_png=args.roc_png,
    )
    if run is None:  # not rank 0: rank 0 reports
        return 0
    result = run.merged
    print(result.summary())
    print(f"wrote {result.scored:,} rows to {args.out}")
    print(run.ranks_line())
    if args.roc_png:
        print(f"wrote the ROC curve to {args.roc_png}")
    return 0


def run_fill_mask(args: argparse.Namespace) -> int:
    from .fill_mask import fill_mask, fill_mask_fasta

    _prepare(args)
    options = dict(top_k=args.top_k, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                   allow_missing=args.allow_missing)
    if args.fasta:
        predictions = fill_mask_fasta(args.fasta, args.model, **options)
    else:
        predictions = fill_mask(args.sequence, args.model, **options)
    for prediction in predictions:
        print(prediction)
    return 0


__all__ = ["run_embed", "run_fill_mask", "run_score_variants"]
