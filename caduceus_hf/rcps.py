"""Reverse-complement parameter sharing (RCPS, the "PS" of Caduceus-PS).

A PS hidden state has 2 * d_model channels: the forward strand in [..., :d] and the reverse-complement strand in
[..., d:], stored so that RC(h) = flip over length and channels maps the representation of x to that of rc(x). Every
module applies the same weights to both strands: f_rc(h) = cat(f(h[..., :d]), RC(f(RC(h[..., d:])))).

The original materialises those flips. Here they are folded away: a position-wise module on the RC strand is the same
module with its channels reversed, and a bidirectional mixer on a length-reversed sequence is the same mixer with its
two scan directions swapped, so nothing is flipped along the sequence, which also keeps padding masks aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backends
from .dna import complement_table
from .mixer import BiMamba, Rows


def split_strands(hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2d) -> forward strand (..., d), reverse-complement strand (..., d)."""
    return hidden_states.chunk(2, dim=-1)


def average_strands(hidden_states: torch.Tensor) -> torch.Tensor:
    """(..., 2d) -> (..., d): the mean of the forward half and the channel-flipped reverse-complement half, i.e. of
    the two strands' representations of the same base pair (RC-invariant per position)."""
    fwd, rc = split_strands(hidden_states)
    return (fwd + rc.flip(-1)) / 2


def swap_strands(hidden_states: torch.Tensor) -> torch.Tensor:
    """[a | b] -> [b | a]: the original's fused add+norm reads the strands in this order (see modeling docs)."""
    fwd, rc = split_strands(hidden_states)
    return torch.cat([rc, fwd], dim=-1)


def swap_strands_(hidden_states: torch.Tensor) -> torch.Tensor:
    """swap_strands in place, a time chunk at a time (the temporary is one chunk of one strand); returns its input."""
    d = hidden_states.shape[-1] // 2
    for start in range(0, hidden_states.shape[1], backends.STREAM_CHUNK):
        rows = hidden_states[:, start : start + backends.STREAM_CHUNK]
        fwd = rows[..., :d].clone()
        rows[..., :d] = rows[..., d:]
        rows[..., d:] = fwd
    return hidden_states


def resized_complement(table: torch.Tensor, size: int) -> torch.Tensor:
    """A complement table (vocab,) for the vocabulary resized to `size`: new ids are their own complement, and so is
    a kept id whose complement is cut off, which keeps the table an involution."""
    resized = torch.arange(size, device=table.device)
    kept = table[:size]
    resized[: kept.numel()] = torch.where(kept < size, kept, resized[: kept.numel()])
    return resized


class RCPSEmbedding(nn.Embedding):
    """Token embedding of both strands: cat(E[ids], RC(E[rc(ids)])) = cat(E[ids], flip_channels(E[complement(ids)])).

    An nn.Embedding whose output has 2 * d_model channels, so that `model.get_input_embeddings()(ids)` is what
    forward takes as inputs_embeds, and transformers' resizing sees the (vocab_size, d_model) weight it expects. The
    weight lives in the submodule `embedding`, under the published parameter name.
    """

    def __init__(self, vocab_size: int, d_model: int, complement_map: dict[int, int]) -> None:
        nn.Module.__init__(self)  # not nn.Embedding's: the weight is the submodule's (see `weight`)
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.num_embeddings, self.embedding_dim = vocab_size, d_model
        self.padding_idx, self.max_norm, self.norm_type = None, None, 2.0
        self.scale_grad_by_freq, self.sparse = False, False
        # Persistent because the published checkpoints store it.
        self.register_buffer("complement_map", complement_table(complement_map, vocab_size))

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()

    def set_embedding(self, embedding: nn.Embedding) -> None:
        """Adopt another embedding's weight (e.g. resized); the complement table follows its vocabulary size."""
        self.embedding = embedding.embedding if isinstance(embedding, RCPSEmbedding) else embedding
        self.num_embeddings, self.embedding_dim = self.embedding.weight.shape
        self.complement_map = resized_complement(self.complement_map, self.num_embeddings)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(batch, length) ids -> (batch, length, 2 * d_model)."""
        fwd = self.embedding(input_ids)
        rc = self.embedding(self.complement_map[input_ids]).flip(-1)
        return torch.cat([fwd, rc], dim=-1)


class RCPSWrapper(nn.Module):
    """Runs a BiMamba on both strands with shared weights. `submodule` keeps the published parameter names."""

    def __init__(self, submodule: BiMamba) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, length, 2d) -> (batch, length, 2d).

        Both strands run as one batch of 2 * batch rows: the reverse-complement strand as RC(h) (flipped along length
        and channels), through the mixer's directions as they are, and its output flipped back. So each projection
        and each scan direction is one call for both strands."""
        batch = hidden_states.shape[0]
        fwd, rc = split_strands(hidden_states)
        both_mask = None if mask is None else torch.cat([mask, mask.flip(1)])
        out = self.submodule(torch.cat([fwd, rc.flip(1, 2)]), both_mask)
        return torch.cat([out[:batch], out[batch:].flip(1, 2)], dim=-1)

    @torch.no_grad()
    def forward_chunked(
        self, rows_fwd: Rows, rows_rc: Rows, residual: torch.Tensor, target: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        """target = residual + forward, in time chunks (`BiMamba.forward_chunked`): rows_fwd and rows_rc give the
        mixer's input strands (batch, n, d) as they lie in the hidden state, one strand at a time; target may be
        residual itself (batch, length, 2d), which is then updated in place.

        One strand at a time, unlike `forward`: as one batch, the mixer's two (batch, length, d_inner) buffers double
        (2.0 GB peak at 131k steps for the 131k shape, against 1.45) and its time slices are no longer contiguous;
        that measured 1.3x slower."""
        d = residual.shape[-1] // 2

        def writer(half: slice, flip: bool):
            def write(start: int, stop: int, y: torch.Tensor) -> None:
                y = y.flip(-1) if flip else y
                if target is residual:
                    target[:, start:stop, half] += y
                else:
                    torch.add(residual[:, start:stop, half], y, out=target[:, start:stop, half])

            return write

        length = residual.shape[1]
        self.submodule.forward_chunked(rows_fwd, length, writer(slice(0, d), False), mask)
        self.submodule.forward_chunked(lambda a, b: rows_rc(a, b).flip(-1), length, writer(slice(d, 2 * d), True),
                                       mask, True)  # fmt: skip


class RCPSLMHead(nn.Module):
    """Logits of both strands, summed: h_fwd W^T + flip_channels(h_rc) W[complement]^T (weight tied to E)."""

    def __init__(self, d_model: int, vocab_size: int, complement_map: dict[int, int]) -> None:
        super().__init__()
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.register_buffer("complement_map", complement_table(complement_map, vocab_size))

    @property
    def weight(self) -> nn.Parameter:
        return self.lm_head.weight

    def set_linear(self, lm_head: nn.Linear) -> None:
        """Replace the shared projection (e.g. resized); the complement table follows its vocabulary size."""
        self.lm_head = lm_head
        self.complement_map = resized_complement(self.complement_map, lm_head.out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, length, 2 * d_model) -> (batch, length, vocab_size)."""
        fwd, rc = split_strands(hidden_states)
        return F.linear(fwd, self.weight) + F.linear(rc.flip(-1), self.weight[self.complement_map])
