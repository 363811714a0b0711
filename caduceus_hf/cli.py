"""The `caduceus-hf` command: what the conversion subcommands run, and the output settings every subcommand shares.

Parsing lives in the top-level module `caduceus_hf_cli` (the console script's entry point), which imports nothing
heavy; `main` is re-exported here for `from caduceus_hf.cli import main`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from caduceus_hf_cli import build_parser, main

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainText(logging.Filter):
    """Drops ANSI colour codes from log records. transformers colours its load report when *stdout* is a terminal,
    although the report goes to stderr, which may be a file."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), None
        return True


def configure_output() -> None:
    """Output settings of every subcommand: no transformers per-tensor progress bar, and no colour codes in
    transformers' log records unless stderr is a terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if not sys.stderr.isatty():
        root = hf_logging.get_logger()  # transformers' library root logger
        if not any(isinstance(f, _PlainText) for f in root.filters):
            root.addFilter(_PlainText())
        for handler in root.handlers:
            if not any(isinstance(f, _PlainText) for f in handler.filters):
                handler.addFilter(_PlainText())


def configure_process() -> None:
    """What every subcommand sets up for its process: `configure_output`, and freed memory kept for reuse
    (`ops.allocator`; CADUCEUS_HF_KEEP_FREED_MEMORY=0 turns that off)."""
    from .ops import allocator

    configure_output()
    allocator.keep_freed_memory_unless_disabled()


def run_convert(args: argparse.Namespace) -> int:
    from .conversion import convert

    configure_process()
    report = convert(
        args.src,
        args.dst,
        force=args.force,
        config_file=args.config,
        unsafe_pickle=args.unsafe_pickle,
        license=args.license,
        max_length=args.model_max_length,
        revision=args.revision,
    )
    print(
        f"converted {report.kind} {report.source} -> {report.destination} ({report.architecture}, "
        f"{report.num_parameters:,} parameters); reloaded outputs match (max abs diff {report.max_abs_diff:.3g})"
    )
    if report.dropped_keys:
        print(f"dropped non-model entries: {', '.join(report.dropped_keys)}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from .conversion import push

    push(
        args.dir,
        args.repo_id,
        private=args.private,
        revision=args.branch,
        create_pr=args.create_pr,
        dry_run=args.dry_run,
        token=args.token,
        commit_message=args.message,
        include_training_state=args.include_training_state,
    )
    return 0


__all__ = ["build_parser", "configure_output", "configure_process", "main", "run_convert", "run_push"]


if __name__ == "__main__":
    sys.exit(main())
