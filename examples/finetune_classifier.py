"""Fine-tune a Caduceus sequence classifier on a CSV/TSV table with the library API, then predict with it.

The same as `caduceus-hf finetune`, written out. The table needs a header with a sequence and a label column, e.g.
Genomic Benchmarks' `seq,label`. From scratch by default, or from any Caduceus checkpoint with --init (an MLM
checkpoint gives its backbone; the classification head is new). A fixed 20 % of the table is held out and scored
(accuracy, MCC, F1 over the whole held-out set):

    python examples/finetune_classifier.py $CADUCEUS_DATA_DIR/genomic_benchmarks/human_enhancers_cohn_test.csv
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="CSV or TSV file with a header")
    parser.add_argument("--init", help="a Caduceus checkpoint directory or Hub id (default: from scratch)")
    parser.add_argument("--output-dir", default="caduceus-classifier", help="where the model goes")
    parser.add_argument("--max-steps", type=int, default=100, help="optimiser steps (default 100)")
    parser.add_argument("--rcps", action="store_true", help="from scratch: Caduceus-PS instead of Caduceus-Ph")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

    import caduceus_hf  # registers the "caduceus" model type with the Auto classes
    from caduceus_hf.training import FinetuneDataOptions, finetune

    model = args.init or caduceus_hf.CaduceusConfig(d_model=64, n_layer=2, rcps=args.rcps)
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=32, learning_rate=1e-3,
        weight_decay=0.1, lr_scheduler_type="cosine", warmup_steps=0.01, save_strategy="no", logging_steps=20,
        report_to="none",
    )
    # The recipe: mean pooling; Ph trains with RC augmentation and evaluates conjoined, PS needs neither.
    result = finetune(args.table, model, training_args, FinetuneDataOptions(eval_fraction=0.2, split_seed=0),
                      pooling_strategy="mean")
    m = result.metrics
    print(f"held-out accuracy {m['eval_accuracy']:.3f}, MCC {m['eval_mcc']:.3f}, F1 {m['eval_f1']:.3f}")

    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    classifier = AutoModelForSequenceClassification.from_pretrained(result.output_dir).eval()
    batch = tokenizer(["ACGTTGCA" * 8, "GGGCCC" * 5], padding=True, return_tensors="pt")  # left padding + mask
    with torch.no_grad():
        probabilities = classifier(**batch).logits.softmax(-1)
    print("class probabilities of two sequences:", probabilities.numpy().round(3).tolist())


if __name__ == "__main__":
    main()
