"""Reverse-complement helpers for strings and token ids."""

from __future__ import annotations

import torch

from caduceus_hf.dna import (
    DNA_COMPLEMENT_MAP,
    VOCAB,
    flip_real_tokens,
    real_tokens_first,
    reverse_complement,
    reverse_complement_ids,
)


def test_string_reverse_complement():
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("acgRY") == "RYcgt"
    assert reverse_complement(reverse_complement("ACGTRYKMSWBDHVN-x")) == "ACGTRYKMSWBDHVN-x"


def test_id_reverse_complement_matches_the_string_one():
    text = "ACGTTGCAN"
    ids = torch.tensor([[VOCAB[c] for c in text]])
    expected = torch.tensor([[VOCAB[c] for c in reverse_complement(text)]])
    assert torch.equal(reverse_complement_ids(ids), expected)
    assert all(DNA_COMPLEMENT_MAP[DNA_COMPLEMENT_MAP[i]] == i for i in DNA_COMPLEMENT_MAP)


def test_padding_keeps_its_side():
    pad = VOCAB["[PAD]"]
    left = torch.tensor([[pad, pad, VOCAB["A"], VOCAB["C"]]])
    right = torch.tensor([[VOCAB["A"], VOCAB["C"], pad, pad]])
    g, t = VOCAB["G"], VOCAB["T"]
    assert reverse_complement_ids(left, attention_mask=(left != pad).long()).tolist() == [[pad, pad, g, t]]
    assert reverse_complement_ids(right, attention_mask=(right != pad).long()).tolist() == [[g, t, pad, pad]]


def test_flip_real_tokens_on_states_and_empty_batches():
    x = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[0, 1, 1, 1]])
    flipped = flip_real_tokens(x, mask)
    assert torch.equal(flipped[0, 0], x[0, 0]) and torch.equal(flipped[0, 1:], x[0, 1:].flip(0))
    empty = torch.zeros(2, 0, dtype=torch.long)
    assert reverse_complement_ids(empty, attention_mask=empty).shape == (2, 0)


def test_flip_real_tokens_across_gaps():
    x = torch.tensor([[1, 0, 2, 3, 0], [0, 4, 0, 0, 5]])
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 0, 0, 1]])
    assert flip_real_tokens(x, mask).tolist() == [[3, 0, 2, 1, 0], [0, 5, 0, 0, 4]]
    states = torch.randn(2, 5, 3)
    flipped = flip_real_tokens(states, mask)
    for row in range(2):
        real = mask[row].bool()
        assert torch.equal(flipped[row][real], states[row][real].flip(0))
        assert torch.equal(flipped[row][~real], states[row][~real])
    assert torch.equal(flip_real_tokens(flipped, mask), states)


def test_real_tokens_first_is_a_stable_packing():
    mask = torch.tensor([[0, 1, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert real_tokens_first(mask).tolist() == [[1, 3, 4, 0, 2], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


def test_id_reverse_complement_with_gaps_matches_the_string_one():
    a, c, g, t, pad = (VOCAB[k] for k in ("A", "C", "G", "T", "[PAD]"))
    ids = torch.tensor([[a, pad, a, c, pad, g]])
    mask = (ids != pad).long()
    assert reverse_complement_ids(ids, attention_mask=mask).tolist() == [[c, pad, g, t, pad, t]]
