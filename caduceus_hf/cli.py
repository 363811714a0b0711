"""The `caduceus-hf` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _convert(args: argparse.Namespace) -> int:
    from .conversion import convert

    report = convert(
        args.src,
        args.dst,
        force=args.force,
        config_file=args.config,
        unsafe_pickle=args.unsafe_pickle,
        license=args.license,
        max_length=args.max_length,
        revision=args.revision,
    )
    print(
        f"converted {report.kind} {report.source} -> {report.destination} ({report.architecture}, "
        f"{report.num_parameters:,} parameters); reloaded outputs match (max abs diff {report.max_abs_diff:.3g})"
    )
    if report.dropped_keys:
        print(f"dropped non-model entries: {', '.join(report.dropped_keys)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from .conversion import push

    push(
        args.dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        create_pr=args.create_pr,
        dry_run=args.dry_run,
        token=args.token,
        commit_message=args.message,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caduceus-hf", description="Caduceus DNA language models: conversion, publishing, embeddings, scoring."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "convert",
        help="convert an original checkpoint into a native caduceus-hf directory",
        description="Convert SRC (a Lightning .ckpt from the original train.py, a published remote-code model "
        "directory, or a Hub repo id) into the new directory DST: config.json, model.safetensors, tokenizer files and "
        "a model card. The result is reloaded and checked against the source model before it is moved into place.",
    )
    p.add_argument("src", help="a .ckpt file, a model directory, or a Hub repo id (org/name)")
    p.add_argument("dst", help="the directory to create")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--config", help="model config JSON for a .ckpt (default: the checkpoint's hyper_parameters)")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="unpickle the .ckpt without the allowlist (runs code: only for files you trust)")
    p.add_argument("--license", default="apache-2.0", help="license field of the model card (default apache-2.0)")
    p.add_argument("--max-length", type=int, help="tokenizer model_max_length (default: from the source, else 131072)")
    p.add_argument("--revision", help="revision of a Hub source")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "push",
        help="upload a converted directory to the Hub in one commit",
        description="Upload DIR (made by `caduceus-hf convert`) to the Hub repo REPO_ID in a single commit. The token "
        "comes from --token or huggingface_hub's usual sources (HF_TOKEN, `hf auth login`).",
    )
    p.add_argument("dir", help="the converted directory")
    p.add_argument("repo_id", help="target repo, org/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to upload to (created if missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--dry-run", action="store_true", help="print the target and the files, upload nothing")
    p.add_argument("--token", help="Hub token (default: huggingface_hub's usual sources)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=_push)

    from .training.cli import register as register_training

    register_training(sub)

    from .apps.cli import register as register_apps

    register_apps(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .conversion import ConversionError

    handled: tuple[type[BaseException], ...] = (ConversionError, FileNotFoundError, ValueError)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except handled as err:
        print(f"caduceus-hf {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
