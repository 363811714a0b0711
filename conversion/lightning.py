"""Reading PyTorch Lightning checkpoints written by the original Caduceus train.py, without trusting their pickles.

A checkpoint holds the model's state_dict under "model." and the whole Hydra config (an OmegaConf DictConfig) under
"hyper_parameters". torch.load(weights_only=True) refuses the OmegaConf objects; we allow exactly the OmegaConf
container and node types such a config is made of, and nothing else.
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import typing
from pathlib import Path
from typing import Any

import torch

from .errors import ConversionError

MODEL_PREFIX = "model."


def _omegaconf_allowlist() -> list[Any]:
    try:
        from omegaconf import DictConfig, ListConfig, base, nodes
    except ImportError:
        raise ConversionError(
            "reading a Lightning checkpoint needs omegaconf (its config is pickled OmegaConf objects); "
            "install it with: pip install 'caduceus-hf[train]'"
        ) from None
    return [
        DictConfig,
        ListConfig,
        base.ContainerMetadata,
        base.Metadata,
        nodes.AnyNode,
        nodes.StringNode,
        nodes.IntegerNode,
        nodes.FloatNode,
        nodes.BooleanNode,
        typing.Any,
        collections.defaultdict,
        dict,
        list,
        int,
        float,
        str,
        bool,
    ]


def load_checkpoint(path: Path, unsafe_pickle: bool = False) -> dict[str, Any]:
    """torch.load a Lightning checkpoint with weights_only=True and an OmegaConf-only allowlist.

    unsafe_pickle=True falls back to a full unpickle: only for files you trust, since unpickling runs code.
    """
    if unsafe_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - as below
            reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    allowlist = _omegaconf_allowlist()
    try:
        with torch.serialization.safe_globals(allowlist):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ConversionError(
            f"{path}: refusing to unpickle it: it needs objects outside the allowlist of OmegaConf types "
            f"({str(err).splitlines()[0][:300]}). If you trust the file, pass --unsafe-pickle."
        ) from None
    except Exception as err:  # noqa: BLE001 - torch.load reports a file of another kind in many ways
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


def _hyper_parameters(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """hyper_parameters as a plain dict: OmegaConf containers resolved, a Namespace (older Lightning) unpacked."""
    value = checkpoint.get("hyper_parameters")
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    try:
        from omegaconf import OmegaConf
    except ImportError:  # only reachable with unsafe_pickle, when the file holds no OmegaConf objects
        OmegaConf = None
    if OmegaConf is not None and OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return value if isinstance(value, dict) else {}


def model_config_from_checkpoint(checkpoint: dict[str, Any], config_file: Path | None) -> dict[str, Any]:
    """The CaduceusConfig fields of a training run: from `config_file` (a run's model_config.json / config.json, or
    an HF config.json) when given, else hyper_parameters.model.config. `_target_` and Hydra keys are dropped."""
    if config_file is not None:
        try:
            raw = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConversionError(f"{config_file}: cannot read the model config: {err}") from None
        for key in ("model", "config"):  # a Hydra run's config.json nests it as model.config
            if isinstance(raw.get(key), dict) and ("d_model" in raw[key] or "config" in raw[key]):
                raw = raw[key]
        source = str(config_file)
    else:
        raw = (_hyper_parameters(checkpoint).get("model") or {}).get("config")
        source = "hyper_parameters.model.config"
        if raw is None:
            raise ConversionError(
                "the checkpoint has no hyper_parameters.model.config; pass the run's model config with --config"
            )
    if not isinstance(raw, dict) or "d_model" not in raw:
        raise ConversionError(f"{source}: no Caduceus model config (expected keys such as d_model, n_layer)")
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def max_length_from_checkpoint(checkpoint: dict[str, Any]) -> int | None:
    dataset = _hyper_parameters(checkpoint).get("dataset") or {}
    value = dataset.get("max_length")
    return int(value) if isinstance(value, int) and value > 0 else None


def model_state_dict(checkpoint: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's tensors with "model." stripped, and the names of the non-model entries that were dropped."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ConversionError("the checkpoint has no state_dict: not a Lightning training checkpoint")
    model = {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    dropped = sorted(k for k in state if not k.startswith(MODEL_PREFIX))
    if not model:
        raise ConversionError(f"the checkpoint's state_dict has no '{MODEL_PREFIX}' entries; found {sorted(state)[:5]}")
    return model, dropped
