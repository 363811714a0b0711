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

`embed_fasta` returns every embedding in memory; `embed_to_file` streams the windows in blocks and writes the output
incrementally with bounded memory, across torch.distributed ranks when launched by torchrun or accelerate, and
resumes an interrupted run (see `apps.sharded`).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    count_fasta_windows,
    fasta_windows,
    iter_bed,
    iter_tile,
    require,
    tile,
)
from ..modeling_caduceus import Caduceus, pool
from ..rcps import average_strands
from ..tokenization_caduceus import CaduceusTokenizer
from .models import ModelSource, load_model
from .sharded import BlockTask, ShardedRun, file_fingerprint, model_fingerprint, process_group, run_blocks

PathLike = str | os.PathLike[str]
# Windows per block: the unit of work of a rank, of a part file and of resuming.
BLOCK_SIZE = 1024
EMBEDDING_DEFINITION = (
    "mean over real bases ([SEP] and padding excluded) of the final per-token state; PS: mean of the forward half "
    "and the channel-flipped reverse-complement half"
)
OUTPUT_FORMATS = (".npz", ".parquet")
# The output's arrays (npz) and columns (parquet), in order.
ARRAYS = ("ids", "names", "contig", "start", "end", "embeddings")


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

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"ids": np.asarray(self.ids, dtype=str), "names": np.asarray(self.names, dtype=str),
                "contig": np.asarray(self.contig, dtype=str), "start": self.start, "end": self.end,
                "embeddings": self.vectors}

    def save(self, path: PathLike) -> Path:
        """Write .npz (arrays ids, names, contig, start, end, embeddings, plus metadata strings) or .parquet (columns
        id, name, contig, start, end, embedding as a fixed-size list, metadata in the schema), chosen by the
        extension. The file is written under a temporary name and renamed, so a failed run leaves no partial output."""
        path = check_output_file(path, OUTPUT_FORMATS, option="output")
        with atomic_write(path) as fh:
            if path.suffix.lower() == ".npz":
                np.savez(fh, **self._arrays(), **{key: np.asarray(value) for key, value in self.metadata.items()})
            else:
                pq = require("pyarrow.parquet", "writing parquet files")
                pq.write_table(_parquet_table(self._arrays(), self.metadata), fh)
        return path


def _parquet_table(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> Any:
    """The parquet table of a set of output arrays: columns id, name, contig, start, end, embedding (fixed-size list
    of float32), metadata in the schema."""
    pa = require("pyarrow", "writing parquet files")
    vectors = np.ascontiguousarray(arrays["embeddings"], dtype=np.float32)
    return pa.table({
        "id": pa.array(arrays["ids"].tolist(), pa.string()),
        "name": pa.array(arrays["names"].tolist(), pa.string()),
        "contig": pa.array(arrays["contig"].tolist(), pa.string()),
        "start": pa.array(arrays["start"], pa.int64()),
        "end": pa.array(arrays["end"], pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]),
    }).replace_schema_metadata(metadata)


@dataclass(frozen=True)
class _Window:
    """A window's coordinates and name, and its bases."""

    interval: Interval
    sequence: str


def _windows(
    fasta: PathLike, bed: PathLike | None, window: int | None, stride: int | None, max_tokens: int
) -> Iterator[_Window]:
    """The windows to embed, streamed in file order: of every FASTA record, or of every BED interval of the reference
    `fasta` (an indexed reference is read window by window; see `genomics.Reference`)."""
    tile(1, window, stride)  # check the window options before reading anything
    if window is not None and window >= max_tokens:
        raise ValueError(
            f"a window of {window:,} bases does not fit the model's {max_tokens:,} tokens ([SEP] included)"
        )
    if bed is None:
        for w in fasta_windows(fasta, window, stride):
            if w.end - w.start >= max_tokens:
                raise ValueError(
                    f"{fasta}: record {w.name!r}: a sequence of {w.end - w.start:,} bases does not fit the model's "
                    f"{max_tokens:,} tokens ([SEP] included): embed it in windows (--window)"
                )
            yield _Window(Interval(w.name, w.start, w.end, w.name), w.sequence)
        return
    with Reference(fasta) as reference:
        for region in iter_bed(bed):
            length = reference.length_of(region.contig, f"{bed}:{region.line}")
            if region.end > length:
                raise GenomeFileError(
                    f"{bed}:{region.line}: interval {region.contig}:{region.start}-{region.end} ends past the end of "
                    f"the contig ({length:,} bases in {reference.path})"
                )
            if window is None and len(region) >= max_tokens:
                raise ValueError(
                    f"{bed}:{region.line}: a sequence of {len(region):,} bases does not fit the model's "
                    f"{max_tokens:,} tokens ([SEP] included): embed it in windows (--window)"
                )
            for a, b in iter_tile(len(region), window, stride):
                start, end = region.start + a, region.start + b
                yield _Window(Interval(region.contig, start, end, region.label),
                              reference.fetch(region.contig, start, end))


def _embed_block(
    windows: Sequence[_Window], model: Caduceus, tokenizer: CaduceusTokenizer, rc_average: bool, batch_size: int
) -> np.ndarray:
    """Embeddings (len(windows), d_model) float32 of a block of windows, in their order."""
    vectors = np.empty((len(windows), model.config.d_model), dtype=np.float32)
    # Longest first, so that each batch pads little and an out-of-memory error comes early.
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].sequence), reverse=True)
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        texts = [windows[j].sequence for j in batch]
        vectors[batch] = embed_sequences(texts, model, tokenizer, rc_average).cpu().numpy()
    return vectors


def _block_arrays(windows: Sequence[_Window], vectors: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "ids": np.asarray([str(w.interval) for w in windows], dtype=str),
        "names": np.asarray([w.interval.label for w in windows], dtype=str),
        "contig": np.asarray([w.interval.contig for w in windows], dtype=str),
        "start": np.asarray([w.interval.start for w in windows], dtype=np.int64),
        "end": np.asarray([w.interval.end for w in windows], dtype=np.int64),
        "embeddings": vectors,
    }


def _metadata(model: Caduceus, rc_average: bool, window: int | None, stride: int | None) -> dict[str, str]:
    return {
        "model": str(getattr(model, "name_or_path", "")),
        "definition": EMBEDDING_DEFINITION,
        "rc_average": str(rc_average).lower(),
        "window": "" if window is None else str(window),
        "stride": "" if window is None else str(stride or window),
    }


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
    stderr (when it is a terminal). Everything is held in memory: for genomes use `embed_to_file`.
    """
    check_positive(batch_size, "batch_size")
    tile(1, window, stride)
    net, tokenizer = load_model(model, masked_lm=False, device=device, dtype=dtype, allow_missing=allow_missing)
    windows = list(_windows(fasta, bed, window, stride, tokenizer.model_max_length))
    tqdm = require("tqdm", "the progress bar").tqdm
    vectors = []
    with tqdm(total=sum(len(w.sequence) for w in windows), unit="bp", unit_scale=True, desc="embed",
              disable=None if progress else True) as bar:
        # Blocks bound the transient memory of sorting and batching, as in embed_to_file.
        for i in range(0, len(windows), BLOCK_SIZE):
            block = windows[i : i + BLOCK_SIZE]
            vectors.append(_embed_block(block, net, tokenizer, rc_average, batch_size))
            bar.update(sum(len(w.sequence) for w in block))
    return Embeddings(
        ids=[str(w.interval) for w in windows],
        names=[w.interval.label for w in windows],
        contig=[w.interval.contig for w in windows],
        start=np.asarray([w.interval.start for w in windows], dtype=np.int64),
        end=np.asarray([w.interval.end for w in windows], dtype=np.int64),
        vectors=np.concatenate(vectors) if vectors else np.empty((0, net.config.d_model), np.float32),
        metadata=_metadata(net, rc_average, window, stride),
    )


@dataclass
class EmbeddingRun:
    """What `embed_to_file` wrote: rows (windows or sequences), bases embedded, and the embedding width."""

    rows: int
    bases: int
    dim: int


def _part_is_complete(path: Path) -> bool:
    try:
        with np.load(path) as part:
            lengths = {len(part[key]) for key in ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    return len(lengths) == 1


def _merge_npz(parts: list[Path], out: Path, metadata: dict[str, str]) -> None:
    """Write the arrays of every part, concatenated in order, as one .npz (what np.savez writes), one part in
    memory at a time."""
    with atomic_write(out) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key in ARRAYS:
            rows, dtype, tail = 0, None, ()
            for path in parts:
                with np.load(path) as part:
                    array = part[key]
                rows += len(array)
                tail = array.shape[1:]
                # Strings take the widest part's width, as np.asarray would for the whole column.
                dtype = array.dtype if dtype is None else np.promote_types(dtype, array.dtype)
            with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                          "shape": (rows, *tail)}
                np.lib.format.write_array_header_1_0(entry, header)
                for path in parts:
                    with np.load(path) as part:
                        entry.write(np.ascontiguousarray(part[key], dtype=dtype).tobytes())
        for key, value in metadata.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asarray(value))


def _merge_parquet(parts: list[Path], out: Path, metadata: dict[str, str]) -> None:
    """Write the parts, in order, as the row groups of one parquet file."""
    pq = require("pyarrow.parquet", "writing parquet files")
    with atomic_write(out) as fh:
        writer = None
        for path in parts:
            with np.load(path) as part:
                table = _parquet_table({key: part[key] for key in ARRAYS}, metadata)
            writer = writer or pq.ParquetWriter(fh, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()


def embed_to_file(
    fasta: PathLike,
    out: PathLike,
    model: ModelSource = None,
    *,
    bed: PathLike | None = None,
    window: int | None = None,
    stride: int | None = None,
    rc_average: bool = False,
    batch_size: int = 16,
    block_size: int = BLOCK_SIZE,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    progress: bool = False,
    allow_missing: bool = False,
) -> ShardedRun[EmbeddingRun] | None:
    """Embed like `embed_fasta` and write `out` (.npz or .parquet, as `Embeddings.save`), streaming: windows are read
    and embedded `block_size` at a time and each block is written as it is done, so memory does not grow with the
    input. Launched by torchrun / accelerate the blocks are shared among the ranks and rank 0 writes `out`; `resume`
    keeps the blocks an interrupted run finished (see `apps.sharded`). `threads`: torch threads per rank (default:
    cores / ranks on the node when launched, else torch's choice).

    Returns, on rank 0, the run (rows, bases, dimensions, per-rank counts); None on the other ranks.
    """
    out = check_output_file(out, OUTPUT_FORMATS, option="out")
    check_positive(batch_size, "batch_size")
    check_positive(block_size, "block_size")
    tile(1, window, stride)
    with process_group(device, threads) as (workers, device):
        net, tokenizer = load_model(model, masked_lm=False, device=device, dtype=dtype, allow_missing=allow_missing)
        metadata = _metadata(net, rc_average, window, stride)
        settings = {
            "fasta": file_fingerprint(fasta, "FASTA"), "bed": file_fingerprint(bed, "BED"),
            "model": model_fingerprint(net),
            "dtype": str(next(net.parameters()).dtype), "output": out.suffix.lower(), **metadata,
        }

        def compute(block: list[_Window]) -> bytes:
            buffer = io.BytesIO()
            np.savez(buffer, **_block_arrays(block, _embed_block(block, net, tokenizer, rc_average, batch_size)))
            return buffer.getvalue()

        def merge(parts: list[Path], path: Path) -> EmbeddingRun:
            (_merge_npz if path.suffix.lower() == ".npz" else _merge_parquet)(parts, path, metadata)
            rows = bases = 0
            for part_path in parts:
                with np.load(part_path) as part:
                    rows += len(part["start"])
                    bases += int((part["end"] - part["start"]).sum())
            return EmbeddingRun(rows, bases, net.config.d_model)

        def total() -> int:
            if bed is None:
                return count_fasta_windows(fasta, window, stride)
            return sum(sum(1 for _ in iter_tile(len(region), window, stride)) for region in iter_bed(bed))

        task = BlockTask("embed", settings, ".npz", compute, _part_is_complete, merge)
        return run_blocks(task, _windows(fasta, bed, window, stride, tokenizer.model_max_length), out, workers,
                          block_size=block_size, resume=resume, progress=progress, total=total, unit="window")


__all__ = [
    "EMBEDDING_DEFINITION",
    "EmbeddingRun",
    "Embeddings",
    "check_finite",
    "embed_fasta",
    "embed_sequences",
    "embed_to_file",
    "token_states",
]
