"""`caduceus-hf pretrain` and `caduceus-hf finetune`: the training library on the command line.

The defaults are small (a 2-layer, d_model 64 model, a few hundred steps) so that a first run finishes on a laptop CPU
in a minute or two; scale them up with the flags.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..extras import install_hint


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (from scratch unless --init is given)")
    g.add_argument("--init", metavar="DIR_OR_REPO",
                   help="start from this Caduceus checkpoint (directory or Hub id); a classifier takes an MLM's "
                        "backbone and gets a new head")
    g.add_argument("--d-model", type=int, default=64, help="width of one strand (default 64)")
    g.add_argument("--n-layer", type=int, default=2, help="number of BiMamba blocks (default 2)")
    g.add_argument("--d-state", type=int, default=16, help="SSM state size (default 16)")
    g.add_argument("--rcps", action="store_true", help="Caduceus-PS: reverse-complement parameter sharing")
    g.add_argument("--allow-missing", action="store_true",
                   help="accept an --init checkpoint that lacks weights besides the new head (initialised as new)")


def _add_training_arguments(p: argparse.ArgumentParser, max_steps: int, lr: float) -> None:
    g = p.add_argument_group("training (Hugging Face TrainingArguments)")
    g.add_argument("--output-dir", required=True, help="checkpoints, then the final model, tokenizer and README.md")
    g.add_argument("--max-steps", type=int, default=max_steps,
                   help=f"optimiser steps (default {max_steps}; -1 trains --epochs epochs)")
    g.add_argument("--epochs", type=float, default=1.0, help="epochs when --max-steps is -1 (default 1)")
    g.add_argument("--batch-size", type=int, default=16, help="sequences per device and step (default 16)")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    g.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    g.add_argument("--warmup", type=float, default=0.01,
                   help="warmup: a fraction of the steps if < 1, else a number of steps (default 0.01)")
    g.add_argument("--scheduler", default="cosine", help="learning-rate schedule (default cosine)")
    g.add_argument("--eval-steps", type=int, help="evaluate every N steps (default: only at the end)")
    g.add_argument("--save-steps", type=int, default=500, help="checkpoint every N steps (default 500)")
    g.add_argument("--logging-steps", type=int, default=20, help="log the training loss every N steps (default 20)")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and masking (default 0)")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or GPU)")
    g.add_argument("--activation-checkpointing", action="store_true", help="recompute activations in backward")
    g.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="resume from the last checkpoint in --output-dir, or from CHECKPOINT")
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")


def _training_arguments(args: argparse.Namespace) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup if args.warmup < 1 else int(args.warmup),
        lr_scheduler_type=args.scheduler,
        eval_strategy="steps" if args.eval_steps else "no",
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        seed=args.seed,
        bf16=args.bf16,
        activation_checkpointing=args.activation_checkpointing or None,
        use_cpu=args.cpu,
        report_to="none",
        disable_tqdm=True,
    )


def _model_source(args: argparse.Namespace) -> Any:
    if args.init:
        return args.init
    from ..configuration_caduceus import CaduceusConfig

    return CaduceusConfig(d_model=args.d_model, n_layer=args.n_layer, ssm_cfg={"d_state": args.d_state}, rcps=args.rcps)


def _run(command: str, args: argparse.Namespace, body) -> int:
    if args.threads is not None:
        if args.threads < 1:
            print(f"caduceus-hf {command}: error: --threads must be a positive integer, got {args.threads}",
                  file=sys.stderr)
            return 1
        import torch

        torch.set_num_threads(args.threads)
    try:
        return body(args)
    except ImportError as err:
        # Missing optional dependencies (pysam, accelerate, scikit-learn): say which extra has them, unless the error
        # already does.
        hint = "" if "pip install" in str(err) else f" ({install_hint('train')})"
        print(f"caduceus-hf {command}: error: {err}{hint}", file=sys.stderr)
        return 1
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise  # the main error handler reports it
        # transformers reports an --init that is neither a directory nor a reachable Hub repo as OSError.
        print(f"caduceus-hf {command}: error: {err}", file=sys.stderr)
        return 1


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain import PretrainDataOptions, pretrain

    options = PretrainDataOptions(
        window=args.window,
        stride=args.stride,
        holdout_fraction=args.holdout_fraction,
        holdout_regions=tuple(args.holdout_region or ()),
        mlm_probability=args.mlm_probability,
        rc_augment=args.rc_augment,
        softmask_weight=args.softmask_weight,
        max_eval_windows=args.max_eval_windows,
    )
    result = pretrain(args.fasta, _model_source(args), _training_arguments(args), options,
                      resume_from_checkpoint=args.resume, allow_missing=args.allow_missing)
    h = result.heldout
    print(
        f"pretrained {result.global_step} steps on {len(result.data.train):,} windows -> {result.output_dir}; "
        f"held-out loss {h['nll_nats']:.4f} nats ({h['nll_bits']:.4f} bits) per masked base over "
        f"{int(h['masked']):,} masked bases"
    )
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .finetune import FinetuneDataOptions, finetune

    options = FinetuneDataOptions(
        task=args.task,
        eval_file=args.eval_file,
        eval_fraction=args.eval_fraction,
        split_seed=args.split_seed,
        sequence_column=args.sequence_column,
        label_column=args.label_column,
        max_length=args.max_length,
        rc_augment=args.rc_augment,
    )
    result = finetune(args.train_file, _model_source(args), _training_arguments(args), options,
                      pooling_strategy=args.pooling, conjoin_eval=args.conjoin_eval,
                      resume_from_checkpoint=args.resume, allow_missing=args.allow_missing)
    m = result.metrics
    if args.task == "regression":
        scores = f"MSE {m['eval_mse']:.4f}, Pearson {m['eval_pearson']:.4f}, Spearman {m['eval_spearman']:.4f}"
    else:
        scores = f"accuracy {m['eval_accuracy']:.4f}, MCC {m['eval_mcc']:.4f}, F1 {m['eval_f1']:.4f}"
    print(
        f"fine-tuned {result.global_step} steps on {result.num_train:,} examples -> {result.output_dir}; "
        f"evaluation over {result.num_eval:,} examples: {scores}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `pretrain` and `finetune` subcommands to the `caduceus-hf` parser."""
    p = subparsers.add_parser(
        "pretrain",
        help="masked-language-model pretraining on FASTA files (Trainer)",
        description="Pretrain a Caduceus MLM on FASTA files (plain or gzipped) with Hugging Face Trainer: fixed-length "
        "windows, a held-out region per record (by default its last 5%) for evaluation, nucleotide-only masking, "
        "reverse-complement augmentation for Ph models. Writes Trainer checkpoints, then the model, tokenizer and a "
        "model card with the final held-out loss into --output-dir. Needs the [train] extra.",
    )
    p.add_argument("fasta", nargs="+", help="FASTA files (.fa, .fasta, optionally .gz)")
    g = p.add_argument_group("data")
    g.add_argument("--window", type=int, default=256, help="bases per window (default 256)")
    g.add_argument("--stride", type=int, help="bases between training windows (default: --window)")
    g.add_argument("--holdout-fraction", type=float, default=0.05,
                   help="hold out the last fraction of each record (default 0.05)")
    g.add_argument("--holdout-region", action="append", metavar="NAME:START-END",
                   help="hold out this region instead (1-based, inclusive; repeat for several records)")
    g.add_argument("--mlm-probability", type=float, default=0.15, help="fraction of bases masked (default 0.15)")
    g.add_argument("--rc-augment", action=argparse.BooleanOptionalAction, default=None,
                   help="reverse-complement augmentation (default: on for Ph, off for PS)")
    g.add_argument("--softmask-weight", type=float,
                   help="loss weight of soft-masked (lowercase) bases, e.g. 0.1 (default: 1, no down-weighting)")
    g.add_argument("--max-eval-windows", type=int, help="evaluate on at most this many held-out windows")
    _add_model_arguments(p)
    _add_training_arguments(p, max_steps=200, lr=2e-3)
    p.set_defaults(func=lambda args: _run("pretrain", args, _pretrain))

    p = subparsers.add_parser(
        "finetune",
        help="fine-tune for sequence or token classification on a CSV/TSV table (Trainer)",
        description="Fine-tune a Caduceus classifier with Hugging Face Trainer on a CSV/TSV table with a header "
        "(e.g. Genomic Benchmarks' seq,label), from scratch or from any Caduceus checkpoint (--init). Evaluates "
        "accuracy, MCC and F1 over the whole evaluation set (--eval-file, else a fixed --eval-fraction of the "
        "table). Ph models train with reverse-complement augmentation and evaluate with post-hoc conjoining; PS "
        "models need neither. Writes the model, tokenizer and a model card into --output-dir. Needs the [train] "
        "extra.",
    )
    p.add_argument("train_file", help="CSV or TSV table with a header (plain or gzipped)")
    g = p.add_argument_group("data")
    g.add_argument("--task", choices=("sequence", "regression", "token"), default="sequence",
                   help="one label per sequence, or one per base (labels: a digit per base, or space-separated)")
    g.add_argument("--eval-file", help="evaluation table (default: hold out --eval-fraction of TRAIN_FILE)")
    g.add_argument("--eval-fraction", type=float, default=0.2, help="held-out fraction (default 0.2)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")
    g.add_argument("--sequence-column", help="header of the sequence column (default: seq, sequence, ...)")
    g.add_argument("--label-column", help="header of the label column (default: label, labels, ...)")
    g.add_argument("--max-length", type=int, help="truncate to this many tokens, [SEP] included")
    g.add_argument("--rc-augment", action=argparse.BooleanOptionalAction, default=None,
                   help="reverse-complement augmentation in training (default: on for Ph, off for PS)")
    g.add_argument("--pooling", choices=("mean", "max", "first", "last"),
                   help="sequence pooling (default: the checkpoint's, else mean)")
    g.add_argument("--conjoin-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="Ph: average forward and reverse-complement passes at evaluation (default: on)")
    _add_model_arguments(p)
    _add_training_arguments(p, max_steps=100, lr=1e-3)
    p.set_defaults(func=lambda args: _run("finetune", args, _finetune))


__all__ = ["register"]
