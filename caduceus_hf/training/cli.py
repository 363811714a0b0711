"""`caduceus-hf pretrain` and `caduceus-hf finetune`: the training library on the command line.

Parsed by transformers' HfArgumentParser: every TrainingArguments option is accepted under its own name
(--gradient_accumulation_steps or --gradient-accumulation-steps, ...), next to this package's model and data options.
Values come, last one winning, from the recipe defaults below (small: a 2-layer, d_model 64 model, a few hundred
steps, so a first run finishes on a laptop CPU in a minute or two), a JSON or YAML --args-file whose keys are option
names, and the command line. The older short names (--lr, --epochs, --grad-accum, --init, --cpu, ...) remain aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from caduceus_hf_cli import DEVICES, PROG, TRAINING_COMMANDS, HelpFormatter

from ..configuration_caduceus import POOLING_STRATEGIES
from ..extras import install_hint
from .data import TASKS


@dataclass
class ModelArguments:
    """The model: a checkpoint to start from, or the shape of a new one."""

    _argument_group_name = "model (a new one unless --model is given)"

    model: str | None = field(
        default=None,
        metadata={"aliases": ["--init"], "help": "start from this Caduceus checkpoint, a directory or Hub repo id (a "
                  "classifier takes an MLM's backbone and gets a new head); default: a new model of the shape "
                  "below. --init is the older name"},
    )
    d_model: int = field(default=64, metadata={"help": "new model: width of one strand"})
    n_layer: int = field(default=2, metadata={"help": "new model: number of BiMamba blocks"})
    d_state: int = field(default=16, metadata={"help": "new model: SSM state size"})
    rcps: bool = field(
        default=False, metadata={"help": "new model: Caduceus-PS (reverse-complement parameter sharing)"}
    )
    allow_missing: bool = field(
        default=False, metadata={"help": "accept a --model checkpoint that lacks weights besides the new head "
                                         "(initialised as new); default: refuse it"},
    )


@dataclass
class RuntimeArguments:
    """Where training runs."""

    _argument_group_name = "runtime"

    device: str = field(
        default="auto",
        metadata={"choices": DEVICES, "help": "auto: the accelerator Trainer finds (cuda, else mps), else cpu; cpu "
                  "is --use_cpu (--cpu is the older name)"},
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})


@dataclass
class PretrainDataArguments:
    """FASTA windows for masked-language-model pretraining (see PretrainDataOptions)."""

    _argument_group_name = "data"

    window: int = field(default=256, metadata={"help": "bases per window"})
    stride: int | None = field(default=None, metadata={"help": "bases between training windows (default: --window)"})
    holdout_fraction: float = field(default=0.05, metadata={"help": "hold out the last fraction of each record"})
    holdout_region: list[str] | None = field(
        default=None, metadata={"metavar": "NAME:START-END", "help": "hold out these regions instead (1-based, "
                                "inclusive; at most one per record)"},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "fraction of bases masked"})
    rc_augment: bool | None = field(
        default=None, metadata={"nargs": "?", "const": True,
                                "help": "reverse-complement augmentation (default: on for Ph, off for PS)"},
    )
    softmask_weight: float | None = field(
        default=None, metadata={"help": "loss weight of soft-masked (lowercase) bases, e.g. 0.1 (default: 1)"}
    )
    max_eval_windows: int | None = field(
        default=None, metadata={"help": "evaluate on at most this many held-out windows (default: all)"}
    )


@dataclass
class FinetuneDataArguments:
    """Labelled sequences for classification or regression (see FinetuneDataOptions)."""

    _argument_group_name = "data"

    task: str = field(
        default="sequence",
        metadata={"choices": TASKS, "help": "sequence: one class per sequence; regression: one number per sequence "
                  "(MSE loss, Pearson and Spearman metrics); token: one class per base (a digit per base, or integers "
                  "separated by spaces)"},
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "evaluation table (default: hold out --eval_fraction of TRAIN_FILE)"}
    )
    eval_fraction: float = field(default=0.2, metadata={"help": "held-out fraction when there is no --eval_file"})
    split_seed: int = field(default=0, metadata={"help": "seed of the held-out split"})
    dataset_config: str | None = field(
        default=None, metadata={"help": "configuration name of a Hub dataset TRAIN_FILE"}
    )
    train_split: str = field(default="train", metadata={"help": "split of a Hub dataset to train on"})
    eval_split: str | None = field(
        default=None, metadata={"help": "split of a Hub dataset to evaluate on (default: hold out --eval_fraction)"}
    )
    sequence_column: str | None = field(
        default=None, metadata={"help": "name of the sequence column (default: seq, sequence, sequences or dna)"}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "name of the label column (default: label, labels, target or y)"}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "truncate to this many tokens, [SEP] included (default: no truncation)"}
    )
    rc_augment: bool | None = field(
        default=None, metadata={"nargs": "?", "const": True,
                                "help": "reverse-complement augmentation in training (default: on for Ph, off for PS)"},
    )
    pooling: str | None = field(
        default=None, metadata={"choices": POOLING_STRATEGIES,
                                "help": "sequence pooling (default: the checkpoint's, else mean)"},
    )
    conjoin_eval: bool | None = field(
        default=None, metadata={"nargs": "?", "const": True,
                                "help": "Ph: average forward and reverse-complement passes at evaluation (default: "
                                        "on)"},
    )


# The recipe's TrainingArguments defaults, where they differ from transformers'.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "common": dict(
        per_device_train_batch_size=16, per_device_eval_batch_size=16, num_train_epochs=1.0, weight_decay=0.1,
        warmup_steps=0.01, lr_scheduler_type="cosine", save_steps=500, logging_steps=20, seed=0,
    ),
    "pretrain": dict(max_steps=200, learning_rate=2e-3),
    "finetune": dict(max_steps=100, learning_rate=1e-3),
}
DATA_ARGUMENTS = {"pretrain": PretrainDataArguments, "finetune": FinetuneDataArguments}
DESCRIPTIONS = {
    "pretrain": "Pretrain a Caduceus MLM on FASTA files (plain or gzipped) with Hugging Face Trainer: fixed-length "
    "windows, a held-out region per record (by default its last 5%%) for evaluation, nucleotide-only masking, "
    "reverse-complement augmentation for Ph models. Writes Trainer checkpoints, then the model, tokenizer and a model "
    "card with the final held-out loss into --output_dir.",
    "finetune": "Fine-tune a Caduceus classifier with Hugging Face Trainer on a table with a sequence and a label "
    "column (e.g. Genomic Benchmarks' seq,label): CSV, TSV, JSON / JSON Lines or parquet (plain or gzipped), or a "
    "Hub dataset id (with --dataset_config, --train_split, --eval_split), from scratch or from any Caduceus "
    "checkpoint (--model). Evaluates accuracy, MCC and F1 (regression: MSE, Pearson, Spearman) over the whole "
    "evaluation set (--eval_file, else a fixed "
    "--eval_fraction of the table). Ph models train with reverse-complement augmentation and evaluate with post-hoc "
    "conjoining; PS models need neither. Writes the model, tokenizer and a model card into --output_dir.",
}
EPILOG = (
    "Values: recipe defaults (shown), then --args-file, then the command line. Every TrainingArguments option is "
    "accepted (see transformers' documentation); older names: --init (--model), --cpu (--device cpu), --lr "
    "(--learning_rate), --epochs (--num_train_epochs), --grad-accum (--gradient_accumulation_steps), --warmup "
    "(--warmup_steps), --scheduler (--lr_scheduler_type), --batch-size (both per-device batch sizes), --resume "
    "(--resume_from_checkpoint: the last checkpoint in --output_dir, or a fresh start when there is none). Needs the "
    "[train] extra: " + install_hint("train") + "."
)


class _TrainingArgumentsGroup(TrainingArguments):
    """TrainingArguments' options under their own heading in --help (parsing only; runs get TrainingArguments)."""

    _argument_group_name = "training (transformers TrainingArguments: every option, recipe defaults)"


class _BothBatchSizes(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.per_device_train_batch_size = namespace.per_device_eval_batch_size = values


def _dataclasses(command: str) -> tuple[type, ...]:
    return (ModelArguments, DATA_ARGUMENTS[command], RuntimeArguments, TrainingArguments)


def build_parser(command: str) -> HfArgumentParser:
    """The parser of `caduceus-hf pretrain` or `caduceus-hf finetune`, recipe defaults applied."""
    import torch

    inputs = "FASTA [FASTA ...]" if command == "pretrain" else "TRAIN_FILE"
    parser = HfArgumentParser(
        (*_dataclasses(command)[:-1], _TrainingArgumentsGroup), prog=f"{PROG} {command}", description=DESCRIPTIONS[command], epilog=EPILOG,
        formatter_class=HelpFormatter,
        # The generated usage would list all ~130 options; they are described below it.
        usage=f"%(prog)s {inputs} --output_dir DIR [--args-file FILE] [options]",
    )
    if command == "pretrain":
        parser.add_argument("fasta", nargs="*", help="FASTA files (.fa, .fasta, optionally .gz)")
    else:
        parser.add_argument("train_file", nargs="?",
                            help="the training table (.csv, .tsv, .json, .jsonl, .parquet; optionally .gz) or a Hub "
                                 "dataset id")
    parser.add_argument("--args-file", metavar="FILE",
                        help="JSON or YAML file of option values ({\"learning_rate\": 1e-3, ...}; positional "
                             "arguments as \"fasta\" / \"train_file\"); the command line overrides it")
    old = parser.add_argument_group("older names (aliases)")
    alias = dict(default=argparse.SUPPRESS)
    old.add_argument("--cpu", dest="device", action="store_const", const="cpu", help="--device cpu", **alias)
    old.add_argument("--lr", dest="learning_rate", type=float, help="--learning_rate", **alias)
    old.add_argument("--epochs", dest="num_train_epochs", type=float, help="--num_train_epochs", **alias)
    old.add_argument("--grad-accum", dest="gradient_accumulation_steps", type=int,
                     help="--gradient_accumulation_steps", **alias)
    old.add_argument("--warmup", dest="warmup_steps", type=float, help="--warmup_steps", **alias)
    old.add_argument("--scheduler", dest="lr_scheduler_type", help="--lr_scheduler_type", **alias)
    old.add_argument("--batch-size", dest="per_device_train_batch_size", type=int, action=_BothBatchSizes,
                     help="--per_device_train_batch_size and --per_device_eval_batch_size", **alias)
    old.add_argument("--resume", dest="resume_from_checkpoint", nargs="?", const=True, metavar="CHECKPOINT",
                     help="--resume_from_checkpoint; alone: the last checkpoint in --output_dir, if any", **alias)
    old.add_argument("--no-rc-augment", "--no_rc_augment", dest="rc_augment", action="store_false",
                     help="--rc_augment false", **alias)
    if command == "finetune":
        old.add_argument("--no-conjoin-eval", "--no_conjoin_eval", dest="conjoin_eval", action="store_false",
                         help="--conjoin_eval false", **alias)
    parser.set_defaults(
        **RECIPE_DEFAULTS["common"], **RECIPE_DEFAULTS[command],
        # A progress bar on a terminal; plain logged lines in a file.
        disable_tqdm=not sys.stderr.isatty(),
        # Pinned memory only helps copies to a GPU; without one torch warns at every DataLoader.
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    return parser


def _load_args_file(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The option values of a JSON or YAML file, keys checked against the parser's options."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--args-file {file}: no such file")
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(file.read_text())
        else:
            values = json.loads(file.read_text())
    except Exception as err:  # json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError
        raise ValueError(f"--args-file {file}: cannot read it: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--args-file {file}: expected a mapping of option names to values")
    known = {action.dest for action in parser._actions}
    values = {str(key).lstrip("-").replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(values) - known - {"args_file", "help"})
    if unknown:
        raise ValueError(f"--args-file {file}: unknown options {unknown}")
    return values


@dataclass
class ParsedArguments:
    """What one training command line says."""

    inputs: list[str]
    model: ModelArguments
    data: PretrainDataArguments | FinetuneDataArguments
    runtime: RuntimeArguments
    training: TrainingArguments
    resume: bool | str | None


def parse(command: str, argv: list[str]) -> ParsedArguments:
    """Parse a `pretrain` / `finetune` command line (after the subcommand) into its argument dataclasses."""
    parser = build_parser(command)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--args-file")
    known, _ = pre.parse_known_args(argv)
    if known.args_file:
        try:
            parser.set_defaults(**_load_args_file(parser, known.args_file))
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
    namespace = vars(parser.parse_args(argv))
    namespace.pop("args_file", None)
    inputs = namespace.pop("fasta" if command == "pretrain" else "train_file")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    if not inputs:
        parser.error("no " + ("FASTA files" if command == "pretrain" else "TRAIN_FILE") + " given")
    if not namespace.get("output_dir"):
        parser.error("--output_dir (--output-dir) is required")
    resume = namespace.pop("resume_from_checkpoint", None)
    if namespace.get("eval_steps") and str(namespace.get("eval_strategy")) == "no":
        namespace["eval_strategy"] = "steps"  # --eval_steps N alone means: evaluate every N steps
    built = []
    for dtype in _dataclasses(command):
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        built.append(dtype(**{name: namespace[name] for name in names if name in namespace}))
    model, data, runtime, training = built
    if runtime.device == "cpu":
        training.use_cpu = True  # set before any device query: TrainingArguments.device is computed once
    return ParsedArguments(inputs, model, data, runtime, training, resume)


def _model_source(model: ModelArguments) -> Any:
    if model.model:
        return model.model
    from ..configuration_caduceus import CaduceusConfig

    return CaduceusConfig(d_model=model.d_model, n_layer=model.n_layer, ssm_cfg={"d_state": model.d_state},
                          rcps=model.rcps)


def _resume_point(resume: bool | str | None, output_dir: str) -> str | None:
    """A checkpoint directory to resume from, or None (start fresh, saying so when --resume found nothing)."""
    if resume in (None, False) or str(resume).lower() == "false":
        return None
    if resume is True or str(resume).lower() == "true":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            print(f"--resume: no checkpoint in {output_dir}; starting fresh", file=sys.stderr)
        return last
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint directory")
    return str(resume)


def _check_device(runtime: RuntimeArguments) -> None:
    import torch

    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if runtime.device in available and not available[runtime.device]:
        raise ValueError(f"--device {runtime.device}: no such device here (use auto or cpu)")


def _pretrain(parsed: ParsedArguments) -> int:
    from .pretrain import PretrainDataOptions, pretrain

    d = parsed.data
    options = PretrainDataOptions(
        window=d.window,
        stride=d.stride,
        holdout_fraction=d.holdout_fraction,
        holdout_regions=tuple(d.holdout_region or ()),
        mlm_probability=d.mlm_probability,
        rc_augment=d.rc_augment,
        softmask_weight=d.softmask_weight,
        max_eval_windows=d.max_eval_windows,
    )
    result = pretrain(parsed.inputs, _model_source(parsed.model), parsed.training, options,
                      resume_from_checkpoint=_resume_point(parsed.resume, parsed.training.output_dir),
                      allow_missing=parsed.model.allow_missing)
    h = result.heldout
    print(
        f"pretrained {result.global_step} steps on {len(result.data.train):,} windows -> {result.output_dir}; "
        f"held-out loss {h['nll_nats']:.4f} nats ({h['nll_bits']:.4f} bits) per masked base over "
        f"{int(h['masked']):,} masked bases"
    )
    return 0


def _finetune(parsed: ParsedArguments) -> int:
    from .finetune import FinetuneDataOptions, finetune

    d = parsed.data
    options = FinetuneDataOptions(
        task=d.task,
        eval_file=d.eval_file,
        eval_fraction=d.eval_fraction,
        split_seed=d.split_seed,
        sequence_column=d.sequence_column,
        label_column=d.label_column,
        max_length=d.max_length,
        rc_augment=d.rc_augment,
        dataset_config=d.dataset_config,
        train_split=d.train_split,
        eval_split=d.eval_split,
    )
    result = finetune(parsed.inputs[0], _model_source(parsed.model), parsed.training, options,
                      pooling_strategy=d.pooling, conjoin_eval=d.conjoin_eval,
                      resume_from_checkpoint=_resume_point(parsed.resume, parsed.training.output_dir),
                      allow_missing=parsed.model.allow_missing)
    m = result.metrics
    if d.task == "regression":
        scores = f"MSE {m['eval_mse']:.4f}, Pearson {m['eval_pearson']:.4f}, Spearman {m['eval_spearman']:.4f}"
    else:
        scores = f"accuracy {m['eval_accuracy']:.4f}, MCC {m['eval_mcc']:.4f}, F1 {m['eval_f1']:.4f}"
    print(
        f"fine-tuned {result.global_step} steps on {result.num_train:,} examples -> {result.output_dir}; "
        f"evaluation over {result.num_eval:,} examples: {scores}"
    )
    return 0


def main(command: str, argv: list[str]) -> int:
    """Run `caduceus-hf pretrain|finetune ARGV...`; returns the exit status (1 with a one-line error for bad input)."""
    if command not in TRAINING_COMMANDS:
        raise ValueError(f"not a training command: {command!r}")
    from ..cli import configure_process

    def fail(err: BaseException) -> int:
        print(f"{PROG} {command}: error: {err}", file=sys.stderr)
        return 1

    try:
        parsed = parse(command, argv)
    except ValueError as err:  # TrainingArguments.__post_init__ rejects combinations of options
        return fail(err)
    configure_process()
    if parsed.runtime.threads is not None:
        if parsed.runtime.threads < 1:
            return fail(f"--threads must be a positive integer, got {parsed.runtime.threads}")
        import torch

        torch.set_num_threads(parsed.runtime.threads)
    try:
        _check_device(parsed.runtime)
        return (_pretrain if command == "pretrain" else _finetune)(parsed)
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    except ImportError as err:
        # Missing optional dependencies (pysam, accelerate, scikit-learn, datasets): say which extra has them, unless
        # the error already does.
        return fail(f"{err}" + ("" if "pip install" in str(err) else f" ({install_hint('train')})"))
    except OSError as err:
        # transformers reports a --model that is neither a directory nor a reachable Hub repo as OSError.
        return fail(err)


__all__ = [
    "FinetuneDataArguments",
    "ModelArguments",
    "ParsedArguments",
    "PretrainDataArguments",
    "RuntimeArguments",
    "build_parser",
    "main",
    "parse",
]
