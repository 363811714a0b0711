"""Fill-mask for DNA: the model's distribution over A, C, G, T at each [MASK] of a sequence.

Probabilities are the softmax of the masked-LM logits restricted to the four nucleotides (the model is trained to
predict bases only; the mass it puts on special tokens is negligible and not a prediction anyone wants). The input
gets [SEP] appended, as in pretraining; several masks in one sequence are predicted jointly from one forward pass
(each sees the others masked).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..genomics import MASK_TOKEN, check_dna, check_positive, read_fasta
from .embed import check_finite
from .models import ModelSource, load_model

PathLike = str | os.PathLike[str]
NUCLEOTIDES = ("A", "C", "G", "T")
MASK = MASK_TOKEN


@dataclass(frozen=True)
class MaskPrediction:
    """The prediction at one [MASK]: `position` is 1-based among the sequence's bases (a [MASK] counts as one);
    `top` holds (nucleotide, probability) pairs, most likely first."""

    id: str
    position: int
    top: tuple[tuple[str, float], ...]

    def __str__(self) -> str:
        return f"{self.id}\tposition {self.position}\t" + "  ".join(f"{b} {p:.3f}" for b, p in self.top)


def fill_mask(
    sequences: Sequence[str] | Sequence[tuple[str, str]],
    model: ModelSource = None,
    *,
    top_k: int = 4,
    batch_size: int = 16,
    device: str | None = None,
    dtype: str | None = None,
    allow_missing: bool = False,
) -> list[MaskPrediction]:
    """Predict every [MASK] of `sequences` (strings, or (id, sequence) pairs; plain strings are named seq1, seq2...).

    `model`, `device`, `dtype`: see `load_model` (default: the bundled demo model). Returns one MaskPrediction per
    [MASK], in input order. A sequence without [MASK] is an error.
    """
    if not 1 <= top_k <= len(NUCLEOTIDES):
        raise ValueError(f"top_k must be between 1 and {len(NUCLEOTIDES)}, got {top_k}")
    check_positive(batch_size, "batch_size")
    named = [item if isinstance(item, tuple) else (f"seq{i + 1}", item) for i, item in enumerate(sequences)]
    if not named:
        raise ValueError("no sequences given")
    for name, text in named:
        check_dna(text, f"sequence {name!r}", allow_mask_token=True)
        if MASK not in text:
            raise ValueError(f"sequence {name!r} has no {MASK} to fill: {text[:60]!r}")
    mlm, tokenizer = load_model(model, masked_lm=True, device=device, dtype=dtype, allow_missing=allow_missing)
    for name, text in named:
        tokens = len(text) - (len(MASK) - 1) * text.count(MASK) + 1
        if tokens > tokenizer.model_max_length:
            raise ValueError(
                f"sequence {name!r} has {tokens:,} tokens ([SEP] included), more than the model's "
                f"{tokenizer.model_max_length:,}"
            )
    base_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(NUCLEOTIDES)))
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(named), batch_size):
            batch = named[start : start + batch_size]
            encoded = tokenizer([text for _, text in batch], padding=True, return_tensors="pt")
            mlm.validate_inputs(**encoded)
            logits = mlm(**encoded.to(mlm.device), conjoin=False, return_dict=True).logits.float().cpu()
            probs = check_finite(logits[..., base_ids].softmax(-1), "probabilities")
            first = encoded["attention_mask"].argmax(-1).cpu()
            for row, (name, _) in enumerate(batch):
                masked = (encoded["input_ids"][row].cpu() == tokenizer.mask_token_id).nonzero().flatten()
                for token in masked.tolist():
                    values, order = probs[row, token].topk(top_k)
                    top = tuple((NUCLEOTIDES[i], float(p)) for p, i in zip(values.tolist(), order.tolist()))
                    predictions.append(MaskPrediction(name, token - int(first[row]) + 1, top))
    return predictions


def fill_mask_fasta(fasta: PathLike, model: ModelSource = None, **kwargs) -> list[MaskPrediction]:
    """`fill_mask` over the records of a FASTA file whose sequences contain [MASK] tokens (named by record)."""
    return fill_mask([(r.name, r.sequence) for r in read_fasta(fasta, allow_mask_token=True)], model, **kwargs)


__all__ = ["MaskPrediction", "fill_mask", "fill_mask_fasta"]
