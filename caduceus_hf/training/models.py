"""Building the model and tokenizer a training run starts from: a config (random initialisation), a model directory or
Hub id (any Caduceus checkpoint: an MLM's backbone loads into a classifier, whose head is new), or a model object."""

from __future__ import annotations

import os
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..configuration_caduceus import CaduceusConfig
from ..loading import load_pretrained, load_tokenizer
from ..modeling_caduceus import (
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
    CaduceusPreTrainedModel,
)

PathLike = str | os.PathLike[str]
ModelSource = CaduceusConfig | PathLike | CaduceusPreTrainedModel
_CLASSES = {
    "mlm": CaduceusForMaskedLM,
    "sequence": CaduceusForSequenceClassification,
    "regression": CaduceusForSequenceClassification,
    "token": CaduceusForTokenClassification,
}
# What a checkpoint of another kind lacks (a new head) or has in excess (its own head).
_NEW_KEYS = {"mlm": ("lm_head.",), "sequence": ("score.",), "regression": ("score.",), "token": ("score.",)}
_IGNORED_KEYS = {"mlm": ("score.",), "sequence": ("lm_head.",), "regression": ("lm_head.",), "token": ("lm_head.",)}


def describe_origin(source: ModelSource) -> str:
    """What a run started from, for model cards: a path or Hub id, or "random initialisation"."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name_or_path", "")
    return str(name) if name else "random initialisation"


def build_model(
    kind: str, source: ModelSource, allow_missing: bool = False, **config_overrides: Any
) -> CaduceusPreTrainedModel:
    """A model of `kind` ("mlm", "sequence", "regression" or "token") from `source`, with `config_overrides`
    (num_labels, id2label, pooling_strategy, conjoin_eval, ...) applied to its config.

    A model object is returned as is (overrides must then be empty). A checkpoint of another kind loads what it
    shares: the backbone of an MLM loads into a classifier, and the classifier's head is newly initialised. Any other
    missing weight is an error unless allow_missing; unexpected and mis-shaped weights always are (see
    `caduceus_hf.loading.load_pretrained`).
    """
    cls = _CLASSES[kind]
    if kind == "regression":
        # One output; id2label sets num_labels (giving both, with a checkpoint's 2-entry id2label, conflicts).
        config_overrides = {**config_overrides, "id2label": {0: "target"}, "label2id": {"target": 0},
                            "problem_type": "regression"}
    if isinstance(source, CaduceusPreTrainedModel):
        if not isinstance(source, cls):
            raise ValueError(f"expected a {cls.__name__}, got a {type(source).__name__}")
        if kind == "regression":
            for key in ("id2label", "label2id", "problem_type"):
                config_overrides.pop(key)
            if source.config.num_labels != 1:
                raise ValueError(f"a regression model has one output, this one has {source.config.num_labels}")
        if config_overrides:
            raise ValueError(f"cannot apply config overrides {sorted(config_overrides)} to a model object")
        return source
    if isinstance(source, CaduceusConfig):
        # Through the constructor, so that the overrides are validated like any config value.
        return cls(CaduceusConfig(**{**source.to_dict(), **config_overrides}))
    return load_pretrained(
        cls, source, allow_missing=allow_missing, new_keys=_NEW_KEYS[kind], ignored_keys=_IGNORED_KEYS[kind],
        **config_overrides,
    )


def default_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a checkpoint directory, else the standard CaduceusTokenizer (fixed vocabulary)."""
    return load_tokenizer(source if isinstance(source, (str, os.PathLike)) else None)


__all__ = ["ModelSource", "build_model", "default_tokenizer", "describe_origin"]
