"""Conversion of original checkpoints, Hub loading from an offline cache, publishing (mocked), the CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file
from huggingface_hub import ModelCard
from transformers import AutoModelForMaskedLM, AutoTokenizer

from caduceus_hf.cli import main
from caduceus_hf.conversion import ConversionError, convert, push
from caduceus_hf.conversion import lightning

from conftest import FIXTURES

CKPT = FIXTURES / "lightning_ps" / "last.ckpt"
CLOSE = dict(rtol=1e-4, atol=1e-5)
PUBLISHED_ID = "kuleshov-group/caduceus-ps_seqlen-131k_d_model-256_n_layer-16"


def _no_leftovers(parent: Path, name: str) -> bool:
    return not any(p.name.startswith(f".{name}.") for p in parent.iterdir())


def test_lightning_checkpoint_converts_and_matches_the_original(tmp_path):
    dst = tmp_path / "out"
    report = convert(CKPT, dst)
    assert report.kind == "lightning" and report.architecture == "CaduceusForMaskedLM"
    assert sorted(report.dropped_keys) == [f"{s}_torchmetrics.num_tokens.count" for s in ("test", "train", "val")]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (dst / name).is_file(), name
    config = json.loads((dst / "config.json").read_text())
    assert "auto_map" not in config and config["vocab_size"] == 16 and config["rcps"] is True
    assert len(config["complement_map"]) == 16

    model = AutoModelForMaskedLM.from_pretrained(dst).eval()
    inputs = load_file(FIXTURES / "lightning_ps" / "inputs.safetensors")["input_ids"]
    expected = load_file(FIXTURES / "lightning_ps" / "expected_fused.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model(inputs).logits, expected["mlm_logits"], **CLOSE)
        torch.testing.assert_close(model.caduceus(inputs).last_hidden_state, expected["last_hidden_state"], **CLOSE)
    tokenizer = AutoTokenizer.from_pretrained(dst)
    assert tokenizer("ACGTN")["input_ids"] == [7, 8, 9, 10, 11, 1]
    assert tokenizer.model_max_length == 64  # the run's dataset.max_length

    card = (dst / "README.md").read_text()
    front = card.split("---")[1]
    for line in ("library_name: transformers", "license: apache-2.0", "- genomics", "- dna", "- caduceus"):
        assert line in front
    assert str(CKPT) in card
    # Tied duplicates are written once, as the published files are.
    written = load_file(dst / "model.safetensors")
    assert not any("mamba_rev.in_proj" in k or k.startswith("lm_head.lm_head") for k in written)


def test_lightning_checkpoint_is_refused_by_a_plain_safe_load():
    with pytest.raises(pickle.UnpicklingError):
        torch.load(CKPT, weights_only=True)
    checkpoint = lightning.load_checkpoint(CKPT)
    assert checkpoint["global_step"] == 1


def test_checkpoint_needing_other_globals_is_refused_unless_unsafe(tmp_path):
    import argparse

    checkpoint = lightning.load_checkpoint(CKPT)
    checkpoint["hyper_parameters"] = argparse.Namespace(note="not OmegaConf")
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    with pytest.raises(ConversionError, match="--unsafe-pickle"):
        convert(crafted, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    config = FIXTURES / "lightning_ps" / "run_dir_files" / "model_config.json"
    report = convert(crafted, tmp_path / "out", unsafe_pickle=True, config_file=config)
    assert report.num_parameters > 0


def test_missing_omegaconf_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "omegaconf", None)
    with pytest.raises(ConversionError, match=r"caduceus-hf\[train\]"):
        convert(CKPT, tmp_path / "out")


def test_unexpected_and_missing_keys_are_named_and_nothing_is_written(tmp_path):
    checkpoint = lightning.load_checkpoint(CKPT)
    state = checkpoint["state_dict"]
    state["model.extra.weight"] = torch.zeros(1)
    del state["model.caduceus.backbone.norm_f.weight"]
    broken = tmp_path / "broken.ckpt"
    torch.save(checkpoint, broken)
    with pytest.raises(ConversionError) as err:
        convert(broken, tmp_path / "out", unsafe_pickle=True)
    assert "extra.weight" in str(err.value) and "norm_f.weight" in str(err.value)
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path, "out")


def test_inconsistent_tied_weights_are_refused(tmp_path):
    checkpoint = lightning.load_checkpoint(CKPT)
    key = "model.caduceus.backbone.layers.0.mixer.submodule.mamba_rev.in_proj.weight"
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key] + 1
    broken = tmp_path / "tied.ckpt"
    torch.save(checkpoint, broken)
    with pytest.raises(ConversionError, match="tied weights differ"):
        convert(broken, tmp_path / "out", unsafe_pickle=True)


def test_failed_verification_leaves_nothing_behind(tmp_path, monkeypatch):
    import importlib

    convert_module = importlib.import_module("caduceus_hf.conversion.convert")

    original = convert_module._probe_output
    calls = []

    def drifting(model):
        calls.append(model)
        out = original(model)
        return out + 1 if len(calls) == 2 else out

    monkeypatch.setattr(convert_module, "_probe_output", drifting)
    with pytest.raises(ConversionError, match="verification failed"):
        convert(CKPT, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _no_leftovers(tmp_path, "out")


def test_existing_destination_needs_force(tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    with pytest.raises(ConversionError, match="--force"):
        convert(CKPT, dst)
    assert (dst / "keep.txt").exists()
    convert(CKPT, dst, force=True)
    assert not (dst / "keep.txt").exists() and (dst / "model.safetensors").exists()
    assert _no_leftovers(tmp_path, "out")


@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps", "cls_ps"])
def test_published_directory_converts_to_native(tmp_path, name):
    dst = tmp_path / name
    report = convert(FIXTURES / name, dst)
    assert report.kind == "directory" and report.max_abs_diff == 0.0
    config = json.loads((dst / "config.json").read_text())
    assert "auto_map" not in config  # no remote code travels with the fixture, so no auto_map to point at it
    assert (dst / "tokenizer.json").is_file()
    written, published = load_file(dst / "model.safetensors"), load_file(FIXTURES / name / "model.safetensors")
    assert written.keys() == published.keys() and all(torch.equal(written[k], published[k]) for k in published)


def test_remote_code_and_auto_map_travel_together(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "mlm_ps", src)
    for name in ("configuration_caduceus.py", "modeling_caduceus.py", "modeling_rcps.py", "tokenization_caduceus.py"):
        (src / name).write_text("# the original's remote code\n")
    convert(src, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_caduceus.CaduceusForMaskedLM"
    assert (tmp_path / "out" / "modeling_rcps.py").is_file()
    tok_config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert tok_config["auto_map"]["AutoTokenizer"][0] == "tokenization_caduceus.CaduceusTokenizer"


def _seed_offline_cache(cache: Path, repo_id: str, source: Path) -> None:
    """The layout huggingface_hub resolves offline: refs/main holding a commit hash, snapshots/<hash>/files."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_published_repo_id_loads_from_an_offline_cache(tmp_path):
    cache = tmp_path / "hub"
    _seed_offline_cache(cache, PUBLISHED_ID, FIXTURES / "mlm_ps")
    script = textwrap.dedent(
        f"""
        import torch, caduceus_hf
        from safetensors.torch import load_file
        from transformers import AutoModelForMaskedLM, AutoTokenizer
        model = AutoModelForMaskedLM.from_pretrained("{PUBLISHED_ID}").eval()
        tokenizer = AutoTokenizer.from_pretrained("{PUBLISHED_ID}")
        assert type(model).__name__ == "CaduceusForMaskedLM", type(model)
        assert type(tokenizer).__name__ == "CaduceusTokenizer", type(tokenizer)
        ids = load_file("{FIXTURES / 'mlm_ps' / 'inputs.safetensors'}")["input_ids_a"]
        expected = load_file("{FIXTURES / 'mlm_ps' / 'expected_fused.safetensors'}")["mlm_logits_a"]
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, expected, rtol=1e-4, atol=1e-5)
        assert tokenizer("acgt")["input_ids"] == [7, 8, 9, 10, 1]
        print("OK")
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_convert_from_a_repo_id_offline(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _seed_offline_cache(cache, PUBLISHED_ID, FIXTURES / "mlm_ph")
    import huggingface_hub

    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: real(*a, **k, cache_dir=cache))
    report = convert(PUBLISHED_ID, tmp_path / "out")
    assert report.kind == "hub"
    data = ModelCard.load(tmp_path / "out" / "README.md").data
    assert data.base_model == [PUBLISHED_ID] and data.library_name == "transformers"
    assert data.pipeline_tag == "fill-mask" and data.license == "apache-2.0"
    with pytest.raises(ConversionError, match="cannot be fetched"):
        convert("nobody/nothing-here", tmp_path / "out2")


# --- publishing ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("converted") / "model"
    convert(FIXTURES / "mlm_ph", dst)
    return dst


def test_push_makes_one_commit_with_the_folder(converted):
    api = mock.MagicMock()
    api.upload_folder.return_value = mock.MagicMock(commit_url="https://hf.co/c/1", pr_url=None)
    url = push(converted, "me/caduceus-test", private=True, api=api)
    api.create_repo.assert_called_once_with("me/caduceus-test", repo_type="model", private=True, exist_ok=True)
    api.create_branch.assert_not_called()
    kwargs = api.upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "me/caduceus-test" and Path(kwargs["folder_path"]) == converted
    assert kwargs["create_pr"] is False and kwargs["revision"] is None
    assert sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"]
    )
    assert url == "https://hf.co/c/1"


def test_push_to_a_branch_and_as_a_pull_request(converted):
    api = mock.MagicMock()
    push(converted, "me/x", revision="v2", api=api)
    api.create_branch.assert_called_once_with("me/x", branch="v2", repo_type="model", exist_ok=True)
    api = mock.MagicMock()
    push(converted, "me/x", create_pr=True, revision="main", api=api)
    api.create_branch.assert_not_called()
    assert api.upload_folder.call_args.kwargs["create_pr"] is True


def test_push_token_goes_to_hfapi(converted):
    with mock.patch("caduceus_hf.conversion.publish.HfApi") as hfapi:
        push(converted, "me/x", token="hf_secret")
    hfapi.assert_called_once_with(token="hf_secret")


def test_push_dry_run_contacts_nothing(converted, capsys):
    with mock.patch("caduceus_hf.conversion.publish.HfApi") as hfapi:
        assert push(converted, "me/x", dry_run=True, private=True) is None
    hfapi.assert_not_called()
    out = capsys.readouterr().out
    assert "https://huggingface.co/me/x" in out and "model.safetensors" in out and "private" in out


def test_push_leaves_trainer_state_out_unless_asked(converted, tmp_path, capsys):
    folder = tmp_path / "trained"
    shutil.copytree(converted, folder)
    state = ["optimizer.pt", "rng_state.pth", "scheduler.pt", "trainer_state.json", "training_args.bin",
             "checkpoint-3/model.safetensors", "checkpoint-3/optimizer.pt"]
    for name in [*state, "notes.txt", "modeling_caduceus.py", ".cache/x"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    model_files = sorted(["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
                          "modeling_caduceus.py"])

    api = mock.MagicMock()
    push(folder, "me/x", api=api)
    assert sorted(api.upload_folder.call_args.kwargs["allow_patterns"]) == model_files
    api = mock.MagicMock()
    push(folder, "me/x", include_training_state=True, api=api)
    assert sorted(api.upload_folder.call_args.kwargs["allow_patterns"]) == sorted(model_files + state)

    with mock.patch("caduceus_hf.conversion.publish.HfApi") as hfapi:
        assert main(["push", str(folder), "me/x", "--dry-run"]) == 0
    hfapi.assert_not_called()
    out = capsys.readouterr().out
    listed, left_out = out.split("left out, Trainer state")
    assert f"would upload {len(model_files)} files" in listed and all(f"  {n}\n" in listed for n in model_files)
    assert all(f"  {n}\n" in left_out for n in state) and "not part of a model repo (1 files):\n  notes.txt" in out
    assert ".cache" not in out


def test_push_refuses_an_incomplete_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="missing"):
        push(tmp_path, "me/x", dry_run=True)


# --- the CLI ---------------------------------------------------------------------------------------------------------


def test_cli_convert_and_push_dry_run(tmp_path, capsys):
    assert main(["convert", str(CKPT), str(tmp_path / "out")]) == 0
    assert "max abs diff" in capsys.readouterr().out
    assert main(["convert", str(CKPT), str(tmp_path / "out")]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "out"), "me/x", "--dry-run"]) == 0
    assert "dry run" in capsys.readouterr().out


def test_cli_is_installed_with_help():
    beside = Path(sys.executable).with_name("caduceus-hf")  # the venv's bin, even when it is not on PATH
    exe = str(beside) if beside.is_file() else shutil.which("caduceus-hf")
    assert exe, "the caduceus-hf console script is not installed"
    for args in ([], ["convert"], ["push"]):
        result = subprocess.run([exe, *args, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage: caduceus-hf" in result.stdout


# --- bad inputs and what is left on disk (issue 13) --------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"hello\n", b"", b"PK\x03\x04truncated"], ids=["text", "empty", "truncated-zip"])
def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, content, capsys):
    src = tmp_path / "model.ckpt"
    src.write_bytes(content)
    assert main(["convert", str(src), str(tmp_path / "out")]) == 1
    assert f"{src}: not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_force_onto_a_regular_file_replaces_it_and_leaves_nothing_behind(tmp_path):
    dst = tmp_path / "out"
    dst.write_text("not a directory")
    convert(CKPT, dst, force=True)
    assert (dst / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_destination_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConversionError, match=r"file is a file, not a directory"):
        convert(CKPT, tmp_path / "file" / "out")


def test_output_directories_and_files_respect_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        convert(CKPT, tmp_path / "out")
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o640


def test_a_directory_whose_config_does_not_fit_its_weights_is_refused(tmp_path):
    src = tmp_path / "typo"
    shutil.copytree(FIXTURES / "mlm_ph", src)
    config = json.loads((src / "config.json").read_text())
    config["n_layers"] = config.pop("n_layer")
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"missing 266 key.*layers\.10\..*config\.json has keys this model does not know: "
                                              r"\['n_layers'\]"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bad_max_length_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"--max-length must be an integer >= 2 .*got -3"):
        convert(CKPT, tmp_path / "out", max_length=-3)
    assert not (tmp_path / "out").exists()
