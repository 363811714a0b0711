"""transformers' common tokenizer tests (TokenizerTesterMixin, TokenizersBackendTesterMixin) run on CaduceusTokenizer.

The mixins come from the sdist of the installed transformers (see conftest.py). Tests that cannot apply to a
character-level DNA tokenizer are listed in NOT_APPLICABLE with the reason; every other test of both mixins runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import unittest
from pathlib import Path

import pytest

from caduceus_hf import CaduceusTokenizer

common = pytest.importorskip("hf_tests.test_tokenization_common", reason="transformers' common tests are not fetched")
backend_mixin = pytest.importorskip("hf_tests.test_tokenizers_backend_mixin")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CANONICAL_DIR = Path(__file__).resolve().parents[2] / "tokenizer"

# test name -> why it cannot apply to CaduceusTokenizer. The one place where tests of the two mixins are skipped.
NOT_APPLICABLE: dict[str, str] = {
    "test_alignment_methods": (
        "DNA text has no words: the whole text is one pre-token, so word_ids() is 0 everywhere and the test's "
        "six-word sentence cannot give six words (character alignment is tested in tests/test_tokenization_caduceus.py)"
    ),
}

# The original tokenizer's vocabulary, as recorded from it (not read from the package).
VOCAB: dict[str, int] = json.loads((FIXTURES / "tokenizer_cases.json").read_text())["vocab"]


def original_tokens(text: str) -> list[str]:
    """The original slow tokenizer on text without special tokens: upper-case, one token per character."""
    return [char if char in VOCAB else "[UNK]" for char in text.upper()]


class CaduceusTokenizationTest(
    common.TokenizerTesterMixin, backend_mixin.TokenizersBackendTesterMixin, unittest.TestCase
):
    tokenizer_class = CaduceusTokenizer
    rust_tokenizer_class = CaduceusTokenizer
    # The published layout (tokenizer_config.json of kuleshov-group/caduceus-ph, no tokenizer.json) and the canonical
    # files shipped with every conversion.
    from_pretrained_id = [str(FIXTURES / "mlm_ph"), str(CANONICAL_DIR)]
    from_pretrained_kwargs = {}
    # transformers' integration text (English, emoji, Thai, "<s>"): nearly every character is [UNK].
    integration_expected_tokens = original_tokens(common.TokenizerTesterMixin.integration_test_input_string)
    integration_expected_token_ids = [VOCAB[token] for token in integration_expected_tokens]
    integration_expected_decoded_text = "".join(integration_expected_tokens)

    @classmethod
    def setUpClass(cls) -> None:
        # The mixins' setUpClass also reads tests/fixtures/sample_text.txt of the transformers checkout, which no test
        # here uses and the fetched suite does not carry.
        cls.tokenizers_list = [(cls.tokenizer_class, name, {}) for name in cls.from_pretrained_id]
        cls.tmpdirname = tempfile.mkdtemp()
        CaduceusTokenizer.from_pretrained(cls.from_pretrained_id[0]).save_pretrained(cls.tmpdirname)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmpdirname, ignore_errors=True)

    def get_input_output_texts(self, tokenizer):
        # The mixin's default joins vocabulary tokens with a space, which is an unknown character here.
        return "acgtN ACG", "".join(original_tokens("acgtN ACG"))


# getattr fails when a listed test no longer exists in the installed transformers: the list stays honest.
for _name, _reason in NOT_APPLICABLE.items():
    setattr(CaduceusTokenizationTest, _name, unittest.skip(_reason)(getattr(CaduceusTokenizationTest, _name)))
