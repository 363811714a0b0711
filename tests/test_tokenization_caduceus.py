"""CaduceusTokenizer against the original tokenizer: its recorded outputs (tests/fixtures/tokenizer_cases.json) and its
algorithm, restated below in plain Python, independently of the `tokenizers` pipeline under test."""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, BatchEncoding, DataCollatorForLanguageModeling, TokenizersBackend
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as hf_logging

from caduceus_hf import CaduceusConfig, CaduceusTokenizer
from caduceus_hf.dna import reverse_complement, reverse_complement_ids
from caduceus_hf.tokenization_caduceus import write_canonical_files

FIXTURES = Path(__file__).parent / "fixtures"
CASES = json.loads((FIXTURES / "tokenizer_cases.json").read_text())
CANONICAL_DIR = Path(__file__).resolve().parents[1] / "tokenizer"

# The original's vocabulary and added (special) tokens, from the recorded fixture, not from the package.
VOCAB: dict[str, int] = CASES["vocab"]
ADDED = ["[CLS]", "[SEP]", "[BOS]", "[MASK]", "[PAD]", "[UNK]"]
_ADDED_RE = re.compile("(" + "|".join(map(re.escape, ADDED)) + ")")


def original_ids(text: str, add_special_tokens: bool = True) -> list[int]:
    """The original slow tokenizer: split out special tokens, upper-case the rest, one id per character, [SEP]."""
    ids: list[int] = []
    for chunk in _ADDED_RE.split(text):
        if chunk in ADDED:
            ids.append(VOCAB[chunk])
        else:
            ids.extend(VOCAB.get(char, VOCAB["[UNK]"]) for char in chunk.upper())
    return ids + [VOCAB["[SEP]"]] if add_special_tokens else ids


@pytest.fixture(scope="module")
def tok() -> CaduceusTokenizer:
    return CaduceusTokenizer()


# --- ids identical to the original -----------------------------------------------------------------------------------


def test_vocabulary_and_special_ids_match_the_original(tok):
    assert tok.get_vocab() == CASES["vocab"]
    assert len(tok) == CASES["len(tokenizer)"]
    assert tok.vocab_size == CASES["vocab_size"]
    for name, expected in CASES["special_ids"].items():
        assert getattr(tok, f"{name}_token_id") == expected, name
    assert tok.model_max_length == 131072
    assert tok.padding_side == "left"


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: repr(c["text"]))
def test_recorded_cases(tok, case):
    text = case["text"]
    assert tok(text)["input_ids"] == case["input_ids(add_special_tokens=True)"]
    assert tok(text, add_special_tokens=False)["input_ids"] == case["input_ids(add_special_tokens=False)"]
    assert tok.encode(text) == case["input_ids(add_special_tokens=True)"]
    # tokens() shows vocabulary entries: the original's token where it is one, "[UNK]" for an unknown character.
    assert tok.tokenize(text) == [t if t in VOCAB else "[UNK]" for t in case["tokens"]]


def test_recorded_left_padding(tok):
    case = CASES["batch_padding_left"]
    out = tok(case["texts"], padding=True)
    assert out["input_ids"] == case["input_ids"]
    assert out["attention_mask"] == [[int(i != VOCAB["[PAD]"]) for i in row] for row in case["input_ids"]]


def test_recorded_decode(tok):
    assert tok.decode([7, 8, 9, 10, 11, 1]) == CASES["decode([7,8,9,10,11,1])"]
    assert (
        tok.decode([7, 8, 9, 10, 11, 1], skip_special_tokens=True)
        == CASES["decode([7,8,9,10,11,1], skip_special_tokens=True)"]
    )


def test_whitespace_digits_iupac_and_special_token_text(tok):
    text = "acgt N\n\n\tRYKM 0123 [MASK][SEP][mask][RESERVED][CLS]x"
    assert tok(text)["input_ids"] == original_ids(text)
    # Spot checks that do not go through original_ids: each newline is its own [UNK]; only exact special tokens match.
    assert tok("A\n\nC", add_special_tokens=False)["input_ids"] == [7, 6, 6, 8]
    assert tok("[mask]", add_special_tokens=False)["input_ids"] == [6, 6, 7, 6, 6, 6]
    assert tok("[RESERVED]", add_special_tokens=False)["input_ids"] == [6] * 10


def test_characters_whose_upper_case_is_longer(tok):
    """str.upper expands some characters ("ß" -> "SS", "ŉ" -> "ʼN"); the original then sees several characters."""
    assert tok("ß", add_special_tokens=False)["input_ids"] == [6, 6]
    assert tok("ŉ", add_special_tokens=False)["input_ids"] == [6, 11]
    assert tok("ẗ", add_special_tokens=False)["input_ids"] == [10, 6]
    assert tok("ﬆ", add_special_tokens=False)["input_ids"] == [6, 10]
    assert tok("ﬃ", add_special_tokens=False)["input_ids"] == [6, 6, 6]
    expanding = [c for c in map(chr, range(sys.maxunicode + 1)) if len(c.upper()) > 1]
    assert len(expanding) > 100
    text = "a".join(expanding)
    assert tok(text)["input_ids"] == original_ids(text)


def test_long_random_text(tok):
    rng = random.Random(0)
    alphabet = "ACGTNacgtnRYSWKMBDHVryswkmbdhv0123456789 \n\t-.*ßŉẗéЖ漢\U0001f600"
    text = "".join(rng.choice(alphabet) for _ in range(20_000))
    assert tok(text)["input_ids"] == original_ids(text)


# Pieces of DNA-like text, with special tokens (and near misses) written in it.
DNA_LIKE = st.lists(
    st.sampled_from(list("ACGTNacgtnRYKMSWrykmsw0189 \n\t[]ßŉẗﬆé漢") + ADDED + ["[RESERVED]", "[mask]"]),
    max_size=60,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(DNA_LIKE, st.text(max_size=60)), add_special_tokens=st.booleans())
def test_fuzz_matches_original_and_stays_in_vocabulary(tok, text, add_special_tokens):
    ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
    assert ids == original_ids(text, add_special_tokens)
    assert all(0 <= i < 12 for i in ids)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_fuzz_batches_pad_left_with_a_correct_mask(tok, texts):
    out = tok(texts, padding=True, return_tensors="pt")
    width = max(len(original_ids(t)) for t in texts)
    assert out["input_ids"].shape == out["attention_mask"].shape == (len(texts), width)
    for row, mask, text in zip(out["input_ids"].tolist(), out["attention_mask"].tolist(), texts, strict=True):
        expected = original_ids(text)
        pad = width - len(expected)
        assert row == [VOCAB["[PAD]"]] * pad + expected
        assert mask == [0] * pad + [1] * len(expected)


# --- masks, padding, pairs, decoding ---------------------------------------------------------------------------------


def test_attention_mask_and_tensor_shapes(tok):
    out = tok(["ACGT", "A"], padding=True, return_tensors="pt")
    assert out["input_ids"].dtype == torch.long
    assert out["input_ids"].tolist() == [[7, 8, 9, 10, 1], [4, 4, 4, 7, 1]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]
    right = tok(["ACGT", "A"], padding=True, padding_side="right")
    assert right["input_ids"] == [[7, 8, 9, 10, 1], [7, 1, 4, 4, 4]]
    multiple = tok(["ACGT"], padding=True, pad_to_multiple_of=8)
    assert multiple["input_ids"] == [[4, 4, 4, 7, 8, 9, 10, 1]]


def test_pairs_get_a_sep_after_each_sequence(tok):
    assert tok("AC", "GT")["input_ids"] == [7, 8, 1, 9, 10, 1]
    assert tok.get_special_tokens_mask([7, 8], [9]) == [0, 0, 1, 0, 1]


def test_special_tokens_mask(tok):
    out = tok(["ACG", "A"], padding=True, return_special_tokens_mask=True)
    assert out["special_tokens_mask"] == [[0, 0, 0, 1], [1, 1, 0, 1]]
    assert tok.get_special_tokens_mask([7, 8, 9]) == [0, 0, 0, 1]
    assert tok.get_special_tokens_mask([4, 7, 3, 8, 1], already_has_special_tokens=True) == [1, 0, 1, 0, 1]


@pytest.mark.parametrize("with_mask", [False, True])
def test_standard_mlm_collator_never_masks_sep_or_pad(tok, with_mask):
    texts = ["ACGTACGTAC", "GGT", "acgtnNNA"]
    encoded = tok(texts, return_special_tokens_mask=with_mask)
    examples = [{k: encoded[k][i] for k in encoded} for i in range(len(texts))]
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=1.0, seed=0)
    batch = collator(examples)
    ids, labels = batch["input_ids"], batch["labels"]
    original = tok(texts, padding=True, return_tensors="pt")["input_ids"]
    special = (original == VOCAB["[SEP]"]) | (original == VOCAB["[PAD]"])
    assert special.sum() > 3
    assert (labels[special] == -100).all()
    assert torch.equal(ids[special], original[special])
    assert (labels[~special] == original[~special]).all()  # mlm_probability=1: every sequence token is a target


def test_decode_round_trips(tok):
    texts = ["ACGTN", "acgt", "NNNNA"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert tok.batch_decode(batch["input_ids"], skip_special_tokens=True) == [t.upper() for t in texts]
    assert tok.batch_decode(batch["input_ids"])[2] == "NNNNA[SEP]"
    assert tok.decode(tok("ACG")["input_ids"]) == tok.decode(tok("ACG")) == "ACG[SEP]"
    assert tok.decode([7, 5, 6]) == "A[RESERVED][UNK]"


@pytest.mark.parametrize("ids", [[7, 12], [-100, 7], [15]])
def test_decode_rejects_ids_outside_the_vocabulary(tok, ids):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode(ids)


# --- loading and saving ----------------------------------------------------------------------------------------------


def _published_tokenizer_dir(tmp_path: Path) -> Path:
    target = tmp_path / "published"
    target.mkdir()
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(FIXTURES / "mlm_ph" / name, target / name)
    return target


def _assert_same_behaviour(loaded, texts=("acgtN[MASK]x", "", "ßŉ\nRY")):
    assert loaded(list(texts), padding=True)["input_ids"] == CaduceusTokenizer()(list(texts), padding=True)["input_ids"]
    assert loaded.model_max_length == 131072
    assert loaded.padding_side == "left"
    assert loaded.mask_token_id == 3 and loaded.pad_token_id == 4 and loaded.sep_token_id == 1


def test_loads_the_published_tokenizer_layout(tmp_path):
    loaded = AutoTokenizer.from_pretrained(_published_tokenizer_dir(tmp_path))
    assert type(loaded) is CaduceusTokenizer
    _assert_same_behaviour(loaded)


def test_loads_a_published_checkpoint_dir_without_remote_code():
    # config.json and tokenizer_config.json carry the Hub's remote-code auto_map; no code file is present.
    loaded = AutoTokenizer.from_pretrained(FIXTURES / "mlm_ph")
    assert type(loaded) is CaduceusTokenizer
    _assert_same_behaviour(loaded)


def test_loads_a_published_repo_from_the_hub_cache(tmp_path):
    # The files AutoTokenizer fetches from a published repo: config.json and the two tokenizer files.
    snapshot = tmp_path / "models--org--caduceus" / "snapshots" / ("0" * 40)
    shutil.copytree(_published_tokenizer_dir(tmp_path), snapshot)
    shutil.copy(FIXTURES / "mlm_ph" / "config.json", snapshot / "config.json")
    (tmp_path / "models--org--caduceus" / "refs").mkdir()
    (tmp_path / "models--org--caduceus" / "refs" / "main").write_text("0" * 40)
    loaded = AutoTokenizer.from_pretrained("org/caduceus", cache_dir=tmp_path, local_files_only=True)
    assert type(loaded) is CaduceusTokenizer
    _assert_same_behaviour(loaded)


def test_save_and_reload(tmp_path):
    published = AutoTokenizer.from_pretrained(_published_tokenizer_dir(tmp_path))
    published.save_pretrained(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {"tokenizer.json", "tokenizer_config.json"}
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "CaduceusTokenizer"
    assert "auto_map" not in config  # the remote-code pointer would stop plain transformers from using tokenizer.json
    for loader in (CaduceusTokenizer, AutoTokenizer):
        reloaded = loader.from_pretrained(tmp_path / "saved")
        assert type(reloaded) is CaduceusTokenizer
        _assert_same_behaviour(reloaded)


def test_pickles():
    """datasets.map(num_proc=...) and DataLoader workers pickle the tokenizer."""
    restored = pickle.loads(pickle.dumps(CaduceusTokenizer(model_max_length=1000)))
    assert type(restored) is CaduceusTokenizer and restored.model_max_length == 1000
    assert restored(["acgtß", "A"], padding=True)["input_ids"] == [[7, 8, 9, 10, 6, 6, 1], [4, 4, 4, 4, 4, 7, 1]]


def test_custom_model_max_length_survives_a_round_trip(tmp_path):
    CaduceusTokenizer(model_max_length=1024).save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).model_max_length == 1024


_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    texts = json.loads(sys.argv[1])
    out = {}
    for directory in sys.argv[2:]:
        for loader in (AutoTokenizer, PreTrainedTokenizerFast):
            t = loader.from_pretrained(directory)
            out[f"{directory} {loader.__name__}"] = {
                "class": type(t).__name__,
                "ids": t(texts, padding=True)["input_ids"],
                "decoded": t.decode([7, 8, 9, 10, 11, 1]),
                "special_ids": sorted(t.all_special_ids),
                "model_max_length": t.model_max_length,
            }
    out["caduceus_hf imported"] = "caduceus_hf" in sys.modules
    print(json.dumps(out))
    """
)


def test_saved_files_load_in_plain_transformers_without_the_package(tmp_path, tok):
    # The default tokenizer, and one changed through the standard API.
    changed = CaduceusTokenizer(add_bos_token=True, model_max_length=1000)
    changed.add_tokens(["<motif>"])
    changed.add_special_tokens({"eos_token": "<eos>"})
    changed.add_eos_token = True
    tokenizers = {"default": tok, "changed": changed}
    for name, t in tokenizers.items():
        t.save_pretrained(tmp_path / name)
    texts = ["acgtN[MASK]x", "", "ßŉ\nRY", "ACGT", "ac<motif>gt"]
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PACKAGE, json.dumps(texts), *tokenizers],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # keep the repository checkout off sys.path
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("caduceus_hf imported") is False
    assert len(out) == 4
    assert changed("AC")["input_ids"] == [2, 7, 8, 1, 13]
    for key, loaded in out.items():
        t = tokenizers[key.split()[0]]
        assert loaded["class"] == TokenizersBackend.__name__
        assert loaded["ids"] == t(texts, padding=True)["input_ids"]
        assert loaded["decoded"] == "ACGTN[SEP]"
        assert loaded["special_ids"] == sorted(t.all_special_ids)
        assert loaded["model_max_length"] == t.model_max_length


def test_canonical_files_match_the_class(tmp_path):
    written = write_canonical_files(tmp_path)
    assert sorted(written) == ["tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in CANONICAL_DIR.iterdir()) == ["README.md", *written]
    for name in written:
        assert (CANONICAL_DIR / name).read_text() == (tmp_path / name).read_text(), (
            f"tokenizer/{name} is out of date: run `python -m caduceus_hf.tokenization_caduceus tokenizer/`"
        )


def test_write_canonical_files_replaces_and_keeps_other_files(tmp_path):
    (tmp_path / "README.md").write_text("kept")
    (tmp_path / "tokenizer.json").write_text("stale")
    write_canonical_files(tmp_path)
    assert (tmp_path / "README.md").read_text() == "kept"
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"] == VOCAB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "tokenizer.json", "tokenizer_config.json"]


# --- reverse complement ----------------------------------------------------------------------------------------------


def test_complement_map_matches_the_original_and_the_model(tok):
    assert tok.complement_map == {int(k): v for k, v in CASES["complement_map"].items()}
    model_map = CaduceusConfig().complement_map
    assert {k: model_map[k] for k in tok.complement_map} == tok.complement_map


def test_reverse_complement_helpers(tok):
    assert tok.reverse_complement("AACGn") == "nCGTT"
    ids = torch.tensor([[4, 4, 7, 7, 8], [7, 8, 9, 10, 11]])
    mask = (ids != 4).long()
    assert tok.reverse_complement_ids(ids, mask).tolist() == [[4, 4, 9, 10, 10], [11, 7, 8, 9, 10]]


@settings(max_examples=60, deadline=None)
# min_size=1: dna.reverse_complement_ids rejects a batch of length 0 with an attention mask.
@given(texts=st.lists(st.text(alphabet="ACGTNacgtnRYKMSWBDHVryk ", min_size=1, max_size=40), min_size=1, max_size=4))
def test_reverse_complement_of_ids_is_the_ids_of_the_reverse_complement(tok, texts):
    batch = tok(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    expected = tok([reverse_complement(t) for t in texts], padding=True, add_special_tokens=False)["input_ids"]
    assert reverse_complement_ids(batch["input_ids"], attention_mask=batch["attention_mask"]).tolist() == expected


# --- bad input -------------------------------------------------------------------------------------------------------


def test_none_and_non_str_inputs_raise_clear_errors(tok):
    with pytest.raises(ValueError, match="text"):
        tok(None)
    with pytest.raises(ValueError, match="must be of type `str`"):
        tok(123)
    with pytest.raises(TypeError, match=r"text\[1\] must be a str, got NoneType"):
        tok(["ACGT", None])
    with pytest.raises(TypeError, match=r"text\[2\] must be a str, got int"):
        tok(["ACGT", "A", 7])
    with pytest.raises(ValueError, match="empty batch"):
        tok([])
    with pytest.raises(ValueError, match="lone surrogate"):
        tok(["AC", "G\ud800"])


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="fixed vocabulary"):
        CaduceusTokenizer(vocab={"A": 0})
    with pytest.raises(ValueError, match="no merges"):
        CaduceusTokenizer(merges=[("A", "C")])
    with pytest.raises(ValueError, match="unk_token='<unk>'"):
        CaduceusTokenizer(unk_token="<unk>")
    with pytest.raises(ValueError, match="does not take tokenizer_object"):
        CaduceusTokenizer(tokenizer_object=CaduceusTokenizer().backend_tokenizer)


def test_too_long_sequences_warn_or_truncate():
    tok = CaduceusTokenizer(model_max_length=8)
    logger = hf_logging.get_logger("transformers.tokenization_utils_base")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        with CaptureLogger(logger) as captured:
            ids = tok("ACGT" * 3)["input_ids"]
    finally:
        hf_logging.set_verbosity(verbosity)
    assert len(ids) == 13
    assert "longer than the specified maximum sequence length" in captured.out
    assert tok("ACGT" * 3, truncation=True)["input_ids"] == [7, 8, 9, 10, 7, 8, 9, 1]


# --- the lookup path (ASCII text without "[") against the Rust backend -----------------------------------------------


def _backend_only() -> CaduceusTokenizer:
    """A CaduceusTokenizer whose every call goes through the Rust backend: the reference for the lookup path."""
    reference = CaduceusTokenizer()
    reference._lookup_encode = lambda text, kwargs: None
    return reference


def _nested_lists(value):
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        return value.item()
    if isinstance(value, (torch.Tensor, np.ndarray, list, tuple)):
        return [_nested_lists(v) for v in value]
    return value


def _assert_same_encoding(got, expected):
    assert list(got.keys()) == list(expected.keys())
    for key, value in expected.items():
        assert type(got[key]) is type(value), key
        if isinstance(value, (torch.Tensor, np.ndarray)):
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            assert _nested_lists(got[key]) == _nested_lists(value), key
        else:
            assert got[key] == value, key  # offsets: lists of tuples, as the backend gives
    assert got.n_sequences == expected.n_sequences
    assert got.is_fast == expected.is_fast
    assert [e.ids for e in got.encodings] == [e.ids for e in expected.encodings]
    assert [e.tokens for e in got.encodings] == [e.tokens for e in expected.encodings]


@pytest.fixture(scope="module")
def lookup_and_reference() -> tuple[CaduceusTokenizer, CaduceusTokenizer]:
    return CaduceusTokenizer(), _backend_only()


ASCII_DNA = st.text(alphabet="ACGTNacgtnRYKMSWBDHV0189 \n\t-.", max_size=40)
CALL_ARGUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "add_special_tokens": st.booleans(),
        "padding": st.sampled_from([False, True, "longest", "max_length"]),
        "truncation": st.sampled_from([False, True, "longest_first", "only_first"]),
        "max_length": st.integers(0, 45),
        "pad_to_multiple_of": st.sampled_from([None, 4, 8]),
        "padding_side": st.sampled_from(["left", "right"]),
        "return_tensors": st.sampled_from([None, "pt", "np"]),
        "return_token_type_ids": st.booleans(),
        "return_attention_mask": st.booleans(),
        "return_special_tokens_mask": st.booleans(),
        "return_length": st.booleans(),
        "return_offsets_mapping": st.booleans(),
    },
)


@settings(max_examples=150, deadline=None)
@given(
    texts=st.one_of(ASCII_DNA, st.lists(ASCII_DNA, min_size=1, max_size=4)),
    arguments=CALL_ARGUMENTS,
    add_bos_token=st.booleans(),
    truncation_side=st.sampled_from(["left", "right"]),
)
def test_lookup_path_gives_the_backend_batch_encoding(
    lookup_and_reference, texts, arguments, add_bos_token, truncation_side
):
    tok, reference = lookup_and_reference
    tok.add_bos_token = reference.add_bos_token = add_bos_token
    tok.truncation_side = reference.truncation_side = truncation_side
    try:
        expected = reference(texts, **arguments)
    except ValueError as err:  # e.g. ragged tensors, or max_length below the special tokens
        with pytest.raises(type(err)):
            tok(texts, **arguments)
        return
    got = tok(texts, **arguments)
    _assert_same_encoding(got, expected)


def test_lookup_path_takes_the_common_calls_and_leaves_the_rest_to_the_backend(tok):
    from caduceus_hf.tokenization_caduceus import _EncodingsOnDemand

    for call in (
        lambda: tok("acgtN"),
        lambda: tok(["ACGT", "a"], padding=True, return_tensors="pt"),
        lambda: tok(["ACGT", "a"], truncation=True, max_length=3, return_special_tokens_mask=True),
        lambda: tok("ACGT", return_offsets_mapping=True),
    ):
        assert type(call()) is _EncodingsOnDemand
    for call in (
        lambda: tok("AC[MASK]"),  # added tokens in the text
        lambda: tok("ACßG"),  # non-ASCII: str.upper may expand
        lambda: tok("AC", "GT"),  # pairs
        lambda: tok(["ACGT", "A"], truncation=True, max_length=2, return_overflowing_tokens=True),
        lambda: tok(["ACGT"], is_split_into_words=True),
    ):
        assert type(call()) is BatchEncoding


def test_lookup_path_encodings_on_demand(tok):
    encoded = tok(["acgT", "n"], padding=True)
    assert encoded.tokens(1) == ["[PAD]", "[PAD]", "[PAD]", "N", "[SEP]"]
    assert encoded.char_to_token(0, 2) == 2 and encoded.token_to_chars(0, 3) == (3, 4)
    assert encoded.word_ids(0) == [0, 0, 0, 0, None]
    restored = pickle.loads(pickle.dumps(tok("ACG")))
    assert restored["input_ids"] == [7, 8, 9, 1] and restored.tokens() == ["A", "C", "G", "[SEP]"]


def test_lookup_path_warns_about_too_long_sequences():
    tok, reference = CaduceusTokenizer(model_max_length=4), _backend_only()
    reference.model_max_length = 4
    logger = hf_logging.get_logger("transformers.tokenization_utils_base")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    try:
        for t in (tok, reference):
            with CaptureLogger(logger) as captured:
                t("ACGTACGT")
            assert "longer than the specified maximum sequence length" in captured.out
    finally:
        hf_logging.set_verbosity(verbosity)


def test_lookup_path_follows_added_tokens_and_special_token_changes():
    tok = CaduceusTokenizer()
    tok.add_tokens(["acg"])  # a new token: the backend must find it, so the lookup path stands aside
    ids = tok("TTacgTT", add_special_tokens=False)["input_ids"]
    assert ids == [10, 10, 12, 10, 10] == tok.backend_tokenizer.encode("TTacgTT", add_special_tokens=False).ids
    tok = CaduceusTokenizer()
    tok.sep_token = "[CLS]"
    assert tok("AC")["input_ids"] == [7, 8, 0] == tok.backend_tokenizer.encode("AC").ids


# --- standard API: works and round-trips, or is refused at the call ---------------------------------------------------


def _reloaded(tok: CaduceusTokenizer, tmp_path: Path, loader=AutoTokenizer):
    target = tmp_path / f"saved{len(list(tmp_path.iterdir()))}"
    tok.save_pretrained(target)
    return loader.from_pretrained(target)


def test_the_tokenizer_model_type_is_declared_and_rebuilds_from_tokenizer_json(tmp_path, tok):
    tok.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert CaduceusTokenizer.model.__name__ == saved["model"]["type"] == "BPE"
    # What transformers' loaders and TokenizersExtractor pass: the vocabulary and the (empty) merges of the file.
    rebuilt = CaduceusTokenizer(vocab=saved["model"]["vocab"], merges=saved["model"]["merges"])
    as_pairs = CaduceusTokenizer(vocab=[(t, 0.0) for t in sorted(VOCAB, key=VOCAB.get)])
    text = "acgtN[MASK]x"
    assert rebuilt(text)["input_ids"] == as_pairs(text)["input_ids"] == original_ids(text)


@pytest.mark.parametrize("loader", [AutoTokenizer, CaduceusTokenizer])
def test_add_bos_token_keeps_sep_and_round_trips(tmp_path, loader):
    tok = CaduceusTokenizer(add_bos_token=True)
    assert tok("ACG")["input_ids"] == [2, 7, 8, 9, 1] == tok.backend_tokenizer.encode("ACG").ids
    assert tok("AC", "G")["input_ids"] == [2, 7, 8, 1, 2, 9, 1]
    assert tok.get_special_tokens_mask([7, 8]) == [1, 0, 0, 1]
    reloaded = _reloaded(tok, tmp_path, loader)
    assert reloaded.add_bos_token and reloaded("ACG")["input_ids"] == [2, 7, 8, 9, 1]
    tok.add_bos_token = False
    assert tok("ACG")["input_ids"] == [7, 8, 9, 1]
    assert _reloaded(tok, tmp_path, loader)("ACG")["input_ids"] == [7, 8, 9, 1]


def test_add_eos_token_appends_a_different_eos_after_sep(tmp_path):
    assert CaduceusTokenizer(add_eos_token=True)("AC")["input_ids"] == [7, 8, 1]  # eos_token is [SEP] already
    tok = CaduceusTokenizer(add_eos_token=True, eos_token="[CLS]")
    assert tok("AC")["input_ids"] == [7, 8, 1, 0]
    assert _reloaded(tok, tmp_path)("AC")["input_ids"] == [7, 8, 1, 0]


def test_special_tokens_set_to_none_round_trip(tmp_path):
    tok = CaduceusTokenizer()
    tok.bos_token = None
    reloaded = _reloaded(tok, tmp_path)
    assert reloaded.bos_token is None and reloaded("AC")["input_ids"] == [7, 8, 1]
    reloaded.add_bos_token = True  # no bos_token: silently off, as in transformers
    assert not reloaded.add_bos_token and reloaded("AC")["input_ids"] == [7, 8, 1]
    no_sep = CaduceusTokenizer(sep_token=None)
    assert no_sep("AC")["input_ids"] == [7, 8] == _reloaded(no_sep, tmp_path)("AC")["input_ids"]


def test_added_tokens_and_new_special_tokens_round_trip(tmp_path):
    tok = CaduceusTokenizer()
    assert tok.add_tokens(["<motif>"]) == 1
    assert tok.add_special_tokens({"sep_token": "<sep>", "extra_special_tokens": ["<x>"]}) == 2
    assert len(tok) == 15 and tok.get_vocab()["<motif>"] == 12
    text = "ac<motif>g<x>"
    expected = [7, 8, 12, 9, 14, 13]
    assert tok(text)["input_ids"] == expected
    for loader in (AutoTokenizer, CaduceusTokenizer):
        reloaded = _reloaded(tok, tmp_path, loader)
        assert type(reloaded) is CaduceusTokenizer
        assert reloaded(text)["input_ids"] == expected and reloaded.sep_token == "<sep>"
        assert reloaded.get_vocab() == tok.get_vocab() and reloaded.extra_special_tokens == ["<x>"]
    # A new special token given to the constructor is added the same way.
    assert CaduceusTokenizer(pad_token="<pad>")(["A", "ACG"], padding=True)["input_ids"][0] == [12, 12, 7, 1]


def test_setting_a_special_token_outside_the_vocabulary_is_refused_at_the_call(tok):
    tok = CaduceusTokenizer()
    with pytest.raises(ValueError, match=r"\['<nope>'\] are not in the vocabulary.*add_special_tokens"):
        tok.sep_token = "<nope>"
    assert tok.sep_token == "[SEP]" and tok("A")["input_ids"] == [7, 1]


def test_train_new_from_iterator_gives_a_generic_tokenizer_that_round_trips(tmp_path):
    tok = CaduceusTokenizer(add_bos_token=True)
    corpus = ["ACGTACGTAAAACCCGGG", "acgtTTTTGGGGacgt"] * 20
    trained = tok.train_new_from_iterator(corpus, vocab_size=40)
    assert type(trained) is TokenizersBackend and len(trained) > len(tok)
    ids = trained("acgtaaaa")["input_ids"]
    assert ids[0] == trained.bos_token_id and ids[-1] == trained.sep_token_id and len(ids) < 10
    assert trained.decode(ids, skip_special_tokens=True) == "ACGTAAAA"
    reloaded = _reloaded(trained, tmp_path)
    assert type(reloaded) is TokenizersBackend and reloaded("acgtaaaa")["input_ids"] == ids
