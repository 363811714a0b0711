"""Loading the model and tokenizer the applications run: a local directory, a Hub id, or the demo model bundled with
the package (the default, so that every subcommand works offline right after install)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from ..loading import ModelLoadError, load_config, load_pretrained, load_tokenizer, resolve_source
from ..modeling_caduceus import Caduceus, CaduceusForMaskedLM, CaduceusPreTrainedModel
from ..tokenization_caduceus import CaduceusTokenizer

PathLike = str | os.PathLike[str]
ModelSource = PathLike | CaduceusPreTrainedModel | None
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEMO_MODEL = "caduceus-demo"


def default_model_path() -> Path:
    """The directory of the demo model bundled as package data (caduceus_hf/pretrained/caduceus-demo).

    A small Caduceus-Ph MLM trained by benchmarks/train_demo_model.py on public bacterial and phage genomes; its
    README.md says what it was trained on and how well it does. A demo, not a replacement for published checkpoints.
    """
    path = Path(str(resources.files("caduceus_hf") / "pretrained" / DEMO_MODEL))
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the bundled demo model is missing from {path}; reinstall caduceus-hf")
    return path


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps if available, else cpu; an unavailable explicit device is an error."""
    name = str(device)
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)} (optionally cuda:N)")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but the MPS backend is not available")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; choose one of {', '.join(DTYPES)}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    source: ModelSource = None,
    masked_lm: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    allow_missing: bool = False,
) -> tuple[Caduceus | CaduceusForMaskedLM, CaduceusTokenizer]:
    """A Caduceus model in eval mode, and its tokenizer.

    source: None (the bundled demo model), a local checkpoint directory, a Hub repo id (resolved from the local
        cache when HF_HUB_OFFLINE=1), or an already loaded model (put in eval mode, not reloaded).
    masked_lm: load CaduceusForMaskedLM (needs a checkpoint with the LM head) instead of the backbone `Caduceus`
        (which loads from any Caduceus checkpoint: MLM or classifier).
    device, dtype: where and in which dtype to run (see `resolve_device`, `resolve_dtype`). None: "auto" and
        float32 for a loaded checkpoint; a model object stays where and as it is.
    allow_missing: accept a checkpoint that lacks some of the model's weights (initialised as new); by default that,
        and any unexpected weight, is a ModelLoadError naming the keys (see `caduceus_hf.loading.load_pretrained`).
    """
    cls = CaduceusForMaskedLM if masked_lm else Caduceus
    if isinstance(source, CaduceusPreTrainedModel):
        model = source
        if masked_lm and not isinstance(model, CaduceusForMaskedLM):
            raise ModelLoadError(f"a masked language model is needed, got a {type(model).__name__}")
        if not masked_lm and isinstance(model, CaduceusForMaskedLM):
            model = model.caduceus
        if device is not None or dtype is not None:
            model = model.to(
                device=None if device is None else resolve_device(device),
                dtype=None if dtype is None else resolve_dtype(dtype),
            )
        local = Path(model.name_or_path) if model.name_or_path and Path(model.name_or_path).is_dir() else None
        return model.eval(), load_tokenizer(local)

    target_device = resolve_device("auto" if device is None else device)
    target_dtype = resolve_dtype("float32" if dtype is None else dtype)
    source = default_model_path() if source is None else source
    where, local = resolve_source(source)
    name = os.fspath(source)
    # The LM head is tied to the input embedding, so loading a classifier as an MLM would not even report it missing.
    config = load_config(where, name)
    if masked_lm and config.architectures and CaduceusForMaskedLM.__name__ not in config.architectures:
        raise ModelLoadError(
            f"model {name!r} has no language-model head (architectures: {', '.join(config.architectures)}); "
            "a masked language model checkpoint is needed"
        )
    model = load_pretrained(
        cls, source, allow_missing=allow_missing, ignored_keys=() if masked_lm else ("lm_head.", "score."),
        dtype=target_dtype,
    )
    return model.to(target_device).eval(), load_tokenizer(local)


__all__ = [
    "DEVICES",
    "DTYPES",
    "ModelLoadError",
    "default_model_path",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]
