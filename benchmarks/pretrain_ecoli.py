"""MLM pretraining on the E. coli K-12 MG1655 genome, scored against two count baselines on the same held-out bases.

Trains a Caduceus-Ph masked language model with `caduceus_hf.training.pretrain` (Hugging Face Trainer) on
$CADUCEUS_DATA_DIR/genomes/ecoli_K12_MG1655.fasta.gz (4,639,675 bp). The last 5 % of the genome (232 kb) is held out and
never trained on; its windows are masked once with a fixed seed (15 % of bases, all replaced by [MASK]), and every
number below is the mean negative log-likelihood of the true base over exactly those masked bases, in bits (nats in
brackets):

* composition: the base frequencies of the training region (the composition entropy; a model that does not beat it
  has learnt nothing);
* k-mer context model: counts of the centre base given the k bases on each side in the training region, interpolated
  with shorter contexts (Dirichlet back-off, k-1, ..., 0); k, the smoothing strength and whether to count both strands
  are chosen on the last tenth of the training region after fitting on the rest, then refitted on the whole training
  region. Scored twice: with the true neighbouring bases (more than the model sees: 15 % of its neighbours are
  [MASK]), and with the same masked input as the model (a context containing a masked base is not used; the model
  backs off to the largest clean context);
* Caduceus, after training for at most --cpu-budget-min CPU minutes (process CPU time, all threads counted).

Because 15 % of Caduceus' neighbours are [MASK] while the k-mer model may read true bases, the same windows are also
scored with sparse masks: one base in 2 * max_k + 1 (random offset per window), so every masked base has its max_k
neighbours on each side unmasked; Caduceus, composition and the k-mer model are scored on exactly those bases.

    python benchmarks/pretrain_ecoli.py [--threads 1] [--max-steps 800] [--cpu-budget-min 15] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForMaskedLM, TrainingArguments

from caduceus_hf import CaduceusConfig, CaduceusTokenizer
from caduceus_hf.training import PretrainDataOptions, pretrain

from budget import TrainingBudget  # benchmarks/budget.py
from data_dir import data_dir  # benchmarks/data_dir.py

REPO = Path(__file__).resolve().parents[1]
LN2 = math.log(2)


def encode(sequence: str) -> np.ndarray:
    """Bases as 0..3 (A, C, G, T), anything else -1; (len,) int8."""
    table = np.full(256, -1, dtype=np.int8)
    for code, base in enumerate("ACGT"):
        table[ord(base)] = table[ord(base.lower())] = code
    return table[np.frombuffer(sequence.encode("ascii"), dtype=np.uint8)]


def context_ids(codes: np.ndarray, positions: np.ndarray, j: int, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the 2j-base context (j left, j right) of each position, and whether all its bases are usable.

    `known[i]` says whether base i may be used as context (in range, A/C/G/T, not masked)."""
    ids = np.zeros(len(positions), dtype=np.int64)
    ok = np.ones(len(positions), dtype=bool)
    n = len(codes)
    for offset in [*range(-j, 0), *range(1, j + 1)]:
        at = positions + offset
        inside = (at >= 0) & (at < n)
        safe = np.where(inside, at, 0)
        ok &= inside & known[safe]
        ids = ids * 4 + np.where(ok, codes[safe], 0).astype(np.int64)
    return ids, ok


@dataclass
class KmerContextModel:
    """p(centre | j bases each side) for j = k, k-1, ..., 0, each level smoothed towards the one below:

        p_j(c | ctx) = (n_j(ctx, c) + alpha * p_{j-1}(c | ctx')) / (n_j(ctx) + alpha),   p_{-1} = uniform

    A level whose context is unusable (out of range, N, masked) passes the level below through unchanged.
    """

    k: int
    alpha: float
    tables: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None

    def fit(self, strands: list[np.ndarray]) -> KmerContextModel:
        """Count in each of `strands` (encoded sequences; add the reverse complement to count both strands)."""
        self.tables = []
        for j in range(self.k + 1):
            keys, contexts = [], []
            for codes in strands:
                positions = np.flatnonzero(codes >= 0)
                ids, ok = context_ids(codes, positions, j, codes >= 0)
                keys.append(ids[ok] * 4 + codes[positions[ok]])
                contexts.append(ids[ok])
            key_values, key_counts = np.unique(np.concatenate(keys), return_counts=True)
            ctx_values, ctx_counts = np.unique(np.concatenate(contexts), return_counts=True)
            self.tables.append((key_values, key_counts, ctx_values, ctx_counts))
        return self

    def log_prob(self, codes: np.ndarray, positions: np.ndarray, known: np.ndarray) -> np.ndarray:
        """ln p(codes[positions]) given the context bases marked `known`; (len(positions),) float64."""
        centre = codes[positions].astype(np.int64)
        p = np.full(len(positions), 0.25)
        for j, (key_values, key_counts, ctx_values, ctx_counts) in enumerate(self.tables):
            ids, ok = context_ids(codes, positions, j, known)
            n_key = _lookup(key_values, key_counts, ids * 4 + centre)
            n_ctx = _lookup(ctx_values, ctx_counts, ids)
            p = np.where(ok, (n_key + self.alpha * p) / (n_ctx + self.alpha), p)
        return np.log(p)


def _lookup(values: np.ndarray, counts: np.ndarray, queries: np.ndarray) -> np.ndarray:
    at = np.searchsorted(values, queries).clip(max=len(values) - 1)
    return np.where(values[at] == queries, counts[at], 0).astype(np.float64)


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    return np.where(codes >= 0, 3 - codes, -1).astype(np.int8)[::-1].copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "pretrain_ecoli")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on the shared 2-core machine, 2 torch threads next to numba's "
                             "scan threads cost 1.2-2.5x more CPU time per step)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--window", type=int, default=1024, help="bases per window (default 1024)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=800, help="cosine schedule length (default 800)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-steps", type=int, default=240, help="held-out evaluation every N steps")
    parser.add_argument("--cpu-budget-min", type=float, default=15.0, help="stop training after this much CPU time")
    parser.add_argument("--max-k", type=int, default=12, help="largest k tried for the k-mer baseline (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fasta = args.data_dir / "genomes" / "ecoli_K12_MG1655.fasta.gz"

    # 1. Caduceus.
    config = CaduceusConfig(d_model=args.d_model, n_layer=args.n_layer, ssm_cfg={"d_state": 16})
    training_args = TrainingArguments(
        output_dir=str(args.output_dir), max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=32, learning_rate=args.lr, weight_decay=0.1, lr_scheduler_type="cosine",
        warmup_steps=0.02, eval_strategy="steps", eval_steps=args.eval_steps, save_strategy="no", logging_steps=50,
        seed=args.seed, use_cpu=True, report_to="none", disable_tqdm=True, dataloader_drop_last=True,
    )
    budget = TrainingBudget(args.cpu_budget_min * 60)
    wall, cpu = time.perf_counter(), time.process_time()
    result = pretrain([fasta], config, training_args, PretrainDataOptions(window=args.window, holdout_fraction=0.05),
                      callbacks=[budget])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    data = result.data

    # 2. The masked positions of the held-out set, in genome coordinates.
    record = data.records[0]
    codes = encode(record.sequence)
    positions, masked_input = [], np.zeros(len(codes), dtype=bool)
    for window, example in zip(data.eval.windows, data.eval.examples):
        labels = np.asarray(example["labels"][: len(window)])
        at = window.start + np.flatnonzero(labels != -100)
        positions.append(at)
        masked_input[at] = True
    positions = np.concatenate(positions)

    # 3. Baselines, fitted on the training region only.
    baseline_cpu = time.process_time()
    train_codes = [codes[r.start : r.end] for r in data.split.train]
    counts = np.bincount(np.concatenate(train_codes).clip(min=0), minlength=4)[:4].astype(np.float64)
    composition = counts / counts.sum()
    composition_entropy = -(composition * np.log2(composition)).sum()

    # k and alpha on the last tenth of the training region (the part next to the held-out region is never used).
    (train_region,) = data.split.train
    cut = train_region.start + int(0.9 * len(train_region))
    fit_part, val_part = codes[train_region.start : cut], codes[cut : train_region.end]
    val_positions = np.flatnonzero(val_part >= 0)[::7]  # a subsample is plenty to rank settings
    selection = []
    for both_strands in (False, True):
        strands = [fit_part, reverse_complement_codes(fit_part)] if both_strands else [fit_part]
        full = KmerContextModel(args.max_k, 1.0).fit(strands)
        for k in range(args.max_k + 1):
            for alpha in (1.0, 4.0, 16.0, 64.0, 256.0):
                model = KmerContextModel(k, alpha, full.tables[: k + 1])
                bits = -model.log_prob(val_part, val_positions, val_part >= 0).mean() / LN2
                selection.append((bits, k, alpha, both_strands))
    best_bits, best_k, best_alpha, best_strands = min(selection)
    strands = train_codes + ([reverse_complement_codes(c) for c in train_codes] if best_strands else [])
    kmer = KmerContextModel(best_k, best_alpha).fit(strands)
    known = codes >= 0
    baseline_cpu = time.process_time() - baseline_cpu

    # 4. The same held-out windows with sparse masks: one base in `spacing`, so that every masked base has its
    # max_k neighbours on each side unmasked and Caduceus sees at least what the k-mer model sees.
    spacing = 2 * args.max_k + 1
    mlm = AutoModelForMaskedLM.from_pretrained(result.output_dir).eval()
    sparse_nats, sparse_positions = sparse_mask_nll(mlm, data, spacing, args.seed)
    sparse_masked = np.zeros(len(codes), dtype=bool)
    sparse_masked[sparse_positions] = True

    def kmer_bits(at: np.ndarray, masked: np.ndarray) -> float:
        return float(-kmer.log_prob(codes, at, known & ~masked).mean() / LN2)

    standard = [
        (f"composition (training-region frequencies; entropy {composition_entropy:.4f} bits)",
         float(-np.log2(composition[codes[positions]]).mean())),
        (f"k-mer context model, k={best_k}, true neighbours (sees more than the model)",
         kmer_bits(positions, np.zeros_like(masked_input))),
        (f"k-mer context model, k={best_k}, the model's masked input", kmer_bits(positions, masked_input)),
        (f"Caduceus-Ph ({result.global_step} steps)", result.heldout["nll_bits"]),
    ]
    sparse = [
        ("composition", float(-np.log2(composition[codes[sparse_positions]]).mean())),
        (f"k-mer context model, k={best_k} (all its context unmasked)", kmer_bits(sparse_positions, sparse_masked)),
        (f"Caduceus-Ph ({result.global_step} steps)", float(sparse_nats.mean() / LN2)),
    ]

    # 5. Report.
    steps = result.global_step
    tokens = steps * args.batch_size * (args.window + 1)
    curve = [(log["step"], log["eval_nll_bits"]) for log in result.log_history if "eval_nll_bits" in log]
    print("== MLM pretraining on E. coli K-12 MG1655 (benchmarks/pretrain_ecoli.py) ==")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"genome: {record.name}, {len(record):,} bp; training region {data.split.train[0]}, "
          f"held-out region {data.split.heldout[0]} ({len(data.split.heldout[0]):,} bp)")
    print(f"held-out set: {len(data.eval):,} windows of {args.window} bases, {len(positions):,} masked bases "
          f"(15 %, all [MASK], seed 0)")
    print(f"model: Caduceus-Ph, d_model {args.d_model}, {args.n_layer} layers, d_state 16, "
          f"{mlm.num_parameters():,} parameters; RC augmentation; AdamW lr {args.lr:g}, wd 0.1, "
          f"cosine over {args.max_steps} steps, batch {args.batch_size} x {args.window + 1} tokens")
    stop = f"stopped by the CPU budget at step {budget.stopped_at}" if budget.stopped_at else "ran all steps"
    print(f"training: {steps} steps ({stop}), {tokens / 1e6:.1f} M tokens = {tokens / sum(map(len, train_codes)):.2f} "
          f"passes over the training region; {cpu / 60:.1f} CPU-min, {wall / 60:.1f} wall-min (incl. evaluations)")
    print("held-out curve (step: bits per masked base): " + ", ".join(f"{s}: {b:.4f}" for s, b in dict(curve).items()))
    print(f"k-mer selection on the training region's last tenth: k={best_k} each side, alpha={best_alpha:g}, "
          f"{'both strands' if best_strands else 'forward strand'} counted ({best_bits:.4f} bits there); "
          "by k: " + ", ".join(f"{k}: {min(s[0] for s in selection if s[1] == k):.4f}" for k in range(args.max_k + 1)))
    print(f"baselines: {baseline_cpu:.0f} CPU-s")
    for title, rows in (
        (f"held-out set, 15 % masked ({len(positions):,} bases)", standard),
        (f"same windows, 1 base in {spacing} masked ({len(sparse_positions):,} bases)", sparse),
    ):
        print()
        print(f"{title:<72} {'bits':>7} {'nats':>7}")
        for name, bits in rows:
            print(f"  {name:<70} {bits:7.4f} {bits * LN2:7.4f}")
    print()
    caduceus, kmer_masked, kmer_true = standard[3][1], standard[2][1], standard[1][1]
    print(f"15 % masks: Caduceus vs composition {standard[0][1] - caduceus:+.4f} bits, vs k-mer on the same masked "
          f"input {kmer_masked - caduceus:+.4f}, vs k-mer with true neighbours {kmer_true - caduceus:+.4f}; "
          f"sparse masks: vs composition {sparse[0][1] - sparse[2][1]:+.4f}, "
          f"vs k-mer {sparse[1][1] - sparse[2][1]:+.4f} (positive = Caduceus better)")


def sparse_mask_nll(model, data, spacing: int, seed: int, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Negative log-likelihood (nats) of the true base at one position in `spacing` of every held-out window (random
    offset per window), all of them [MASK] at once; returns (nll, genome positions)."""
    rng = np.random.default_rng(seed)
    tokenizer = CaduceusTokenizer()
    nll, positions = [], []
    windows = data.eval.windows
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        ids = torch.tensor([tokenizer(data.train.sequences[w.record][w.start : w.end])["input_ids"] for w in batch])
        masked = ids.clone()
        picks = []
        for row, window in enumerate(batch):
            at = np.arange(int(rng.integers(spacing)), len(window), spacing)
            masked[row, at] = tokenizer.mask_token_id
            picks.append((row, at))
            positions.append(window.start + at)
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=masked).logits.float(), dim=-1)
        for row, at in picks:
            nll.append(-log_probs[row, at, ids[row, at]].numpy())
    return np.concatenate(nll).astype(np.float64), np.concatenate(positions)


if __name__ == "__main__":
    main()
