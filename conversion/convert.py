"""Original checkpoints in, native caduceus-hf directories out, verified before they exist.

Sources:
    a Lightning .ckpt written by the original train.py;
    a published remote-code model directory (config.json with auto_map, model.safetensors, tokenizer_config.json);
    a Hub repo id of such a directory (downloaded with huggingface_hub, or read from the offline cache).

The output (config.json, model.safetensors, tokenizer files, README.md model card) is written to a temporary sibling
directory, reloaded through the Auto class, compared with the source model on a probe sequence, and only then renamed
into place. Remote-code files travel, and config.json keeps its auto_map, only when the source has them, so a user of
the original code (transformers 4 with trust_remote_code) can still load the result.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification
from transformers import AutoModelForTokenClassification

from ..configuration_caduceus import CaduceusConfig
from ..dna import DNA_COMPLEMENT_MAP
from ..genomics import atomic_directory, check_output_directory
from ..loading import ModelLoadError, load_pretrained, looks_like_repo_id
from ..modeling_caduceus import (
    Caduceus,
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
    CaduceusPreTrainedModel,
)
from ..tokenization_caduceus import CaduceusTokenizer
from . import lightning
from .errors import ConversionError
from ..model_card import conversion_card

ARCHITECTURES: dict[str, tuple[type[CaduceusPreTrainedModel], type]] = {
    "CaduceusForMaskedLM": (CaduceusForMaskedLM, AutoModelForMaskedLM),
    "CaduceusForSequenceClassification": (CaduceusForSequenceClassification, AutoModelForSequenceClassification),
    "CaduceusForTokenClassification": (CaduceusForTokenClassification, AutoModelForTokenClassification),
    "Caduceus": (Caduceus, AutoModel),
}
DEFAULT_MAX_LENGTH = 131_072
# A fixed probe: every nucleotide, N, and the special tokens a real input carries.
PROBE_IDS = torch.tensor([[7, 8, 9, 10, 11] * 12 + [3, 6, 7, 1]])


@dataclass
class ConversionReport:
    source: str
    kind: str
    destination: Path
    architecture: str
    num_parameters: int
    max_abs_diff: float
    dropped_keys: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    force: bool = False,
    config_file: str | os.PathLike | None = None,
    unsafe_pickle: bool = False,
    license: str = "apache-2.0",
    max_length: int | None = None,
    revision: str | None = None,
) -> ConversionReport:
    """Convert `src` (a .ckpt file, a model directory or a Hub repo id) into a new directory `dst`."""
    dst = Path(dst)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ConversionError(f"--max-length must be an integer >= 2 (a base and [SEP]), got {max_length!r}")
    try:
        check_output_directory(dst, force, option="destination")
    except ValueError as err:
        raise ConversionError(str(err)) from None
    source_path = Path(src)
    if source_path.resolve() == dst.resolve() or dst.resolve() in source_path.resolve().parents:
        raise ConversionError(f"destination {dst} is the source {src} (or contains it); choose another directory")
    if source_path.is_file():
        model, meta = _from_lightning(source_path, config_file, unsafe_pickle, max_length)
        kind, base_model = "lightning", None
    else:
        if source_path.is_dir():
            directory, base_model = source_path, None
        elif looks_like_repo_id(str(src)):
            directory, base_model = _download(str(src), revision), str(src)
        else:
            raise ConversionError(f"{src}: no such file or directory, and not a Hub repo id (org/name)")
        model, meta = _from_directory(directory, max_length)
        kind = "hub" if base_model else "directory"

    with atomic_directory(dst, force) as tmp:
        max_abs_diff = _write_and_verify(model, tmp, meta, str(src), base_model, license)
        files = sorted(p.name for p in tmp.iterdir())
    return ConversionReport(
        source=str(src),
        kind=kind,
        destination=dst,
        architecture=type(model).__name__,
        num_parameters=model.num_parameters(),
        max_abs_diff=max_abs_diff,
        dropped_keys=meta["dropped_keys"],
        files=files,
    )


# --- sources ---------------------------------------------------------------------------------------------------------


def _from_lightning(path: Path, config_file, unsafe_pickle: bool, max_length: int | None):
    checkpoint = lightning.load_checkpoint(path, unsafe_pickle)
    raw = lightning.model_config_from_checkpoint(checkpoint, Path(config_file) if config_file else None)
    state, dropped = lightning.model_state_dict(checkpoint)
    if raw.get("complement_map") is None:
        # Run configs leave it to the data pipeline; the PS embedding stores it, and Ph models use the DNA map.
        stored = state.get("caduceus.backbone.embeddings.word_embeddings.complement_map")
        raw["complement_map"] = (
            {i: int(v) for i, v in enumerate(stored.tolist())} if stored is not None else dict(DNA_COMPLEMENT_MAP)
        )
    try:
        config = CaduceusConfig(**raw, architectures=["CaduceusForMaskedLM"])
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{path}: its model config is not a valid CaduceusConfig: {err}") from None
    model = CaduceusForMaskedLM(config)
    _load_strict(model, state, str(path))
    meta = {
        "dropped_keys": dropped,
        "max_length": max_length or lightning.max_length_from_checkpoint(checkpoint) or DEFAULT_MAX_LENGTH,
        "remote_code": [],
    }
    return model.eval(), meta


def _load_strict(model: CaduceusPreTrainedModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a full state_dict, naming every missing, unexpected, mis-shaped or inconsistently tied key."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected.keys() & state.keys()
        if state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched}")
    if problems:
        raise ConversionError(f"{source}: the state_dict does not fit the model: " + "; ".join(problems))
    # Tied names share one tensor in the model; the checkpoint must agree, or loading would silently pick one.
    groups: dict[int, list[str]] = {}
    for name, tensor in expected.items():
        groups.setdefault(tensor.data_ptr(), []).append(name)
    for names in groups.values():
        if len(names) > 1 and not all(torch.equal(state[names[0]], state[n]) for n in names[1:]):
            raise ConversionError(f"{source}: tied weights differ in the checkpoint: {names}")
    model.load_state_dict(state, strict=True)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.py", "*.md"]))
    except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise ConversionError(
            f"{repo_id}: no such local file or directory, and as a Hub repo id it cannot be fetched: {reason}"
        ) from None


def _from_directory(directory: Path, max_length: int | None):
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{directory}: no config.json")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{config_path}: invalid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ConversionError(f"{config_path}: not a JSON object")
    if raw.get("model_type") != "caduceus":
        raise ConversionError(f"{config_path}: model_type is {raw.get('model_type')!r}, not 'caduceus'")
    architecture = (raw.get("architectures") or ["CaduceusForMaskedLM"])[0]
    if architecture not in ARCHITECTURES:
        raise ConversionError(f"{config_path}: unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    if not (directory / "model.safetensors").is_file():
        raise ConversionError(f"{directory}: no model.safetensors (only safetensors weights are read)")
    cls = ARCHITECTURES[architecture][0]
    try:
        model = load_pretrained(cls, directory)
    except ModelLoadError as err:
        raise ConversionError(str(err)) from None
    tokenizer_config = directory / "tokenizer_config.json"
    source_max = None
    if tokenizer_config.is_file():
        try:
            source_max = json.loads(tokenizer_config.read_text()).get("model_max_length")
        except (ValueError, AttributeError) as err:
            raise ConversionError(f"{tokenizer_config}: invalid JSON: {err}") from None
    meta = {
        "dropped_keys": [],
        "max_length": max_length or (source_max if isinstance(source_max, int) and source_max < 10**9 else None)
        or DEFAULT_MAX_LENGTH,
        "remote_code": sorted(directory.glob("*.py")),
    }
    return model.eval(), meta


# --- writing ---------------------------------------------------------------------------------------------------------


def _write_and_verify(model, out: Path, meta: dict, source: str, base_model: str | None, license: str) -> float:
    config = model.config
    keep_auto_map = bool(meta["remote_code"])
    if not keep_auto_map and hasattr(config, "auto_map"):
        del config.auto_map
    model.save_pretrained(out)
    for path in meta["remote_code"]:
        shutil.copy2(path, out / path.name)
    tokenizer = CaduceusTokenizer(model_max_length=meta["max_length"])
    tokenizer.save_pretrained(out)
    if keep_auto_map and (out / "tokenization_caduceus.py").is_file():
        # Keep the original's tokenizer code reachable for users without caduceus-hf.
        path = out / "tokenizer_config.json"
        tok_config = json.loads(path.read_text())
        tok_config["auto_map"] = {"AutoTokenizer": ["tokenization_caduceus.CaduceusTokenizer", None]}
        path.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")

    auto = ARCHITECTURES[type(model).__name__][1]
    try:
        reloaded, info = auto.from_pretrained(out, output_loading_info=True)
    except Exception as err:  # noqa: BLE001 - any failure to reload means the output is not usable
        raise ConversionError(f"the written directory does not load back: {err}") from None
    problems = {k: sorted(v) for k, v in info.items() if v}
    if problems:
        raise ConversionError(f"the written directory does not load back cleanly: {problems}")
    with torch.no_grad():
        expected = _probe_output(model.eval())
        got = _probe_output(reloaded.eval())
    diff = float((got - expected).abs().max())
    if not torch.allclose(got, expected, rtol=1e-6, atol=1e-6):
        raise ConversionError(f"verification failed: reloaded outputs differ from the source model's by {diff:.3g}")

    (out / "README.md").write_text(
        conversion_card(config, type(model).__name__, model.num_parameters(), source, base_model, license, diff,
                   meta["dropped_keys"])
    )
    return diff


def _probe_output(model: CaduceusPreTrainedModel) -> torch.Tensor:
    out = model(PROBE_IDS.to(model.device))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state
