"""Model cards (README.md) written next to models trained by `pretrain` and `finetune`: what the model was trained on,
how, and how well it did on held-out data."""

from __future__ import annotations

import hashlib
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import TrainingArguments

from ..configuration_caduceus import CaduceusConfig


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cell(value: object) -> str:
    """Text safe inside a markdown table cell (record names such as `gi|9626243|ref|...` contain pipes)."""
    return str(value).replace("|", "\\|")


def _name(value: object) -> str:
    """An enum's value (TrainingArguments holds OptimizerNames / SchedulerType), else str()."""
    return str(getattr(value, "value", value))


def _front_matter(pipeline_tag: str, origin: str) -> list[str]:
    lines = ["---", "library_name: transformers", f"pipeline_tag: {pipeline_tag}", "tags:"]
    lines += [f"- {tag}" for tag in ("genomics", "dna", "caduceus", "caduceus-hf", "mamba")]
    # The Hub's base_model field takes repo ids only; a local directory is named in the card's body instead.
    if re.fullmatch(r"[\w.-]+/[\w.-]+", origin) and not Path(origin).exists():
        lines += ["base_model:", f"- {origin}"]
    return lines + ["---", ""]


def _model_rows(config: CaduceusConfig, num_parameters: int, origin: str) -> list[str]:
    variant = "Caduceus-PS (RC-equivariant)" if config.rcps else "Caduceus-Ph"
    return [
        "| | |",
        "|---|---|",
        f"| model | {variant}, {config.n_layer} layers, d_model {config.d_model}, "
        f"d_state {config.ssm_cfg['d_state']} |",
        f"| parameters | {num_parameters:,} |",
        f"| initialised from | {_cell(origin)} |",
    ]


def _training_rows(args: TrainingArguments, global_step: int, world_size: int, train_loss: float | None) -> list[str]:
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size
    loss = "n/a" if train_loss is None else f"{train_loss:.4f}"
    return [
        f"| optimiser steps | {global_step} |",
        f"| batch (sequences per step) | {batch} ({args.per_device_train_batch_size} per device x "
        f"{args.gradient_accumulation_steps} accumulation x {world_size} process{'es' if world_size > 1 else ''}) |",
        f"| optimiser | {_name(args.optim)}, lr {args.learning_rate:g}, weight decay {args.weight_decay:g} "
        "(none on biases, norms, A_log, D), "
        f"{_name(args.lr_scheduler_type)} schedule, warmup {args.warmup_steps:g} |",
        f"| precision | {'bf16 autocast' if args.bf16 else 'fp32'} |",
        f"| seed | {args.seed} |",
        f"| mean training loss | {loss} |",
    ]


def _software() -> str:
    from .. import __version__

    return (
        f"caduceus-hf {__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def pretraining_card(
    *,
    config: CaduceusConfig,
    num_parameters: int,
    origin: str,
    files: Sequence[Mapping[str, Any]],
    window: int,
    stride: int,
    train_windows: int,
    eval_windows: int,
    train_regions: Sequence[str],
    heldout_regions: Sequence[str],
    mlm_probability: float,
    rc_augment: bool,
    softmask_weight: float | None,
    heldout: Mapping[str, float],
    args: TrainingArguments,
    global_step: int,
    world_size: int,
    train_loss: float | None,
) -> str:
    """README.md of a pretrained MLM. `files`: dicts with path, sha256 and records (name, length)."""
    lines = _front_matter("fill-mask", origin)
    lines += [
        f"# Caduceus masked language model trained on {', '.join(Path(f['path']).name for f in files)}",
        "",
        "Trained with `caduceus-hf pretrain` (Hugging Face Trainer). Load it with `AutoModelForMaskedLM` after "
        "`import caduceus_hf`.",
        "",
        "## Model",
        "",
        *_model_rows(config, num_parameters, origin),
        "",
        "## Training data",
        "",
        "| file | sha256 | records (length) |",
        "|---|---|---|",
    ]
    for f in files:
        records = ", ".join(f"`{_cell(name)}` ({length:,} bp)" for name, length in f["records"])
        lines.append(f"| `{_cell(f['path'])}` | `{f['sha256'][:16]}...` | {records} |")
    softmask = (
        "no (all bases weigh 1)" if softmask_weight is None
        else f"soft-masked (lowercase) bases weigh {softmask_weight:g}"
    )
    lines += [
        "",
        "| | |",
        "|---|---|",
        f"| windows | {window} bases + [SEP], stride {stride}; {train_windows:,} training windows |",
        f"| training regions (1-based, inclusive) | {', '.join(f'`{_cell(r)}`' for r in train_regions)} |",
        f"| held-out regions (never trained on) | {', '.join(f'`{_cell(r)}`' for r in heldout_regions)} |",
        f"| masking | {mlm_probability:g} of bases; 80 % [MASK], 10 % random base, 10 % kept |",
        f"| reverse-complement augmentation | {'yes (p = 0.5 per window)' if rc_augment else 'no'} |",
        f"| loss weights | {softmask} |",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        *_training_rows(args, global_step, world_size, train_loss),
        "",
        "## Held-out evaluation",
        "",
        f"{eval_windows:,} windows of the held-out regions, masked once with a fixed seed: {mlm_probability:g} of "
        "bases selected, all replaced by [MASK]; loss = mean negative log-likelihood of the true base over the "
        f"{int(heldout['masked']):,} masked bases.",
        "",
        f"**final held-out loss: {heldout['nll_nats']:.4f} nats ({heldout['nll_bits']:.4f} bits) per masked base**"
        f" (perplexity {heldout['perplexity']:.3f})",
        "",
        f"Software: {_software()}.",
        "",
    ]
    return "\n".join(lines)


def finetuning_card(
    *,
    config: CaduceusConfig,
    architecture: str,
    num_parameters: int,
    origin: str,
    task: str,
    train_source: str,
    eval_source: str,
    num_train: int,
    num_eval: int,
    label_names: Sequence[str],
    rc_augment: bool,
    metrics: Mapping[str, float],
    args: TrainingArguments,
    global_step: int,
    world_size: int,
    train_loss: float | None,
) -> str:
    """README.md of a fine-tuned classifier."""
    pipeline = "token-classification" if task == "token" else "text-classification"
    lines = _front_matter(pipeline, origin)
    evaluation = "" if not metrics else ", ".join(
        f"{key.removeprefix('eval_')} {value:.4f}" for key, value in metrics.items()
        if key in ("eval_accuracy", "eval_mcc", "eval_f1", "eval_mse", "eval_pearson", "eval_spearman", "eval_loss")
    )
    conjoin = "n/a (PS: both strands scored by construction)" if config.rcps else str(config.conjoin_eval)
    lines += [
        f"# Caduceus {architecture}",
        "",
        "Fine-tuned with `caduceus-hf finetune` (Hugging Face Trainer). Load it with "
        f"`AutoModelFor{'Token' if task == 'token' else 'Sequence'}Classification` after `import caduceus_hf`.",
        "",
        "## Model",
        "",
        *_model_rows(config, num_parameters, origin),
        f"| head | {'per-token ' if task == 'token' else 'pooled (' + config.pooling_strategy + ') '}linear, "
        + ("1 output (regression, MSE loss) |" if task == "regression" else
           f"{config.num_labels} classes: {', '.join(label_names)} |"),
        f"| post-hoc reverse-complement conjoining at evaluation | {conjoin} |",
        "",
        "## Data",
        "",
        "| | |",
        "|---|---|",
        f"| training examples | {num_train:,} from `{train_source}` |",
        f"| evaluation examples | {num_eval:,} from {eval_source} |",
        f"| reverse-complement augmentation | {'yes (p = 0.5 per example)' if rc_augment else 'no'} |",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        *_training_rows(args, global_step, world_size, train_loss),
        "",
        "## Evaluation",
        "",
        f"Over the whole evaluation set ({num_eval:,} examples): {evaluation or 'not evaluated'}."
        " (F1 of class 1 for two classes, macro F1 otherwise.)",
        "",
        f"Software: {_software()}.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["file_sha256", "finetuning_card", "pretraining_card"]
