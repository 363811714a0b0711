"""Pretrain a small Caduceus masked language model on FASTA files with the library API, then use it.

The same as `caduceus-hf pretrain`, written out: a config, standard TrainingArguments, `pretrain()`, and the saved
directory used through a stock `fill-mask` pipeline. Example (the first 6 kb of phage lambda ship with the tests):

    python examples/pretrain_mlm.py tests/data/lambda_phage_NC_001416.1_1-6000.fa.gz --output-dir lambda-mlm
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fasta", nargs="+", help="FASTA files, plain or gzipped")
    parser.add_argument("--output-dir", default="caduceus-mlm", help="where checkpoints and the model go")
    parser.add_argument("--window", type=int, default=256, help="bases per training window (default 256)")
    parser.add_argument("--max-steps", type=int, default=200, help="optimiser steps (default 200)")
    parser.add_argument("--rcps", action="store_true", help="train Caduceus-PS instead of Caduceus-Ph")
    args = parser.parse_args()

    from transformers import TrainingArguments, pipeline

    import caduceus_hf  # registers the "caduceus" model type with the Auto classes
    from caduceus_hf.training import PretrainDataOptions, pretrain

    config = caduceus_hf.CaduceusConfig(d_model=64, n_layer=2, rcps=args.rcps)
    training_args = TrainingArguments(
        output_dir=args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=16, learning_rate=2e-3,
        weight_decay=0.1, lr_scheduler_type="cosine", warmup_steps=0.01, save_steps=100, logging_steps=20,
        report_to="none",
    )
    # The last 5 % of every record is held out; Ph models get reverse-complement augmentation by default.
    result = pretrain(args.fasta, config, training_args, PretrainDataOptions(window=args.window))
    print(f"held-out loss: {result.heldout['nll_bits']:.3f} bits per masked base; model in {result.output_dir}")

    fill = pipeline("fill-mask", model=str(result.output_dir))
    text = result.data.train.text(0)[:40]
    masked = text[:20] + "[MASK]" + text[21:]
    best = fill(masked, targets=list("ACGT"))[0]
    print(f"{masked}\n-> {best['token_str']} (p = {best['score']:.2f}; the genome has {text[20]})")


if __name__ == "__main__":
    main()
