"""The character-level DNA tokenizer of the Caduceus checkpoints, on the Rust `tokenizers` backend.

The published checkpoints ship a slow Python tokenizer (upper-case the text, one token per character, unknown
characters -> [UNK], append [SEP]). `CaduceusTokenizer` gives the same ids from a `tokenizers.Tokenizer`:

* normalizer: `Replace` rules that do what `str.upper` does to the text (tokenizers has no upper-case normalizer);
* model: BPE with the fixed 12-token vocabulary and no merges, i.e. a per-character vocabulary lookup with one [UNK]
  per unknown character (no pre-tokenizer needed, about twice as fast as WordLevel behind a per-character Split);
* added tokens: the special tokens, matched in the raw text ("[MASK]ACG" -> [MASK] A C G, as the original does);
* post-processor: append [SEP] (and "A [SEP] B [SEP]" for pairs); decoder: concatenate the tokens.

That pipeline is what tokenizer.json holds, so plain transformers loads it. For the common input (ASCII text without
"[") the class skips the Rust pipeline and looks the ids up with `bytes.translate` (several times faster, same
`BatchEncoding`); the Rust `Encoding` objects behind `tokens()`, `word_ids()`, `char_to_token()` ... are computed on
first use.

Regenerate the canonical files shipped with every converted checkpoint (the repository's tokenizer/ folder) with
`python -m caduceus_hf.tokenization_caduceus tokenizer/`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from transformers import BatchEncoding, TokenizersBackend
from transformers.tokenization_utils_base import TruncationStrategy
from transformers.utils import PaddingStrategy

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


def build_backend_tokenizer() -> Tokenizer:
    """The `tokenizers.Tokenizer` behind `CaduceusTokenizer`, without its post-processor (the class sets it)."""
    backend = Tokenizer(models.BPE(vocab=dict(dna.VOCAB), merges=[], unk_token="[UNK]", fuse_unk=False))
    upper_case = [normalizers.Replace(base.lower(), base) for base in dna.NUCLEOTIDES]
    upper_case += [normalizers.Replace(Regex(pattern), content) for pattern, content in _expanding_upper_case_rules()]
    backend.normalizer = normalizers.Sequence(upper_case)
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in ADDED_SPECIAL_TOKENS])
    return backend


def _template_framing(post_processor: Any) -> tuple[list[str], list[str]] | None:
    """The special tokens a TemplateProcessing post-processor puts before and after a single sequence, or None."""
    if post_processor is None:
        return None
    state = json.loads(post_processor.__getstate__())
    if state.get("type") != "TemplateProcessing":
        raise ValueError(f"CaduceusTokenizer needs a TemplateProcessing post-processor, got {state.get('type')}")
    before: list[str] = []
    after: list[str] = []
    current = before
    for piece in state["single"]:
        if "Sequence" in piece:
            current = after
        else:
            current.append(piece["SpecialToken"]["id"])
    return before, after


# Byte -> id of its upper-case character for ASCII text (str.upper maps ASCII to ASCII one to one), for bytes.translate.
_ASCII_IDS = bytes(dna.VOCAB.get(chr(b).upper() if b < 128 else "", dna.VOCAB["[UNK]"]) for b in range(256))
# Every added token of the vocabulary starts with "[": text without it cannot contain one.
_ADDED_TOKEN_START = "["
# _encode_plus arguments the lookup path reproduces; any other argument (or value) goes to the Rust backend.
_LOOKUP_ARGUMENTS = frozenset(
    {
        "add_special_tokens",
        "padding_strategy",
        "truncation_strategy",
        "max_length",
        "stride",
        "is_split_into_words",
        "pad_to_multiple_of",
        "padding_side",
        "return_tensors",
        "return_token_type_ids",
        "return_attention_mask",
        "return_overflowing_tokens",
        "return_special_tokens_mask",
        "return_offsets_mapping",
        "return_length",
        "verbose",
        "split_special_tokens",
    }
)


class _EncodingsOnDemand(BatchEncoding):
    """A `BatchEncoding` whose `tokenizers.Encoding` objects come from the Rust backend when first asked for.

    The lookup path fills `data` itself; `tokens()`, `word_ids()`, `char_to_token()`, `encodings` ... then run the
    same call through the backend once, so they give what the backend gives.
    """

    def __init__(self, data: dict[str, Any], compute: functools.partial, tensor_type: Any, n_sequences: int) -> None:
        self.__dict__["_compute_encodings"] = compute
        super().__init__(data, encoding=None, tensor_type=tensor_type, n_sequences=n_sequences)

    @property
    def _encodings(self) -> list[Any] | None:
        compute = self.__dict__.pop("_compute_encodings", None)
        if compute is not None:
            self.__dict__["_encodings_value"] = compute().encodings
        return self.__dict__.get("_encodings_value")

    @_encodings.setter
    def _encodings(self, value: list[Any] | None) -> None:
        if value is not None or "_compute_encodings" not in self.__dict__:
            self.__dict__.pop("_compute_encodings", None)
            self.__dict__["_encodings_value"] = value

    @property
    def is_fast(self) -> bool:
        return True


class CaduceusTokenizer(TokenizersBackend):
    r"""Character-level DNA tokenizer with the vocabulary and ids of the published Caduceus checkpoints.

    Vocabulary: [CLS] 0, [SEP] 1, [BOS] 2, [MASK] 3, [PAD] 4, [RESERVED] 5, [UNK] 6, A 7, C 8, G 9, T 10, N 11.
    The 12 ids are fixed; `add_tokens` / `add_special_tokens` append new ids from 12 on (resize the model's embeddings
    to `len(tokenizer)`), and they round-trip through `save_pretrained` like in any transformers tokenizer.

    Behaviour, identical in ids to the original slow tokenizer:

    * text is upper-cased (as `str.upper`), then every character is one token; characters outside A C G T N
      (IUPAC codes, digits, spaces, newlines, any other unicode) are [UNK];
    * special tokens written in the text ("[MASK]", "[SEP]", ...; not "[RESERVED]") are one token each;
    * `add_special_tokens=True` (the default) appends `sep_token` ([SEP]): "ACGT" -> [7, 8, 9, 10, 1];
      a pair gives A [SEP] B [SEP]. `add_bos_token=True` also puts `bos_token` in front of each sequence,
      `add_eos_token=True` appends `eos_token` after [SEP] when it is a different token; `sep_token=None` appends
      nothing;
    * padding is on the left by default; `model_max_length` comes from tokenizer_config.json.

    Unlike the original, calls return `attention_mask` (1 for real tokens, 0 for padding), and `tokens()` shows
    "[UNK]" for unknown characters (the original showed the character itself). `decode` concatenates the tokens:
    decode([7, 8, 9, 10, 11, 1]) == "ACGTN[SEP]".

    Output shapes: a single string gives lists of length n_chars + 1 (with [SEP]); a batch with padding and
    `return_tensors="pt"` gives (batch, max_len) long tensors `input_ids` and `attention_mask`.

    `train_new_from_iterator` returns a generic `TokenizersBackend` with this pipeline and the trained vocabulary (a
    new vocabulary is not the Caduceus one).

    Args:
        model_max_length: longest sequence (tokens, [SEP] included) the model takes; longer inputs warn unless
            truncated.
        padding_side: "left" (as published) or "right".
        bos_token, eos_token, sep_token, cls_token, pad_token, mask_token: tokens of the vocabulary, or new tokens
            (added as special tokens with new ids), or None.
        unk_token: "[UNK]", the token every unknown character becomes.
        vocab, merges: only accepted when equal to the fixed vocabulary and no merges (the loader passes the ones
            read from tokenizer.json).
    """

    model = models.BPE
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(
        self,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        padding_side: str = "left",
        bos_token: str | AddedToken | None = "[BOS]",
        eos_token: str | AddedToken | None = "[SEP]",
        sep_token: str | AddedToken | None = "[SEP]",
        cls_token: str | AddedToken | None = "[CLS]",
        pad_token: str | AddedToken | None = "[PAD]",
        mask_token: str | AddedToken | None = "[MASK]",
        unk_token: str | AddedToken = "[UNK]",
        vocab: Mapping[str, int] | list[tuple[str, float]] | None = None,
        merges: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if vocab is not None:
            # TokenizersExtractor passes (token, score) pairs in id order.
            given = dict(vocab) if isinstance(vocab, Mapping) else {tok: i for i, (tok, *_) in enumerate(vocab)}
            if given != dna.VOCAB:
                raise ValueError(f"CaduceusTokenizer has a fixed vocabulary {dna.VOCAB}; got {given}")
        if merges:
            raise ValueError(f"CaduceusTokenizer has one token per character and no merges; got {len(merges)} merges")
        if str(unk_token) != "[UNK]":
            raise ValueError(f"unk_token={unk_token!r}: every unknown character is [UNK] (id 6) in this vocabulary")
        for name in ("tokenizer_object", "tokenizer_file"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"CaduceusTokenizer builds its own backend and does not take {name}; load a tokenizers.Tokenizer "
                    "with transformers.TokenizersBackend instead"
                )
        self._tokenizer = build_backend_tokenizer()
        # transformers keeps add_bos_token / add_eos_token in tokenizer.json's post-processor only, not in
        # tokenizer_config.json: read them back from it (arguments given here win). update_post_processor() below
        # rebuilds it.
        saved = _template_framing(kwargs.pop("post_processor", None))
        if saved is not None and "add_bos_token" not in kwargs and "add_eos_token" not in kwargs:
            kwargs["add_bos_token"] = bool(saved[0])
            kwargs["add_eos_token"] = len(saved[1]) > (sep_token is not None)
        # Decoded text has no spaces to clean up; the base class would also warn on every decode of a BPE model.
        kwargs["clean_up_tokenization_spaces"] = False
        # The published tokenizer_config.json points AutoTokenizer at the Hub's remote-code slow tokenizer. Saving
        # that pointer again would make plain transformers ask for remote code instead of reading tokenizer.json.
        kwargs.pop("auto_map", None)
        super().__init__(
            model_max_length=model_max_length,
            padding_side=padding_side,
            bos_token=bos_token,
            eos_token=eos_token,
            sep_token=sep_token,
            cls_token=cls_token,
            pad_token=pad_token,
            mask_token=mask_token,
            unk_token=unk_token,
            **kwargs,
        )
        self.update_post_processor()

    # --- special tokens and the post-processor -------------------------------------------------------------------

    def _framing(self) -> tuple[list[str], list[str]]:
        """Tokens put before and after each sequence when `add_special_tokens=True`."""
        tokens = self.__dict__["_special_tokens_map"]
        bos, sep, eos = (tokens.get(name) for name in ("bos_token", "sep_token", "eos_token"))
        before = [str(bos)] if self.add_bos_token and bos is not None else []
        after = [str(sep)] if sep is not None else []
        if self.add_eos_token and eos is not None and str(eos) not in after:
            after.append(str(eos))
        return before, after

    def update_post_processor(self) -> None:
        """Build the post-processor from `sep_token`, `add_bos_token` / `bos_token` and `add_eos_token` / `eos_token`.

        Each sequence becomes [BOS]? sequence [SEP] [EOS]? (the [BOS] only with add_bos_token, the [EOS] only with
        add_eos_token and an eos_token other than sep_token). Raises ValueError for a token that is not in the
        vocabulary.
        """
        tokens = self.__dict__["_special_tokens_map"]
        for flag, name in (("_add_bos_token", "bos_token"), ("_add_eos_token", "eos_token")):
            if getattr(self, flag, False) and tokens.get(name) is None:
                object.__setattr__(self, flag, False)
        before, after = self._framing()
        ids = {token: self._tokenizer.token_to_id(token) for token in before + after}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise ValueError(
                f"special token(s) {missing} are not in the vocabulary: add them first, e.g. "
                f"tokenizer.add_special_tokens({{'sep_token': {missing[0]!r}}})"
            )
        single = [f"{t}:0" for t in before] + ["$A:0"] + [f"{t}:0" for t in after]
        pair = single + [f"{t}:1" for t in before] + ["$B:1"] + [f"{t}:1" for t in after]
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=list(ids.items())
        )
        object.__setattr__(self, "_lookup_framing", (bytes(ids[t] for t in before), bytes(ids[t] for t in after)))

    def __setattr__(self, key: str, value: Any) -> None:
        name = key.removesuffix("_id")
        if name not in ("sep_token", "bos_token", "eos_token") or "_lookup_framing" not in self.__dict__:
            super().__setattr__(key, value)
            return
        previous = self.__dict__["_special_tokens_map"].get(name)
        super().__setattr__(key, value)
        if self.__dict__.get("_adding_special_tokens"):
            return
        try:
            self.update_post_processor()
        except ValueError:
            super().__setattr__(name, previous)
            raise

    def add_special_tokens(
        self, special_tokens_dict: Mapping[str, Any], replace_extra_special_tokens: bool = True
    ) -> int:
        # The base class assigns the attributes before it adds the tokens: rebuild the post-processor after both.
        object.__setattr__(self, "_adding_special_tokens", True)
        try:
            added = super().add_special_tokens(special_tokens_dict, replace_extra_special_tokens)
        finally:
            object.__setattr__(self, "_adding_special_tokens", False)
        self.update_post_processor()
        return added

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
        before, after = self._framing()
        mask = [1] * len(before) + [0] * len(token_ids_0) + [1] * len(after)
        if token_ids_1 is not None:
            mask += [1] * len(before) + [0] * len(token_ids_1) + [1] * len(after)
        return mask

    def train_new_from_iterator(
        self, text_iterator: Any, vocab_size: int, *args: Any, **kwargs: Any
    ) -> TokenizersBackend:
        """Train a new vocabulary with this pipeline (upper-casing, [SEP] appended); returns a `TokenizersBackend`.

        The result is not a `CaduceusTokenizer`: its vocabulary is no longer the one of the Caduceus checkpoints.
        """
        # add_bos_token / add_eos_token would make the generic class rebuild the post-processor its own way.
        dropped = ("vocab", "merges", "name_or_path", "add_bos_token", "add_eos_token")
        settings = {k: v for k, v in self.init_kwargs.items() if k not in dropped}
        settings.update(self._special_tokens_map)
        generic = TokenizersBackend(tokenizer_object=self._tokenizer, **settings)
        return generic.train_new_from_iterator(text_iterator, vocab_size, *args, **kwargs)

    # --- encoding ------------------------------------------------------------------------------------------------

    def _encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> BatchEncoding:
        # The base class only inspects the first item of a batch; a later None or int fails deep in the Rust
        # bindings with a message that names neither the item nor its type.
        if not kwargs.get("is_split_into_words", False):
            for name, value in (("text", text), ("text_pair", text_pair)):
                if isinstance(value, (list, tuple)):
                    _check_batch(name, value)
        if text_pair is None:
            encoded = self._lookup_encode(text, kwargs)
            if encoded is not None:
                return encoded
        return self._backend_encode_plus(text, text_pair, **kwargs)

    def _backend_encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> BatchEncoding:
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

    def tokenize(
        self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs: Any
    ) -> list[str]:
        return self._backend_encode_plus(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    def _lookup_encode(self, text: Any, kwargs: dict[str, Any]) -> BatchEncoding | None:
        """The backend's BatchEncoding for ASCII texts without added tokens, by table lookup; None where it cannot.

        Reproduces the backend's truncation (longest_first / only_first), padding (longest, max_length, multiples,
        either side), attention / special-tokens / token-type masks, offsets (one character per token), lengths,
        tensors ("pt", "np") and the too-long warning. Overflow, pairs, pre-split words, other tensor types and any
        tokenizer with added tokens beyond the 12 of the vocabulary go to the backend.
        """
        batched = isinstance(text, (list, tuple))
        texts = text if batched else [text]
        return_tensors = kwargs.get("return_tensors")
        if (
            not kwargs.keys() <= _LOOKUP_ARGUMENTS
            or kwargs.get("is_split_into_words")
            or kwargs.get("return_overflowing_tokens")
            or return_tensors not in (None, "pt", "np")
            or self._tokenizer.get_vocab_size(with_added_tokens=True) != len(dna.VOCAB)
            or not all(isinstance(t, str) and t.isascii() and _ADDED_TOKEN_START not in t for t in texts)
        ):
            return None
        before, after = self._lookup_framing if kwargs.get("add_special_tokens", True) else (b"", b"")
        rows = [t.encode("ascii").translate(_ASCII_IDS) for t in texts]
        starts = [0] * len(rows)  # index of the first kept character of each text

        # 1. Truncation: the backend cuts the text, then adds the special tokens.
        truncation = kwargs.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE)
        max_length = kwargs.get("max_length")
        if truncation != TruncationStrategy.DO_NOT_TRUNCATE:
            budget = (max_length or 0) - len(before) - len(after)
            if truncation not in (TruncationStrategy.LONGEST_FIRST, TruncationStrategy.ONLY_FIRST):
                return None
            if max_length is None or budget < 0 or kwargs.get("stride", 0):
                return None
            if self.truncation_side == "left":
                starts = [max(len(row) - budget, 0) for row in rows]
            rows = [row[start : start + budget] for row, start in zip(rows, starts)]
        kept = [len(row) for row in rows]
        rows = [before + row + after for row in rows]
        lengths = [len(row) for row in rows]

        # 2. Padding: every row to the longest (or max_length), rounded up to pad_to_multiple_of.
        padding = kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD)
        width = None
        if padding != PaddingStrategy.DO_NOT_PAD:
            width = max_length if padding == PaddingStrategy.MAX_LENGTH else max(lengths)
            multiple = kwargs.get("pad_to_multiple_of")
            if multiple and width % multiple:
                width += multiple - width % multiple
            if width is None or not 0 <= self.pad_token_id < 256:
                return None
        n_pad = [max(width - n, 0) if width is not None else 0 for n in lengths]
        if return_tensors is not None and len({n + k for n, k in zip(lengths, n_pad)}) > 1:
            return None  # ragged rows: the backend path builds (or refuses) them its own way
        if return_tensors is not None and kwargs.get("return_offsets_mapping") and lengths[0] + n_pad[0] == 0:
            return None  # empty rows: the backend's offsets lose their pair axis
        left = (kwargs.get("padding_side") or self.padding_side) == "left"

        def framed(real: bytes, pad: bytes, k: int) -> bytes:
            return pad * k + real if left else real + pad * k

        # 3. The outputs, in the backend's key order.
        return_type_ids = kwargs.get("return_token_type_ids")
        if return_type_ids is None:
            return_type_ids = "token_type_ids" in self.model_input_names
        return_mask = kwargs.get("return_attention_mask")
        if return_mask is None:
            return_mask = "attention_mask" in self.model_input_names
        pad_id = bytes([self.pad_token_id]) if width is not None else b""
        columns: dict[str, list[bytes]] = {"input_ids": [framed(r, pad_id, k) for r, k in zip(rows, n_pad)]}
        if return_type_ids:
            type_pad = bytes([self.pad_token_type_id])
            columns["token_type_ids"] = [framed(bytes(n), type_pad, k) for n, k in zip(lengths, n_pad)]
        if return_mask:
            columns["attention_mask"] = [framed(b"\x01" * n, b"\x00", k) for n, k in zip(lengths, n_pad)]
        if kwargs.get("return_special_tokens_mask"):
            columns["special_tokens_mask"] = [
                framed(b"\x01" * len(before) + bytes(n - len(before) - len(after)) + b"\x01" * len(after), b"\x01", k)
                for n, k in zip(lengths, n_pad)
            ]
        verbose = kwargs.get("verbose", True)
        for row in columns["input_ids"]:
            self._eventual_warn_about_too_long_sequence(row, max_length, verbose)
        # Offsets: (i, i + 1) for the token of character i, (0, 0) for special tokens and padding.
        offset_spans = [(k * left + len(before), start, n) for k, start, n in zip(n_pad, starts, kept)]

        data: dict[str, Any]
        if return_tensors is None:
            data = {key: [list(row) for row in value] for key, value in columns.items()}
            if kwargs.get("return_offsets_mapping"):
                data["offset_mapping"] = [
                    [(0, 0)] * first + list(zip(range(start, start + n), range(start + 1, start + n + 1)))
                    + [(0, 0)] * (len(row) - first - n)
                    for (first, start, n), row in zip(offset_spans, columns["input_ids"])
                ]
            if kwargs.get("return_length"):
                data["length"] = [len(row) for row in columns["input_ids"]]
            if not batched:
                data = {key: value[0] if isinstance(value[0], list) else value for key, value in data.items()}
        else:
            shape = (len(rows), len(columns["input_ids"][0]))
            data = {
                key: np.frombuffer(b"".join(value), dtype=np.uint8).reshape(shape).astype(np.int64)
                for key, value in columns.items()
            }
            if kwargs.get("return_offsets_mapping"):
                offsets = np.zeros((*shape, 2), dtype=np.int64)
                for row, (first, start, n) in zip(offsets, offset_spans):
                    row[first : first + n, 0] = np.arange(start, start + n)
                    row[first : first + n, 1] = np.arange(start + 1, start + n + 1)
                data["offset_mapping"] = offsets
            if kwargs.get("return_length"):
                data["length"] = np.full(len(rows), shape[1], dtype=np.int64)
            if return_tensors == "pt":
                data = {key: torch.from_numpy(value) for key, value in data.items()}
        # The encodings come from the same call, with the padding side of now.
        backend_kwargs = {**kwargs, "padding_side": kwargs.get("padding_side") or self.padding_side}
        backend_call = functools.partial(self._backend_encode_plus, text, **backend_kwargs)
        return _EncodingsOnDemand(data, backend_call, tensor_type=return_tensors, n_sequences=1)

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

    # --- reverse complement --------------------------------------------------------------------------------------

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
