"""The DNA vocabulary of the published Caduceus checkpoints and reverse-complement helpers.

One source of truth for the token ids: the tokenizer, the config defaults and the model's complement map read it here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

SPECIAL_TOKENS: tuple[str, ...] = ("[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[RESERVED]", "[UNK]")
NUCLEOTIDES: tuple[str, ...] = ("A", "C", "G", "T", "N")
VOCAB: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + NUCLEOTIDES)}
SPECIAL_TOKEN_IDS: dict[str, int] = {tok: VOCAB[tok] for tok in SPECIAL_TOKENS}
NUCLEOTIDE_IDS: tuple[int, ...] = tuple(VOCAB[b] for b in "ACGT")
# Tokens that frame or pad a sequence rather than belong to it: a reverse complement leaves them where they are.
FRAMING_TOKEN_IDS: tuple[int, ...] = tuple(VOCAB[t] for t in ("[CLS]", "[SEP]", "[BOS]", "[PAD]"))

# The one complement table: IUPAC codes (ambiguity codes complement too); case is kept, anything else is left as is
# (it tokenizes to [UNK] anyway).
_IUPAC = "ACGTUNRYSWKMBDHV"
_IUPAC_COMPLEMENT = "TGCAANYRSWMKVHDB"
_STRING_COMPLEMENT = str.maketrans(_IUPAC + _IUPAC.lower(), _IUPAC_COMPLEMENT + _IUPAC_COMPLEMENT.lower())

# Token id -> id of the complementary token (from the table above); every special token is its own complement.
DNA_COMPLEMENT_MAP: dict[int, int] = {
    i: VOCAB[tok.translate(_STRING_COMPLEMENT)] if tok in NUCLEOTIDES else i for tok, i in VOCAB.items()
}

def reverse_complement(sequence: str) -> str:
    """Reverse complement of a DNA string (IUPAC aware, case preserving): "AACG" -> "CGTT"."""
    if not isinstance(sequence, str):
        raise TypeError(f"reverse_complement expects a str, got {type(sequence).__name__}")
    return sequence.translate(_STRING_COMPLEMENT)[::-1]


def complement_table(complement_map: Mapping[int, int], vocab_size: int | None = None) -> torch.Tensor:
    """A (vocab_size,) long tensor t with t[i] = complement of i (identity where the map is silent)."""
    size = vocab_size if vocab_size is not None else max(complement_map) + 1
    table = torch.arange(size, dtype=torch.long)
    for k, v in complement_map.items():
        if int(k) < size:
            table[int(k)] = int(v)
    return table


def reverse_complement_ids(
    input_ids: torch.Tensor,
    complement_map: Mapping[int, int] | torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reverse complement of token ids (..., L): complement every id and reverse the last axis.

    With an `attention_mask`, only the real tokens are reversed and masked positions stay where they are, so a
    left-padded batch stays left-padded: [PAD PAD A C] -> [PAD PAD G T].
    """
    if complement_map is None:
        complement_map = DNA_COMPLEMENT_MAP
    table = complement_map if isinstance(complement_map, torch.Tensor) else complement_table(complement_map)
    table = table.to(input_ids.device)
    if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= table.numel()):
        raise ValueError(f"input_ids contain ids outside the complement map's range [0, {table.numel()})")
    complemented = table[input_ids]
    if attention_mask is None:
        return complemented.flip(-1)
    return flip_real_tokens(complemented, attention_mask)


def real_tokens_first(attention_mask: torch.Tensor) -> torch.Tensor:
    """A per-row permutation (..., L) listing the real (nonzero) positions in order, then the masked ones in order.

    Gathering with it packs each row's real tokens into one contiguous run at the start; scattering with it puts
    them back. A stable sort: no host sync, no data-dependent shape.
    """
    return torch.argsort((attention_mask == 0).to(torch.uint8), dim=-1, stable=True)


def flip_real_tokens(x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Reverse the order of the real (nonzero mask) positions of x (B, L, ...) along L; masked positions stay put.

    The k-th of a row's n real tokens goes where the (n-1-k)-th was, wherever the masked positions lie (left or right
    padding, or gaps): [a _ b c] -> [c _ b a].
    """
    mask = attention_mask != 0
    if mask.shape[-1] == 0:
        return x
    order = real_tokens_first(mask)
    rank = mask.long().cumsum(-1) - 1
    n_real = rank[..., -1:] + 1
    source = torch.gather(order, -1, (n_real - 1 - rank).clamp(min=0))
    positions = torch.arange(mask.shape[-1], device=x.device).expand_as(mask)
    index = torch.where(mask, source, positions)
    if x.dim() > mask.dim():
        index = index.reshape(*index.shape, *([1] * (x.dim() - mask.dim()))).expand_as(x)
    return torch.gather(x, mask.dim() - 1, index)


__all__ = [
    "FRAMING_TOKEN_IDS",
    "DNA_COMPLEMENT_MAP",
    "NUCLEOTIDES",
    "NUCLEOTIDE_IDS",
    "SPECIAL_TOKENS",
    "SPECIAL_TOKEN_IDS",
    "VOCAB",
    "complement_table",
    "flip_real_tokens",
    "real_tokens_first",
    "reverse_complement",
    "reverse_complement_ids",
]
