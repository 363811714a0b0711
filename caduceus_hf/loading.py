"""Loading a Caduceus checkpoint for the apps, training and conversion: one function, `load_pretrained`, that
refuses what would silently compute something else.

A checkpoint is a local directory or a Hub repo id (`org/name`). Before any weights are read, the source is resolved
(a path that does not exist is reported as such, not as a bad repo id), the config is checked to be a Caduceus config,
and the weights file is checked to be readable safetensors. After loading, any missing, unexpected or mis-shaped
tensor is an error naming the keys (and config.json keys this package does not know, the usual cause: a typo such as
`n_layers` leaves the default n_layer and adds random layers), unless the caller allows missing weights; tensors
that are not finite are always an error.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .configuration_caduceus import CaduceusConfig

PathLike = str | os.PathLike[str]


class ModelLoadError(ValueError):
    """A checkpoint that cannot be used: not found, not Caduceus, unreadable weights, or weights that do not fit."""


def looks_like_repo_id(value: str) -> bool:
    """`org/name` with no path-like prefix: what the Hub accepts as a model repo id."""
    parts = value.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not value.startswith((".", "/", "~"))
        and not any(p.startswith((".", "-")) or p.endswith(".") for p in parts)
    )


def resolve_source(source: PathLike) -> tuple[str, Path | None]:
    """(what to pass to from_pretrained, the local directory or None for a Hub repo id). A local path that does not
    exist, or a file, is an error saying so."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model directory (no config.json)")
        return str(path), path
    if path.exists():
        raise ModelLoadError(f"{path}: is a file; a model is a directory (config.json, model.safetensors) or a Hub id")
    if not looks_like_repo_id(text):
        raise ModelLoadError(f"{text}: no such model directory (and not a Hub repo id of the form org/name)")
    return text, None


def load_tokenizer(source: PathLike | None = None):
    """The tokenizer saved with a local checkpoint, else the standard CaduceusTokenizer (the vocabulary is fixed, and
    published Hub repos ship a remote-code tokenizer config rather than files this class reads)."""
    from .tokenization_caduceus import CaduceusTokenizer

    if source is not None:
        path = Path(os.fspath(source)).expanduser()
        if path.is_dir() and (path / "tokenizer_config.json").is_file():
            try:
                return CaduceusTokenizer.from_pretrained(path)
            except (OSError, ValueError, TypeError) as err:
                raise ModelLoadError(f"{path / 'tokenizer_config.json'}: cannot load the tokenizer: {err}") from None
    return CaduceusTokenizer()


def load_config(where: str, name: str, **overrides: Any) -> CaduceusConfig:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(where)
    except (OSError, ValueError, TypeError, KeyError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not Path(where).is_dir():
            raise ModelLoadError(
                f"{name}: no such local directory, and as a Hub repo id it cannot be loaded: {reason}"
            ) from None
        raise ModelLoadError(f"cannot load the config of model {name!r}: {reason}") from None
    if not isinstance(config, CaduceusConfig):
        raise ModelLoadError(f"model {name!r} is not a Caduceus model (model_type {config.model_type!r})")
    if overrides:
        try:
            config = CaduceusConfig(**{**config.to_dict(), **overrides})
        except (TypeError, ValueError) as err:
            raise ModelLoadError(f"model {name!r}: {err}") from None
    return config


def unknown_config_keys(directory: Path) -> list[str]:
    """Keys of config.json that neither CaduceusConfig nor transformers' base config defines (typos, usually)."""
    from transformers import PreTrainedConfig

    try:
        raw = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return []
    known = {f.name for f in fields(CaduceusConfig)} | set(PreTrainedConfig().to_dict()) | set(
        CaduceusConfig().to_dict()
    )
    known |= {"auto_map", "architectures", "transformers_version", "model_type", "torch_dtype", "dtype"}
    return sorted(k for k in raw if k not in known) if isinstance(raw, dict) else []


def check_safetensors(path: Path) -> None:
    """A ModelLoadError unless `path` starts like a safetensors file (a length-prefixed JSON header that fits)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is None or n < 2 or 8 + n > size:
                raise ModelLoadError(f"{path}: not a safetensors file (empty, truncated or another format)")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, ModelLoadError):
            raise
        raise ModelLoadError(f"{path}: not a readable safetensors file ({err})") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
               and "data_offsets" in v), default=0)
    if 8 + n + end > size:
        raise ModelLoadError(f"{path}: truncated safetensors file ({size:,} bytes, the header needs {8 + n + end:,})")


def load_pretrained(
    cls: type,
    source: PathLike,
    *,
    allow_missing: bool = False,
    new_keys: Sequence[str] = (),
    ignored_keys: Sequence[str] = (),
    dtype: Any = None,
    **config_overrides: Any,
):
    """`cls.from_pretrained(source)` (cls a Caduceus model class), refusing weights that do not fit.

    new_keys / ignored_keys: key prefixes that may be missing (a new head, e.g. "score.") or left unused (another
    model's head, e.g. "lm_head."). Any other missing key is an error unless allow_missing (the tensors are then
    initialised as the original initialises them); unexpected or mis-shaped keys are always an error.
    config_overrides: CaduceusConfig fields to change (num_labels, fused_add_norm, ...).
    """
    import torch

    where, local = resolve_source(source)
    name = os.fspath(source)
    config = load_config(where, name, **config_overrides)
    if local is not None:
        weights = local / "model.safetensors"
        if not weights.is_file():
            found = sorted(p.name for p in local.iterdir() if p.suffix in (".bin", ".pt", ".ckpt", ".pth"))
            hint = f" (found {', '.join(found)}: convert it with `caduceus-hf convert`)" if found else ""
            raise ModelLoadError(f"{local}: no model.safetensors{hint}")
        check_safetensors(weights)
    kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        model, info = cls.from_pretrained(where, config=config, output_loading_info=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelLoadError(f"cannot load model {name!r}: {str(err).splitlines()[0][:500]}") from None

    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(tuple(new_keys)))
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.startswith(tuple(ignored_keys)))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    problems = []
    if missing and not allow_missing:
        problems.append(f"missing {_short(missing)} (pass --allow-missing to initialise them as new)")
    if unexpected:
        problems.append(f"unexpected {_short(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {_short(mismatched)}")
    if problems:
        typos = unknown_config_keys(local) if local is not None else []
        hint = f"; config.json has keys this model does not know: {typos}" if typos else ""
        raise ModelLoadError(f"model {name!r}: the weights do not fit the config: {'; '.join(problems)}{hint}")
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelLoadError(f"model {name!r}: tensor {key} holds NaN or infinite values")
    return model


def _short(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} key(s): {shown}" + (" ..." if len(keys) > limit else "")


__all__ = [
    "ModelLoadError",
    "check_safetensors",
    "load_config",
    "load_pretrained",
    "load_tokenizer",
    "looks_like_repo_id",
    "resolve_source",
    "unknown_config_keys",
]
