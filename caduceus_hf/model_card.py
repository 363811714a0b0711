"""Model cards (README.md) of every directory the package writes: converted checkpoints (`caduceus-hf convert`),
pretrained MLMs (`pretrain`) and fine-tuned classifiers (`finetune`).

The metadata goes through huggingface_hub's ModelCard / ModelCardData, so the Hub reads it: library_name
transformers, license, base_model, datasets, tags, pipeline_tag, and the evaluation results as model-index. The body
says what the model is, what it was made from, and how well it did.
"""

from __future__ import annotations

import hashlib
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .configuration_caduceus import CaduceusConfig

TAGS = ("genomics", "dna", "caduceus", "caduceus-hf", "mamba")
PIPELINE_TAGS = {
    "CaduceusForMaskedLM": "fill-mask",
    "CaduceusForSequenceClassification": "text-classification",
    "CaduceusForTokenClassification": "token-classification",
    "Caduceus": "feature-extraction",
}
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class CardMetric:
    """One evaluation result for the model-index: `metric` (e.g. "accuracy") = `value` on `dataset` (its Hub id, or a
    file name for local data), of the task `task` (a pipeline tag)."""

    metric: str
    value: float
    dataset: str
    task: str
    name: str | None = None  # shown name of the metric


def hub_repo_id(source: object) -> str | None:
    """`source` when it is a Hub repo id (org/name, not an existing local path), else None: the Hub's base_model and
    datasets fields take repo ids only, so local paths are named in the card's body instead."""
    text = str(source)
    return text if _REPO_ID.fullmatch(text) and not Path(text).exists() else None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def render(
    *,
    title: str,
    body: str,
    architecture: str,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    license: str | None = None,
    metrics: Sequence[CardMetric] = (),
) -> str:
    """The README.md text: metadata (ModelCardData) then `# title` and `body` (markdown)."""
    results = [
        EvalResult(task_type=m.task, dataset_type=m.dataset, dataset_name=m.dataset, metric_type=m.metric,
                   metric_value=float(m.value), metric_name=m.name)
        for m in metrics
    ]
    data = ModelCardData(
        library_name="transformers",
        license=license,
        base_model=[base_model] if base_model else None,
        datasets=list(datasets) or None,
        tags=list(TAGS),
        pipeline_tag=PIPELINE_TAGS.get(architecture, "feature-extraction"),
        model_name=title if results else None,
        eval_results=results or None,
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{body.strip()}\n"))


# --- shared pieces of the bodies --------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """Text safe inside a markdown table cell (record names such as `gi|9626243|ref|...` contain pipes)."""
    return str(value).replace("|", "\\|")


def _name(value: object) -> str:
    """An enum's value (TrainingArguments holds OptimizerNames / SchedulerType), else str()."""
    return str(getattr(value, "value", value))


def _variant(config: CaduceusConfig) -> str:
    return "Caduceus-PS (reverse-complement equivariant)" if config.rcps else "Caduceus-Ph"


def _software() -> str:
    import torch
    import transformers

    from . import __version__

    return (
        f"caduceus-hf {__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )


def _model_rows(config: CaduceusConfig, num_parameters: int, origin: str) -> list[str]:
    return [
        "| | |",
        "|---|---|",
        f"| model | {_variant(config)}, {config.n_layer} layers, d_model {config.d_model}, "
        f"d_state {config.ssm_cfg['d_state']} |",
        f"| parameters | {num_parameters:,} |",
        f"| initialised from | {_cell(origin)} |",
    ]


def _training_rows(args: Any, global_step: int, world_size: int, train_loss: float | None) -> list[str]:
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size
    loss = "n/a" if train_loss is None else f"{train_loss:.4f}"
    return [
        "| | |",
        "|---|---|",
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


# --- the three kinds of card ------------------------------------------------------------------------------------------


def conversion_card(
    config: CaduceusConfig,
    architecture: str,
    num_parameters: int,
    source: str,
    base_model: str | None,
    license: str,
    max_abs_diff: float,
    dropped_keys: Sequence[str],
) -> str:
    """README.md of a directory made by `caduceus-hf convert` from `source` (a Hub id is `base_model`)."""
    from . import __version__

    dropped = ", ".join(f"`{k}`" for k in dropped_keys) if dropped_keys else "none"
    body = f"""
A Caduceus DNA language model (Schiff et al. 2024, arXiv:2403.03234) in the native layout of
[caduceus-hf](https://pypi.org/project/caduceus-hf/): it loads with `AutoModelForMaskedLM` / `AutoModel` after
`import caduceus_hf`, on CPU, MPS or CUDA, without `trust_remote_code`.

```python
import caduceus_hf  # registers the "caduceus" model type
from transformers import AutoModelForMaskedLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("<this repo>")
model = AutoModelForMaskedLM.from_pretrained("<this repo>")
```

## Model

| | |
|---|---|
| architecture | `{architecture}` |
| parameters | {num_parameters:,} |
| layers / d_model / d_state | {config.n_layer} / {config.d_model} / {config.ssm_cfg["d_state"]} |
| bidirectional | {config.bidirectional} ({config.bidirectional_strategy}, weight tie {config.bidirectional_weight_tie}) |
| RCPS | {config.rcps} |
| fused_add_norm semantics | {config.fused_add_norm} |
| vocabulary | 12 DNA character tokens, padded to {config.vocab_size} |

## Conversion

- source: `{source}`
- converted with caduceus-hf {__version__}; non-model entries dropped: {dropped}
- verified: the written files, reloaded through the Auto class, reproduce the source model's outputs on a probe
  sequence (max abs difference {max_abs_diff:.3g}).
"""
    return render(
        title=f"{_variant(config)}, {config.n_layer} layers, d_model {config.d_model}",
        body=body, architecture=architecture, base_model=base_model, license=license,
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
    args: Any,
    global_step: int,
    world_size: int,
    train_loss: float | None,
) -> str:
    """README.md of a pretrained MLM. `files`: dicts with path, sha256 and records (name, length); `args`: the run's
    TrainingArguments; `heldout`: nll_nats, nll_bits, perplexity, masked."""
    names = ", ".join(Path(f["path"]).name for f in files)
    lines = [
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
    ]
    heldout_name = f"held-out regions of {names}"
    metrics = [
        CardMetric("loss", heldout["nll_nats"], heldout_name, "fill-mask", "held-out NLL (nats per masked base)"),
        CardMetric("perplexity", heldout["perplexity"], heldout_name, "fill-mask", "held-out perplexity"),
    ]
    return render(
        title=f"Caduceus masked language model trained on {names}", body="\n".join(lines),
        architecture="CaduceusForMaskedLM", base_model=hub_repo_id(origin), metrics=metrics,
    )


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
    args: Any,
    global_step: int,
    world_size: int,
    train_loss: float | None,
) -> str:
    """README.md of a fine-tuned classifier; `metrics`: Trainer's final evaluation (eval_accuracy, ...)."""
    shown = {key.removeprefix("eval_"): value for key, value in metrics.items()
             if key in ("eval_accuracy", "eval_mcc", "eval_f1", "eval_mse", "eval_pearson", "eval_spearman",
                        "eval_loss")}
    evaluation = ", ".join(f"{key} {value:.4f}" for key, value in shown.items())
    conjoin = "n/a (PS: both strands scored by construction)" if config.rcps else str(config.conjoin_eval)
    head = "per-token linear, " if task == "token" else f"pooled ({config.pooling_strategy}) linear, "
    head += (
        "1 output (regression, MSE loss)" if task == "regression"
        else f"{config.num_labels} classes: {', '.join(label_names)}"
    )
    lines = [
        "Fine-tuned with `caduceus-hf finetune` (Hugging Face Trainer). Load it with "
        f"`AutoModelFor{'Token' if task == 'token' else 'Sequence'}Classification` after `import caduceus_hf`.",
        "",
        "## Model",
        "",
        *_model_rows(config, num_parameters, origin),
        f"| head | {head} |",
        f"| post-hoc reverse-complement conjoining at evaluation | {conjoin} |",
        "",
        "## Data",
        "",
        "| | |",
        "|---|---|",
        f"| training examples | {num_train:,} from `{_cell(train_source)}` |",
        f"| evaluation examples | {num_eval:,} from {_cell(eval_source)} |",
        f"| reverse-complement augmentation | {'yes (p = 0.5 per example)' if rc_augment else 'no'} |",
        "",
        "## Training",
        "",
        *_training_rows(args, global_step, world_size, train_loss),
        "",
        "## Evaluation",
        "",
        f"Over the whole evaluation set ({num_eval:,} examples): {evaluation or 'not evaluated'}."
        + ("" if task == "regression" else " (F1 of class 1 for two classes, macro F1 otherwise.)"),
        "",
        f"Software: {_software()}.",
    ]
    dataset_id = hub_repo_id(train_source)
    dataset = dataset_id or Path(str(train_source)).name
    pipeline = PIPELINE_TAGS.get(architecture, "text-classification")
    card_metrics = [CardMetric(key, value, dataset, pipeline) for key, value in shown.items() if key != "loss"]
    return render(
        title=f"Caduceus {architecture}", body="\n".join(lines), architecture=architecture,
        base_model=hub_repo_id(origin), datasets=[dataset_id] if dataset_id else (), metrics=card_metrics,
    )


__all__ = [
    "CardMetric",
    "conversion_card",
    "file_sha256",
    "finetuning_card",
    "hub_repo_id",
    "pretraining_card",
    "render",
]
