"""Building the model and tokenizer a training run starts from: a config (random initialisation), a model directory or
Hub id (any Caduceus checkpoint: an MLM's backbone loads into a classifier, whose head is new), or a model object."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedTokenizerBase,
)

from ..configuration_caduceus import CaduceusConfig
from ..modeling_caduceus import (
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
    CaduceusPreTrainedModel,
)
from ..tokenization_caduceus import CaduceusTokenizer

PathLike = str | os.PathLike[str]
ModelSource = CaduceusConfig | PathLike | CaduceusPreTrainedModel
_CLASSES = {
    "mlm": (CaduceusForMaskedLM, AutoModelForMaskedLM),
    "sequence": (CaduceusForSequenceClassification, AutoModelForSequenceClassification),
    "token": (CaduceusForTokenClassification, AutoModelForTokenClassification),
}


def describe_origin(source: ModelSource) -> str:
    """What a run started from, for model cards: a path or Hub id, or "random initialisation"."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name_or_path", "")
    return str(name) if name else "random initialisation"


def build_model(kind: str, source: ModelSource, **config_overrides: Any) -> CaduceusPreTrainedModel:
    """A model of `kind` ("mlm", "sequence" or "token") from `source`, with `config_overrides` (num_labels,
    id2label, pooling_strategy, conjoin_eval, ...) applied to its config.

    A model object is returned as is (overrides must then be empty). A checkpoint of another kind loads what it
    shares: the backbone of an MLM loads into a classifier, and the classifier's head is newly initialised.
    """
    cls, auto_cls = _CLASSES[kind]
    if isinstance(source, CaduceusPreTrainedModel):
        if not isinstance(source, cls):
            raise ValueError(f"expected a {cls.__name__}, got a {type(source).__name__}")
        if config_overrides:
            raise ValueError(f"cannot apply config overrides {sorted(config_overrides)} to a model object")
        return source
    if isinstance(source, CaduceusConfig):
        # Through the constructor, so that the overrides are validated like any config value.
        return cls(CaduceusConfig(**{**source.to_dict(), **config_overrides}))
    config = AutoConfig.from_pretrained(source)
    if not isinstance(config, CaduceusConfig):
        raise ValueError(f"{source}: not a Caduceus checkpoint (model_type {getattr(config, 'model_type', None)!r})")
    config = CaduceusConfig(**{**config.to_dict(), **config_overrides})
    return auto_cls.from_pretrained(source, config=config)


def default_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a checkpoint directory, else the standard CaduceusTokenizer (fixed vocabulary)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir() and (path / "tokenizer_config.json").is_file():
            return CaduceusTokenizer.from_pretrained(path)
    return CaduceusTokenizer()


__all__ = ["ModelSource", "build_model", "default_tokenizer", "describe_origin"]
