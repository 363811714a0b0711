"""Caduceus configuration: every key of the published config.json, normalised once, validated once."""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from transformers import PreTrainedConfig

from .dna import DNA_COMPLEMENT_MAP, SPECIAL_TOKEN_IDS

# Fields of mamba_simple.Mamba that the published ssm_cfg carries, with the defaults of mamba-ssm 1.2.
SSM_CFG_DEFAULTS: dict[str, Any] = {
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "dt_rank": "auto",
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init": "random",
    "dt_scale": 1.0,
    "dt_init_floor": 1e-4,
    "conv_bias": True,
    "bias": False,
    "use_fast_path": True,
}
BIDIRECTIONAL_STRATEGIES = ("add", "ew_multiply")
POOLING_STRATEGIES = ("mean", "max", "first", "last")
SCAN_BACKENDS = ("auto", "reference", "cpu", "cuda", "chunked")


class CaduceusConfig(PreTrainedConfig):
    r"""Configuration of a Caduceus model (BiMamba or RC-equivariant MambaDNA).

    Accepts the published config.json as is. Normalisation happens here and only here: `vocab_size` is padded up to a
    multiple of `pad_vocab_size_multiple`, `complement_map` gets int keys and identity entries for the padded ids, and
    `ssm_cfg` is completed with mamba-ssm's defaults. The model never edits its config afterwards.

    Args:
        d_model: width of the residual stream of one strand (a PS model carries `2 * d_model` channels).
        n_layer: number of BiMamba blocks.
        vocab_size: vocabulary size before padding (12 for the DNA tokenizer; padded to 16).
        ssm_cfg: Mamba-1 mixer options (see `SSM_CFG_DEFAULTS`).
        rms_norm: RMSNorm if True, else LayerNorm (with bias).
        residual_in_fp32: keep the residual stream in float32.
        fused_add_norm: reproduce the original's fused add+norm semantics (published checkpoints); False gives its
            plain-PyTorch branch. They differ only for `rcps=True` (the fused branch swaps the strand halves).
        bidirectional: add a reverse-direction Mamba in every block.
        bidirectional_strategy: how the two directions combine, "add" or "ew_multiply".
        bidirectional_weight_tie: share in_proj and out_proj between the two directions.
        rcps: reverse-complement parameter sharing (Caduceus-PS).
        complement_map: token id -> complementary token id; must be an involution.
        pooling_strategy: sequence classification pooling, "mean", "max", "first" or "last".
        conjoin_train / conjoin_eval: Ph models average the forward and reverse-complement passes when training /
            evaluating (post-hoc conjoining).
        scan_backend: which selective-scan implementation to use ("auto" picks the fastest available for the
            tensors' device; "reference" is the plain PyTorch loop, "chunked" the parallel PyTorch scan).
    """

    model_type = "caduceus"

    d_model: int = 256
    n_layer: int = 16
    vocab_size: int = 12
    ssm_cfg: dict | None = None
    rms_norm: bool = True
    residual_in_fp32: bool = False
    fused_add_norm: bool = True
    pad_vocab_size_multiple: int = 8
    norm_epsilon: float = 1e-5
    initializer_cfg: dict | None = None
    bidirectional: bool = True
    bidirectional_strategy: str | None = "add"
    bidirectional_weight_tie: bool = True
    rcps: bool = False
    complement_map: dict | None = field(default_factory=lambda: dict(DNA_COMPLEMENT_MAP))
    pooling_strategy: str = "mean"
    conjoin_train: bool = False
    conjoin_eval: bool = False
    classifier_dropout: float = 0.0
    scan_backend: str = "auto"
    tie_word_embeddings: bool = True
    pad_token_id: int | None = SPECIAL_TOKEN_IDS["[PAD]"]
    bos_token_id: int | None = SPECIAL_TOKEN_IDS["[BOS]"]
    eos_token_id: int | None = SPECIAL_TOKEN_IDS["[SEP]"]
    mask_token_id: int | None = SPECIAL_TOKEN_IDS["[MASK]"]

    def __post_init__(self, **kwargs: Any) -> None:
        self._normalise()
        super().__post_init__(**kwargs)

    def _normalise(self) -> None:
        for key in ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CaduceusConfig.{key} must be a positive integer, got {value!r}")
        if self.vocab_size % self.pad_vocab_size_multiple:
            self.vocab_size += self.pad_vocab_size_multiple - self.vocab_size % self.pad_vocab_size_multiple

        ssm_cfg = dict(self.ssm_cfg or {})
        unknown = sorted(set(ssm_cfg) - set(SSM_CFG_DEFAULTS))
        if unknown:
            raise ValueError(f"CaduceusConfig.ssm_cfg has unknown key(s) {unknown}; known: {sorted(SSM_CFG_DEFAULTS)}")
        self.ssm_cfg = {**SSM_CFG_DEFAULTS, **ssm_cfg}
        dt_rank = self.ssm_cfg["dt_rank"]
        if dt_rank != "auto" and (isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1):
            raise ValueError(f"CaduceusConfig.ssm_cfg['dt_rank'] must be 'auto' or a positive int, got {dt_rank!r}")
        for key in ("d_state", "d_conv", "expand"):
            value = self.ssm_cfg[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CaduceusConfig.ssm_cfg['{key}'] must be a positive integer, got {value!r}")
        if self.ssm_cfg["dt_init"] not in ("random", "constant"):
            raise ValueError(f"CaduceusConfig.ssm_cfg['dt_init'] must be 'random' or 'constant', got {self.ssm_cfg['dt_init']!r}")

        self.initializer_cfg = {
            "initializer_range": 0.02,
            "rescale_prenorm_residual": True,
            "n_residuals_per_layer": 1,
            **(self.initializer_cfg or {}),
        }

        if self.bidirectional_strategy is None:
            self.bidirectional_strategy = "add"
        if self.bidirectional_strategy not in BIDIRECTIONAL_STRATEGIES:
            raise ValueError(
                f"CaduceusConfig.bidirectional_strategy must be one of {BIDIRECTIONAL_STRATEGIES}, "
                f"got {self.bidirectional_strategy!r}"
            )
        if self.pooling_strategy not in POOLING_STRATEGIES:
            raise ValueError(
                f"CaduceusConfig.pooling_strategy must be one of {POOLING_STRATEGIES}, got {self.pooling_strategy!r}"
            )
        if self.scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"CaduceusConfig.scan_backend must be one of {SCAN_BACKENDS}, got {self.scan_backend!r}")

        if self.complement_map is None:
            if self.rcps:
                raise ValueError("CaduceusConfig.complement_map is required when rcps=True")
        else:
            self.complement_map = self._normalise_complement_map(self.complement_map, self.vocab_size)

    @staticmethod
    def _normalise_complement_map(complement_map: Any, vocab_size: int) -> dict[int, int]:
        if not isinstance(complement_map, dict):
            raise ValueError(f"CaduceusConfig.complement_map must be a dict of token id -> id, got {type(complement_map).__name__}")
        try:
            cmap = {int(k): int(v) for k, v in complement_map.items()}
        except (TypeError, ValueError) as err:
            raise ValueError(f"CaduceusConfig.complement_map must map integer ids to integer ids: {err}") from None
        bad = sorted(k for k, v in cmap.items() if not (0 <= k < vocab_size and 0 <= v < vocab_size))
        if bad:
            raise ValueError(f"CaduceusConfig.complement_map has ids outside the vocabulary [0, {vocab_size}): {bad}")
        cmap.update({i: i for i in range(vocab_size) if i not in cmap})
        broken = sorted(k for k, v in cmap.items() if cmap[v] != k)
        if broken:
            raise ValueError(
                f"CaduceusConfig.complement_map is not an involution (complement of the complement must be the id "
                f"itself); offending ids: {broken}"
            )
        return dict(sorted(cmap.items()))

    @property
    def d_inner(self) -> int:
        return self.ssm_cfg["expand"] * self.d_model

    @property
    def dt_rank(self) -> int:
        rank = self.ssm_cfg["dt_rank"]
        return math.ceil(self.d_model / 16) if rank == "auto" else rank

    @property
    def hidden_size(self) -> int:
        """Channels of the backbone output: two strands for a PS model."""
        return 2 * self.d_model if self.rcps else self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer


__all__ = ["CaduceusConfig"]
