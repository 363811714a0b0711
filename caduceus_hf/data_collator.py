"""Masked-language-modelling collator for DNA: random replacements are nucleotides, never special tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling

from . import dna

LOSS_WEIGHTS_KEY = "loss_weights"


class DataCollatorForNucleotideMLM(DataCollatorForLanguageModeling):
    """BERT-style masking for Caduceus MLM training, usable as a Trainer `data_collator`.

    Each position holding a sequence token (not a special token of the vocabulary, not padding) is selected with
    probability `mlm_probability`; of the selected positions `mask_replace_prob` (0.8) become [MASK],
    `random_replace_prob` (0.1) become a random nucleotide drawn uniformly from A, C, G, T, and the rest keep their
    token. `labels` hold the original id at selected positions and -100 everywhere else. A C G T N are sequence
    tokens; [SEP], [PAD], [UNK], every other special token and [RESERVED] are never selected, whatever
    `special_tokens_mask` the examples carry (positions it marks are protected too).
    (The parent class draws replacements from the whole vocabulary, special tokens included.)

    Input: a list of examples, each a dict with "input_ids" (and optionally "attention_mask", "special_tokens_mask",
    and per-token float "loss_weights" of the same length) or a bare list of ids. Examples are padded with the
    tokenizer (its `padding_side`, left for Caduceus; `pad_to_multiple_of` honoured).

    Output (torch tensors, batch B, padded length L): "input_ids" (B, L) long, "labels" (B, L) long,
    "attention_mask" (B, L) when the examples are dicts, and "loss_weights" (B, L) float (0 on padding) when the
    examples carry them (CaduceusForMaskedLM takes them as an argument).

    Only `mlm=True` and `return_tensors="pt"` are supported; `seed` makes the masking reproducible as in the parent.
    """

    def __post_init__(self) -> None:
        if not self.mlm:
            raise ValueError(
                "DataCollatorForNucleotideMLM only does masked language modelling (mlm=True); "
                "use transformers.DataCollatorForLanguageModeling(mlm=False) for causal LM"
            )
        if self.whole_word_mask:
            raise ValueError("whole_word_mask has no meaning for a character-level DNA tokenizer")
        if self.return_tensors != "pt":
            raise ValueError(
                f"DataCollatorForNucleotideMLM supports return_tensors='pt' only, got {self.return_tensors!r}"
            )
        super().__post_init__()
        vocab = self.tokenizer.get_vocab()
        checked = (*dna.SPECIAL_TOKENS, *"ACGT")
        mismatched = {tok: vocab.get(tok) for tok in checked if vocab.get(tok) != dna.VOCAB[tok]}
        if mismatched:
            raise ValueError(
                f"DataCollatorForNucleotideMLM needs the Caduceus vocabulary {dna.VOCAB}; "
                f"the tokenizer maps {mismatched}"
            )
        self._protected_ids = torch.tensor(sorted({*dna.SPECIAL_TOKEN_IDS.values(), *self.tokenizer.all_special_ids}))
        self._nucleotide_ids = torch.tensor(dna.NUCLEOTIDE_IDS)

    def torch_call(self, examples: Sequence[Any]) -> dict[str, Any]:
        if not examples:
            raise ValueError("DataCollatorForNucleotideMLM got an empty list of examples")
        with_weights = isinstance(examples[0], Mapping) and LOSS_WEIGHTS_KEY in examples[0]
        if not with_weights:
            return super().torch_call(examples)
        if not all(isinstance(ex, Mapping) and LOSS_WEIGHTS_KEY in ex for ex in examples):
            raise ValueError(f"either every example or none must have {LOSS_WEIGHTS_KEY!r}")
        weights = [torch.as_tensor(ex[LOSS_WEIGHTS_KEY], dtype=torch.float32) for ex in examples]
        for i, (ex, w) in enumerate(zip(examples, weights, strict=True)):
            if w.shape != (len(ex["input_ids"]),):
                raise ValueError(
                    f"example {i}: {LOSS_WEIGHTS_KEY} must have one weight per input id "
                    f"({len(ex['input_ids'])}), got shape {tuple(w.shape)}"
                )
        batch = super().torch_call([{k: v for k, v in ex.items() if k != LOSS_WEIGHTS_KEY} for ex in examples])
        batch[LOSS_WEIGHTS_KEY] = self._pad_like_input_ids(weights, batch["input_ids"].shape[1])
        return batch

    def _pad_like_input_ids(self, rows: list[torch.Tensor], length: int) -> torch.Tensor:
        """Stack 1-d rows into (B, length), padding with 0 on the tokenizer's padding side."""
        out = torch.zeros(len(rows), length, dtype=torch.float32)
        for i, row in enumerate(rows):
            if self.tokenizer.padding_side == "left":
                out[i, length - len(row) :] = row
            else:
                out[i, : len(row)] = row
        return out

    def torch_mask_tokens(
        self, inputs: torch.Tensor, special_tokens_mask: torch.Tensor | None = None, offset_mapping: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask `inputs` (B, L) in place; returns (inputs, labels), labels -100 where nothing was masked."""
        labels = inputs.clone()
        protected = torch.isin(inputs, self._protected_ids)
        if special_tokens_mask is not None:
            protected |= torch.as_tensor(special_tokens_mask, dtype=torch.bool)
        probability = torch.full(inputs.shape, self.mlm_probability).masked_fill_(protected, 0.0)
        selected = torch.bernoulli(probability, generator=self.generator).bool()
        labels[~selected] = -100

        to_mask = torch.bernoulli(torch.full(inputs.shape, self.mask_replace_prob), generator=self.generator).bool()
        to_mask &= selected
        inputs[to_mask] = self.tokenizer.mask_token_id

        if self.random_replace_prob == 0 or self.mask_replace_prob == 1:
            return inputs, labels
        # Conditional probability among the selected positions not already turned into [MASK].
        random_prob = self.random_replace_prob / (1 - self.mask_replace_prob)
        to_random = torch.bernoulli(torch.full(inputs.shape, random_prob), generator=self.generator).bool()
        to_random &= selected & ~to_mask
        draws = torch.randint(len(self._nucleotide_ids), inputs.shape, generator=self.generator)
        inputs[to_random] = self._nucleotide_ids[draws[to_random]]
        return inputs, labels


__all__ = ["DataCollatorForNucleotideMLM"]
