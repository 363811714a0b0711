"""Caduceus models: backbone, masked LM, sequence and token classification.

Parameter names are those of the published checkpoints (kuleshov-group/caduceus-*), so their model.safetensors files
load unchanged. Semantics follow the original exactly where it works (see docs in README.md, "Semantics"), with its
defects fixed: -100 labels, attention masks, every pooling, config-held head options, no config mutation.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.loss.loss_utils import ForMaskedLMLoss, ForSequenceClassificationLoss, ForTokenClassification
from transformers.modeling_outputs import (
    BaseModelOutputWithNoAttention,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils.generic import can_return_tuple

from . import backends
from .backends import chunked
from .configuration_caduceus import CaduceusConfig
from .dna import FRAMING_TOKEN_IDS, complement_table, flip_real_tokens, real_tokens_first
from .mixer import BiMamba, Mamba, reused_buffers
from .ops.norm import RMSNorm, norm
from .rcps import (
    RCPSEmbedding,
    RCPSLMHead,
    RCPSWrapper,
    average_strands,
    resized_complement,
    split_strands,
    swap_strands,
    swap_strands_,
)
from .validation import LabelKind, validate_inputs


# The original names a norm `...norm.submodule.weight` in non-fused PS models and `...norm.weight` everywhere else;
# the weights are the same, so both layouts load into one module (from_pretrained through this mapping, load_state_dict
# as Trainer's resume uses it through `_accept_original_norm_names`). Saving writes the original's layout for the
# model's own config (`CaduceusPreTrainedModel._weight_conversions`), whichever layout the weights came from.
_NORM_RENAMINGS = ((r"\.norm\.submodule\.", r"\.norm\."), (r"norm_f\.submodule\.", r"norm_f\."))
_ORIGINAL_NORM_NAME = re.compile(r"(^|\.)(norm|norm_f)\.submodule\.")


def _norm_renamings() -> list[WeightRenaming]:
    # Targets are escaped too: v5 reverses a renaming by using the target as the pattern when saving.
    return [WeightRenaming(source, target) for source, target in _NORM_RENAMINGS]


register_checkpoint_conversion_mapping("caduceus", _norm_renamings(), overwrite=True)


def _accept_original_norm_names(module, state_dict, prefix, *args) -> None:
    """load_state_dict pre-hook: read `...norm.submodule.weight` (a non-fused PS checkpoint) as `...norm.weight`."""
    for key in [k for k in state_dict if k.startswith(prefix) and _ORIGINAL_NORM_NAME.search(k)]:
        state_dict[_ORIGINAL_NORM_NAME.sub(r"\1\2.", key)] = state_dict.pop(key)


class CaduceusEmbeddings(nn.Module):
    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        if config.rcps:
            self.word_embeddings = RCPSEmbedding(config.vocab_size, config.d_model, config.complement_map)
        else:
            self.word_embeddings = nn.Embedding(config.vocab_size, config.d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, length) -> (batch, length, hidden_size)."""
        return self.word_embeddings(input_ids)


def _make_norm(config: CaduceusConfig) -> nn.Module:
    if config.rms_norm:
        return RMSNorm(config.d_model, eps=config.norm_epsilon)
    return nn.LayerNorm(config.d_model, eps=config.norm_epsilon)


def _apply_norm(module: nn.Module, x: torch.Tensor, rcps: bool) -> torch.Tensor:
    """Normalise x (..., hidden_size); a PS state normalises each strand, the RC strand with reversed channels."""
    rms = isinstance(module, RMSNorm)
    if not rcps:
        return norm(x, module.weight, module.bias, module.eps, rms)
    fwd, rc = split_strands(x)
    return torch.cat(
        [norm(fwd, module.weight, module.bias, module.eps, rms),
         norm(rc, module.weight, module.bias, module.eps, rms, flip_channels=True)],
        dim=-1,
    )


class CaduceusBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: residual += hidden; hidden = mixer(norm(residual)).

    The residual stream is carried separately, as in mamba-ssm. With rcps and fused_add_norm the original's fused
    kernel reads the two strands swapped; reproducing it exactly means swapping them before the block.
    """

    def __init__(self, config: CaduceusConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.rcps = config.rcps
        self.swap_strands = config.rcps and config.fused_add_norm
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = _make_norm(config)
        mixer = BiMamba(config)
        self.mixer = RCPSWrapper(mixer) if config.rcps else mixer

    def forward(
        self,
        hidden_states: torch.Tensor,
        residual: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        reuse_inputs: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden_states, residual (batch, length, hidden_size) -> new hidden_states, new residual.

        reuse_inputs: the caller hands both tensors over (nothing else refers to them), so that the chunked inference
        path for long sequences (`backends.chunked`) may overwrite them instead of allocating.
        """
        if chunked(hidden_states):
            return self._forward_chunked(hidden_states, residual, mask, reuse_inputs)
        # 1. The fused PS semantics: strands swapped on entry.
        if self.swap_strands:
            hidden_states = swap_strands(hidden_states)
            residual = None if residual is None else swap_strands(residual)
        # 2. Add, then normalise.
        residual = hidden_states if residual is None else hidden_states + residual
        normed = _apply_norm(self.norm, residual, self.rcps)
        if self.residual_in_fp32:
            residual = residual.float()
        # 3. Mix along the sequence.
        return self.mixer(normed, mask), residual

    def _forward_chunked(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None, mask: torch.Tensor | None, reuse_inputs: bool
    ) -> tuple[torch.Tensor, None]:
        """forward without autograd, for long sequences; returns (residual stream + mixer output, None), which the
        next block (or the final norm) reads as its hidden state with no residual.

        The mixer normalises its input and runs a time chunk at a time, and each chunk's output is added into the
        residual stream in place (the mixer reads no step of a chunk after writing it; see `BiMamba.forward_chunked`),
        so that a layer holds one (batch, length, hidden_size) tensor besides the mixer's buffers."""
        # 1. Add: swap(h) + swap(r) = swap(h + r) gives the fused PS semantics after the sum.
        if residual is None:
            residual, owned = hidden_states, reuse_inputs
        else:
            summed = torch.result_type(hidden_states, residual)
            if reuse_inputs and summed == hidden_states.dtype:
                residual = hidden_states.add_(residual)
            elif reuse_inputs and summed == residual.dtype:
                residual = residual.add_(hidden_states)
            else:
                residual = hidden_states + residual
            owned = True
        if self.swap_strands:
            residual, owned = (swap_strands_(residual) if owned else swap_strands(residual)), True
        if self.residual_in_fp32 and residual.dtype != torch.float32:
            residual, owned = residual.float(), True
        # 2. The sum's buffer: the residual stream itself where it is ours and of the sum's dtype.
        total = torch.result_type(residual, torch.empty(0, dtype=self.norm.weight.dtype))
        target = residual if owned and total == residual.dtype else None
        if target is None:
            target = residual.new_empty(residual.shape, dtype=total)
        # 3. Mix, normalising each chunk as the mixer asks for it (the norm is position-wise), and add.
        rms = isinstance(self.norm, RMSNorm)
        weight, bias, eps = self.norm.weight, self.norm.bias, self.norm.eps
        if self.rcps:
            d = residual.shape[-1] // 2
            self.mixer.forward_chunked(
                lambda a, b: norm(residual[:, a:b, :d], weight, bias, eps, rms),
                lambda a, b: norm(residual[:, a:b, d:], weight, bias, eps, rms, flip_channels=True),
                residual,
                target,
                mask,
            )
        else:

            def write(start: int, stop: int, y: torch.Tensor) -> None:
                if target is residual:
                    target[:, start:stop] += y
                else:
                    torch.add(residual[:, start:stop], y, out=target[:, start:stop])

            self.mixer.forward_chunked(
                lambda a, b: norm(residual[:, a:b], weight, bias, eps, rms), residual.shape[1], write, mask
            )
        return target, None


class CaduceusBackbone(nn.Module):
    """Embeddings -> n_layer blocks -> final add + norm (the original's CaduceusMixerModel)."""

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        self.rcps = config.rcps
        self.embeddings = CaduceusEmbeddings(config)
        self.layers = nn.ModuleList([CaduceusBlock(config, i) for i in range(config.n_layer)])
        self.norm_f = _make_norm(config)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Returns the final normalised state (batch, length, hidden_size) and, if asked, n_layer + 1 hidden states:
        the embedding output, the residual stream after each block but the last, and the final state.

        mask (batch, length) bool: masked positions are skipped. Each row's real tokens are packed, in order, into one
        run at the start (a stable permutation), the blocks run over that run with the rest masked, and every output
        goes back to its original position. So the short convolution and both scans see the real tokens as one
        sequence, and a real token's output equals that of the sequence with the masked positions removed, whatever
        their positions (padding on either side, or gaps).
        """
        embeddings = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if mask is None:
            return self._forward_packed(embeddings, None, output_hidden_states, inputs_embeds is None)
        # 1. Pack: each row's real tokens first, in order.
        order = real_tokens_first(mask)
        index = order.unsqueeze(-1).expand_as(embeddings)
        last, hidden = self._forward_packed(embeddings.gather(1, index), mask.gather(1, order), output_hidden_states, True)
        # 2. Unpack; the first hidden state is the embedding output itself, so that gradients reach it.
        if hidden is not None:
            hidden = (embeddings, *(_unpack(h, index) for h in hidden[1:]))
        return _unpack(last, index), hidden

    def _forward_packed(
        self, hidden_states: torch.Tensor, mask: torch.Tensor | None, output_hidden_states: bool, owned: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """forward from the embedding output, whose real tokens lead each row (mask a prefix of ones, or None).
        owned: nothing else refers to hidden_states, so the chunked path may overwrite it."""
        all_hidden_states = [hidden_states] if output_hidden_states else None
        # Blocks may overwrite the tensors handed to them (long inputs without autograd): the blocks' own outputs,
        # and the embedding output when it is owned and not returned.
        embeddings_own = owned and not output_hidden_states
        residual = None
        # Only the chunked path reuses buffers (a context variable, which torch.compile cannot trace).
        with reused_buffers() if chunked(hidden_states) else contextlib.nullcontext():
            for i, layer in enumerate(self.layers):
                # A chunked block returns (sum, None) with the sum in a buffer it may overwrite again.
                reuse = i > 0 or embeddings_own
                hidden_states, residual = layer(hidden_states, residual, mask, reuse_inputs=reuse)
                if output_hidden_states and i < len(self.layers) - 1:
                    all_hidden_states.append(hidden_states.clone() if residual is None else hidden_states + residual)
        # The final norm is never strand-swapped, in either of the original's branches.
        residual = hidden_states if residual is None else hidden_states + residual
        hidden_states = _apply_norm(self.norm_f, residual, self.rcps)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
            return hidden_states, tuple(all_hidden_states)
        return hidden_states, None


def _unpack(packed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Undo the packing gather: (batch, length, d) states in packed order -> in the inputs' order."""
    return torch.empty_like(packed).scatter(1, index, packed)


class CaduceusPreTrainedModel(PreTrainedModel):
    config_class = CaduceusConfig
    config: CaduceusConfig
    base_model_prefix = "caduceus"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CaduceusBlock"]
    # Trainer passes num_items_in_batch; losses are then summed and divided by it.
    accepts_loss_kwargs = True

    def __init__(self, config: CaduceusConfig, *inputs, **kwargs) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.register_load_state_dict_pre_hook(_accept_original_norm_names)

    @property
    def _weight_conversions(self) -> list[WeightRenaming]:
        """What save_pretrained reverses: the original's layout follows the config (non-fused PS models wrap their
        norms), not the layout the weights were loaded from, so every way of building a model saves the same keys."""
        return _norm_renamings() if self.config.rcps and not self.config.fused_add_norm else []

    @_weight_conversions.setter
    def _weight_conversions(self, value: list) -> None:
        # from_pretrained records the renamings it applied; the layout to save is decided by the config instead.
        pass

    @classmethod
    def from_pretrained(cls, *args, scan_backend: str | None = None, **kwargs):
        """PreTrainedModel.from_pretrained, plus scan_backend: which implementation runs the mixers (see
        `set_scan_backend`); not part of the configuration."""
        model = super().from_pretrained(*args, **kwargs)
        if scan_backend is not None:
            model.set_scan_backend(scan_backend)
        return model

    def set_scan_backend(self, name: str) -> None:
        """Run every mixer on backend `name`: "auto" (the default), "reference", "cpu", "cuda" or another name
        registered in `caduceus_hf.backends`, which documents how each is chosen. Not saved with the model."""
        backends.check_name(name)
        for module in self.modules():
            if isinstance(module, (Mamba, BiMamba)):
                module.scan_backend = name

    @property
    def scan_backend(self) -> str:
        """The backend name the mixers run on (see `set_scan_backend`)."""
        return next(m.scan_backend for m in self.modules() if isinstance(m, Mamba))

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original's initialisation (mamba-ssm's Mamba init plus Caduceus' _init_weights), load-safe.

        Called on every module of a new model, and on the modules owning the tensors a checkpoint lacks: each mixer
        projection is therefore initialised by its role in its Mamba, whichever module the call comes for.
        """
        std = self.config.initializer_cfg["initializer_range"]
        if isinstance(module, Mamba):
            A = torch.arange(1, module.d_state + 1, dtype=torch.float32).repeat(module.d_inner, 1)
            init.copy_(module.A_log, torch.log(A))
            init.ones_(module.D)
        elif isinstance(module, (RCPSEmbedding, RCPSLMHead)):
            init.copy_(module.complement_map, complement_table(self.config.complement_map, self.config.vocab_size))
        elif isinstance(module, (nn.Linear, nn.Conv1d)) and (role := self._mamba_role(module)) is not None:
            self._init_mamba_part(*role)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, (RMSNorm, nn.LayerNorm)):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module is getattr(self, "score", None):
            # Matched as the Linear itself: a head missing from a checkpoint (an MLM loaded into a classifier) is
            # initialised by calling this on the module that owns the missing key.
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # An LM head that is not tied (tie_word_embeddings false): PyTorch's default, as the original leaves it.
            _init_default_linear(module)

    def _mamba_role(self, module: nn.Module) -> tuple[Mamba, str] | None:
        """The Mamba owning `module` and its attribute name there (in_proj, conv1d, x_proj, dt_proj, out_proj)."""
        for mamba in self.modules():
            if isinstance(mamba, Mamba):
                for role in ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj"):
                    if getattr(mamba, role) is module:
                        return mamba, role
        return None

    def _init_mamba_part(self, mamba: Mamba, role: str) -> None:
        ssm = self.config.ssm_cfg
        cfg = self.config.initializer_cfg
        if role in ("in_proj", "x_proj"):
            _init_default_linear(getattr(mamba, role))
        elif role == "conv1d":
            bound = 1.0 / math.sqrt(mamba.conv1d.weight.shape[-1])
            init.uniform_(mamba.conv1d.weight, -bound, bound)
            if mamba.conv1d.bias is not None:
                init.uniform_(mamba.conv1d.bias, -bound, bound)
        elif role == "dt_proj":
            dt_std = mamba.dt_rank**-0.5 * ssm["dt_scale"]
            if ssm["dt_init"] == "constant":
                init.constant_(mamba.dt_proj.weight, dt_std)
            else:
                init.uniform_(mamba.dt_proj.weight, -dt_std, dt_std)
            log_min, log_max = math.log(ssm["dt_min"]), math.log(ssm["dt_max"])
            dt = torch.exp(torch.rand(mamba.d_inner) * (log_max - log_min) + log_min).clamp(min=ssm["dt_init_floor"])
            init.copy_(mamba.dt_proj.bias, dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        else:
            # out_proj: PyTorch's default, scaled by 1/sqrt(n_residuals * n_layer) (GPT-2 scheme) when asked.
            bound = 1.0 / math.sqrt(mamba.out_proj.in_features)
            if cfg["rescale_prenorm_residual"]:
                bound /= math.sqrt(cfg["n_residuals_per_layer"] * self.config.n_layer)
            init.uniform_(mamba.out_proj.weight, -bound, bound)
            if mamba.out_proj.bias is not None:
                init.zeros_(mamba.out_proj.bias)

    # --- shared input handling -------------------------------------------------------------------------------
    _label_kind: LabelKind | None = None

    def _check_inputs(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        allow_strand_pairs: bool = False,
    ) -> None:
        """Shapes and dtypes only: forward reads no tensor value on the host (see `validate_inputs`)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            pair = allow_strand_pairs and input_ids.dim() == 3 and input_ids.shape[-1] == 2
            if input_ids.dim() != 2 and not pair:
                expected = "(batch, length) or (batch, length, 2)" if allow_strand_pairs else "(batch, length)"
                raise ValueError(f"input_ids must have shape {expected}, got {tuple(input_ids.shape)}")
            if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
                raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
            if input_ids.shape[1] == 0:
                raise ValueError("input_ids is an empty sequence (length 0)")
            shape = input_ids.shape
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must have shape (batch, length, {self.config.hidden_size}), "
                    f"got {tuple(inputs_embeds.shape)}"
                )
            if inputs_embeds.shape[1] == 0:
                raise ValueError("inputs_embeds is an empty sequence (length 0)")
            shape = inputs_embeds.shape[:2]
        if attention_mask is not None:
            ok = tuple(attention_mask.shape) == tuple(shape[:2]) or tuple(attention_mask.shape) == tuple(shape)
            if not ok:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(shape[:2])} to match the inputs"
                )

    def validate_inputs(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **batch_extras,
    ) -> None:
        """Check a batch's shapes and values as this model reads them (`caduceus_hf.validate_inputs`): raises
        ValueError naming the problem. Takes a whole batch (`model.validate_inputs(**batch)`); other keys are
        ignored. Forward itself checks shapes only, so that it needs no host sync."""
        pairs = isinstance(self, CaduceusForSequenceClassification)
        self._check_inputs(input_ids, inputs_embeds, attention_mask, allow_strand_pairs=pairs)
        validate_inputs(self.config, input_ids, attention_mask, labels, self._label_kind)

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """transformers' resize, then the config keys derived from the vocabulary size: complement_map (new ids are
        their own complement; an id whose complement is cut off becomes its own) and pad_vocab_size_multiple (1 when
        the new size is not a multiple of it, so that the saved config reloads at that size)."""
        old_table = self._complement(torch.device("cpu"))
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        size = embeddings.weight.shape[0]
        if size % self.config.pad_vocab_size_multiple:
            self.config.pad_vocab_size_multiple = 1
        self.config.complement_map = {i: int(j) for i, j in enumerate(resized_complement(old_table, size))}
        return embeddings

    def _conjoin(self, conjoin: bool | None) -> bool:
        """Post-hoc (or trained) reverse-complement conjoining applies to Ph models; PS models are equivariant."""
        if conjoin is None:
            conjoin = self.config.conjoin_train if self.training else self.config.conjoin_eval
        return bool(conjoin) and not self.config.rcps

    def _complement(self, device: torch.device) -> torch.Tensor:
        """(vocab_size,) ids: the complement of each id."""
        cmap = self.config.complement_map
        return torch.tensor([cmap.get(i, i) for i in range(self.config.vocab_size)], device=device)

    def _reverse_complement(
        self, input_ids: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reverse-complement strand as the tokenizer would give it, and the span that was reversed.

        Only the sequence is reversed: masked positions and the tokenizer's framing tokens ([CLS], [BOS], [SEP],
        [PAD]) stay where they are, so the RC pass sees "rc(x) [SEP]" exactly as if rc(x) had been tokenized. The
        span (batch, length) is True on the reversed positions, which need not be contiguous.
        """
        span = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask
        span = span & ~torch.isin(input_ids, torch.tensor(FRAMING_TOKEN_IDS, device=input_ids.device))
        return flip_real_tokens(self._complement(input_ids.device)[input_ids], span), span

    @staticmethod
    def _align(rc_states: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        """States (batch, length, ...) of the RC pass, put back in forward-strand order."""
        return flip_real_tokens(rc_states, span)


def _init_default_linear(linear: nn.Linear) -> None:
    """PyTorch's nn.Linear default init for the weight; zero bias (mamba-ssm zeroes Linear biases)."""
    bound = 1.0 / math.sqrt(linear.in_features)
    init.uniform_(linear.weight, -bound, bound)
    if linear.bias is not None:
        init.zeros_(linear.bias)


def _real_token_mask(attention_mask: torch.Tensor | None, strand: int | None = None) -> torch.Tensor | None:
    """The attention mask as bool, True on real tokens: any nonzero value is a real token."""
    if attention_mask is None:
        return None
    if strand is not None and attention_mask.dim() == 3:
        attention_mask = attention_mask[..., strand]
    return attention_mask != 0


def _labelled_count(labels: torch.Tensor) -> torch.Tensor:
    """Labelled positions, at least 1: the normaliser of a mean that is 0, not NaN, when nothing is labelled."""
    return (labels != -100).sum().clamp(min=1)


class Caduceus(CaduceusPreTrainedModel):
    """The Caduceus backbone (AutoModel): embeddings, BiMamba blocks and the final norm.

    Its output (batch, length, hidden_size) is the per-token embedding; hidden_size is 2 * d_model for PS models
    (forward strand, then the reverse-complement strand with reversed channels).
    """

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\.", r"^score\."]

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__(config)
        self.backbone = CaduceusBackbone(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding: an nn.Embedding whose output is what forward takes as inputs_embeds (for PS models,
        RCPSEmbedding: both strands, 2 * d_model channels, from its (vocab_size, d_model) weight)."""
        return self.backbone.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if self.config.rcps:
            self.backbone.embeddings.word_embeddings.set_embedding(value)
        else:
            self.backbone.embeddings.word_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        conjoin: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithNoAttention:
        r"""
        input_ids (batch, length): token ids; attention_mask (batch, length): nonzero (1, True) on real tokens, 0 on
        positions to skip (padding on either side, or gaps anywhere). A real token's output equals that of the
        sequence with the skipped positions removed; skipped positions get finite outputs of no meaning. Without a
        mask every token counts.
        conjoin: for Ph models, average with the reverse-complement pass aligned back to the forward strand
            (defaults to config.conjoin_train / conjoin_eval). Ignored for PS models, which are exactly equivariant.
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        # 1. Shapes (values: `validate_inputs`).
        self._check_inputs(input_ids, inputs_embeds, attention_mask)
        mask = _real_token_mask(attention_mask)
        # 2. The forward strand.
        last, hidden = self.backbone(input_ids, inputs_embeds, mask, output_hidden_states)
        # 3. Ph conjoining: the reverse-complement strand, aligned back.
        if self._conjoin(conjoin) and input_ids is not None:
            rc_ids, span = self._reverse_complement(input_ids, mask)
            rc_last, rc_hidden = self.backbone(rc_ids, None, mask, output_hidden_states)
            last = (last + self._align(rc_last, span)) / 2
            if hidden is not None:
                hidden = tuple((h + self._align(r, span)) / 2 for h, r in zip(hidden, rc_hidden))
        return BaseModelOutputWithNoAttention(last_hidden_state=last, hidden_states=hidden)


class CaduceusForMaskedLM(CaduceusPreTrainedModel):
    """Caduceus with its language-model head tied to the input embedding."""

    _label_kind = "token_ids"

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__(config)
        self.caduceus = Caduceus(config)
        if config.rcps:
            self.lm_head = RCPSLMHead(config.d_model, config.vocab_size, config.complement_map)
            self._tied_weights_keys = {
                "lm_head.lm_head.weight": "caduceus.backbone.embeddings.word_embeddings.embedding.weight"
            }
        else:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
            self._tied_weights_keys = {"lm_head.weight": "caduceus.backbone.embeddings.word_embeddings.weight"}
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.caduceus.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.caduceus.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        """The vocabulary projection; for PS models the nn.Linear that both strands of RCPSLMHead share."""
        return self.lm_head.lm_head if self.config.rcps else self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        if self.config.rcps:
            self.lm_head.set_linear(new_embeddings)
        else:
            self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        loss_weights: torch.FloatTensor | None = None,
        output_hidden_states: bool | None = None,
        conjoin: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        r"""
        labels (batch, length): target ids, -100 where no loss is taken.
        loss_weights (batch, length): optional per-token weights (e.g. to down-weight soft-masked repeats); the loss is
            sum(w * ce) / sum(w) over labelled tokens, or / num_items_in_batch when Trainer passes it.
        conjoin: Ph only; average the logits with those of the reverse-complement pass, aligned back and with
            complemented vocabulary (defaults to config.conjoin_train / conjoin_eval).
        Logits are float32 (batch, length, vocab_size).
        """
        # 1. Backbone and head.
        outputs = self.caduceus(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            conjoin=False,
        )
        logits = self.lm_head(outputs.last_hidden_state).float()
        # 2. Ph conjoining in logit space: the RC pass's logits, aligned back, over complemented vocabulary.
        if self._conjoin(conjoin) and input_ids is not None:
            rc_ids, span = self._reverse_complement(input_ids, _real_token_mask(attention_mask))
            rc_states = self.caduceus(rc_ids, attention_mask=attention_mask, return_dict=True, conjoin=False)
            rc_logits = self.lm_head(rc_states.last_hidden_state).float()
            logits = (logits + self._align(rc_logits, span)[..., self._complement(logits.device)]) / 2
        # 3. Loss.
        loss = None if labels is None else self._loss(logits, labels, loss_weights, num_items_in_batch)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _loss(self, logits, labels, loss_weights, num_items_in_batch) -> torch.Tensor:
        """transformers' ForMaskedLMLoss (mean over labelled tokens, or sum / num_items_in_batch); 0 when nothing is
        labelled. With loss_weights: sum(w * ce) over labelled tokens / (sum(w), or num_items_in_batch)."""
        if labels.shape != logits.shape[:-1]:
            raise ValueError(f"labels must have shape {tuple(logits.shape[:-1])}, got {tuple(labels.shape)}")
        labels = labels.to(logits.device)
        if loss_weights is None:
            if num_items_in_batch is None:
                num_items_in_batch = _labelled_count(labels)
            return ForMaskedLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)
        if loss_weights.shape != labels.shape:
            raise ValueError(f"loss_weights must have the shape of labels {tuple(labels.shape)}, got {tuple(loss_weights.shape)}")
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none")
        weights = (labels != -100).reshape(-1).to(ce.dtype) * loss_weights.reshape(-1).to(device=ce.device, dtype=ce.dtype)
        total = (ce * weights).sum()
        denom = weights.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, device=total.device)
        denom = denom.to(total.dtype)
        return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def pool(hidden_states: torch.Tensor, mask: torch.Tensor | None, strategy: str) -> torch.Tensor:
    """Pool (batch, length, d) over real tokens (mask nonzero) -> (batch, d). first / last are the first / last real
    token. A row without real tokens pools to zeros (`validate_inputs` rejects such rows)."""
    if mask is None:
        mask = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
    mask = mask != 0
    if strategy == "mean":
        m = mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * m).sum(1) / m.sum(1).clamp(min=1)
    empty = ~mask.any(-1, keepdim=True)
    if strategy == "max":
        pooled = hidden_states.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
        return pooled.masked_fill(empty, 0)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    if strategy == "first":
        index = torch.where(mask, positions, mask.shape[1] - 1).min(1).values
    else:
        index = torch.where(mask, positions, 0).max(1).values
    pooled = hidden_states[torch.arange(hidden_states.shape[0], device=index.device), index]
    return pooled.masked_fill(empty, 0)


def _strand_representations(
    model: CaduceusPreTrainedModel,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    output_hidden_states: bool | None,
    conjoin: bool | None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor | None]], BaseModelOutputWithNoAttention]:
    """Per-token states (batch, length, d_model) of each strand, each in its own reading order, with its mask.

    PS: the forward half, and the RC half flipped back to the reverse-complement reading order (as the original).
    Ph with conjoining: a forward pass and a pass over the reverse complement, given as (batch, length, 2) ids or
    computed here. Otherwise: the forward pass alone.
    """
    pairs = input_ids is not None and input_ids.dim() == 3
    if model.config.rcps or not (pairs or model._conjoin(conjoin)):
        fwd_ids = input_ids[..., 0] if pairs else input_ids
        mask = _real_token_mask(attention_mask, 0)
        outputs = model.caduceus(fwd_ids, attention_mask=mask, inputs_embeds=inputs_embeds,
                                 output_hidden_states=output_hidden_states, return_dict=True, conjoin=False)
        states = outputs.last_hidden_state
        if not model.config.rcps:
            return [(states, mask)], outputs
        fwd, rc = split_strands(states)
        rc = rc.flip(-1)
        rc = rc.flip(1) if mask is None else flip_real_tokens(rc, mask)
        return [(fwd, mask), (rc, mask)], outputs

    if input_ids is None:
        raise ValueError("reverse-complement conjoining needs input_ids, not inputs_embeds")
    fwd_mask = _real_token_mask(attention_mask, 0)
    if pairs:
        fwd_ids, rc_ids, rc_mask = input_ids[..., 0], input_ids[..., 1], _real_token_mask(attention_mask, 1)
    else:
        fwd_ids, rc_mask = input_ids, fwd_mask
        rc_ids = model._reverse_complement(input_ids, fwd_mask)[0]
    outputs = model.caduceus(fwd_ids, attention_mask=fwd_mask, output_hidden_states=output_hidden_states,
                             return_dict=True, conjoin=False)
    rc_states = model.caduceus(rc_ids, attention_mask=rc_mask, return_dict=True, conjoin=False).last_hidden_state
    return [(outputs.last_hidden_state, fwd_mask), (rc_states, rc_mask)], outputs


class CaduceusForSequenceClassification(CaduceusPreTrainedModel):
    """Caduceus with a pooled linear head (`score`, no bias, as published).

    Options live in the config under the original's names: pooling_strategy ("mean", "max", "first", "last"),
    conjoin_train / conjoin_eval (Ph), num_labels, problem_type, classifier_dropout. PS models score both strands
    and average (RC-invariant). (batch, length, 2) input ids [forward, reverse complement] conjoin explicitly.
    """

    _label_kind = "sequence_classes"

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.caduceus = Caduceus(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.caduceus.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.caduceus.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        conjoin: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        input_ids (batch, length), or (batch, length, 2) with [..., 0] the forward and [..., 1] the reverse-complement
        strand (the original's conjoining input); attention_mask (batch, length) or (batch, length, 2).
        labels (batch,): class ids, floats for regression (num_labels 1) or (batch, num_labels) for multi-label.
        """
        # 1. Shapes (values: `validate_inputs`).
        self._check_inputs(input_ids, inputs_embeds, attention_mask, allow_strand_pairs=True)
        # 2. Each strand's per-token states, pooled and scored; the strands' logits averaged.
        strands, outputs = _strand_representations(
            self, input_ids, attention_mask, inputs_embeds, output_hidden_states, conjoin
        )
        logits = torch.stack(
            [self.score(self.dropout(pool(states, mask, self.config.pooling_strategy))) for states, mask in strands]
        ).mean(0)
        # 3. Loss.
        loss = None if labels is None else _classification_loss(self.config, logits, labels, num_items_in_batch)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


def _classification_loss(config: CaduceusConfig, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch):
    """transformers' ForSequenceClassificationLoss, without writing problem_type back into the config.

    With num_items_in_batch (Trainer), regression and multi-label losses are summed and divided by it, as the
    classification loss is (the utility would average them per micro-batch, wrong under gradient accumulation).
    """
    num_labels = logits.shape[-1]
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if problem_type != "single_label_classification":
        labels = labels.to(logits.dtype)
        if num_items_in_batch is not None:
            if problem_type == "regression":
                per_item = F.mse_loss(logits.squeeze(-1) if num_labels == 1 else logits,
                                      labels.reshape(logits.shape[:-1] if num_labels == 1 else logits.shape),
                                      reduction="none")
            else:
                per_item = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            return per_item.sum() / torch.as_tensor(num_items_in_batch, device=logits.device).to(per_item.dtype)
    resolved = _ResolvedProblem(num_labels, problem_type)
    return ForSequenceClassificationLoss(labels, logits, resolved, num_items_in_batch=num_items_in_batch)


@dataclass
class _ResolvedProblem:
    """What ForSequenceClassificationLoss reads from a config, with problem_type resolved (it would write it)."""

    num_labels: int
    problem_type: str


class CaduceusForTokenClassification(CaduceusPreTrainedModel):
    """Per-token labels from a linear head (`score`, with bias). PS models average both strands' scores at each
    position (RC-invariant); Ph models can conjoin a reverse-complement pass aligned back to the forward strand."""

    _label_kind = "token_classes"

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.caduceus = Caduceus(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=True)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.caduceus.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.caduceus.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        conjoin: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        r"""labels (batch, length): class ids, -100 where no loss is taken. Logits (batch, length, num_labels)."""
        # 1. Per-token states; PS averages the two strands at each position.
        outputs = self.caduceus(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                output_hidden_states=output_hidden_states, return_dict=True, conjoin=conjoin)
        states = outputs.last_hidden_state
        if self.config.rcps:
            states = average_strands(states)
        logits = self.score(self.dropout(states))
        # 2. Loss: transformers' ForTokenClassification, 0 when nothing is labelled.
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:-1]:
                raise ValueError(f"labels must have shape {tuple(logits.shape[:-1])}, got {tuple(labels.shape)}")
            labels = labels.to(logits.device)
            if num_items_in_batch is None:
                num_items_in_batch = _labelled_count(labels)
            loss = ForTokenClassification(logits, labels, self.config, num_items_in_batch=num_items_in_batch)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "Caduceus",
    "CaduceusForMaskedLM",
    "CaduceusForSequenceClassification",
    "CaduceusForTokenClassification",
    "CaduceusPreTrainedModel",
    "pool",
]
