"""The `caduceus-hf` command: argument parsing, help and --version without importing torch.

`import caduceus_hf` registers the model with transformers' Auto classes, which imports torch and transformers (several
seconds). This module is the console script's entry point and lives outside the package, so `caduceus-hf --help`, a
subcommand's --help and argument errors answer at once; a subcommand imports the package only when it runs (its
handler is named as "module:function"). The training subcommands take every TrainingArguments option, so their parser
is built by `caduceus_hf.training.cli` (which imports transformers) when one of them is named.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata

PROG = "caduceus-hf"
# Choices the apps accept; caduceus_hf.apps.models validates against the same names (a test keeps them equal).
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "bfloat16")
TRAINING_COMMANDS = {
    "pretrain": "masked-language-model pretraining on FASTA files (Trainer; the [train] extra)",
    "finetune": "fine-tuning for sequence classification or regression, or per-base classification, on a table "
    "(Trainer; the [train] extra)",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default that is a value; options whose default is "not given" (None, False) explain it in
    their help text instead of printing "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def version() -> str:
    """"caduceus-hf X (transformers Y, torch Z)", read from the installed distributions' metadata (no import)."""

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"{PROG} {installed('caduceus-hf')} (transformers {installed('transformers')}, torch {installed('torch')})"


def _add_runtime(p: argparse.ArgumentParser, batch_size: int) -> None:
    g = p.add_argument_group("model and runtime")
    g.add_argument("--model", metavar="DIR_OR_REPO",
                   help="a Caduceus checkpoint: local directory or Hub repo id (default: the demo model bundled with "
                        "the package, caduceus_hf/pretrained/caduceus-demo)")
    g.add_argument("--device", default="auto", metavar="DEVICE",
                   help=f"where to run: {', '.join(DEVICES)} or cuda:N (auto: cuda, else mps, else cpu)")
    g.add_argument("--dtype", default="float32", choices=DTYPES, help="model weights dtype")
    g.add_argument("--batch-size", type=int, default=batch_size, help="sequences per forward pass")
    g.add_argument("--threads", type=int,
                   help="torch CPU threads per process (default: torch's choice; under torchrun, the cores divided "
                        "by the processes on the node)")
    g.add_argument("--allow-missing", action="store_true",
                   help="accept a checkpoint that lacks some weights (initialised as new); default: refuse it")


def _add_sharding(p: argparse.ArgumentParser, unit: str) -> None:
    g = p.add_argument_group(
        "genome-scale runs",
        "The input is streamed in blocks and the output written as blocks finish (memory does not grow with the "
        "input). Under torchrun or accelerate launch the blocks are shared among the ranks (one GPU each when "
        "there are GPUs) and rank 0 writes --out. Finished blocks are kept in OUT.parts until the end.",
    )
    g.add_argument("--block-size", type=int, default=1024,
                   help=f"{unit} per block: the unit of work of a rank and of --resume")
    g.add_argument("--resume", action="store_true",
                   help="keep the blocks an interrupted run with the same settings finished (in OUT.parts) and "
                        "compute only the others")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", formatter_class=HelpFormatter,
        help="convert an original checkpoint into a native caduceus-hf directory",
        description="Convert SRC (a Lightning .ckpt from the original train.py, a published remote-code model "
        "directory, or a Hub repo id) into the new directory DST: config.json, model.safetensors, tokenizer files and "
        "a model card. The result is reloaded and checked against the source model before it is moved into place.",
    )
    p.add_argument("src", help="a .ckpt file, a model directory, or a Hub repo id (org/name)")
    p.add_argument("dst", help="the directory to create")
    p.add_argument("--revision", help="revision (branch, tag or commit) of a Hub SRC (default: main)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--config", help="model config JSON for a .ckpt (default: the checkpoint's hyper_parameters)")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="unpickle the .ckpt without the allowlist (runs code: only for files you trust)")
    p.add_argument("--license", default="apache-2.0", help="license field of the model card")
    p.add_argument("--model-max-length", "--max-length", dest="model_max_length", type=int,
                   help="the tokenizer's model_max_length (default: from the source, else 131072; --max-length is "
                        "the older name)")
    p.set_defaults(handler="caduceus_hf.cli:run_convert")


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push", formatter_class=HelpFormatter,
        help="upload a model directory to the Hub in one commit",
        description="Upload DIR (made by `caduceus-hf convert`, `pretrain` or `finetune`) to the Hub repo REPO_ID in "
        "a single commit. Only what a model repo needs is uploaded: config.json, weights, tokenizer files, README.md "
        "(the model card) and remote-code .py files when present; Trainer state (optimizer.pt, scheduler.pt, "
        "rng_state.pth, training_args.bin, trainer_state.json) and checkpoint-* folders only with "
        "--include-training-state. --dry-run lists the files. The token comes from --token or huggingface_hub's "
        "usual sources (HF_TOKEN, `hf auth login`).",
    )
    p.add_argument("dir", help="the model directory")
    p.add_argument("repo_id", help="target repo, org/name (created if missing)")
    p.add_argument("--branch", "--revision", dest="branch",
                   help="branch to upload to, created if missing (default: main; --revision is the older name)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--include-training-state", action="store_true",
                   help="also upload Trainer state files and checkpoint-* folders (to resume training elsewhere)")
    p.add_argument("--dry-run", action="store_true", help="print the target and the files, upload nothing")
    p.add_argument("--token", help="Hub token (default: huggingface_hub's usual sources)")
    p.add_argument("--message", help="commit message (default: one naming the package)")
    p.set_defaults(handler="caduceus_hf.cli:run_push")


def _add_apps(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", formatter_class=HelpFormatter,
        help="mean embeddings of FASTA sequences, BED regions or windows (.npz or .parquet)",
        description="Embed every record of a FASTA file (or, with --bed, every interval of a reference FASTA) as the "
        "mean of the model's final per-token states over its bases ([SEP] and padding excluded; PS models: the mean "
        "of the two strands' halves). Long sequences go in windows (--window, --stride). The output (.npz or "
        ".parquet, by extension) holds ids, contig, 0-based start and end, and the embeddings. Needs the [apps] "
        "extra: pip install 'caduceus-hf[apps]'.",
    )
    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or bgzip); the reference with --bed")
    p.add_argument("--bed", help="BED file of regions of --fasta to embed (name column used as id)")
    p.add_argument("--out", required=True, help="output file, .npz or .parquet")
    p.add_argument("--window", type=int, help="embed windows of this many bases (default: whole sequences)")
    p.add_argument("--stride", type=int, help="bases between window starts (default: --window, no overlap)")
    p.add_argument("--rc-average", action="store_true",
                   help="average with the reverse complement's embedding (strand-invariant embeddings)")
    _add_runtime(p, batch_size=16)
    _add_sharding(p, "windows (or sequences)")
    p.set_defaults(handler="caduceus_hf.apps.cli:run_embed")

    p = sub.add_parser(
        "score-variants", formatter_class=HelpFormatter,
        help="zero-shot SNV scores log p(alt) - log p(ref) from a VCF and a reference FASTA (TSV)",
        description="Score every SNV of a VCF against a reference FASTA with the masked language model: "
        "log p(ALT) - log p(REF) at the masked variant position of a --window centred on it (negative: ALT less "
        "likely). Checks REF against the reference (mismatches are reported and flagged), skips and counts "
        "non-SNVs, truncates windows at linear contig ends and wraps them on --circular contigs. With --label-key "
        "prints the AUROC of -score for label 1 against label 0. Needs the [apps] extra: "
        "pip install 'caduceus-hf[apps]'.",
    )
    p.add_argument("--vcf", required=True, help="VCF file (plain, bgzip or BCF)")
    p.add_argument("--fasta", required=True, help="reference FASTA (plain or gzip; indexed .fai used if present)")
    p.add_argument("--out", required=True, help="output TSV, one row per scored SNV")
    p.add_argument("--window", type=int, default=512, help="bases of context centred on the variant")
    p.add_argument("--rc-average", action="store_true",
                   help="average with the score of the reverse-complement window (complemented alleles)")
    p.add_argument("--embedding-distance", action="store_true",
                   help="also report the Euclidean distance between the REF and ALT windows' mean embeddings")
    p.add_argument("--circular", nargs="*", metavar="CONTIG",
                   help="wrap windows around contig ends: the named contigs, or every contig if none is named "
                        "(mitochondrial, bacterial, plasmid genomes)")
    p.add_argument("--label-key", metavar="KEY", help="INFO key of a 0/1 label; prints the AUROC")
    p.add_argument("--roc-png", metavar="FILE", help="with --label-key: write the ROC curve to this PNG")
    _add_runtime(p, batch_size=16)
    _add_sharding(p, "VCF records")
    p.set_defaults(handler="caduceus_hf.apps.cli:run_score_variants")

    p = sub.add_parser(
        "fill-mask", formatter_class=HelpFormatter,
        help="top-k nucleotides with probabilities at each [MASK] of a sequence",
        description="Predict the bases hidden by [MASK] tokens, e.g. --sequence ACGT[MASK]ACG, or in the records "
        "of a FASTA file. Prints, per [MASK], its 1-based position and the top-k nucleotides with their "
        "probabilities (softmax over A, C, G, T). Needs the [apps] extra: pip install 'caduceus-hf[apps]'.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", nargs="+", metavar="SEQ", help="sequence(s) with [MASK] tokens")
    source.add_argument("--fasta", help="FASTA file whose sequences contain [MASK] tokens")
    p.add_argument("--top-k", type=int, default=4, help="nucleotides to print per mask, 1-4")
    _add_runtime(p, batch_size=16)
    p.set_defaults(handler="caduceus_hf.apps.cli:run_fill_mask")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand but the training ones, which are listed and parsed separately."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Caduceus DNA language models: embeddings, variant scoring, fill-mask, training, conversion and "
        "publishing. `caduceus-hf COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    _add_apps(sub)
    for name, summary in TRAINING_COMMANDS.items():
        # Listed here for the overview; `main` hands their arguments to caduceus_hf.training.cli before this parser.
        sub.add_parser(name, help=summary, add_help=False)
    _add_convert(sub)
    _add_push(sub)
    return parser


def _report(command: str, err: BaseException) -> int:
    print(f"{PROG} {command}: error: {err}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run `caduceus-hf` with `argv` (default: sys.argv[1:]); returns the exit status. Problems in the user's input
    (ValueError, FileNotFoundError, ConversionError, a missing optional dependency) are printed as one line and give
    status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINING_COMMANDS:
        from caduceus_hf.training.cli import main as training_main

        return training_main(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    module, name = args.handler.split(":")
    try:
        return getattr(importlib.import_module(module), name)(args)
    except (ValueError, FileNotFoundError) as err:
        return _report(args.command, err)
    except Exception as err:
        from caduceus_hf.conversion import ConversionError
        from caduceus_hf.extras import MissingExtraError

        # MissingExtraError (an ImportError) names the extra to install.
        if isinstance(err, (ConversionError, MissingExtraError)):
            return _report(args.command, err)
        raise

if __name__ == "__main__":
    sys.exit(main())
