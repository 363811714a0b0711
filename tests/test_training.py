"""caduceus_hf.training: data loading, MLM pretraining, fine-tuning, Trainer ecosystem features and the CLI.

Every test trains tiny models (d_model 16-32, 1-2 layers, sequences <= 64 tokens) for a few steps and checks what
training did (a loss that falls, a task learned above chance, equal gradients), not only that it ran.
The committed FASTA slice tests/data/lambda_phage_NC_001416.1_1-6000.fa.gz is the first 6,000 bp of phage lambda
(NCBI RefSeq NC_001416.1, from Debian's bowtie2-examples).
"""

from __future__ import annotations

import copy
import csv
import gzip
import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from huggingface_hub import ModelCard
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from caduceus_hf import CaduceusForMaskedLM, CaduceusForSequenceClassification, CaduceusTokenizer
from caduceus_hf.cli import main as cli_main
from caduceus_hf.dna import VOCAB, reverse_complement
from caduceus_hf.mixer import BiMamba
from caduceus_hf.training import (
    CaduceusTrainer,
    FinetuneDataOptions,
    GenomeWindowDataset,
    LabelledSequenceDataset,
    MLMCollator,
    PremaskedDataset,
    PretrainDataOptions,
    Region,
    build_model,
    finetune,
    parse_region,
    pretrain,
    read_fasta,
    read_sequence_table,
    split_indices,
    split_records,
    tile_windows,
)
from caduceus_hf.training.data import read_fasta_files, reverse_complement_item, softmask_weights
from caduceus_hf.training.metrics import masked_lm_metrics, masked_token_nll, sequence_classification_metrics

LAMBDA_SLICE = Path(__file__).parent / "data" / "lambda_phage_NC_001416.1_1-6000.fa.gz"
REPO = Path(__file__).resolve().parents[1]
MASK, SEP = VOCAB["[MASK]"], VOCAB["[SEP]"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tensors here are tiny: one thread avoids OpenMP synchronisation, which dominates on a shared, busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer() -> CaduceusTokenizer:
    return CaduceusTokenizer()


def training_args(output_dir: Path, **overrides) -> TrainingArguments:
    kwargs = dict(
        output_dir=str(output_dir), per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=10,
        learning_rate=3e-3, use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=1,
        seed=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def random_dna(rng: np.random.Generator, length: int, probs=(0.25, 0.25, 0.25, 0.25)) -> str:
    return "".join(np.array(list("ACGT"))[rng.choice(4, size=length, p=probs)])


def write_table(path: Path, rows: list[tuple[str, str]], header=("seq", "label"), delimiter=",") -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def gc_table(path: Path, n: int = 160, seed: int = 0) -> Path:
    """Label 1: GC-rich (GC 0.7), label 0: AT-rich (GC 0.3); lengths 24-48, so batches need padding."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        gc = 0.7 if label else 0.3
        probs = ((1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2)
        rows.append((random_dna(rng, int(rng.integers(24, 49)), probs), str(label)))
    return write_table(path, rows)


def params_vector(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class LossLog(TrainerCallback):
    """Training losses as logged by Trainer (one per logging step)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


# --- FASTA, regions, windows ---------------------------------------------------------------------------------------


def test_read_fasta_plain_and_gzipped_keeps_case(tmp_path):
    text = ">chrA first record\nACGTacgt\nNNAC\n>chrB\nGGGG\n"
    plain = tmp_path / "x.fa"
    plain.write_text(text)
    zipped = tmp_path / "x.fa.gz"
    zipped.write_bytes(gzip.compress(text.encode()))
    for path in (plain, zipped):
        records = read_fasta(path)
        assert [(r.name, r.sequence) for r in records] == [("chrA", "ACGTacgtNNAC"), ("chrB", "GGGG")]
    lam = read_fasta(LAMBDA_SLICE)
    assert len(lam) == 1 and len(lam[0]) == 6000 and lam[0].sequence.startswith("GGGCGGCGACCTCGCGGGTT")


def test_read_fasta_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.fa"):
        read_fasta(tmp_path / "missing.fa")
    headless = tmp_path / "headless.fa"
    headless.write_text("\nACGT\n>x\nAC\n")
    with pytest.raises(ValueError, match=r"headless\.fa:2: not FASTA"):
        read_fasta(headless)
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    with pytest.raises(ValueError, match="no FASTA records"):
        read_fasta(empty)
    a, b = tmp_path / "a.fa", tmp_path / "b.fa"
    a.write_text(">same\nACGT\n")
    b.write_text(">same\nTTTT\n")
    with pytest.raises(ValueError, match="also appears in"):
        read_fasta_files([a, b])


def test_regions_are_samtools_strings():
    region = parse_region("NC_001416.1:1-6000:101-1,200")
    assert region == Region("NC_001416.1:1-6000", 100, 1200) and len(region) == 1100
    assert str(region) == "NC_001416.1:1-6000:101-1200"
    for bad in ("chr1", "chr1:0-10", "chr1:10-5"):
        with pytest.raises(ValueError, match="region"):
            parse_region(bad)


def test_holdout_split_and_windows_never_touch_the_heldout_region():
    records = read_fasta(LAMBDA_SLICE)
    name = records[0].name
    seqs = {name: records[0].sequence}
    split = split_records(records, holdout_fraction=0.05)
    assert split.heldout == (Region(name, 5700, 6000),)
    assert split.train == (Region(name, 0, 5700),)
    windows = tile_windows(split.train, seqs, window=64, stride=32)
    assert windows[0] == Region(name, 0, 64) and windows[-1].end <= 5700 and len(windows) == (5700 - 64) // 32 + 1

    middle = split_records(records, holdout_regions=[f"{name}:2001-2500"])
    assert middle.heldout == (Region(name, 2000, 2500),)
    assert middle.train == (Region(name, 0, 2000), Region(name, 2500, 6000))
    for w in tile_windows(middle.train, seqs, window=100, stride=7):
        assert w.end <= 2000 or w.start >= 2500
    with pytest.raises(ValueError, match="no record named"):
        split_records(records, holdout_regions=["chrX:1-10"])
    with pytest.raises(ValueError, match="ends past"):
        split_records(records, holdout_regions=[f"{name}:5990-6010"])
    gappy = {"g": "ACGT" * 10 + "N" * 40}
    assert tile_windows([Region("g", 0, 80)], gappy, window=40) == [Region("g", 0, 40)]


def test_softmask_weights_come_from_the_raw_text_and_follow_rc(tokenizer):
    assert softmask_weights("ACgt", 0.1).tolist() == pytest.approx([1, 1, 0.1, 0.1])
    seqs = {"r": "AAAAccccGGGGacgt"}
    ds = GenomeWindowDataset(seqs, [Region("r", 0, 16)], tokenizer, softmask_weight=0.25)
    item = ds[0]
    assert item["input_ids"][-1] == SEP and len(item["loss_weights"]) == 17
    assert item["loss_weights"] == pytest.approx([1] * 4 + [0.25] * 4 + [1] * 4 + [0.25] * 4 + [1])

    augmented = GenomeWindowDataset(seqs, [Region("r", 0, 16)], tokenizer, rc_augment=True, softmask_weight=0.25)
    torch.manual_seed(0)
    items = [augmented[0] for _ in range(40)]
    rc_ids = tokenizer(reverse_complement(seqs["r"]))["input_ids"]  # [SEP] stays last, as conjoining does it
    flipped = [it for it in items if it["input_ids"] == rc_ids]
    assert 8 <= len(flipped) <= 32 and len(flipped) + items.count(item) == 40, "about half are RC"
    # rc("AAAAccccGGGGacgt") = "acgtCCCCggggTTTT": the soft-masked bases move with their complements.
    assert flipped[0]["loss_weights"] == pytest.approx([0.25] * 4 + [1] * 4 + [0.25] * 4 + [1] * 4 + [1])


def test_reverse_complement_item_keeps_framing_tokens_and_reverses_labels():
    item = {"input_ids": [7, 8, 9, 10, 10, SEP], "attention_mask": [1] * 6, "labels": [0, 1, 2, 3, 4, -100]}
    rc = reverse_complement_item(item, ("labels",))
    assert rc["input_ids"] == [7, 7, 8, 9, 10, SEP]  # rc("ACGTT") = "AACGT", [SEP] last
    assert rc["labels"] == [4, 3, 2, 1, 0, -100] and rc["attention_mask"] == item["attention_mask"]
    assert reverse_complement_item(rc, ("labels",)) == item


def test_soft_masked_real_data_gets_weights(shared_data, tokenizer):
    """The soft-masked hg19 slice: the weights mark exactly its lowercase bases."""
    record = read_fasta(shared_data / "genomes" / "human_chr17_hg19_part.fa")[0]
    start = next(i for i, c in enumerate(record.sequence) if c.islower()) - 32  # straddle the first repeat's start
    ds = GenomeWindowDataset({record.name: record.sequence}, [Region(record.name, start, start + 64)], tokenizer,
                             softmask_weight=0.0)
    text = record.sequence[start : start + 64]
    assert any(c.islower() for c in text) and any(c.isupper() for c in text)
    assert ds[0]["loss_weights"][:-1] == [0.0 if c.islower() else 1.0 for c in text]


def test_premasked_heldout_set_is_fixed_and_all_mask(tokenizer):
    seqs = {"r": read_fasta(LAMBDA_SLICE)[0].sequence}
    windows = [Region("r", i * 64, (i + 1) * 64) for i in range(20)]
    plain = GenomeWindowDataset(seqs, windows, tokenizer)
    a = PremaskedDataset(plain, tokenizer, mlm_probability=0.15, seed=3)
    b = PremaskedDataset(plain, tokenizer, mlm_probability=0.15, seed=3)
    assert [x["labels"] for x in a] == [x["labels"] for x in b]
    assert 0.08 < a.num_masked / (20 * 64) < 0.22
    for example, original in zip(a, (plain[i] for i in range(20))):
        for token, label, true in zip(example["input_ids"], example["labels"], original["input_ids"]):
            assert (token == MASK and label == true) if label != -100 else token == true
    with pytest.raises(ValueError, match="rc_augment"):
        PremaskedDataset(GenomeWindowDataset(seqs, windows, tokenizer, rc_augment=True), tokenizer)


def test_mlm_collator_masks_raw_examples_and_pads_premasked_ones_left(tokenizer):
    collator = MLMCollator(tokenizer)
    raw = [dict(tokenizer("ACGTACGTAC")), dict(tokenizer("ACG"))]
    torch.manual_seed(0)
    batch = collator(raw)
    assert set(batch) >= {"input_ids", "attention_mask", "labels"}
    premasked = [
        {"input_ids": [MASK, 8, SEP], "attention_mask": [1, 1, 1], "labels": [7, -100, -100],
         "loss_weights": [0.5, 1, 1]},
        {"input_ids": [7, SEP], "attention_mask": [1, 1], "labels": [-100, -100], "loss_weights": [1, 1]},
    ]
    batch = collator(premasked)
    assert batch["input_ids"].tolist() == [[MASK, 8, SEP], [VOCAB["[PAD]"], 7, SEP]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert batch["labels"].tolist() == [[7, -100, -100], [-100, -100, -100]]
    assert batch["loss_weights"].tolist() == [[0.5, 1, 1], [0, 1, 1]]


# --- tables ----------------------------------------------------------------------------------------------------------


def test_read_sequence_table_csv_tsv_and_errors(tmp_path):
    csv_path = write_table(tmp_path / "t.csv", [("ACGT", "1"), ("GGCC", "0"), ("TTAA", "1")])
    table = read_sequence_table(csv_path)
    assert table.sequences == ["ACGT", "GGCC", "TTAA"] and table.labels == [1, 0, 1] and table.num_labels == 2
    assert table.lines == [2, 3, 4]
    tsv = write_table(tmp_path / "t.tsv", [("ACGT", "enhancer"), ("GG", "other")], ("sequence", "class"), "\t")
    named = read_sequence_table(tsv, label_column="class")
    assert named.label_names == ["enhancer", "other"] and named.labels == [0, 1]
    tokens = write_table(tmp_path / "tok.csv", [("ACGT", "0110"), ("AC", "1 0")])
    assert read_sequence_table(tokens, task="token").labels == [[0, 1, 1, 0], [1, 0]]

    bad = write_table(tmp_path / "bad.csv", [("ACGT", "1"), ("", "0")])
    with pytest.raises(ValueError, match=r"bad\.csv:3: column 'seq' \(field 1\) is empty"):
        read_sequence_table(bad)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("seq,label\nACGT,1\nACGT,1,extra\n")
    with pytest.raises(ValueError, match=r"ragged\.csv:3: 3 fields"):
        read_sequence_table(ragged)
    wrong = write_table(tmp_path / "wrong.csv", [("ACGT", "011")])
    with pytest.raises(ValueError, match=r"wrong\.csv:2: column 'label': 3 per-base labels \(one digit per base\)"):
        read_sequence_table(wrong, task="token")
    unlabelled = write_table(tmp_path / "kind.csv", [("ACGT", "1")], ("seq", "kind"))
    with pytest.raises(ValueError, match=r"kind\.csv:1: cannot find the label column"):
        read_sequence_table(unlabelled)


def test_read_sequence_table_json_parquet_and_gzip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("ACGT", "1"), ("GGCC", "0"), ("TTAA", "1")]
    expected = read_sequence_table(write_table(tmp_path / "t.csv", rows))
    lines = tmp_path / "t.jsonl"
    lines.write_text("".join(json.dumps({"sequence": s, "label": int(y)}) + "\n" for s, y in rows))
    records = tmp_path / "t.json"
    records.write_text(json.dumps([{"seq": s, "label": y} for s, y in rows]))
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"seq": [s for s, _ in rows], "label": [int(y) for _, y in rows]}), parquet)
    zipped = tmp_path / "t.tsv.gz"
    with gzip.open(zipped, "wt") as fh:
        fh.write("seq\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    for path in (lines, records, parquet, zipped):
        table = read_sequence_table(path)
        assert (table.sequences, table.labels, table.label_names) == (
            expected.sequences, expected.labels, expected.label_names), path
    token_parquet = tmp_path / "tok.parquet"
    pq.write_table(pa.table({"seq": ["ACG"], "labels": [[0, 1, 1]]}), token_parquet)
    assert read_sequence_table(token_parquet, task="token").labels == [[0, 1, 1]]

    empty_label = tmp_path / "e.jsonl"
    empty_label.write_text('{"seq": "ACGT", "label": 1}\n{"seq": "ACGT", "label": null}\n')
    with pytest.raises(ValueError, match=r"e\.jsonl:2: column 'label' \(field 2\) is empty"):
        read_sequence_table(empty_label)
    with pytest.raises(ValueError, match=r"t\.xlsx: unknown table format"):
        read_sequence_table(tmp_path / "t.xlsx")
    with pytest.raises(FileNotFoundError, match="table not found"):
        read_sequence_table(tmp_path / "missing.parquet")
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(ValueError, match=r"broken\.parquet: cannot read it as parquet"):
        read_sequence_table(broken)


def test_split_is_fixed_by_seed():
    a = split_indices(100, 0.2, seed=7)
    assert a == split_indices(100, 0.2, seed=7) and a != split_indices(100, 0.2, seed=8)
    train, held_out = a
    assert len(held_out) == 20 and sorted(train + held_out) == list(range(100))


def test_metrics_use_the_whole_evaluation_set():
    from sklearn.metrics import f1_score, matthews_corrcoef
    from transformers import EvalPrediction

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 101)
    logits = rng.normal(size=(101, 2)) + np.eye(2)[labels] * 0.8
    metrics = sequence_classification_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    predictions = logits.argmax(-1)
    assert metrics["n"] == 101
    assert metrics["mcc"] == pytest.approx(matthews_corrcoef(labels, predictions))
    assert metrics["f1"] == pytest.approx(f1_score(labels, predictions))
    per_batch = np.mean([matthews_corrcoef(labels[i:i + 16], predictions[i:i + 16]) for i in range(0, 101, 16)])
    assert abs(per_batch - metrics["mcc"]) > 1e-3, "the batch-averaged MCC differs: the test can tell them apart"

    nll = masked_token_nll(torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]])), torch.tensor([[0, -100]]))
    assert nll.flatten().tolist() == pytest.approx([math.log(2), 0.0])
    mlm = masked_lm_metrics(EvalPrediction(predictions=nll.numpy(), label_ids=np.array([[0, -100]])))
    assert mlm["nll_bits"] == pytest.approx(1.0) and mlm["masked"] == 1


# --- pretraining -----------------------------------------------------------------------------------------------------


def test_pretraining_learns_a_periodic_genome(tmp_path):
    """Masked bases of a genome made of a repeated 23-mer are predictable from their neighbours: the held-out loss
    must fall far below the 2-bit composition entropy."""
    unit = "ACGGTCATTGACCTAGGATCCAT"
    fasta = tmp_path / "periodic.fa"
    fasta.write_text(">periodic\n" + unit * 90 + "\n")
    config = tiny_config(d_model=32, n_layer=2)
    args = training_args(tmp_path / "run", max_steps=60, learning_rate=1e-2, warmup_steps=5,
                         per_device_train_batch_size=16)
    result = pretrain([fasta], config, args, PretrainDataOptions(window=46, stride=5, holdout_fraction=0.1))
    assert result.global_step == 60
    assert result.heldout["nll_bits"] < 1.0, result.heldout


def test_pretraining_on_real_dna_writes_a_loadable_model_and_a_truthful_card(tmp_path, tokenizer):
    out = tmp_path / "lambda-mlm"
    # drop_last and an evaluation batch that does not divide the 8 held-out windows: evaluation must still see all.
    args = training_args(out, max_steps=16, learning_rate=5e-3, dataloader_drop_last=True, per_device_eval_batch_size=3)
    log = LossLog()
    options = PretrainDataOptions(window=60, holdout_fraction=0.08, softmask_weight=0.5)
    result = pretrain([LAMBDA_SLICE], tiny_config(), args, options, callbacks=[log])
    assert np.mean(log.losses[-4:]) < np.mean(log.losses[:4]), log.losses
    assert result.data.rc_augment and result.data.train.rc_augment, "Ph default: RC augmentation"
    assert result.data.split.heldout == (Region("NC_001416.1:1-6000", 5520, 6000),)
    assert len(result.data.train) == 5520 // 60 and len(result.data.eval) == 480 // 60
    assert result.heldout["masked"] == result.data.eval.num_masked, "every held-out window scored"

    reloaded = AutoModelForMaskedLM.from_pretrained(out)
    assert isinstance(reloaded, CaduceusForMaskedLM)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr(), "tie kept"
    # The saved model reproduces the reported held-out loss on the same masked windows.
    batch = MLMCollator(tokenizer)([result.data.eval[i] for i in range(len(result.data.eval))])
    with torch.no_grad():
        logits = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll = masked_token_nll(logits, batch["labels"])
    assert float(nll.sum() / (batch["labels"] != -100).sum()) == pytest.approx(result.heldout["nll_nats"], rel=1e-4)

    card = (out / "README.md").read_text()
    for fact in ("lambda_phage_NC_001416.1_1-6000.fa.gz", "NC_001416.1:1-6000:1-5520", "NC_001416.1:1-6000:5521-6000",
                 "60 bases + [SEP], stride 60; 92 training windows", "| optimiser steps | 16 |",
                 f"{result.heldout['nll_nats']:.4f} nats", "soft-masked (lowercase) bases weigh 0.5",
                 "reverse-complement augmentation | yes"):
        assert fact in card, fact
    assert AutoModelForMaskedLM.from_pretrained(out).config.vocab_size == 16
    assert (out / "tokenizer.json").is_file()
    data = ModelCard.load(out / "README.md").data  # metadata the Hub reads
    assert (data.library_name, data.pipeline_tag, data.base_model) == ("transformers", "fill-mask", None)
    assert "caduceus" in data.tags
    loss = data.eval_results[0]
    assert loss.metric_type == "loss" and loss.metric_value == pytest.approx(result.heldout["nll_nats"])


def test_pretraining_resumes_from_a_checkpoint(tmp_path, monkeypatch):
    served: list[int] = []
    getitem = GenomeWindowDataset.__getitem__

    def recording(self, index):
        if self.rc_augment:  # the training set (the held-out one is never augmented)
            served.append(index)
        return getitem(self, index)

    monkeypatch.setattr(GenomeWindowDataset, "__getitem__", recording)
    options = PretrainDataOptions(window=48, holdout_fraction=0.05)

    def run(directory: Path, max_steps: int, resume=None):
        served.clear()
        args = training_args(directory, max_steps=max_steps, save_strategy="steps", save_steps=3)
        result = pretrain([LAMBDA_SLICE], tiny_config(n_layer=1), args, options, resume_from_checkpoint=resume)
        return result, list(served)

    _, straight = run(tmp_path / "straight", 6)
    run(tmp_path / "resumed", 3)
    assert (tmp_path / "resumed" / "checkpoint-3").is_dir()
    resumed, after_resume = run(tmp_path / "resumed", 6, resume=True)
    assert resumed.global_step == 6
    # The data order carries on where the checkpoint left it: batches 4-6 of the uninterrupted run.
    assert after_resume[: 3 * 8] == straight[3 * 8 : 6 * 8]
    # The optimiser state was restored, not restarted: Adam has counted 6 steps.
    optimizer = torch.load(tmp_path / "resumed" / "checkpoint-6" / "optimizer.pt", weights_only=False)
    assert {int(state["step"]) for state in optimizer["state"].values()} == {6}
    steps = [log["step"] for log in json.loads(
        (tmp_path / "resumed" / "checkpoint-6" / "trainer_state.json").read_text())["log_history"] if "loss" in log]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_loss_weights_reach_the_model(tmp_path):
    seen = []
    model = CaduceusForMaskedLM(tiny_config(n_layer=1))
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("loss_weights")),
                                    with_kwargs=True)
    fasta = tmp_path / "soft.fa"
    fasta.write_text(">soft\n" + "ACGTacgtAC" * 40 + "\n")
    args = training_args(tmp_path / "run", max_steps=2, per_device_train_batch_size=4)
    options = PretrainDataOptions(window=40, holdout_fraction=0.1, softmask_weight=0.1)
    pretrain([fasta], model, args, options)
    weights = seen[0]
    assert weights is not None and weights.shape == (4, 41)
    assert torch.allclose(weights.unique(), torch.tensor([0.1, 1.0]))


# --- fine-tuning -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rcps", [False, True], ids=["Ph", "PS"])
def test_finetune_sequence_classification_learns(tmp_path, rcps):
    table = gc_table(tmp_path / "gc.csv")
    config = tiny_config(d_model=16, n_layer=1, rcps=rcps)
    args = training_args(tmp_path / "clf", max_steps=24, learning_rate=1e-2, weight_decay=0.1, warmup_steps=0.1,
                         lr_scheduler_type="cosine")
    result = finetune(table, config, args)
    assert result.num_train == 128 and result.num_eval == 32 and result.metrics["eval_n"] == 32
    assert result.metrics["eval_accuracy"] >= 0.85, result.metrics

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf").eval()
    assert model.config.conjoin_eval is True and model.config.pooling_strategy == "mean"
    assert model.config.id2label == {0: "0", 1: "1"}
    # Predictions do not depend on the strand: Ph by post-hoc conjoining (on at evaluation) with the tokenised reverse
    # complement ([SEP] last), PS by construction (exactly, for the reverse complement of the whole token sequence).
    tok = CaduceusTokenizer()
    seqs = ["ACGGGCCGTAAC", "TTTAGCAAT"]
    with_sep = not rcps
    fwd = tok(seqs, padding=True, return_tensors="pt", add_special_tokens=with_sep)
    rc = tok([reverse_complement(s) for s in seqs], padding=True, return_tensors="pt", add_special_tokens=with_sep)
    with torch.no_grad():
        logits = model(**fwd).logits
        assert torch.allclose(logits, model(**rc).logits, atol=1e-5)
        if not rcps:
            assert not torch.allclose(logits, model(**fwd, conjoin=False).logits, atol=1e-5)
    card = (tmp_path / "clf" / "README.md").read_text()
    assert f"{result.metrics['eval_accuracy']:.4f}" in card and "32 from `" in card


def test_finetune_metrics_cover_the_whole_eval_set_with_left_padding(tmp_path):
    table = gc_table(tmp_path / "gc.csv", n=75, seed=1)
    seen_batches = []
    model = CaduceusForSequenceClassification(tiny_config(d_model=16, n_layer=1, num_labels=2))
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen_batches.append((kwargs["input_ids"], kwargs.get("attention_mask"))),
        with_kwargs=True)
    args = training_args(tmp_path / "clf", max_steps=3, per_device_eval_batch_size=8)
    result = finetune(table, model, args, FinetuneDataOptions(eval_fraction=0.4, split_seed=5))
    hook.remove()
    assert result.metrics["eval_n"] == 30, "every evaluation example counted, over 4 batches of 8"
    input_ids, mask = seen_batches[0]
    assert mask is not None and mask.shape == input_ids.shape
    assert bool((mask[:, -1] == 1).all()) and bool((mask[:, 0] == 0).any()), "left padding, mask passed"
    assert bool((input_ids[mask == 0] == VOCAB["[PAD]"]).all())

    # The metrics of all predictions at once, computed here: the same numbers.
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    table_data = read_sequence_table(table)
    held_out = table_data.subset(split_indices(len(table_data), 0.4, 5)[1])
    enc = CaduceusTokenizer()(held_out.sequences, padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = model.eval()(**enc).logits.argmax(-1).numpy()
    assert result.metrics["eval_accuracy"] == pytest.approx(accuracy_score(held_out.labels, predictions))
    assert result.metrics["eval_mcc"] == pytest.approx(matthews_corrcoef(held_out.labels, predictions))


def test_finetune_from_an_mlm_checkpoint_loads_the_backbone_and_a_new_head(tmp_path):
    mlm_dir = tmp_path / "mlm"
    mlm = CaduceusForMaskedLM(tiny_config(d_model=16, n_layer=1))
    with torch.no_grad():
        for p in mlm.parameters():
            p.add_(0.05)
    mlm.save_pretrained(mlm_dir)
    CaduceusTokenizer().save_pretrained(mlm_dir)

    classifier = build_model("sequence", mlm_dir, id2label={0: "a", 1: "b", 2: "c"},
                             label2id={"a": 0, "b": 1, "c": 2}, pooling_strategy="max")
    assert classifier.config.num_labels == 3 and classifier.config.pooling_strategy == "max"
    for name, tensor in mlm.caduceus.state_dict().items():
        assert torch.equal(classifier.caduceus.state_dict()[name], tensor), name
    assert classifier.score.weight.shape == (3, 16) and classifier.score.weight.std() < 0.05, "a fresh head"

    table = gc_table(tmp_path / "gc.csv", n=40)
    result = finetune(table, mlm_dir, training_args(tmp_path / "clf", max_steps=2))
    card = (tmp_path / "clf" / "README.md").read_text()
    assert result.global_step == 2 and f"initialised from | {mlm_dir}" in card


def test_token_classification_learns_a_planted_motif(tmp_path):
    """label 1 for bases inside GAATTC (a reverse-complement palindrome, so RC augmentation keeps labels right)."""
    rng = np.random.default_rng(0)
    motif = "GAATTC"
    rows = []
    for _ in range(192):
        seq = list(random_dna(rng, 40))
        for start in rng.choice(40 - len(motif), size=2, replace=False):
            seq[start:start + len(motif)] = motif
        seq = "".join(seq)
        labels = np.zeros(len(seq), dtype=int)
        for i in range(len(seq) - len(motif) + 1):
            if seq[i:i + len(motif)] == motif:
                labels[i:i + len(motif)] = 1
        rows.append((seq, "".join(map(str, labels))))
    table = write_table(tmp_path / "motif.csv", rows)
    config = tiny_config(d_model=32, n_layer=2)
    args = training_args(tmp_path / "tok", max_steps=70, learning_rate=1e-2, per_device_train_batch_size=16,
                         warmup_steps=5)
    result = finetune(table, config, args, FinetuneDataOptions(task="token", eval_fraction=0.25))
    assert result.metrics["eval_n"] == 48 * 40, "every labelled base of the evaluation set, [SEP] excluded"
    # About 28 % of bases are inside a motif: chance F1 is about 0.3.
    assert result.metrics["eval_f1"] > 0.9 and result.metrics["eval_accuracy"] > 0.95, result.metrics


def test_pooling_is_refused_for_a_token_task(tmp_path):
    table = write_table(tmp_path / "tok.csv", [("ACGT", "0110"), ("GGCC", "1001")])
    args = training_args(tmp_path / "out", max_steps=1)
    with pytest.raises(ValueError, match=r"pooling_strategy \(--pooling\) applies to sequence tasks"):
        finetune(table, tiny_config(), args, FinetuneDataOptions(task="token"), pooling_strategy="mean")
    assert not (tmp_path / "out").exists(), "refused before any training or writing"


# --- ecosystem -------------------------------------------------------------------------------------------------------


def premasked_examples(n: int = 8, length: int = 40) -> list[dict]:
    """MLM examples with a fixed mask and a different number of masked bases each (1, 2, 3, 5, ...: their total is
    odd, so no split into two equal halves has equally many, and per-half means differ from the overall mean)."""
    gen = torch.Generator().manual_seed(0)
    fibonacci = [1, 2]
    while len(fibonacci) < n:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    examples = []
    for i in range(n):
        ids = torch.randint(7, 11, (length,), generator=gen).tolist() + [SEP]
        inputs, labels = list(ids), [-100] * (length + 1)
        for p in torch.randperm(length, generator=gen)[:fibonacci[i]].tolist():
            labels[p], inputs[p] = ids[p], MASK
        examples.append({"input_ids": inputs, "attention_mask": [1] * (length + 1), "labels": labels})
    return examples


def one_sgd_step(model, examples, tmp_path, batch: int, accumulation: int, **overrides):
    log = LossLog()
    args = training_args(tmp_path / f"ga{batch}x{accumulation}", per_device_train_batch_size=batch,
                         gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.5, optim="sgd",
                         lr_scheduler_type="constant", max_grad_norm=0.0, **overrides)
    Trainer(model=model, args=args, train_dataset=examples, data_collator=MLMCollator(CaduceusTokenizer()),
            callbacks=[log]).train()
    return log.losses[0], params_vector(model)


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    examples = premasked_examples()
    base = CaduceusForMaskedLM(tiny_config(n_layer=1))
    start = params_vector(base)
    loss_8, params_8 = one_sgd_step(copy.deepcopy(base), examples, tmp_path, 8, 1)
    loss_4x2, params_4x2 = one_sgd_step(copy.deepcopy(base), examples, tmp_path, 4, 2)
    step = (params_8 - start).abs().max()
    assert loss_4x2 == pytest.approx(loss_8, rel=1e-6)
    assert (params_4x2 - params_8).abs().max() < 1e-5 * step

    # The same run with per-micro-batch means (a model that ignores num_items_in_batch) does differ: the check above
    # is sensitive to the normalisation.
    naive = copy.deepcopy(base)
    naive.accepts_loss_kwargs = False
    naive_loss, naive_params = one_sgd_step(naive, examples, tmp_path, 4, 2)
    assert naive_loss != pytest.approx(loss_8, rel=1e-6)
    assert (naive_params - params_8).abs().max() > 1e-2 * step


def test_activation_checkpointing_via_training_arguments(tmp_path, monkeypatch):
    calls = []
    mixer_forward = BiMamba.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return mixer_forward(self, *args, **kwargs)

    # Counted on the class: torch's recomputation does not run module hooks.
    monkeypatch.setattr(BiMamba, "forward", counting)
    examples = premasked_examples()
    base = CaduceusForMaskedLM(tiny_config(n_layer=2))
    results = {}
    for enabled in (False, True):
        model = copy.deepcopy(base)
        calls.clear()
        loss, params = one_sgd_step(model, examples, tmp_path, 8, 1, activation_checkpointing=enabled or None)
        assert model.is_activation_checkpointing is enabled
        results[enabled] = (loss, params, len(calls))
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6)
    assert torch.allclose(results[True][1], results[False][1], atol=1e-6)
    assert results[False][2] == 2 and results[True][2] == 4, "each block's mixer is recomputed in backward"


def test_bf16_autocast_on_cpu_trains(tmp_path):
    table = gc_table(tmp_path / "gc.csv", n=96)
    model = CaduceusForSequenceClassification(tiny_config(d_model=16, n_layer=1, num_labels=2))
    dtypes = set()
    model.caduceus.backbone.layers[0].mixer.mamba_fwd.in_proj.register_forward_hook(
        lambda module, inputs, output: dtypes.add(output.dtype))
    log = LossLog()
    args = training_args(tmp_path / "bf16", max_steps=16, learning_rate=1e-2, bf16=True)
    result = finetune(table, model, args, callbacks=[log])
    assert torch.bfloat16 in dtypes, "TrainingArguments(bf16=True) ran the projections under CPU autocast"
    assert all(math.isfinite(x) for x in log.losses) and np.mean(log.losses[-4:]) < np.mean(log.losses[:4])
    assert result.metrics["eval_accuracy"] >= 0.75, result.metrics


@pytest.mark.parametrize("rcps", [False, True], ids=["Ph", "PS"])
def test_lora_on_the_mixer_projections_trains_and_saves(tmp_path, rcps):
    peft = pytest.importorskip("peft")
    tok = CaduceusTokenizer()
    table = read_sequence_table(gc_table(tmp_path / "gc.csv", n=96))
    data = LabelledSequenceDataset(table, tok)
    torch.manual_seed(0)
    base = CaduceusForSequenceClassification(tiny_config(d_model=16, n_layer=2, rcps=rcps, num_labels=2))
    frozen = {k: v.clone() for k, v in base.state_dict().items() if "score" not in k}
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["in_proj", "x_proj", "out_proj"], task_type="SEQ_CLS")
    model = peft.get_peft_model(base, lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    for proj in ("in_proj", "x_proj", "out_proj"):
        assert any(f"{proj}.lora_A" in n for n in trainable), proj
    assert all("lora_" in n or "score" in n for n in trainable)
    lora_start = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}

    log = LossLog()
    args = training_args(tmp_path / "lora", max_steps=24, learning_rate=1e-2)
    Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tok),
            callbacks=[log]).train()
    assert np.mean(log.losses[-4:]) < np.mean(log.losses[:4]), log.losses
    assert any(not torch.equal(p, lora_start[n]) for n, p in model.named_parameters() if n in lora_start)
    for name, tensor in model.get_base_model().state_dict().items():
        key = name.replace(".base_layer", "")
        if key in frozen:
            assert torch.equal(tensor, frozen[key]), f"base weight {name} changed"

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    torch.manual_seed(0)
    fresh = CaduceusForSequenceClassification(tiny_config(d_model=16, n_layer=2, rcps=rcps, num_labels=2))
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    batch = tok(["ACGTTGCAGG", "GGGCC"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model(**batch).logits, atol=1e-5)
        merged = model.merge_and_unload()
        assert torch.allclose(merged(**batch).logits, reloaded(**batch).logits, atol=1e-5)


def test_caduceus_trainer_does_not_decay_norms_a_log_and_d(tmp_path):
    model = CaduceusForSequenceClassification(tiny_config(d_model=16, n_layer=2, rcps=True, num_labels=2))
    trainer = CaduceusTrainer(model=model, args=training_args(tmp_path, weight_decay=0.1))
    decayed = set(trainer.get_decay_parameter_names(model))
    names = {name for name, _ in model.named_parameters()}
    assert {n for n in names if n.endswith((".A_log", ".D", "norm.weight", "norm_f.weight"))}.isdisjoint(decayed)
    assert {n for n in names if n.endswith(("in_proj.weight", "x_proj.weight", "score.weight"))} <= decayed
    optimizer = trainer.create_optimizer()
    groups = {group["weight_decay"]: {id(p) for p in group["params"]} for group in optimizer.param_groups}
    a_log = model.caduceus.backbone.layers[0].mixer.submodule.mamba_fwd.A_log
    assert id(a_log) in groups[0.0] and id(model.score.weight) in groups[0.1]


# --- command line and examples ---------------------------------------------------------------------------------------


def test_cli_pretrain_then_finetune_from_it(tmp_path, capsys):
    mlm_dir = tmp_path / "mlm"
    rc = cli_main(["pretrain", str(LAMBDA_SLICE), "--output-dir", str(mlm_dir), "--window", "48", "--d-model", "16",
                   "--n-layer", "1", "--d-state", "4", "--max-steps", "4", "--batch-size", "8", "--threads", "1",
                   "--cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "pretrained 4 steps" in out and "bits) per masked base" in out
    assert (mlm_dir / "README.md").is_file()

    table = gc_table(tmp_path / "gc.csv", n=40)
    clf_dir = tmp_path / "clf"
    rc = cli_main(["finetune", str(table), "--init", str(mlm_dir), "--output-dir", str(clf_dir), "--max-steps", "3",
                   "--batch-size", "8", "--threads", "1", "--cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "fine-tuned 3 steps on 32 examples" in out and "evaluation over 8 examples" in out
    model = AutoModelForSequenceClassification.from_pretrained(clf_dir)
    assert model.config.conjoin_eval is True


def test_cli_finetune_from_parquet_with_a_json_args_file_and_a_fresh_resume(tmp_path, capsys):
    import warnings

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(gc_table(tmp_path / "gc.csv", n=40)) as fh:
        rows = list(csv.reader(fh))[1:]
    parquet = tmp_path / "gc.parquet"
    pq.write_table(pa.table({"seq": [s for s, _ in rows], "label": [int(y) for _, y in rows]}), parquet)
    out_dir = tmp_path / "clf"
    args_file = tmp_path / "run.json"
    args_file.write_text(json.dumps({
        "train_file": str(parquet), "output_dir": str(out_dir), "max_steps": 3, "d_model": 16, "n_layer": 1,
        "d_state": 4, "per_device_train_batch_size": 8, "threads": 1, "device": "cpu", "save_strategy": "no",
        "learning_rate": 3e-3,
    }))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli_main(["finetune", "--args-file", str(args_file), "--resume"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "fine-tuned 3 steps on 32 examples" in captured.out and "evaluation over 8 examples" in captured.out
    assert f"--resume: no checkpoint in {out_dir}; starting fresh" in captured.err
    assert not [w for w in caught if "pin_memory" in str(w.message)], "no pinned memory without an accelerator"
    assert "\x1b[" not in captured.err
    model = AutoModelForSequenceClassification.from_pretrained(out_dir)
    assert model.config.d_model == 16 and model.config.num_labels == 2
    data = ModelCard.load(out_dir / "README.md").data
    assert (data.library_name, data.pipeline_tag) == ("transformers", "text-classification")
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert sorted(results) == ["accuracy", "f1", "mcc"]
    assert f"accuracy {results['accuracy']:.4f}" in captured.out and data.eval_results[0].dataset_name == "gc.parquet"


def test_cli_help_and_errors(tmp_path, capsys):
    for command in ("pretrain", "finetune"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([command, "--help"])
        assert exit_info.value.code == 0
        assert "--output-dir" in capsys.readouterr().out
    rc = cli_main(["pretrain", str(tmp_path / "nope.fa"), "--output-dir", str(tmp_path / "o"), "--cpu"])
    assert rc == 1 and "FASTA file not found" in capsys.readouterr().err
    bad = write_table(tmp_path / "bad.csv", [("ACGT", "")])
    rc = cli_main(["finetune", str(bad), "--output-dir", str(tmp_path / "o"), "--cpu"])
    assert rc == 1 and "bad.csv:2: column 'label'" in capsys.readouterr().err
    table = gc_table(tmp_path / "gc.csv", n=20)
    rc = cli_main(["finetune", str(table), "--init", str(tmp_path / "no-such-model"), "--output-dir",
                   str(tmp_path / "o"), "--cpu"])
    assert rc == 1 and "no-such-model" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["pretrain_mlm.py", "finetune_classifier.py"])
def test_examples_have_help(script, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / script), run_name="__main__")
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


# --- labels, regression, resume (issue 13) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, message",
    [
        (["0.5", "1.5", "0.25"], r"t\.csv:2: column 'label': label '0\.5' is a decimal number.*--task regression"),
        (["1", "1", "1"], r"t\.csv:2: every label is '1'; classification needs at least two classes"),
        (["a", "a", "a"], r"every label is 'a'"),
        (["-1", "x", "0"], None),  # names, not ids: "-1" is a class name here
    ],
)
def test_bad_class_labels_are_refused(tmp_path, labels, message):
    path = write_table(tmp_path / "t.csv", list(zip(["ACGT", "GGCC", "TTAA"], labels)))
    if message is None:
        assert read_sequence_table(path).label_names == sorted(set(labels))
        return
    with pytest.raises(ValueError, match=message):
        read_sequence_table(path)


def test_sparse_and_huge_class_ids_become_names_not_a_huge_head(tmp_path):
    table = read_sequence_table(write_table(tmp_path / "t.csv", [("ACGT", "200000"), ("GG", "3"), ("TT", "3")]))
    assert table.num_labels == 2 and table.label_names == ["3", "200000"] and table.labels == [1, 0, 0]
    one_based = read_sequence_table(write_table(tmp_path / "o.csv", [("ACGT", "1"), ("GG", "2")]))
    assert one_based.label_names == ["1", "2"] and one_based.labels == [0, 1]
    huge = write_table(tmp_path / "tok.csv", [("ACGT", "0 0 1 2000")])
    with pytest.raises(ValueError, match=r"tok\.csv:2: column 'label': per-base class id 2000"):
        read_sequence_table(huge, task="token")


def test_table_sequences_are_validated_like_fasta(tmp_path):
    path = write_table(tmp_path / "t.csv", [("ACGT", "0"), ("AC#T", "1")])
    with pytest.raises(ValueError, match=r"t\.csv:3: column 'seq': invalid character '#' at position 3"):
        read_sequence_table(path)


def test_regression_targets(tmp_path):
    table = read_sequence_table(write_table(tmp_path / "r.csv", [("ACGT", "0.5"), ("GG", "-2e3")]), task="regression")
    assert table.labels == [0.5, -2000.0] and table.num_labels == 1 and table.label_names == []
    for bad, message in (("x", "is not a number"), ("nan", "is not finite")):
        path = write_table(tmp_path / "b.csv", [("ACGT", "0.5"), ("GG", bad)])
        with pytest.raises(ValueError, match=rf"b\.csv:3: column 'label': regression target '{bad}' {message}"):
            read_sequence_table(path, task="regression")


def test_finetune_regression_learns_gc_content_and_reports_correlations(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(96):
        gc = float(rng.uniform(0.2, 0.8))
        seq = random_dna(rng, 32, ((1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2))
        rows.append((seq, f"{(seq.count('G') + seq.count('C')) / len(seq):.4f}"))
    table = write_table(tmp_path / "gc.csv", rows)
    result = finetune(
        table, tiny_config(n_layer=1), training_args(tmp_path / "out", max_steps=40, learning_rate=5e-3),
        FinetuneDataOptions(task="regression", eval_fraction=0.25),
    )
    m = result.metrics
    assert {"eval_mse", "eval_pearson", "eval_spearman"} <= set(m)
    assert m["eval_pearson"] > 0.5 and m["eval_spearman"] > 0.5
    model = CaduceusForSequenceClassification.from_pretrained(tmp_path / "out")
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"


@pytest.mark.parametrize("config", [dict(rcps=True, fused_add_norm=False), dict(rcps=True), dict()],
                         ids=["ps-nonfused", "ps-fused", "ph"])
def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, config):
    """Every tensor, norms included, is restored from the checkpoint: the resumed run continues exactly."""
    table = gc_table(tmp_path / "gc.csv", n=48)
    options = FinetuneDataOptions(rc_augment=False, eval_fraction=0.25)
    model_config = tiny_config(n_layer=2, **config)

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 3

    def run(directory, resume=None, callbacks=()):
        args = training_args(directory, max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=4)
        finetune(table, model_config, args, options, resume_from_checkpoint=resume, callbacks=callbacks)
        return CaduceusForSequenceClassification.from_pretrained(directory)

    straight = run(tmp_path / "straight")
    run(tmp_path / "resumed", callbacks=[StopAt()])
    assert (tmp_path / "resumed" / "checkpoint-3").is_dir()
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "resumed" / "checkpoint-3"))
    expected = straight.state_dict()
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
    norms = [k for k in expected if "norm" in k]
    assert norms and not all(torch.equal(expected[k], torch.ones_like(expected[k])) for k in norms)


def test_pretraining_on_an_all_n_genome_says_so(tmp_path):
    fasta = tmp_path / "n.fa"
    fasta.write_text(">x\n" + "N" * 400 + "\n")
    with pytest.raises(ValueError, match=r"more than 10% of N"):
        pretrain([fasta], tiny_config(n_layer=1), training_args(tmp_path / "o"), PretrainDataOptions(window=32))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(window=0), "window must be a positive integer"),
        (dict(mlm_probability=0.0), r"mlm_probability must be in \(0, 1\]"),
        (dict(max_n_fraction=1.5), r"max_n_fraction must be in \[0, 1\]"),
        (dict(max_eval_windows=0), "max_eval_windows must be a positive integer"),
        (dict(window=200_000), "does not fit the tokenizer's 131,072 tokens"),
    ],
)
def test_pretraining_options_are_checked_before_training(tmp_path, options, message):
    fasta = tmp_path / "g.fa"
    fasta.write_text(">x\n" + "ACGT" * 100 + "\n")
    with pytest.raises(ValueError, match=message):
        pretrain([fasta], tiny_config(n_layer=1), training_args(tmp_path / "o"), PretrainDataOptions(**options))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("init", ["./no/such/dir", "no-such/model"])
def test_a_missing_init_path_says_so(tmp_path, init):
    table = gc_table(tmp_path / "gc.csv", n=20)
    with pytest.raises(ValueError, match=r"no such (model|local) directory"):
        finetune(table, init, training_args(tmp_path / "o"))
