"""The `caduceus-hf` command line: the light entry module (caduceus_hf_cli), names and defaults shared across
subcommands, and the training subcommands' HfArgumentParser. The commands' work is tested with their modules
(test_apps, test_training, test_conversion); the startup time is measured by benchmarks/cli_startup.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import caduceus_hf_cli
from caduceus_hf_cli import build_parser, main

LIGHT_COMMANDS = ("embed", "score-variants", "fill-mask", "convert", "push")


def test_help_and_version_import_neither_torch_nor_the_package():
    code = (
        "import sys, contextlib, io\n"
        "import caduceus_hf_cli\n"
        f"for argv in [['--help'], ['--version']] + [[c, '--help'] for c in {LIGHT_COMMANDS!r}]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            caduceus_hf_cli.main(argv)\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (argv, e.code)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'caduceus_hf', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_top_level_help_lists_every_command_including_training(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in (*LIGHT_COMMANDS, "pretrain", "finetune"):
        assert f"    {command}" in out, command


def test_version_names_the_package_and_its_stack(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    from importlib import metadata

    out = capsys.readouterr().out
    assert out.startswith(f"caduceus-hf {metadata.version('caduceus-hf')} (transformers ")


def test_app_choices_are_the_library_s():
    from caduceus_hf.apps.models import DEVICES, DTYPES

    assert caduceus_hf_cli.DEVICES == DEVICES and caduceus_hf_cli.DTYPES == tuple(DTYPES)


@pytest.mark.parametrize("command", ["embed", "score-variants", "fill-mask"])
def test_apps_share_runtime_options_and_show_defaults(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for fact in ("--model DIR_OR_REPO", "--device DEVICE", "(default: auto)", "(default: float32)", "--batch-size",
                 "(default: 16)", "--threads", "caduceus-hf[apps]"):
        assert fact in out, (command, fact)


def test_renamed_options_keep_their_old_names():
    parser = build_parser()
    push = parser.parse_args(["push", "d", "org/name", "--revision", "dev"])
    assert push.branch == "dev" and not push.include_training_state
    assert parser.parse_args(["push", "d", "org/name", "--branch", "b"]).branch == "b"
    convert = parser.parse_args(["convert", "a", "b", "--max-length", "1024", "--revision", "v1"])
    assert convert.model_max_length == 1024 and convert.revision == "v1"


# --- training: HfArgumentParser --------------------------------------------------------------------------------------


def test_training_help_lists_training_arguments_and_recipe_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--gradient_accumulation_steps", "--lr_scheduler_type", "--output_dir", "--model", "--init",
                   "--args-file", "--eval_file", "--dataset_config", "--device"):
        assert option in out, option
    text = " ".join(out.split())
    assert "(default: cosine)" in text and "(default: 0.001)" in text  # the recipe's, not transformers' defaults


def test_training_aliases_and_layering(tmp_path):
    from caduceus_hf.training.cli import parse

    table = tmp_path / "t.csv"
    parsed = parse("finetune", [str(table), "--output-dir", str(tmp_path / "o"), "--lr", "0.5", "--batch-size", "4",
                                "--grad-accum", "3", "--init", "some/model", "--cpu", "--scheduler", "linear",
                                "--epochs", "2", "--no-rc-augment"])
    t = parsed.training
    assert (t.learning_rate, t.per_device_train_batch_size, t.per_device_eval_batch_size) == (0.5, 4, 4)
    assert (t.gradient_accumulation_steps, t.num_train_epochs, t.use_cpu) == (3, 2.0, True)
    assert str(getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type)) == "linear"
    assert parsed.model.model == "some/model" and parsed.data.rc_augment is False and parsed.inputs == [str(table)]

    config = tmp_path / "args.json"
    config.write_text(json.dumps({"train_file": str(table), "output_dir": str(tmp_path / "o"), "learning_rate": 0.25,
                                  "max-steps": 7, "eval_steps": 5, "task": "token"}))
    from_file = parse("finetune", ["--args-file", str(config), "--learning_rate", "0.125"])
    assert from_file.training.learning_rate == 0.125, "the command line overrides the file"
    assert from_file.training.max_steps == 7 and from_file.data.task == "token" and from_file.inputs == [str(table)]
    assert str(getattr(from_file.training.eval_strategy, "value", "")) == "steps", "--eval_steps alone evaluates"
    defaults = parse("pretrain", ["x.fa", "--output_dir", str(tmp_path / "o")]).training
    assert (defaults.max_steps, defaults.learning_rate, defaults.weight_decay) == (200, 2e-3, 0.1)

    yaml_file = tmp_path / "args.yaml"
    yaml_file.write_text(f"fasta: [a.fa, b.fa]\noutput_dir: {tmp_path / 'o'}\nwindow: 64\n")
    from_yaml = parse("pretrain", ["--args-file", str(yaml_file)])
    assert from_yaml.inputs == ["a.fa", "b.fa"] and from_yaml.data.window == 64


def test_training_argument_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rat": 1}))
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "t.csv", "--output_dir", "o", "--args-file", str(bad)])
    assert exit_info.value.code == 2 and "unknown options ['learning_rat']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "t.csv"])
    assert "--output_dir (--output-dir) is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--output_dir", "o"])
    assert "no FASTA files given" in capsys.readouterr().err


def test_transformers_log_records_lose_colour_codes_when_stderr_is_not_a_terminal():
    import logging

    from transformers.utils import logging as hf_logging

    from caduceus_hf.cli import configure_output

    configure_output()  # under pytest stderr is not a terminal
    root = hf_logging.get_logger()
    record = logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1,
                               "\x1b[1mmissing\x1b[0m keys: %s", ("a",), None)
    assert all(f.filter(record) for f in root.filters)
    assert record.getMessage() == "missing keys: a"


@pytest.mark.parametrize("setting, kept", [(None, True), ("1", True), ("0", False)])
def test_every_subcommand_keeps_freed_memory_unless_told_not_to(monkeypatch, setting, kept):
    from caduceus_hf.cli import configure_process
    from caduceus_hf.ops import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True) or True)
    if setting is None:
        monkeypatch.delenv(allocator.ENV, raising=False)
    else:
        monkeypatch.setenv(allocator.ENV, setting)
    configure_process()
    assert calls == ([True] if kept else [])


def test_hub_dataset_ids_go_to_datasets_with_config_and_split(monkeypatch):
    import datasets

    from caduceus_hf.training import read_sequence_table

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        rows = {"train": (["ACGT", "GGCC", "TTAA"], [1, 0, 1]), "test": (["ACGA"], [0])}[split]
        return datasets.Dataset.from_dict({"sequence": rows[0], "label": rows[1]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    table = read_sequence_table("org/dna-benchmark", config="enhancers", split="train")
    assert calls == [("org/dna-benchmark", "enhancers", "train")]
    assert table.sequences == ["ACGT", "GGCC", "TTAA"] and table.labels == [1, 0, 1]
    assert table.path == "org/dna-benchmark (train)"
    held_out = read_sequence_table("org/dna-benchmark", config="enhancers", split="test", training=False)
    assert held_out.sequences == ["ACGA"]

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"org/missing: not a local table, and not loadable as a Hub dataset"):
        read_sequence_table("org/missing")
