"""Value checks of model inputs, kept out of forward.

A forward pass reads no tensor value on the host (no int(tensor), bool(tensor), .item()), so that it never waits for
the GPU and traces into one graph for torch.export and torch.compile. What depends on values (ids in the vocabulary,
0/1 masks, rows with at least one real token, labels in range) is checked here instead: the applications call it,
and so should any caller that does not build its batches with the package's tokenizer and collators.
Forward's own checks are on shapes and dtypes only.
"""

from __future__ import annotations

from typing import Literal

import torch

from .configuration_caduceus import CaduceusConfig

LabelKind = Literal["token_ids", "token_classes", "sequence_classes"]
"""What labels hold: vocabulary ids or -100 (masked LM), class ids or -100 per token, one class per sequence."""


def validate_inputs(
    config: CaduceusConfig,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    label_kind: LabelKind | None = None,
) -> None:
    """Raise ValueError, naming the problem, where a batch's values are not what the model expects.

    input_ids (batch, length) or (batch, length, 2): ids in [0, config.vocab_size).
    attention_mask (batch, length) or (batch, length, 2): bool, or 0/1 values (forward reads any nonzero value as a
        real token), with at least one real token in every row.
    labels: checked against `label_kind` (integer class labels only, for "sequence_classes").
    """
    if input_ids is not None and input_ids.numel():
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= config.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"input_ids contain token id {bad}, outside the vocabulary [0, {config.vocab_size})")
    if attention_mask is not None and attention_mask.numel():
        if attention_mask.dtype != torch.bool:
            odd = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
            if odd.numel():
                raise ValueError(
                    f"attention_mask must hold 0 and 1 (or bool), got {odd[0].item()!r}; forward would read any "
                    "nonzero value as a real token"
                )
        empty = ~(attention_mask != 0).any(dim=1)
        if bool(empty.any()):
            rows = sorted(set(torch.nonzero(empty)[:, 0].tolist()))
            raise ValueError(f"attention_mask has no real token in row(s) {rows}")
    if labels is not None and label_kind is not None:
        _check_labels(config, labels, label_kind)


def _check_labels(config: CaduceusConfig, labels: torch.Tensor, label_kind: LabelKind) -> None:
    if label_kind == "sequence_classes":
        single_label = config.problem_type == "single_label_classification" or (
            config.problem_type is None and config.num_labels > 1 and not labels.is_floating_point()
        )
        if not single_label:
            return
        values, high, what, ignored = labels.reshape(-1), config.num_labels, "class ids", ""
    else:
        values, ignored = labels[labels != -100], " or -100 (ignored)"
        high = config.vocab_size if label_kind == "token_ids" else config.num_labels
        what = "token ids" if label_kind == "token_ids" else "class ids"
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= high):
        raise ValueError(
            f"labels must be {what} in [0, {high}){ignored}; got {int(values.min())}..{int(values.max())}"
        )


__all__ = ["LabelKind", "validate_inputs"]
