"""Training Caduceus with Hugging Face Trainer: MLM pretraining on FASTA files and fine-tuning for sequence
classification, regression or token classification on tables (CSV, TSV, JSON, parquet or a Hub dataset, through
`datasets`); `caduceus-hf pretrain` / `caduceus-hf finetune` on the command line.

Needs the [train] extra (accelerate, datasets, pysam, scikit-learn; peft for LoRA): pip install 'caduceus-hf[train]'.
"""

from .data import (
    GenomeWindowDataset,
    LabelledSequenceDataset,
    LabelledSequences,
    MLMCollator,
    PremaskedDataset,
    Region,
    parse_region,
    read_fasta,
    read_sequence_table,
    split_indices,
    split_records,
    tile_windows,
)
from .finetune import FinetuneDataOptions, FinetuneResult, finetune
from .metrics import (
    masked_lm_metrics,
    masked_token_nll,
    sequence_classification_metrics,
    token_classification_metrics,
)
from .models import build_model, default_tokenizer
from .pretrain import PretrainDataOptions, PretrainResult, build_pretraining_data, pretrain
from .trainer import CaduceusTrainer, no_weight_decay_names

__all__ = [
    "CaduceusTrainer",
    "FinetuneDataOptions",
    "FinetuneResult",
    "GenomeWindowDataset",
    "LabelledSequenceDataset",
    "LabelledSequences",
    "MLMCollator",
    "PremaskedDataset",
    "PretrainDataOptions",
    "PretrainResult",
    "Region",
    "build_model",
    "build_pretraining_data",
    "default_tokenizer",
    "finetune",
    "masked_lm_metrics",
    "masked_token_nll",
    "no_weight_decay_names",
    "parse_region",
    "pretrain",
    "read_fasta",
    "read_sequence_table",
    "sequence_classification_metrics",
    "split_indices",
    "split_records",
    "tile_windows",
    "token_classification_metrics",
]
