"""Fine-tuning Caduceus for sequence classification, sequence regression or token classification on tables (CSV, TSV,
JSON, parquet or a Hub dataset) with Hugging Face Trainer.

The Caduceus recipe (Schiff et al. 2024): Ph models train with reverse-complement augmentation and are evaluated with
post-hoc conjoining (the forward and reverse-complement passes averaged, config.conjoin_eval); PS models need
neither, their head averages the two strands and is RC-invariant by construction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from ..configuration_caduceus import POOLING_STRATEGIES, CaduceusConfig
from ..genomics import normalise_permissions
from ..modeling_caduceus import CaduceusPreTrainedModel
from ..model_card import finetuning_card
from .data import TASKS, LabelledSequenceDataset, LabelledSequences, read_sequence_table, split_indices
from .metrics import (
    argmax_logits,
    regression_metrics,
    sequence_classification_metrics,
    token_classification_metrics,
)
from .models import ModelSource, build_model, default_tokenizer, describe_origin
from .trainer import CaduceusTrainer

PathLike = str | os.PathLike[str]


@dataclass
class FinetuneDataOptions:
    """Where the examples come from and how they are fed.

    task: "sequence" (one class per sequence), "regression" (one number per sequence: MSE loss, Pearson and Spearman
        metrics) or "token" (one class per base).
    eval_file: a separate evaluation table; without it, a fixed random `eval_fraction` of the training table
        (permutation seeded by `split_seed`) is held out for evaluation.
    sequence_column / label_column: header names (default: the usual ones, see `read_sequence_table`).
    dataset_config / train_split / eval_split: for a Hub dataset id, its configuration and splits (eval_split, when
        given, is evaluated on instead of a held-out fraction).
    max_length: truncate to this many tokens ([SEP] included); None keeps whole sequences.
    rc_augment: reverse-complement training examples with probability 1/2; None = the recipe: yes for Ph models, no
        for PS models.
    """

    task: str = "sequence"
    eval_file: PathLike | None = None
    eval_fraction: float = 0.2
    split_seed: int = 0
    sequence_column: str | None = None
    label_column: str | None = None
    max_length: int | None = None
    rc_augment: bool | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str | None = None


@dataclass
class FinetuneResult:
    """output_dir holds the final model, tokenizer and README.md; metrics are the final evaluation over the whole
    evaluation set (eval_accuracy, eval_mcc, eval_f1, eval_loss, ...); log_history is Trainer's."""

    output_dir: Path
    global_step: int
    metrics: dict[str, float]
    train_loss: float | None
    num_train: int
    num_eval: int
    log_history: list[dict]


def load_splits(train_file: PathLike, options: FinetuneDataOptions) -> tuple[LabelledSequences, LabelledSequences, str]:
    """(training examples, evaluation examples, a description of where the evaluation examples come from)."""
    if options.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {options.task!r}")
    columns = dict(sequence_column=options.sequence_column, label_column=options.label_column)
    table = read_sequence_table(train_file, options.task, config=options.dataset_config, split=options.train_split,
                                **columns)
    if options.eval_file is not None:
        eval_source = options.eval_file
        held_out = read_sequence_table(options.eval_file, options.task, training=False, **columns)
    elif options.eval_split is not None:
        eval_source = f"{train_file} ({options.eval_split})"
        held_out = read_sequence_table(train_file, options.task, training=False, config=options.dataset_config,
                                       split=options.eval_split, **columns)
    else:
        train_idx, eval_idx = split_indices(len(table), options.eval_fraction, options.split_seed)
        source = f"`{train_file}` (a fixed {options.eval_fraction:g} of it, permutation seed {options.split_seed})"
        return table.subset(train_idx), table.subset(eval_idx), source
    if options.task == "sequence" and held_out.label_names != table.label_names:
        names = set(held_out.label_names)
        if not names <= set(table.label_names):
            raise ValueError(
                f"{eval_source}: labels {sorted(names - set(table.label_names))} do not occur in {train_file}"
            )
        ids = {name: i for i, name in enumerate(table.label_names)}
        held_out = LabelledSequences(
            held_out.path, held_out.task, held_out.sequences,
            [ids[held_out.label_names[label]] for label in held_out.labels], table.label_names, held_out.lines,
        )
    return table, held_out, f"`{eval_source}`"


def finetune(
    train_file: PathLike,
    model: ModelSource,
    training_args: TrainingArguments,
    data: FinetuneDataOptions | None = None,
    pooling_strategy: str | None = None,
    conjoin_eval: bool | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    resume_from_checkpoint: bool | str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    allow_missing: bool = False,
) -> FinetuneResult:
    """Fine-tune a Caduceus classifier with Trainer and evaluate it over the whole evaluation set.

    model: a CaduceusConfig (from scratch), or any Caduceus checkpoint directory or Hub id (an MLM checkpoint's
    backbone is loaded and the head is new), or a classification model object (used as is; pooling_strategy and
    conjoin_eval, when given, are set on its config).
    pooling_strategy: override config.pooling_strategy (sequence task; the recipe uses "mean").
    conjoin_eval: post-hoc RC conjoining at evaluation for Ph models; None = yes (the recipe). Ignored by PS models.
    allow_missing: accept a checkpoint lacking weights other than the new head (initialised as new).

    Batches are padded on the tokenizer's side (left) with an attention mask. The model, the tokenizer and a model card
    with the final metrics are saved in `training_args.output_dir`.
    """
    data = data or FinetuneDataOptions()
    if pooling_strategy is not None and pooling_strategy not in POOLING_STRATEGIES:
        raise ValueError(f"pooling_strategy must be one of {POOLING_STRATEGIES}, got {pooling_strategy!r}")
    if pooling_strategy is not None and data.task == "token":
        raise ValueError("pooling_strategy (--pooling) applies to sequence tasks; a token task labels every base "
                         "and pools nothing")
    train_set, eval_set, eval_source = load_splits(train_file, data)
    if isinstance(model, CaduceusPreTrainedModel):
        classifier = build_model(data.task, model)
        if classifier.config.num_labels != train_set.num_labels:
            raise ValueError(f"the model has {classifier.config.num_labels} labels, the data {train_set.num_labels}")
        # Options given explicitly apply to the model object's config; otherwise its config stands.
        if pooling_strategy is not None:
            classifier.config.pooling_strategy = pooling_strategy
        if conjoin_eval is not None:
            classifier.config.conjoin_eval = conjoin_eval
    else:
        overrides = {"conjoin_eval": True if conjoin_eval is None else conjoin_eval}
        if data.task != "regression":
            id2label = dict(enumerate(train_set.label_names))
            overrides.update(id2label=id2label, label2id={name: i for i, name in id2label.items()})
        if pooling_strategy is not None:
            overrides["pooling_strategy"] = pooling_strategy
        if isinstance(model, CaduceusConfig):
            set_seed(training_args.seed)  # the same initial weights for the same seed
        classifier = build_model(data.task, model, allow_missing=allow_missing, **overrides)
    tokenizer = tokenizer or default_tokenizer(model)
    rc_augment = (not classifier.config.rcps) if data.rc_augment is None else data.rc_augment

    token_task = data.task == "token"
    collator_cls = DataCollatorForTokenClassification if token_task else DataCollatorWithPadding
    trainer = CaduceusTrainer(
        model=classifier,
        args=training_args,
        train_dataset=LabelledSequenceDataset(train_set, tokenizer, rc_augment, data.max_length),
        eval_dataset=LabelledSequenceDataset(eval_set, tokenizer, False, data.max_length),
        data_collator=collator_cls(tokenizer),
        processing_class=tokenizer,
        compute_metrics=token_classification_metrics if token_task else
        regression_metrics if data.task == "regression" else sequence_classification_metrics,
        preprocess_logits_for_metrics=argmax_logits if token_task else None,
        callbacks=list(callbacks),
    )
    train_output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = trainer.evaluate()

    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        normalise_permissions(output_dir)
        card = finetuning_card(
            config=classifier.config,
            architecture=type(classifier).__name__,
            num_parameters=classifier.num_parameters(),
            origin=describe_origin(model),
            task=data.task,
            train_source=str(train_file),
            eval_source=eval_source,
            num_train=len(train_set),
            num_eval=len(eval_set),
            label_names=train_set.label_names,
            rc_augment=rc_augment,
            metrics=metrics,
            args=training_args,
            global_step=trainer.state.global_step,
            world_size=training_args.world_size,
            train_loss=train_output.training_loss,
        )
        (output_dir / "README.md").write_text(card)
    return FinetuneResult(
        output_dir, trainer.state.global_step, metrics, train_output.training_loss, len(train_set), len(eval_set),
        trainer.state.log_history,
    )


__all__ = ["FinetuneDataOptions", "FinetuneResult", "finetune", "load_splits"]
