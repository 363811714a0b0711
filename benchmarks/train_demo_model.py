"""Train the small demo Caduceus shipped inside the package (caduceus_hf/pretrained/caduceus-demo/).

Masked-language-model pretraining with the training library (`caduceus_hf.training.pretrain`, Hugging Face Trainer)
on the public bacterial, phage and human genomes of $CADUCEUS_DATA_DIR/genomes:

    E. coli K-12 MG1655, H. pylori G27, phage lambda, 40 kb of human chr17 (hg19)

The human mitochondrial genome is deliberately left out: `benchmarks/clinvar_chrM.py` scores ClinVar chrM variants
with this model, and that check must stay out of domain. The last 5 % of every record is held out (never trained on);
the final held-out masked-token loss goes into the model card.

Model: Caduceus-Ph, 4 layers, d_model 64, d_state 16 (164,160 parameters, float32 safetensors of ~0.7 MB), trained
with reverse-complement augmentation on 512-base windows (the Caduceus recipe for Ph models), AdamW, cosine schedule.
The run is sized for about 15 minutes on 2 CPU cores; a wall-clock budget (--time-budget-min) stops it early on a
slower machine, and the card then says at which step it stopped.

Run from the repository root (regenerates the packaged model in place; files are staged and moved in at the end):

    python benchmarks/train_demo_model.py [--data-dir DIR (default $CADUCEUS_DATA_DIR)] [--output caduceus_hf/pretrained/caduceus-demo]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainingArguments

from caduceus_hf import CaduceusConfig
from caduceus_hf.training import PretrainDataOptions, pretrain

from budget import TrainingBudget  # benchmarks/budget.py
from data_dir import data_dir  # benchmarks/data_dir.py

REPO = Path(__file__).resolve().parents[1]
GENOMES = (
    "ecoli_K12_MG1655.fasta.gz",
    "hpylori_G27_NC_011333.1.fasta.gz",
    "lambda_phage_NC_001416.1.fa.gz",
    "human_chr17_hg19_part.fa",
)
# What the packaged model is: saved by Trainer, minus its pickled TrainingArguments (not needed to load the model).
SHIPPED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md")


def demo_card(card: str, data_dir: Path, minutes: float, threads: int, stopped_at: int | None, max_steps: int,
              tokens: int, epochs: float, heldout: dict[str, float]) -> str:
    """The card `pretrain` wrote, with a demo notice after its YAML front matter (which must stay first for the Hub)
    and the local data folder shown as $CADUCEUS_DATA_DIR."""
    budget = (
        f"stopped by the wall-clock budget at step {stopped_at} of {max_steps} planned"
        if stopped_at is not None
        else f"all {max_steps} planned steps"
    )
    notice = "\n".join([
        "# caduceus-demo: a small demo model bundled with caduceus-hf",
        "",
        "**This is a demo, not a replacement for the published Caduceus checkpoints** "
        "(kuleshov-group/caduceus-ph_seqlen-131k_d_model-256_n_layer-16 and friends, trained on the human genome "
        "hg38). It exists so that `caduceus-hf embed`, `score-variants` and `fill-mask` run right after install, "
        "offline. Its embeddings and variant scores are those of a 164k-parameter model trained for minutes on "
        "bacterial and phage DNA: use `--model` with a published checkpoint for real work.",
        "",
        "* Trained by the caduceus-hf authors with `benchmarks/train_demo_model.py` (which calls "
        "`caduceus_hf.training.pretrain`, Hugging Face Trainer, masked-language-model objective).",
        "* Training data: E. coli K-12 MG1655 (4,639,675 bp), H. pylori G27 (1,652,982 bp), enterobacteria phage "
        "lambda (48,502 bp) and 40,000 bp of human chr17 (hg19), public NCBI/UCSC sequences; the last 5 % of every "
        "record held out. Not trained on the human mitochondrial genome, nor on any other human sequence.",
        f"* Training time: {minutes:.1f} minutes of wall time on {threads} CPU threads, {budget}, "
        f"{tokens:,} tokens seen ({epochs:.2f} epochs of the training windows).",
        f"* Held-out loss: {heldout['nll_nats']:.4f} nats ({heldout['nll_bits']:.4f} bits) per masked base over "
        f"{int(heldout['masked']):,} masked bases of the held-out regions (uniform guessing over A, C, G, T: 1.3863 "
        "nats, 2 bits).",
        "",
        "The sections below are the standard card written by `caduceus-hf pretrain`.",
        "",
    ])
    front_end = card.index("\n---\n", 4) + len("\n---\n")
    body = card[front_end:].replace(f"{data_dir.resolve()}/", "$CADUCEUS_DATA_DIR/")
    return card[:front_end] + "\n" + notice + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data_dir())
    parser.add_argument("--output", type=Path, default=REPO / "caduceus_hf" / "pretrained" / "caduceus-demo")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--time-budget-min", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    fasta = [args.data_dir.resolve() / "genomes" / name for name in GENOMES]
    config = CaduceusConfig(d_model=64, n_layer=4, ssm_cfg={"d_state": 16}, rcps=False)
    budget = TrainingBudget(args.time_budget_min * 60, time.monotonic)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="train-demo-") as work:
        training_args = TrainingArguments(
            output_dir=work,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=32,
            learning_rate=args.lr,
            weight_decay=0.1,
            warmup_steps=0.05,
            lr_scheduler_type="cosine",
            save_strategy="no",
            logging_steps=25,
            seed=args.seed,
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
        )
        data = PretrainDataOptions(window=args.window, holdout_fraction=0.05, max_eval_windows=128)
        start = time.monotonic()
        result = pretrain(fasta, config, training_args, data, callbacks=[budget])
        minutes = (time.monotonic() - start) / 60

        card = Path(work) / "README.md"
        examples = result.global_step * args.batch_size
        card.write_text(demo_card(card.read_text(), args.data_dir, minutes, args.threads, budget.stopped_at,
                                  args.max_steps, examples * (args.window + 1), examples / len(result.data.train),
                                  result.heldout))
        # Stage next to the destination, then swap it in, so an interrupted run never leaves a half-written model.
        staging = Path(tempfile.mkdtemp(prefix=".caduceus-demo-", dir=args.output.parent))
        try:
            for name in SHIPPED_FILES:
                shutil.copyfile(Path(work) / name, staging / name)
                # Package data must be readable by everyone (mkdtemp and safetensors create private files).
                (staging / name).chmod(0o644)
            staging.chmod(0o755)
            if args.output.exists():
                shutil.rmtree(args.output)
            os.replace(staging, args.output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    h = result.heldout
    print(
        f"trained {result.global_step} steps in {minutes:.1f} min -> {args.output}; held-out loss "
        f"{h['nll_nats']:.4f} nats ({h['nll_bits']:.4f} bits) per masked base over {int(h['masked']):,} bases"
    )


if __name__ == "__main__":
    main()
