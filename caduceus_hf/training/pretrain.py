"""Masked-language-model pretraining of Caduceus on FASTA files with Hugging Face Trainer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainingArguments, set_seed

from ..configuration_caduceus import CaduceusConfig
from ..genomics import check_positive, normalise_permissions
from ..modeling_caduceus import CaduceusForMaskedLM
from ..model_card import file_sha256, pretraining_card
from .data import (
    FastaRecord,
    GenomeSplit,
    GenomeWindowDataset,
    MLMCollator,
    PremaskedDataset,
    read_fasta_files,
    split_records,
    tile_windows,
)
from .metrics import masked_lm_metrics, masked_token_nll
from .models import build_model, default_tokenizer, describe_origin
from .trainer import CaduceusTrainer

PathLike = str | os.PathLike[str]


@dataclass
class PretrainDataOptions:
    """How FASTA records become training and held-out windows.

    window / stride: bases per window ([SEP] is appended) and the step between training windows (default: window).
    holdout_fraction: the last fraction of each record is held out, unless holdout_regions (samtools strings,
        1-based inclusive, one per record at most) name the held-out regions.
    mlm_probability: fraction of bases masked, in training (80/10/10) and in the held-out set (all [MASK]).
    rc_augment: reverse-complement each training window with probability 1/2; None = the Caduceus recipe: yes for
        Ph models, no for PS models (RC-equivariant by construction).
    softmask_weight: loss weight of lowercase (soft-masked) bases, e.g. 0.1; None weighs every base 1.
    max_n_fraction: windows with more non-ACGT letters than this are skipped.
    eval_mask_seed: seed of the held-out masking (the same positions are scored at every evaluation).
    max_eval_windows: evaluate on this many evenly spaced held-out windows (None: all of them).
    """

    window: int = 1024
    stride: int | None = None
    holdout_fraction: float = 0.05
    holdout_regions: tuple[str, ...] = ()
    mlm_probability: float = 0.15
    rc_augment: bool | None = None
    softmask_weight: float | None = None
    max_n_fraction: float = 0.1
    eval_mask_seed: int = 0
    max_eval_windows: int | None = None


@dataclass
class PretrainingData:
    """Everything `pretrain` feeds Trainer, and what the model card reports."""

    records: list[FastaRecord]
    split: GenomeSplit
    train: GenomeWindowDataset
    eval: PremaskedDataset
    options: PretrainDataOptions
    rc_augment: bool


def check_options(options: PretrainDataOptions, tokenizer: PreTrainedTokenizerBase) -> None:
    """A ValueError naming the option for values that would fail late (after training) or silently do nothing."""
    check_positive(options.window, "window")
    if options.stride is not None:
        check_positive(options.stride, "stride")
    if options.window + 1 > tokenizer.model_max_length:
        raise ValueError(
            f"window {options.window:,} bases + [SEP] does not fit the tokenizer's {tokenizer.model_max_length:,} tokens"
        )
    if not 0.0 < options.mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1], got {options.mlm_probability}")
    if not 0.0 <= options.max_n_fraction <= 1.0:
        raise ValueError(f"max_n_fraction must be in [0, 1], got {options.max_n_fraction}")
    if options.max_eval_windows is not None:
        check_positive(options.max_eval_windows, "max_eval_windows")


def build_pretraining_data(
    fasta_files: Sequence[PathLike],
    tokenizer: PreTrainedTokenizerBase,
    options: PretrainDataOptions,
    rc_augment: bool,
) -> PretrainingData:
    """Read the FASTA files, split each record into training and held-out parts, tile both into windows, and mask
    the held-out windows once."""
    check_options(options, tokenizer)
    records = read_fasta_files(fasta_files)
    sequences = {r.name: r.sequence for r in records}
    split = split_records(records, options.holdout_fraction, options.holdout_regions)
    train_windows = tile_windows(split.train, sequences, options.window, options.stride, options.max_n_fraction)
    eval_windows = tile_windows(split.heldout, sequences, options.window, None, options.max_n_fraction)
    names = ", ".join(str(p) for p in fasta_files)
    if not train_windows or not eval_windows:
        segments = split.train if not train_windows else split.heldout
        if tile_windows(segments, sequences, options.window, options.stride, max_n_fraction=1.0):
            which = "training" if not train_windows else "held-out"
            raise ValueError(
                f"every {which} window of {options.window} bases in {names} has more than "
                f"{options.max_n_fraction:.0%} of N or other non-ACGT letters (assembly gaps); no usable DNA"
            )
    if not train_windows:
        raise ValueError(f"no training window of {options.window} bases fits outside the held-out regions of {names}")
    if not eval_windows:
        raise ValueError(
            f"no held-out window of {options.window} bases fits in the held-out regions "
            f"{[str(r) for r in split.heldout]} of {names}; hold out more or use a smaller window"
        )
    if options.max_eval_windows is not None and len(eval_windows) > options.max_eval_windows:
        step = len(eval_windows) / options.max_eval_windows
        eval_windows = [eval_windows[int(i * step)] for i in range(options.max_eval_windows)]
    train = GenomeWindowDataset(sequences, train_windows, tokenizer, rc_augment, options.softmask_weight)
    plain_eval = GenomeWindowDataset(sequences, eval_windows, tokenizer, False, None)
    held_out = PremaskedDataset(plain_eval, tokenizer, options.mlm_probability, options.eval_mask_seed)
    return PretrainingData(records, split, train, held_out, options, rc_augment)


@dataclass
class PretrainResult:
    """output_dir holds the final model, tokenizer and README.md; heldout has nll_nats / nll_bits (per masked base),
    perplexity and masked (count) of the final evaluation; log_history is Trainer's (training losses, evaluations)."""

    output_dir: Path
    global_step: int
    heldout: dict[str, float]
    train_loss: float | None
    data: PretrainingData
    log_history: list[dict]


def pretrain(
    fasta_files: Sequence[PathLike],
    model: CaduceusConfig | PathLike | CaduceusForMaskedLM,
    training_args: TrainingArguments,
    data: PretrainDataOptions | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    resume_from_checkpoint: bool | str | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    allow_missing: bool = False,
) -> PretrainResult:
    """Pretrain (or continue pretraining) a Caduceus MLM on FASTA files with Trainer.

    Trainer checkpoints go to `training_args.output_dir` (checkpoint-N folders, per `save_steps`); pass
    `resume_from_checkpoint=True` (the last one there) or a checkpoint path to resume. At the end the model is
    evaluated on the held-out windows, and the model, the tokenizer and a model card (README.md: files, windows,
    regions, steps, final held-out loss) are saved in `training_args.output_dir`.

    Trainer's `eval_loss` is a mean of per-batch means; the reported held-out loss (`eval_nll_nats`) is the exact
    mean over every masked base of the held-out set.
    """
    data = data or PretrainDataOptions()
    if isinstance(model, CaduceusConfig):
        # Trainer seeds only after the model exists; seed first so a config gives the same initial weights each run.
        set_seed(training_args.seed)
    mlm = build_model("mlm", model, allow_missing=allow_missing)
    tokenizer = tokenizer or default_tokenizer(model)
    rc_augment = (not mlm.config.rcps) if data.rc_augment is None else data.rc_augment
    prepared = build_pretraining_data(fasta_files, tokenizer, data, rc_augment)

    trainer = CaduceusTrainer(
        model=mlm,
        args=training_args,
        train_dataset=prepared.train,
        eval_dataset=prepared.eval,
        data_collator=MLMCollator(tokenizer, mlm_probability=data.mlm_probability),
        processing_class=tokenizer,
        compute_metrics=masked_lm_metrics,
        preprocess_logits_for_metrics=masked_token_nll,
        callbacks=list(callbacks),
    )
    train_output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    final = trainer.evaluate()
    heldout = {key: final[f"eval_{key}"] for key in ("nll_nats", "nll_bits", "perplexity", "masked")}

    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        normalise_permissions(output_dir)
    if trainer.is_world_process_zero():
        files = []
        for path in fasta_files:
            records = [(r.name, len(r)) for r in prepared.records if r.path == str(Path(path))]
            files.append({"path": str(path), "sha256": file_sha256(path), "records": records})
        card = pretraining_card(
            config=mlm.config,
            num_parameters=mlm.num_parameters(),
            origin=describe_origin(model),
            files=files,
            window=data.window,
            stride=data.stride or data.window,
            train_windows=len(prepared.train),
            eval_windows=len(prepared.eval),
            train_regions=[str(r) for r in prepared.split.train],
            heldout_regions=[str(r) for r in prepared.split.heldout],
            mlm_probability=data.mlm_probability,
            rc_augment=rc_augment,
            softmask_weight=data.softmask_weight,
            heldout=heldout,
            args=training_args,
            global_step=trainer.state.global_step,
            world_size=training_args.world_size,
            train_loss=train_output.training_loss,
        )
        (output_dir / "README.md").write_text(card)
    return PretrainResult(
        output_dir, trainer.state.global_step, heldout, train_output.training_loss, prepared, trainer.state.log_history
    )


__all__ = ["PretrainDataOptions", "PretrainResult", "PretrainingData", "build_pretraining_data", "pretrain"]
