"""Fine-tuning from scratch on Genomic Benchmarks' human_enhancers_cohn, against a k-mer baseline on the same split.

Only the official test split (6,948 sequences of 500 bp, balanced) is available in the data directory ($CADUCEUS_DATA_DIR), so the benchmark
trains on a fixed 80 % of it (permutation seed 0, the split of `caduceus-hf finetune --eval-fraction 0.2
--split-seed 0`) and evaluates on the other 20 % (1,390 sequences). Accuracy, MCC and F1 are computed over the whole
evaluation set. The numbers are a sanity comparison, not a reproduction of the paper's protocol (which trains on the
official 20,843-sequence training split and tests on all 6,948).

* k-mer baseline: logistic regression on k-mer counts (k = 4, 5, 6; k and the regularisation chosen by 5-fold
  cross-validation on the training part), computed here on the same split.
* Published, official split (quoted): CNN from scratch 0.695 (Genomic Benchmarks authors), 0.702 +/- 0.021 (Caduceus
  paper, Table 1); pretrained on hg38 then fine-tuned: Caduceus-Ph 0.747, Caduceus-PS 0.745, HyenaDNA 0.729.
* Caduceus-Ph and Caduceus-PS trained from scratch with `caduceus_hf.training.finetune` (Hugging Face Trainer) with
  the paper's recipe scaled down: mean pooling, AdamW (weight decay 0.1), cosine schedule with warmup, left padding
  with attention masks; Ph with reverse-complement augmentation, evaluated with and without post-hoc conjoining; PS
  with neither (RC-invariant by construction). Each model trains for at most --cpu-budget-min CPU minutes.

    python benchmarks/finetune_enhancers.py [--threads 1] [--models ph ps] [--epochs 11] [--ps-epochs 6] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from caduceus_hf import CaduceusConfig, CaduceusTokenizer
from caduceus_hf.training import FinetuneDataOptions, LabelledSequenceDataset, finetune
from caduceus_hf.training.finetune import load_splits
from caduceus_hf.training.metrics import label_metrics

from budget import TrainingBudget  # benchmarks/budget.py
from data_dir import data_dir  # benchmarks/data_dir.py

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = [
    ("CNN from scratch, official split (Genomic Benchmarks)", 0.695),
    ("CNN from scratch, official split (Caduceus paper, +/- 0.021)", 0.702),
    ("HyenaDNA, pretrained, official split", 0.729),
    ("Caduceus-PS, pretrained on hg38, official split", 0.745),
    ("Caduceus-Ph, pretrained on hg38, official split", 0.747),
]


def kmer_baseline(train_seqs, train_labels, test_seqs, test_labels) -> tuple[dict, list[str]]:
    """Logistic regression on k-mer counts; k and C by 5-fold CV on the training part. Returns the selected model's
    test metrics and one line per k."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    lines, best = [], None
    for k in (4, 5, 6):
        pipe = make_pipeline(
            CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False),
            Normalizer(norm="l1"),  # k-mer frequencies: every sequence is 500 bp anyway
            LogisticRegression(max_iter=3000),
        )
        search = GridSearchCV(pipe, {"logisticregression__C": [1.0, 10.0, 100.0, 1000.0]}, cv=5, n_jobs=1)
        search.fit(train_seqs, train_labels)
        metrics = label_metrics(search.predict(test_seqs), np.asarray(test_labels))
        c = search.best_params_["logisticregression__C"]
        lines.append(f"k={k}: CV accuracy {search.best_score_:.4f} (C={c:g}),"
                     f" test accuracy {metrics['accuracy']:.4f}, MCC {metrics['mcc']:.4f}, F1 {metrics['f1']:.4f}")
        if best is None or search.best_score_ > best[0]:
            best = (search.best_score_, k, metrics)
    _, k, metrics = best
    return {"k": k, **metrics}, lines


def evaluate(model_dir: Path, dataset, conjoin: bool, batch_size: int) -> dict:
    """Metrics over the whole evaluation set with post-hoc conjoining switched on or off."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.config.conjoin_eval = conjoin
    tokenizer = CaduceusTokenizer.from_pretrained(model_dir)
    args = TrainingArguments(output_dir=str(model_dir / "eval"), per_device_eval_batch_size=batch_size, use_cpu=True,
                             report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))
    output = trainer.predict(dataset)
    return label_metrics(output.predictions.argmax(-1), output.label_ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "finetune_enhancers")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on the shared 2-core machine, 2 torch threads next to numba's "
                             "scan threads cost 1.2-2.5x more CPU time per step)")
    parser.add_argument("--models", nargs="+", choices=("ph", "ps"), default=["ph", "ps"])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=11.0, help="Ph epochs (default 11)")
    parser.add_argument("--ps-epochs", type=float, default=6.0,
                        help="PS epochs (default 6: a PS model runs both strands, about twice the cost per epoch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=float, default=0.05, help="warmup fraction of the steps (default 0.05)")
    parser.add_argument("--cpu-budget-min", type=float, default=15.0, help="stop a model's training after this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = args.data_dir / "genomic_benchmarks" / "human_enhancers_cohn_test.csv"
    options = FinetuneDataOptions(eval_fraction=0.2, split_seed=args.seed)
    train_set, eval_set, _ = load_splits(table, options)

    # 1. The k-mer baseline on the same split.
    cpu = time.process_time()
    kmer, kmer_lines = kmer_baseline(train_set.sequences, train_set.labels, eval_set.sequences, eval_set.labels)
    kmer_cpu = time.process_time() - cpu

    # 2. Caduceus from scratch.
    results = []
    tokenizer = CaduceusTokenizer()
    eval_dataset = LabelledSequenceDataset(eval_set, tokenizer)
    for variant in args.models:
        rcps = variant == "ps"
        config = CaduceusConfig(d_model=args.d_model, n_layer=args.n_layer, ssm_cfg={"d_state": 16}, rcps=rcps)
        epochs = args.ps_epochs if rcps else args.epochs
        output_dir = args.output_dir / variant
        training_args = TrainingArguments(
            output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64, learning_rate=args.lr, weight_decay=0.1, lr_scheduler_type="cosine",
            warmup_steps=args.warmup, eval_strategy="epoch", save_strategy="no", logging_steps=25, seed=args.seed,
            use_cpu=True, report_to="none", disable_tqdm=True,
        )
        budget = TrainingBudget(args.cpu_budget_min * 60)
        wall, cpu = time.perf_counter(), time.process_time()
        result = finetune(table, config, training_args, options, pooling_strategy="mean", callbacks=[budget])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        losses = [log["loss"] for log in result.log_history if "loss" in log]
        # One entry per epoch (the final evaluation repeats the last epoch's).
        curve = sorted({log["epoch"]: log["eval_accuracy"] for log in result.log_history if "eval_accuracy" in log}
                       .items())
        row = {
            "name": f"Caduceus-{'PS' if rcps else 'Ph'}", "metrics": result.metrics, "steps": result.global_step,
            "stopped_at": budget.stopped_at, "cpu": cpu, "wall": wall, "losses": losses, "curve": curve,
            "epochs": epochs,
            "parameters": AutoModelForSequenceClassification.from_pretrained(output_dir).num_parameters(),
        }
        if not rcps:
            row["no_conjoin"] = evaluate(output_dir, eval_dataset, conjoin=False, batch_size=64)
        results.append(row)

    # 3. Report.
    print("== Fine-tuning from scratch on human_enhancers_cohn (benchmarks/finetune_enhancers.py) ==")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"data: {table.name}, {len(train_set) + len(eval_set):,} sequences of 500 bp; train {len(train_set):,} / "
          f"evaluate {len(eval_set):,} (fixed permutation, seed {args.seed}); eval positives "
          f"{sum(eval_set.labels)}/{len(eval_set)}")
    print(f"k-mer logistic regression ({kmer_cpu:.0f} CPU-s): " + "; ".join(kmer_lines))
    for row in results:
        stop = f"stopped by the CPU budget at step {row['stopped_at']}" if row["stopped_at"] else "all epochs"
        print(f"{row['name']}: d_model {args.d_model}, {args.n_layer} layers, d_state 16, {row['parameters']:,} "
              f"parameters; {row['steps']} steps of batch {args.batch_size} ({stop}; {row['epochs']:g} epochs "
              "planned), "
              f"lr {args.lr:g}, {row['cpu'] / 60:.1f} CPU-min, {row['wall'] / 60:.1f} wall-min")
        print("  training loss (every 25 steps): " + " ".join(f"{x:.3f}" for x in row["losses"]))
        print("  evaluation accuracy by epoch: " + ", ".join(f"{e:.0f}: {a:.4f}" for e, a in row["curve"]))
    print()
    print(f"{'evaluation on the held-out 20 % (' + str(len(eval_set)) + ' sequences)':<62} {'acc':>7} {'MCC':>7} "
          f"{'F1':>7}")
    table_rows = [(f"logistic regression on {kmer['k']}-mer counts (CV-selected k)", kmer)]
    for row in results:
        if "no_conjoin" in row:
            table_rows.append((f"{row['name']} from scratch, post-hoc conjoining (recipe)", _plain(row["metrics"])))
            table_rows.append((f"{row['name']} from scratch, without conjoining", row["no_conjoin"]))
        else:
            table_rows.append((f"{row['name']} from scratch (RC-invariant)", _plain(row["metrics"])))
    for name, m in table_rows:
        print(f"{name:<62} {m['accuracy']:7.4f} {m['mcc']:7.4f} {m['f1']:7.4f}")
    print("published accuracy (official split, quoted): " + "; ".join(f"{n} {a:.3f}" for n, a in PUBLISHED))


def _plain(metrics: dict) -> dict:
    return {key.removeprefix("eval_"): value for key, value in metrics.items()}


if __name__ == "__main__":
    main()
