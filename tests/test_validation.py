"""validate_inputs: the value checks that forward leaves out so that it needs no host sync."""

from __future__ import annotations

import pytest
import torch

from caduceus_hf import (
    Caduceus,
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
    CaduceusTokenizer,
    DataCollatorForNucleotideMLM,
    validate_inputs,
)

from conftest import random_ids, tiny_config


def test_ids_outside_the_vocabulary():
    config = tiny_config()
    for bad in (16, 99, -1):
        with pytest.raises(ValueError, match=f"token id {bad}, outside the vocabulary \\[0, 16\\)"):
            validate_inputs(config, torch.tensor([[7, 8, bad]]))
    validate_inputs(config, torch.tensor([[0, 15]]))


def test_masks_must_be_binary_with_a_real_token_per_row():
    config = tiny_config()
    ids = random_ids(2, 4)
    with pytest.raises(ValueError, match="0 and 1.*got 2"):
        validate_inputs(config, ids, torch.tensor([[1, 2, 1, 1], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="0 and 1.*0.5"):
        validate_inputs(config, ids, torch.tensor([[1.0, 0.5, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"no real token in row\(s\) \[1\]"):
        validate_inputs(config, ids, torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"no real token in row\(s\) \[0\]"):
        strand_pairs = torch.ones(2, 4, 2, dtype=torch.long)
        strand_pairs[0, :, 1] = 0
        validate_inputs(config, ids, strand_pairs)
    validate_inputs(config, ids, torch.tensor([[True, False, True, False], [False, False, False, True]]))
    validate_inputs(config, ids, torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]]))


@pytest.mark.parametrize(
    "head, good, bad, message",
    [
        (CaduceusForMaskedLM, [[-100, 7, 15]], [[-100, 7, 16]], r"token ids in \[0, 16\) or -100 \(ignored\); got 7..16"),
        (CaduceusForTokenClassification, [[-100, 0, 2]], [[-100, -5, 1]], r"class ids in \[0, 3\) or -100"),
        (CaduceusForSequenceClassification, [0, 2, 1], [0, 3, 1], r"class ids in \[0, 3\); got 0..3"),
    ],
)
def test_labels_are_checked_for_each_head(head, good, bad, message):
    model = head(tiny_config(num_labels=3))
    ids = random_ids(3, 3) if head is CaduceusForSequenceClassification else random_ids(1, 3)
    model.validate_inputs(input_ids=ids, labels=torch.tensor(good))
    with pytest.raises(ValueError, match=message):
        model.validate_inputs(input_ids=ids, labels=torch.tensor(bad))


def test_regression_and_multi_label_targets_are_not_class_ids():
    model = CaduceusForSequenceClassification(tiny_config(num_labels=3))
    model.validate_inputs(input_ids=random_ids(2, 4), labels=torch.tensor([[0.0, 5.0, 1.0], [1.0, 0.0, -3.0]]))


def test_a_collated_batch_validates_whole():
    tokenizer = CaduceusTokenizer()
    collator = DataCollatorForNucleotideMLM(tokenizer, seed=0)
    batch = collator([tokenizer("ACGTACGTAC"), tokenizer("ACG")])
    CaduceusForMaskedLM(tiny_config()).validate_inputs(**batch)
    with pytest.raises(ValueError, match="shape"):
        Caduceus(tiny_config()).validate_inputs(input_ids=batch["input_ids"][0])
