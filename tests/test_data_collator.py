"""DataCollatorForNucleotideMLM: what is masked, what replaces it, and what it hands to the model."""

from __future__ import annotations

import pytest
import torch
from conftest import on_backend, tiny_config
from transformers import BertTokenizer, Trainer, TrainingArguments

from caduceus_hf import CaduceusForMaskedLM, CaduceusTokenizer, DataCollatorForNucleotideMLM

A, C, G, T, N = 7, 8, 9, 10, 11
NUCLEOTIDES = {A, C, G, T}
SEP, PAD, MASK, UNK = 1, 4, 3, 6
# Every id that is not a sequence token: [CLS] [SEP] [BOS] [MASK] [PAD] [RESERVED] [UNK].
PROTECTED = torch.tensor([0, 1, 2, 3, 4, 5, 6])


@pytest.fixture(scope="module")
def tok() -> CaduceusTokenizer:
    return CaduceusTokenizer()


def _examples(tok, texts, **kwargs):
    encoded = tok(texts, **kwargs)
    return [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]


def _random_dna(n: int, length: int, seed: int = 0) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    return ["".join("ACGTN"[i] for i in torch.randint(0, 5, (length,), generator=gen)) for _ in range(n)]


@pytest.mark.parametrize("with_special_tokens_mask", [False, True])
def test_never_selects_special_tokens_or_padding(tok, with_special_tokens_mask):
    texts = ["ACGT[MASK]acgtRYN[CLS]", "GG", "[BOS]TTTTx[RESERVED]"]
    examples = _examples(tok, texts, return_special_tokens_mask=with_special_tokens_mask)
    collator = DataCollatorForNucleotideMLM(tok, mlm_probability=1.0, seed=0)
    batch = collator(examples)
    original = tok(texts, padding=True, return_tensors="pt")["input_ids"]
    protected = torch.isin(original, PROTECTED)
    assert protected.sum() > 10 and (original == PAD).any() and (original == UNK).any()
    assert (batch["labels"][protected] == -100).all()
    assert torch.equal(batch["input_ids"][protected], original[protected])
    # mlm_probability=1: every sequence token (A C G T N) is a target.
    assert torch.equal(batch["labels"][~protected], original[~protected])
    assert torch.equal(batch["attention_mask"], (original != PAD).long())


def test_replacement_proportions_and_nucleotide_only_draws(tok):
    examples = _examples(tok, _random_dna(64, 500))
    batch = DataCollatorForNucleotideMLM(tok, seed=0)(examples)
    original = tok(_random_dna(64, 500), return_tensors="pt")["input_ids"]
    selected = batch["labels"] != -100
    sequence = ~torch.isin(original, PROTECTED)
    assert not (selected & ~sequence).any()
    assert abs(selected.sum().item() / sequence.sum().item() - 0.15) < 0.01
    got = batch["input_ids"][selected]
    truth = original[selected]
    masked = (got == MASK).float().mean().item()
    replaced = ((got != MASK) & (got != truth)).float().mean().item()
    kept = (got == truth).float().mean().item()
    # 80% [MASK]; 10% a uniform draw from A C G T, which hits the original base a quarter of the time (or never, for N).
    assert abs(masked - 0.8) < 0.02
    assert 0.06 < replaced < 0.1
    assert abs(kept - (1 - masked - replaced)) < 1e-6
    assert set(got[(got != MASK) & (got != truth)].tolist()) <= NUCLEOTIDES
    assert torch.equal(batch["input_ids"][~selected], original[~selected])


def test_random_replacements_are_uniform_over_acgt(tok):
    collator = DataCollatorForNucleotideMLM(
        tok, mlm_probability=1.0, mask_replace_prob=0.0, random_replace_prob=1.0, seed=1
    )
    batch = collator(_examples(tok, ["N" * 2000]))
    drawn = batch["input_ids"][0, :-1]
    assert set(drawn.tolist()) == NUCLEOTIDES
    counts = torch.bincount(drawn, minlength=12)[[A, C, G, T]].float() / drawn.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.04)
    assert batch["input_ids"][0, -1] == SEP


def test_seed_makes_masking_reproducible(tok):
    examples = _examples(tok, _random_dna(4, 200))
    first = DataCollatorForNucleotideMLM(tok, seed=3)(examples)
    again = DataCollatorForNucleotideMLM(tok, seed=3)(examples)
    other = DataCollatorForNucleotideMLM(tok, seed=4)(examples)
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["labels"], other["labels"])


def test_pad_to_multiple_of_and_bare_id_lists(tok):
    ids = [tok("ACGTACGTA")["input_ids"], tok("AC")["input_ids"]]
    batch = DataCollatorForNucleotideMLM(tok, pad_to_multiple_of=8, mlm_probability=1.0, seed=0)(ids)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].shape == (2, 16)
    assert (batch["input_ids"][1, :13] == PAD).all()
    assert (batch["labels"][1, :13] == -100).all() and batch["labels"][1, -1] == -100
    assert batch["labels"][1, 13:15].tolist() == [A, C]


def test_loss_weights_are_padded_on_the_padding_side(tok):
    examples = _examples(tok, ["ACGT", "A"])
    examples[0]["loss_weights"] = [0.5, 1.0, 1.0, 0.25, 0.0]
    examples[1]["loss_weights"] = [2.0, 0.0]
    batch = DataCollatorForNucleotideMLM(tok, seed=0)(examples)
    assert batch["loss_weights"].dtype == torch.float32
    assert batch["loss_weights"].tolist() == [[0.5, 1.0, 1.0, 0.25, 0.0], [0.0, 0.0, 0.0, 2.0, 0.0]]
    right = CaduceusTokenizer(padding_side="right")
    batch = DataCollatorForNucleotideMLM(right, seed=0)(examples)
    assert batch["loss_weights"][1].tolist() == [2.0, 0.0, 0.0, 0.0, 0.0]
    assert batch["input_ids"][1].tolist() == [A, SEP, PAD, PAD, PAD]


def test_loss_weights_errors(tok):
    examples = _examples(tok, ["ACGT", "A"])
    collator = DataCollatorForNucleotideMLM(tok)
    examples[0]["loss_weights"] = [1.0] * 5
    with pytest.raises(ValueError, match="every example or none"):
        collator(examples)
    examples[1]["loss_weights"] = [1.0] * 3
    with pytest.raises(ValueError, match=r"example 1: loss_weights must have one weight per input id \(2\)"):
        collator(examples)


def test_rejects_unsupported_settings(tok):
    with pytest.raises(ValueError, match="mlm=True"):
        DataCollatorForNucleotideMLM(tok, mlm=False)
    with pytest.raises(ValueError, match="return_tensors='pt'"):
        DataCollatorForNucleotideMLM(tok, return_tensors="np")
    with pytest.raises(ValueError, match="whole_word_mask"):
        DataCollatorForNucleotideMLM(tok, whole_word_mask=True)
    bert = BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 5})
    with pytest.raises(ValueError, match="needs the Caduceus vocabulary"):
        DataCollatorForNucleotideMLM(bert)
    with pytest.raises(ValueError, match="empty list"):
        DataCollatorForNucleotideMLM(tok)([])


def test_trains_a_step_with_trainer(tok, tmp_path):
    model = on_backend(CaduceusForMaskedLM(tiny_config()), "reference")
    # Short sequences of unequal length: the reference scan is a Python loop over positions.
    dataset = [
        {**e, "loss_weights": [1.0] * len(e["input_ids"])} for e in _examples(tok, ["ACGTAC", "GGA", "TTN", "C"])
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=DataCollatorForNucleotideMLM(tok, seed=0)
    )
    result = trainer.train()
    assert result.global_step == 1
    assert torch.isfinite(torch.tensor(result.training_loss))
