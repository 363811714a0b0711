"""Sequence embeddings: the mean of Caduceus' final per-token states over a sequence's bases.

Definition (one vector of `d_model` floats per sequence or window):

* input: the bases followed by [SEP], as in pretraining (the tokenizer's default); batches are padded and carry an
  attention mask, which makes a sequence's states independent of its batch and padding;
* per-token state: the backbone's final normalised state (`Caduceus(...).last_hidden_state`). Ph models: that state
  (d_model). PS models (2 * d_model channels): the mean of the forward half and the channel-flipped reverse-complement
  half, i.e. the average of the two strands' representations of the same base pair (d_model, as the PS classifiers
  pool);
* pooling: the mean over real bases only, leaving out [SEP] and padding;
* `rc_average`: the mean of the embeddings of the sequence and of its reverse complement (each with [SEP] appended,
  as the model was trained), so that a sequence and its reverse complement get exactly the same vector. For Ph this
  is the post-hoc conjoining of the Caduceus paper, done on the strings rather than with `conjoin=True`, whose
  token-level reverse complement would move [SEP] to the front. A PS model's single pass is already RC-invariant
  except for [SEP] (its reverse-complement half reads `[SEP] rc(x)`, the forward half of rc(x) reads `rc(x) [SEP]`);
  averaging removes that last difference.

Long sequences are cut into windows of `window` bases every `stride` bases (the last window of a record ends at the
record's end and may be shorter); each window is embedded on its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..dna import reverse_complement
from ..genomics import (
    GenomeFileError,
    Interval,
    Reference,
    atomic_write,
    check_output_file,
    check_positive,
    read_bed,
    read_fasta,
    require,
    tile,
)
from ..modeling_caduceus import Caduceus, pool
from ..rcps import average_strands
from ..tokenization_caduceus import CaduceusTokenizer
from .models import ModelSource, load_model

PathLike = str | os.PathLike[str]
EMBEDDING_DEFINITION = (
    "mean over real bases ([SEP] and padding excluded) of the final per-token state; PS: mean of the forward half "
    "and the channel-flipped reverse-complement half"
)
OUTPUT_FORMATS = (".npz", ".parquet")


@torch.inference_mode()
def token_states(
    model: Caduceus, tokenizer: CaduceusTokenizer, sequences: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final per-token states of a batch of DNA strings and the mask of their bases.

    Returns states (batch, length, d_model) in float32 (for PS models the strand average described in the module
    docs) and a bool mask (batch, length), True at the bases (not [SEP], not padding).
    """
    encoded = tokenizer(list(sequences), padding=True, return_tensors="pt", return_special_tokens_mask=True)
    model.validate_inputs(**encoded)  # on the host copy: a tokenizer that does not match the model fails here
    encoded = encoded.to(model.device)
    states = model(
        encoded["input_ids"], attention_mask=encoded["attention_mask"], conjoin=False, return_dict=True
    ).last_hidden_state.float()
    if model.config.rcps:
        states = average_strands(states)
    bases = encoded["attention_mask"].bool() & ~encoded["special_tokens_mask"].bool()
    return states, bases


def embed_sequences(
    sequences: Sequence[str],
    model: Caduceus,
    tokenizer: CaduceusTokenizer,
    rc_average: bool = False,
) -> torch.Tensor:
    """Mean embeddings (n, d_model) float32 of one batch of DNA strings (see the module docs for the definition)."""
    if any(not s for s in sequences):
        raise ValueError("cannot embed an empty sequence")
    states, bases = token_states(model, tokenizer, sequences)
    vectors = pool(states, bases, "mean")
    if rc_average:
        rc_states, rc_bases = token_states(model, tokenizer, [reverse_complement(s) for s in sequences])
        vectors = (vectors + pool(rc_states, rc_bases, "mean")) / 2
    check_finite(vectors, "embeddings")
    return vectors


def check_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """`values`, or a ValueError: a model whose outputs are NaN or infinite gives no usable result."""
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"the model produced non-finite {what} (NaN or infinity); check its weights and dtype")
    return values


@dataclass
class Embeddings:
    """Embeddings of sequences or windows: row i is `vectors[i]` (d_model float32) of bases [start[i], end[i]) of
    `contig[i]` (0-based, half-open). `ids[i]` is `contig:start-end` (samtools' 1-based inclusive form; unique per
    row) and `names[i]` the FASTA record or the BED region's name column (its coordinates when it has none)."""

    ids: list[str]
    names: list[str]
    contig: list[str]
    start: np.ndarray
    end: np.ndarray
    vectors: np.ndarray
    metadata: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: PathLike) -> Path:
        """Write .npz (arrays ids, names, contig, start, end, embeddings, plus metadata strings) or .parquet (columns
        id, name, contig, start, end, embedding as a fixed-size list, metadata in the schema), chosen by the
        extension. The file is written under a temporary name and renamed, so a failed run leaves no partial output."""
        path = check_output_file(path, OUTPUT_FORMATS, option="output")
        with atomic_write(path) as fh:
            if path.suffix.lower() == ".npz":
                np.savez(
                    fh,
                    ids=np.asarray(self.ids, dtype=str),
                    names=np.asarray(self.names, dtype=str),
                    contig=np.asarray(self.contig, dtype=str),
                    start=self.start,
                    end=self.end,
                    embeddings=self.vectors,
                    **{key: np.asarray(value) for key, value in self.metadata.items()},
                )
            else:
                pa = require("pyarrow", "writing parquet files")
                pq = require("pyarrow.parquet", "writing parquet files")
                dim = self.vectors.shape[1]
                table = pa.table({
                    "id": pa.array(self.ids, pa.string()),
                    "name": pa.array(self.names, pa.string()),
                    "contig": pa.array(self.contig, pa.string()),
                    "start": pa.array(self.start, pa.int64()),
                    "end": pa.array(self.end, pa.int64()),
                    "embedding": pa.FixedSizeListArray.from_arrays(
                        pa.array(self.vectors.reshape(-1), pa.float32()), dim
                    ),
                }).replace_schema_metadata(self.metadata)
                pq.write_table(table, fh)
        return path


@dataclass(frozen=True)
class _Window:
    """A window's coordinates and name, and where its text is: sequences[source][lo:hi]."""

    interval: Interval
    source: int
    lo: int
    hi: int


def _windows_from_fasta(fasta: PathLike, window: int | None, stride: int | None) -> tuple[list[_Window], list[str]]:
    windows, sequences = [], []
    for record in read_fasta(fasta):
        source = len(sequences)
        sequences.append(record.sequence)
        spans = tile(len(record.sequence), window, stride)
        windows += [_Window(Interval(record.name, a, b, record.name), source, a, b) for a, b in spans]
    return windows, sequences


def _windows_from_bed(
    bed: PathLike, reference: Reference, window: int | None, stride: int | None
) -> tuple[list[_Window], list[str]]:
    windows, sequences = [], []
    for region in read_bed(bed):
        length = reference.length_of(region.contig, f"{bed}:{region.line}")
        if region.end > length:
            raise GenomeFileError(
                f"{bed}:{region.line}: interval {region.contig}:{region.start}-{region.end} ends past the end of the "
                f"contig ({length:,} bases in {reference.path})"
            )
        source = len(sequences)
        sequences.append(reference.fetch(region.contig, region.start, region.end))
        windows += [
            _Window(Interval(region.contig, region.start + a, region.start + b, region.label), source, a, b)
            for a, b in tile(len(region), window, stride)
        ]
    return windows, sequences


def embed_fasta(
    fasta: PathLike,
    model: ModelSource = None,
    *,
    bed: PathLike | None = None,
    window: int | None = None,
    stride: int | None = None,
    rc_average: bool = False,
    batch_size: int = 16,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
    allow_missing: bool = False,
) -> Embeddings:
    """Embed every record of `fasta`, or with `bed` every BED interval of the reference `fasta`, whole or in windows.

    Returns one row per sequence (window None) or per window, in file order, with coordinates on the record (FASTA)
    or on the contig (BED). `model`, `device`, `dtype`: see `load_model` (default: the bundled demo model on the
    best device, float32). Windows are batched by length to keep padding small. `progress` shows a tqdm bar on
    stderr (when it is a terminal).
    """
    check_positive(batch_size, "batch_size")
    tile(1, window, stride)  # check the window options before reading anything
    if bed is None:
        windows, sequences = _windows_from_fasta(fasta, window, stride)
    else:
        with Reference(fasta) as reference:
            windows, sequences = _windows_from_bed(bed, reference, window, stride)
    net, tokenizer = load_model(model, masked_lm=False, device=device, dtype=dtype, allow_missing=allow_missing)
    longest = max(w.hi - w.lo for w in windows)
    if longest >= tokenizer.model_max_length:
        raise ValueError(
            f"a sequence of {longest:,} bases does not fit the model's {tokenizer.model_max_length:,} tokens "
            "([SEP] included): embed it in windows (--window)"
        )

    vectors = np.empty((len(windows), net.config.d_model), dtype=np.float32)
    # Longest first, so that each batch pads little and an out-of-memory error comes early.
    order = sorted(range(len(windows)), key=lambda i: windows[i].hi - windows[i].lo, reverse=True)
    tqdm = require("tqdm", "the progress bar").tqdm
    with tqdm(total=sum(w.hi - w.lo for w in windows), unit="bp", unit_scale=True, desc="embed",
              disable=None if progress else True) as bar:
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            texts = [sequences[windows[j].source][windows[j].lo : windows[j].hi] for j in batch]
            vectors[batch] = embed_sequences(texts, net, tokenizer, rc_average).cpu().numpy()
            bar.update(sum(len(t) for t in texts))
    metadata = {
        "model": str(getattr(net, "name_or_path", "")),
        "definition": EMBEDDING_DEFINITION,
        "rc_average": str(rc_average).lower(),
        "window": "" if window is None else str(window),
        "stride": "" if window is None else str(stride or window),
    }
    return Embeddings(
        ids=[str(w.interval) for w in windows],
        names=[w.interval.name or str(w.interval) for w in windows],
        contig=[w.interval.contig for w in windows],
        start=np.asarray([w.interval.start for w in windows], dtype=np.int64),
        end=np.asarray([w.interval.end for w in windows], dtype=np.int64),
        vectors=vectors,
        metadata=metadata,
    )


__all__ = ["EMBEDDING_DEFINITION", "Embeddings", "check_finite", "embed_fasta", "embed_sequences", "token_states"]
