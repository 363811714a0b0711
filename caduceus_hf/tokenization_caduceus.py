"""The character-level DNA tokenizer of the Caduceus checkpoints, on the Rust `tokenizers` backend.

The published checkpoints ship a slow Python tokenizer (upper-case the text, one token per character, unknown
characters -> [UNK], append [SEP]). `CaduceusTokenizer` gives the same ids from a `tokenizers.Tokenizer`:

* normalizer: `Replace` rules that do what `str.upper` does to the text (tokenizers has no upper-case normalizer);
* model: BPE with the fixed 12-token vocabulary and no merges, i.e. a per-character vocabulary lookup with one [UNK]
  per unknown character (no pre-tokenizer needed, about twice as fast as WordLevel behind a per-character Split);
* added tokens: the special tokens, matched in the raw text ("[MASK]ACG" -> [MASK] A C G, as the original does);
* post-processor: append [SEP] (and "A [SEP] B [SEP]" for pairs); decoder: concatenate the tokens.

Regenerate the canonical files shipped with every converted checkpoint (the repository's tokenizer/ folder) with
`python -m caduceus_hf.tokenization_caduceus tokenizer/`.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from transformers import BatchEncoding, TokenizersBackend

from . import dna

DEFAULT_MODEL_MAX_LENGTH = 131_072
# The original tokenizer's added tokens: every special token but [RESERVED], which is only reachable by id.
ADDED_SPECIAL_TOKENS: tuple[str, ...] = tuple(tok for tok in dna.SPECIAL_TOKENS if tok != "[RESERVED]")
# Stands for a character of an expanded upper-case form that is not in the vocabulary: it tokenizes to [UNK] like the
# character it replaces, and tokens() shows "[UNK]" either way.
_UNKNOWN_PLACEHOLDER = "\ufffd"


@functools.cache
def _expanding_upper_case_rules() -> tuple[tuple[str, str], ...]:
    """(regex, replacement) pairs for the characters whose `str.upper()` is longer than one character.

    The original upper-cases before splitting into characters, so "ß" gives two tokens ("SS") and "ŉ" gives [UNK] N
    ("ʼN"). Characters are grouped by the token pattern of their upper-case form to keep the normalizer short.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for char in map(chr, range(sys.maxunicode + 1)):
        upper = char.upper()
        if len(upper) > 1:
            pattern = "".join(c if c in dna.VOCAB else _UNKNOWN_PLACEHOLDER for c in upper)
            groups[pattern].append(char)
    return tuple(("|".join(chars), pattern) for pattern, chars in sorted(groups.items()))


def _check_special_token(name: str, token: str | AddedToken) -> None:
    if str(token) not in dna.SPECIAL_TOKEN_IDS:
        raise ValueError(
            f"CaduceusTokenizer has a fixed vocabulary: {name}={str(token)!r} must be one of {list(dna.SPECIAL_TOKENS)}"
        )


def _check_batch(name: str, batch: list[Any] | tuple[Any, ...]) -> None:
    """Items of a batch of texts must be str, or (str, str) pairs."""
    if not batch:
        raise ValueError(f"{name} is an empty batch: nothing to tokenize")
    for i, item in enumerate(batch):
        for part in item if isinstance(item, (list, tuple)) else (item,):
            if not isinstance(part, str):
                raise TypeError(f"{name}[{i}] must be a str, got {type(part).__name__}: {part!r:.80}")


def _strings(*values: Any) -> Iterator[str]:
    """Every str in texts, batches of texts and batches of pairs."""
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _strings(*value)


def build_backend_tokenizer(sep_token: str = "[SEP]", unk_token: str = "[UNK]") -> Tokenizer:
    """The `tokenizers.Tokenizer` behind `CaduceusTokenizer` (what tokenizer.json serialises)."""
    backend = Tokenizer(models.BPE(vocab=dict(dna.VOCAB), merges=[], unk_token=unk_token, fuse_unk=False))
    upper_case = [normalizers.Replace(base.lower(), base) for base in dna.NUCLEOTIDES]
    upper_case += [normalizers.Replace(Regex(pattern), content) for pattern, content in _expanding_upper_case_rules()]
    backend.normalizer = normalizers.Sequence(upper_case)
    sep_id = dna.VOCAB[sep_token]
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {sep_token}:0",
        pair=f"$A:0 {sep_token}:0 $B:1 {sep_token}:1",
        special_tokens=[(sep_token, sep_id)],
    )
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in ADDED_SPECIAL_TOKENS])
    return backend


class CaduceusTokenizer(TokenizersBackend):
    r"""Character-level DNA tokenizer with the vocabulary and ids of the published Caduceus checkpoints.

    Vocabulary (fixed): [CLS] 0, [SEP] 1, [BOS] 2, [MASK] 3, [PAD] 4, [RESERVED] 5, [UNK] 6, A 7, C 8, G 9, T 10, N 11.

    Behaviour, identical in ids to the original slow tokenizer:

    * text is upper-cased (as `str.upper`), then every character is one token; characters outside A C G T N
      (IUPAC codes, digits, spaces, newlines, any other unicode) are [UNK];
    * special tokens written in the text ("[MASK]", "[SEP]", ...; not "[RESERVED]") are one token each;
    * `add_special_tokens=True` (the default) appends [SEP]: "ACGT" -> [7, 8, 9, 10, 1];
      a pair gives A [SEP] B [SEP];
    * padding is on the left by default; `model_max_length` comes from tokenizer_config.json.

    Unlike the original, calls return `attention_mask` (1 for real tokens, 0 for padding), and `tokens()` shows
    "[UNK]" for unknown characters (the original showed the character itself). `decode` concatenates the tokens:
    decode([7, 8, 9, 10, 11, 1]) == "ACGTN[SEP]".

    Output shapes: a single string gives lists of length n_chars + 1 (with [SEP]); a batch with padding and
    `return_tensors="pt"` gives (batch, max_len) long tensors `input_ids` and `attention_mask`.

    Args:
        model_max_length: longest sequence (tokens, [SEP] included) the model takes; longer inputs warn unless
            truncated.
        padding_side: "left" (as published) or "right".
        bos_token, eos_token, sep_token, cls_token, pad_token, mask_token, unk_token: must be tokens of the fixed
            vocabulary; [SEP] is appended as `sep_token`.
        vocab: only accepted when equal to the fixed vocabulary (the loader passes the one read from tokenizer.json).
    """

    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(
        self,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        padding_side: str = "left",
        bos_token: str | AddedToken = "[BOS]",
        eos_token: str | AddedToken = "[SEP]",
        sep_token: str | AddedToken = "[SEP]",
        cls_token: str | AddedToken = "[CLS]",
        pad_token: str | AddedToken = "[PAD]",
        mask_token: str | AddedToken = "[MASK]",
        unk_token: str | AddedToken = "[UNK]",
        vocab: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        if vocab is not None and dict(vocab) != dna.VOCAB:
            raise ValueError(f"CaduceusTokenizer has a fixed vocabulary {dna.VOCAB}; got {dict(vocab)}")
        special = dict(
            bos_token=bos_token,
            eos_token=eos_token,
            sep_token=sep_token,
            cls_token=cls_token,
            pad_token=pad_token,
            mask_token=mask_token,
            unk_token=unk_token,
        )
        for name, token in special.items():
            _check_special_token(name, token)
        self._tokenizer = build_backend_tokenizer(sep_token=str(sep_token), unk_token=str(unk_token))
        # Decoded text has no spaces to clean up; the base class would also warn on every decode of a BPE model.
        kwargs["clean_up_tokenization_spaces"] = False
        # The published tokenizer_config.json points AutoTokenizer at the Hub's remote-code slow tokenizer. Saving
        # that pointer again would make plain transformers ask for remote code instead of reading tokenizer.json.
        kwargs.pop("auto_map", None)
        super().__init__(model_max_length=model_max_length, padding_side=padding_side, **special, **kwargs)

    def _encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> BatchEncoding:
        # The base class only inspects the first item of a batch; a later None or int fails deep in the Rust
        # bindings with a message that names neither the item nor its type.
        if not kwargs.get("is_split_into_words", False):
            for name, value in (("text", text), ("text_pair", text_pair)):
                if isinstance(value, (list, tuple)):
                    _check_batch(name, value)
        try:
            return super()._encode_plus(text, text_pair, **kwargs)
        except TypeError as err:
            # Lone surrogates ("\ud800") are not Unicode text; the Rust bindings reject them with a type error.
            for piece in _strings(text, text_pair):
                try:
                    piece.encode("utf-8")
                except UnicodeEncodeError as bad:
                    raise ValueError(
                        f"text contains {bad.object[bad.start]!r} at position {bad.start}: a lone surrogate is not "
                        "valid Unicode text and cannot be tokenized"
                    ) from err
            raise

    def _decode(self, token_ids: int | list[int] | Mapping[str, list[int]], **kwargs: Any) -> str:
        # The Rust decoder silently drops ids it does not know, e.g. the padded rows 12..15 of the model's logits or
        # the -100 of labels.
        ids = token_ids["input_ids"] if isinstance(token_ids, Mapping) else token_ids
        ids = [ids] if isinstance(ids, int) else ids
        if ids and (min(ids) < 0 or max(ids) >= len(self)):
            raise ValueError(
                f"cannot decode ids outside the vocabulary [0, {len(self)}): got {min(ids)}..{max(ids)} "
                "(drop -100 label positions and ids of the model's padded vocabulary rows first)"
            )
        return super()._decode(token_ids, **kwargs)

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 where a special token is (or will be, once [SEP] is appended), 0 for sequence tokens.

        With `already_has_special_tokens=False` the ids are the bare sequence(s): the mask is that of
        `ids + [SEP]` (`ids_0 + [SEP] + ids_1 + [SEP]` for a pair), as the original tokenizer gives.
        """
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        mask = [0] * len(token_ids_0) + [1]
        if token_ids_1 is not None:
            mask += [0] * len(token_ids_1) + [1]
        return mask

    @property
    def complement_map(self) -> dict[int, int]:
        """Token id -> id of the complementary token (A<->T, C<->G; N and special tokens map to themselves)."""
        return dict(dna.DNA_COMPLEMENT_MAP)

    def reverse_complement(self, sequence: str) -> str:
        """Reverse complement of a DNA string, case and IUPAC aware (`caduceus_hf.dna.reverse_complement`)."""
        return dna.reverse_complement(sequence)

    def reverse_complement_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reverse complement of ids (..., L); with an attention_mask padding stays on its side.

        See `caduceus_hf.dna.reverse_complement_ids`. Encode with `add_special_tokens=False` first if the trailing
        [SEP] should not move to the front.
        """
        return dna.reverse_complement_ids(input_ids, attention_mask=attention_mask)


def write_canonical_files(directory: str | os.PathLike[str]) -> list[str]:
    """Write `CaduceusTokenizer().save_pretrained` output into `directory`, replacing its tokenizer files.

    Files are written to a temporary folder first and moved in one by one, so an interrupted run does not leave a
    half-written tokenizer.json. Other files in `directory` (its README.md) are kept. Returns the file names written.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as staging:
        CaduceusTokenizer().save_pretrained(staging)
        names = sorted(p.name for p in Path(staging).iterdir())
        for name in names:
            os.replace(Path(staging) / name, target / name)
    return names


__all__ = ["CaduceusTokenizer", "build_backend_tokenizer", "write_canonical_files"]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m caduceus_hf.tokenization_caduceus OUTPUT_DIR")
    # Importing the package already imported this module: use that copy, the class AutoTokenizer registered.
    from caduceus_hf.tokenization_caduceus import write_canonical_files as _write_canonical_files

    for written in _write_canonical_files(sys.argv[1]):
        print(Path(sys.argv[1]) / written)
