"""Training data for Caduceus with Trainer: genome windows from FASTA for MLM pretraining, labelled sequences from
tables (through `datasets`) for fine-tuning, and the collators that batch them.

Coordinates: a `Region` (`caduceus_hf.genomics.Interval`) is 0-based and half-open inside the library (`start`, `end`),
and is written and parsed as samtools does, `name:start-end`, 1-based and inclusive (`chr1:1-100` is the first 100
bases).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import DataCollatorForTokenClassification, PreTrainedTokenizerBase

from ..data_collator import LOSS_WEIGHTS_KEY, DataCollatorForNucleotideMLM
from ..dna import FRAMING_TOKEN_IDS, reverse_complement_ids
from ..genomics import Interval, check_dna, parse_interval, read_fasta as stream_fasta, tile

PathLike = str | os.PathLike[str]
SEQUENCE_COLUMNS = ("seq", "sequence", "sequences", "dna")
LABEL_COLUMNS = ("label", "labels", "target", "y")
TASKS = ("sequence", "token", "regression")
# Class ids above this are not class ids (a column of measurements, a typo); they would build a head this wide.
MAX_CLASS_ID = 1000


# --- FASTA ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record; `sequence` is the raw text, case kept (lowercase marks soft-masked repeats)."""

    path: str
    name: str
    sequence: str

    def __len__(self) -> int:
        return len(self.sequence)


def read_fasta(path: PathLike) -> list[FastaRecord]:
    """All records of a FASTA file, plain or gzipped, read and checked by `caduceus_hf.genomics.read_fasta` (pysam).

    Raises FileNotFoundError for a missing file, and a ValueError naming the file and line when the file is not FASTA
    (text before the first '>' header, a record without a name or sequence, characters that are not IUPAC
    nucleotide codes) or has no record.
    """
    return [FastaRecord(str(Path(path)), record.name, record.sequence) for record in stream_fasta(path)]


def read_fasta_files(paths: Sequence[PathLike]) -> list[FastaRecord]:
    """Records of several FASTA files; record names must be unique across them (regions refer to them by name)."""
    if not paths:
        raise ValueError("no FASTA files given")
    records: list[FastaRecord] = []
    seen: dict[str, str] = {}
    for path in paths:
        for record in read_fasta(path):
            if record.name in seen:
                raise ValueError(
                    f"{record.path}: record name {record.name!r} also appears in {seen[record.name]}; "
                    "names must be unique"
                )
            seen[record.name] = record.path
            records.append(record)
    return records


# --- regions, held-out split, windows ---------------------------------------------------------------------------------


Region = Interval
parse_region = parse_interval


@dataclass(frozen=True)
class GenomeSplit:
    """Training segments and held-out regions; together they cover every record exactly once."""

    train: tuple[Region, ...]
    heldout: tuple[Region, ...]


def split_records(
    records: Sequence[FastaRecord],
    holdout_fraction: float = 0.05,
    holdout_regions: Sequence[str | Region] = (),
) -> GenomeSplit:
    """Hold out a contiguous region of each record for evaluation; the rest, cut around it, is for training.

    Without `holdout_regions`, the last `ceil(holdout_fraction * len)` bases of every record are held out. With them,
    exactly those regions (samtools strings or Regions, at most one per record) are held out and records they do not
    name are used whole for training.
    """
    lengths = {r.name: len(r) for r in records}
    if holdout_regions:
        heldout: dict[str, Region] = {}
        for item in holdout_regions:
            region = parse_region(item) if isinstance(item, str) else item
            if region.contig not in lengths:
                raise ValueError(
                    f"held-out region {region}: no record named {region.contig!r} (have {sorted(lengths)})"
                )
            if region.end > lengths[region.contig]:
                raise ValueError(f"held-out region {region} ends past the record's length {lengths[region.contig]}")
            if region.contig in heldout:
                raise ValueError(f"more than one held-out region for record {region.contig!r}")
            heldout[region.contig] = region
    else:
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
        heldout = {}
        for name, length in lengths.items():
            size = math.ceil(holdout_fraction * length)
            if length and size:
                heldout[name] = Region(name, length - size, length)
    train = []
    for name, length in lengths.items():
        cut = heldout.get(name)
        pieces = [(0, length)] if cut is None else [(0, cut.start), (cut.end, length)]
        train += [Region(name, a, b) for a, b in pieces if b > a]
    return GenomeSplit(train=tuple(train), heldout=tuple(heldout[name] for name in lengths if name in heldout))


def tile_windows(
    segments: Sequence[Region],
    sequences: Mapping[str, str],
    window: int,
    stride: int | None = None,
    max_n_fraction: float = 0.1,
) -> list[Region]:
    """Windows of exactly `window` bases inside each segment, every `stride` bases (default: `window`, no overlap).

    A window never crosses a segment end, so training windows never touch the held-out region. A segment's tail
    shorter than a window is not used. Windows with more than `max_n_fraction` of N (or other non-ACGT letters, e.g.
    assembly gaps) are skipped.
    """
    tile(1, window, stride)  # checks both
    windows = []
    for segment in segments:
        text = sequences[segment.contig]
        for a, b in tile(len(segment), window, stride, partial_tail=False):
            start = segment.start + a
            chunk = text[start : start + window].upper()
            unknown = window - sum(chunk.count(base) for base in "ACGT")
            if unknown <= max_n_fraction * window:
                windows.append(Region(segment.contig, start, start + window))
    return windows


def softmask_weights(text: str, softmask_weight: float) -> np.ndarray:
    """Per-base loss weights (len(text),) float32: `softmask_weight` for lowercase (soft-masked) bases, else 1."""
    codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
    lower = (codes >= ord("a")) & (codes <= ord("z"))
    return np.where(lower, np.float32(softmask_weight), np.float32(1.0)).astype(np.float32)


class GenomeWindowDataset(Dataset):
    """Genome windows as masked-LM inputs (masking happens in the collator).

    Item i: {"input_ids": (window + 1,) ids, the bases then [SEP]; "attention_mask": ones} plus "loss_weights"
    (window + 1,) when `softmask_weight` is set (computed from the raw text, since the tokenizer upper-cases; 1 for
    [SEP]). With `rc_augment`, each item is reverse complemented with probability 1/2 (see `reverse_complement_item`),
    drawn from torch's global RNG, which Trainer seeds and checkpoints.
    """

    def __init__(
        self,
        sequences: Mapping[str, str],
        windows: Sequence[Region],
        tokenizer: PreTrainedTokenizerBase,
        rc_augment: bool = False,
        softmask_weight: float | None = None,
    ) -> None:
        if softmask_weight is not None and not 0.0 <= softmask_weight:
            raise ValueError(f"softmask_weight must be >= 0, got {softmask_weight}")
        self.sequences = sequences
        self.windows = list(windows)
        self.tokenizer = tokenizer
        self.rc_augment = rc_augment
        self.softmask_weight = softmask_weight

    def __len__(self) -> int:
        return len(self.windows)

    def text(self, index: int) -> str:
        """The raw text of window `index`, case kept."""
        w = self.windows[index]
        return self.sequences[w.contig][w.start : w.end]

    def __getitem__(self, index: int) -> dict[str, Any]:
        text = self.text(index)
        encoded = self.tokenizer(text)
        item = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if self.softmask_weight is not None:
            weights = softmask_weights(text, self.softmask_weight)
            extra = len(item["input_ids"]) - len(weights)  # the appended [SEP]
            item[LOSS_WEIGHTS_KEY] = np.concatenate([weights, np.ones(extra, np.float32)]).tolist()
        if self.rc_augment and bool(torch.rand(()) < 0.5):
            item = reverse_complement_item(item, (LOSS_WEIGHTS_KEY,))
        return item


def reverse_complement_item(item: Mapping[str, Any], per_token_keys: Sequence[str] = ()) -> dict[str, Any]:
    """The reverse complement of a tokenised, unpadded example, as if the reverse-complement string had been
    tokenised: the bases are complemented and reversed, and the framing tokens (the trailing [SEP]; [CLS], [BOS])
    stay where they are ("A C G [SEP]" -> "C G T [SEP]"). The `per_token_keys` lists (per-base labels, loss weights)
    are reversed with the bases.

    This is the strand that post-hoc conjoining pairs with an input (the models' `_reverse_complement`), so augmented
    training examples look like what conjoining feeds a Ph model at evaluation.
    """
    ids = torch.as_tensor(item["input_ids"])
    span = ~torch.isin(ids, torch.tensor(FRAMING_TOKEN_IDS))
    out = dict(item)
    out["input_ids"] = reverse_complement_ids(ids, attention_mask=span).tolist()
    positions = torch.nonzero(span).flatten().tolist()
    for key in per_token_keys:
        if key in item:
            values = list(item[key])
            reordered = list(values)
            for i, j in zip(positions, reversed(positions)):
                reordered[i] = values[j]
            out[key] = reordered
    return out


class PremaskedDataset(Dataset):
    """Examples masked once, ahead of time, so that every evaluation scores the same positions.

    Built from a GenomeWindowDataset (without RC augmentation) by `DataCollatorForNucleotideMLM` with its own seeded
    generator: each sequence token is selected with `mlm_probability`, and every selected token becomes [MASK] (no
    random or kept tokens, so the loss measures prediction of unseen bases). Items carry "labels" (-100 where not
    masked), which `MLMCollator` pads instead of masking again. `windows[i]` is the genome window of item i (token j
    < len(window) is base windows[i].start + j).
    """

    def __init__(
        self,
        source: GenomeWindowDataset,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float = 0.15,
        seed: int = 0,
    ) -> None:
        if source.rc_augment:
            raise ValueError("a held-out set is masked once: build it from a dataset without rc_augment")
        masker = DataCollatorForNucleotideMLM(
            tokenizer, mlm_probability=mlm_probability, mask_replace_prob=1.0, random_replace_prob=0.0, seed=seed
        )
        self.windows = list(source.windows)
        self.examples = []
        for i in range(len(source)):
            batch = masker([source[i]])
            self.examples.append({key: value[0].tolist() for key, value in batch.items()})

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.examples[index]

    @property
    def num_masked(self) -> int:
        """Masked (scored) positions over the whole set."""
        return sum(sum(label != -100 for label in ex["labels"]) for ex in self.examples)


@dataclass
class MLMCollator:
    """Trainer collator for MLM: masks raw examples with `DataCollatorForNucleotideMLM`, and pads examples that
    already carry "labels" (a PremaskedDataset) without masking them again.

    Output: "input_ids", "attention_mask", "labels" (B, L), and "loss_weights" (B, L) when the examples have them;
    padding follows the tokenizer's side (left), labels pad with -100, loss weights with 0.
    """

    tokenizer: PreTrainedTokenizerBase
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None
    masker: DataCollatorForNucleotideMLM = field(init=False)

    def __post_init__(self) -> None:
        # No seed: masking draws from torch's global RNG, which Trainer seeds and checkpoints. (After a resume the
        # masks differ from an uninterrupted run's: the checkpointed RNG state was taken after the dataloader had
        # already collated the next batch.)
        self.masker = DataCollatorForNucleotideMLM(
            self.tokenizer, mlm_probability=self.mlm_probability, pad_to_multiple_of=self.pad_to_multiple_of
        )

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("MLMCollator got an empty list of examples")
        if "labels" not in examples[0]:
            return self.masker(examples)
        weights = [ex.get(LOSS_WEIGHTS_KEY) for ex in examples]
        padder = DataCollatorForTokenClassification(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)
        batch = padder([{k: v for k, v in ex.items() if k != LOSS_WEIGHTS_KEY} for ex in examples])
        if weights[0] is not None:
            length = batch["input_ids"].shape[1]
            padded = torch.zeros(len(weights), length, dtype=torch.float32)
            for i, row in enumerate(weights):
                row = torch.as_tensor(row, dtype=torch.float32)
                if self.tokenizer.padding_side == "left":
                    padded[i, length - len(row) :] = row
                else:
                    padded[i, : len(row)] = row
            batch[LOSS_WEIGHTS_KEY] = padded
        return dict(batch)


# --- labelled sequence tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledSequences:
    """Sequences with class labels read from a table.

    `labels` holds one class id per sequence (task "sequence"), a list of per-base class ids (task "token") or one
    float per sequence (task "regression", no label names); `label_names[i]` names class id i; `lines[i]` is the file
    line of example i (for error messages).
    """

    path: str
    task: str
    sequences: list[str]
    labels: list[Any]
    label_names: list[str]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def num_labels(self) -> int:
        return 1 if self.task == "regression" else len(self.label_names)

    def subset(self, indices: Sequence[int]) -> LabelledSequences:
        """The examples at `indices`, with the same label vocabulary."""
        return LabelledSequences(
            path=self.path,
            task=self.task,
            sequences=[self.sequences[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            label_names=self.label_names,
            lines=[self.lines[i] for i in indices],
        )


# Local table formats by extension (before an optional .gz): the `datasets` builder and its options.
TABLE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {"sep": ","}),
    ".tsv": ("csv", {"sep": "\t"}),
    ".tab": ("csv", {"sep": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
# Every cell as written (no NaN for empty cells), and blank lines kept as rows so that row i is line i + 2.
_CSV_OPTIONS = {"na_filter": False, "skip_blank_lines": False}
# A source that is not a local file is a Hub dataset id: "name" or "org/name" (the name may contain dots).
_HUB_DATASET_ID = re.compile(r"[\w-]+(/[\w.-]+)?")
_PANDAS_RAGGED = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


@dataclass(frozen=True)
class _Table:
    """Rows of a table as loaded by `datasets`, and how to name a row in messages."""

    name: str
    columns: list[str]
    rows: Any  # datasets.Dataset
    kind: str  # "csv", "json", "jsonl", "parquet" or "hub"

    def line(self, row: int) -> int:
        """The file line of a row (CSV/TSV: after the header; JSON Lines), else its 1-based row number."""
        return row + 2 if self.kind == "csv" else row + 1

    def where(self, row: int) -> str:
        return f"{self.name}:{self.line(row)}" if self.kind in ("csv", "jsonl") else f"{self.name}: row {row + 1}"

    @property
    def header(self) -> str:
        return f"{self.name}:1" if self.kind == "csv" else self.name


def _table_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return suffixes[-1] if suffixes and suffixes[-1] in TABLE_FORMATS else None


def load_table(source: PathLike, config: str | None = None, split: str = "train") -> _Table:
    """A table through `datasets`: a local CSV, TSV, JSON, JSON Lines or parquet file (by extension; optionally
    gzipped), or a Hub dataset id with an optional configuration and a split (needs the network or datasets' cache).

    Raises FileNotFoundError for a missing local file, ValueError naming the file (and line) for one that cannot be
    read as its format.
    """
    from ..extras import require

    datasets = require("datasets", "reading tables", "train")
    path = Path(source)
    suffix = _table_format(path)
    if suffix is None and (path.exists() or not _HUB_DATASET_ID.fullmatch(str(source))):
        raise ValueError(
            f"{path}: unknown table format; name it .csv, .tsv, .json, .jsonl or .parquet (optionally .gz)"
        )
    if suffix is not None and not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    import tempfile

    progress = datasets.is_progress_bar_enabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    # datasets logs a read failure at ERROR level before raising it; the raised error is reported instead.
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        if suffix is None:
            try:
                rows = datasets.load_dataset(str(source), config, split=split)
            except Exception as err:  # offline, unknown id, unknown config or split
                raise ValueError(f"{source}: not a local table, and not loadable as a Hub dataset "
                                 f"(config {config!r}, split {split!r}): {err}") from None
            return _Table(f"{source} ({split})", list(rows.column_names), rows, "hub")
        builder, options = TABLE_FORMATS[suffix]
        if builder == "csv":
            options = {**options, **_CSV_OPTIONS, "features": _string_columns(path, options["sep"])}
        # A private cache: local tables are read into memory, not into the user's datasets cache.
        with tempfile.TemporaryDirectory() as cache:
            try:
                rows = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                             keep_in_memory=True, **options)
            except datasets.exceptions.DatasetGenerationError as err:
                raise _table_error(path, builder, err.__cause__ or err) from None
            except ValueError as err:
                raise _table_error(path, builder, err) from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if progress:
            datasets.enable_progress_bars()
    kind = "jsonl" if suffix == ".jsonl" else builder
    return _Table(str(path), list(rows.column_names), rows, kind)


def _string_columns(path: Path, sep: str) -> Any:
    """Features reading every column of a CSV/TSV file as text: inferred numbers would lose leading zeros
    (per-base labels "0110") and turn integer labels into floats."""
    import pandas
    from datasets import Features, Value

    try:
        header = pandas.read_csv(path, sep=sep, nrows=0).columns
    except (ValueError, UnicodeDecodeError) as err:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise _table_error(path, "csv", err) from None
    return Features({str(name): Value("string") for name in header})


def _table_error(path: Path, builder: str, err: BaseException) -> ValueError:
    text = str(err).strip()
    ragged = _PANDAS_RAGGED.search(text)
    if ragged:
        expected, line, seen = ragged.groups()
        return ValueError(f"{path}:{line}: {seen} fields, the header has {expected}")
    if type(err).__name__ == "EmptyDataError":
        return ValueError(f"{path}: empty file; expected a header line such as 'seq,label'")
    return ValueError(f"{path}: cannot read it as {builder}: {text}")


def _pick_column(table: _Table, wanted: str | None, candidates: Sequence[str], role: str) -> str:
    header = table.columns
    lowered = [str(h).strip().lower() for h in header]
    if wanted is not None:
        if wanted not in header:
            raise ValueError(f"{table.header}: no column {wanted!r} for the {role}; header is {header}")
        return wanted
    for name in candidates:
        if name in lowered:
            return header[lowered.index(name)]
    raise ValueError(f"{table.header}: cannot find the {role} column (tried {list(candidates)}); header is {header}")


def _cell(value: Any) -> str:
    """A table cell as text: lists (per-base labels in JSON or parquet) space-separated, None empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value).strip()


def _token_labels(text: str, length: int, where: str) -> list[int]:
    """Per-base labels: one digit per base ("0011"), or integers separated by spaces or commas ("0 0 1 1")."""
    text = text.strip()
    if re.fullmatch(r"\d+", text) and length > 1:
        if len(text) != length:
            raise ValueError(
                f"{where}: {len(text)} per-base labels (one digit per base) for a sequence of {length} bases"
            )
        return [int(c) for c in text]
    parts = [p for p in re.split(r"[\s,]+", text) if p]
    if not all(re.fullmatch(r"\d+", p) for p in parts):
        raise ValueError(f"{where}: per-base labels must be digits or integers separated by spaces/commas")
    if len(parts) != length:
        raise ValueError(f"{where}: {len(parts)} per-base labels for a sequence of {length} bases")
    return [int(p) for p in parts]


def read_sequence_table(
    path: PathLike,
    task: str = "sequence",
    sequence_column: str | None = None,
    label_column: str | None = None,
    training: bool = True,
    *,
    config: str | None = None,
    split: str = "train",
) -> LabelledSequences:
    """Read (sequence, label) rows from a table, e.g. Genomic Benchmarks' `seq,label`: a CSV, TSV, JSON, JSON Lines
    or parquet file (optionally gzipped), or a Hub dataset id (`config`, `split`), loaded by `datasets` (`load_table`).

    The columns default to the first name among SEQUENCE_COLUMNS / LABEL_COLUMNS (case-insensitive). Sequences must
    be DNA text (IUPAC codes, as the FASTA readers require). Labels: see `encode_labels` (`training`: a table to
    train on, which needs at least two classes). Errors name the file, line (or row) and column.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    table = load_table(path, config=config, split=split)
    if not table.columns:
        raise ValueError(f"{table.name}: empty file; expected a header line such as 'seq,label'")
    seq_name = _pick_column(table, sequence_column, SEQUENCE_COLUMNS, "sequence")
    label_name = _pick_column(table, label_column, LABEL_COLUMNS, "label")
    seq_field, label_field = table.columns.index(seq_name) + 1, table.columns.index(label_name) + 1
    sequences, raw_labels, lines, rows = [], [], [], []
    for i, (seq_cell, label_cell) in enumerate(zip(table.rows[seq_name], table.rows[label_name])):
        sequence, label = _cell(seq_cell), _cell(label_cell)
        if not sequence and not label and table.kind == "csv":
            continue  # a blank line
        if not sequence:
            raise ValueError(f"{table.where(i)}: column {seq_name!r} (field {seq_field}) is empty")
        if not label:
            raise ValueError(f"{table.where(i)}: column {label_name!r} (field {label_field}) is empty")
        sequences.append(sequence)
        raw_labels.append(label)
        lines.append(table.line(i))
        rows.append(i)
    if not sequences:
        raise ValueError(f"{table.name}: no data rows after the header")
    for seq, i in zip(sequences, rows):
        check_dna(seq, f"{table.where(i)}: column {seq_name!r}")
    labels, names = encode_labels(
        raw_labels, task, [f"{table.where(i)}: column {label_name!r}" for i in rows], sequences, training
    )
    return LabelledSequences(table.name, task, sequences, labels, names, lines)


_INTEGER = re.compile(r"[+-]?\d+")


def encode_labels(
    raw_labels: Sequence[str], task: str, where: Sequence[str], sequences: Sequence[str], training: bool = True
) -> tuple[list[Any], list[str]]:
    """(labels, label names) from a table's label cells; `where[i]` names cell i (file, line, column) for errors.

    sequence: class ids 0..K-1 are taken as they are; other integers (1-based, sparse ids) and text are class names,
    numbered in sorted order (numerically for integers), so no id makes the head wider than the classes seen; at
    least two classes in a training table (`training`); decimal numbers are refused (they are a regression target: --task regression).
    token: per-base class ids (see `_token_labels`), at most MAX_CLASS_ID. regression: finite floats.
    """
    if task == "regression":
        values = []
        for raw, cell in zip(raw_labels, where):
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{cell}: regression target {raw!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{cell}: regression target {raw!r} is not finite")
            values.append(value)
        if training and len(set(values)) < 2:
            raise ValueError(f"{where[0].split(': ')[0]}: every regression target is {values[0]!r}; nothing to learn")
        return values, []
    if task == "token":
        labels = [_token_labels(raw, len(seq), cell) for raw, seq, cell in zip(raw_labels, sequences, where)]
        top = max(max(row) for row in labels)
        if top > MAX_CLASS_ID:
            row = next(i for i, r in enumerate(labels) if max(r) == top)
            raise ValueError(f"{where[row]}: per-base class id {top} is larger than {MAX_CLASS_ID}; class ids are 0..K-1")
        return labels, [str(i) for i in range(max(top + 1, 2))]

    texts = [raw.strip() for raw in raw_labels]
    if all(_INTEGER.fullmatch(t) for t in texts):
        values = sorted({int(t) for t in texts})
        if values == list(range(len(values))):
            names, labels = [str(v) for v in values], [int(t) for t in texts]
        else:
            names = [str(v) for v in values]
            index = {v: i for i, v in enumerate(values)}
            labels = [index[int(t)] for t in texts]
    else:
        for t, cell in zip(texts, where):
            if not _INTEGER.fullmatch(t):
                try:
                    float(t)
                except ValueError:
                    continue
                raise ValueError(
                    f"{cell}: label {t!r} is a decimal number; class labels are integers or names "
                    "(for a numeric target use --task regression)"
                )
        names = sorted(set(texts))
        index = {name: i for i, name in enumerate(names)}
        labels = [index[t] for t in texts]
    if training and len(names) < 2:
        raise ValueError(
            f"{where[0].split(': ')[0]}: every label is {names[0]!r}; classification needs at least two classes"
        )
    return labels, names


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A fixed random split of range(n): (train indices, eval indices), each sorted; the same for the same seed."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    n_eval = round(eval_fraction * n)
    if not 0 < n_eval < n:
        raise ValueError(f"cannot split {n} examples with eval_fraction {eval_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_eval:].tolist()), sorted(order[:n_eval].tolist())


class LabelledSequenceDataset(Dataset):
    """Tokenised examples for sequence or token classification.

    Item: {"input_ids": (n + 1,) ids with [SEP] last, "attention_mask", "labels"}: an int (task "sequence") or (n + 1,)
    ints with -100 for [SEP] (task "token"). `max_length` truncates to that many tokens ([SEP] included). With
    `rc_augment`, the item is the reverse complement with probability 1/2 (torch's global RNG); per-base labels are
    reversed with it, which assumes labels that belong to the base pair, not to a strand.
    """

    def __init__(
        self,
        data: LabelledSequences,
        tokenizer: PreTrainedTokenizerBase,
        rc_augment: bool = False,
        max_length: int | None = None,
    ) -> None:
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must leave room for a base and [SEP], got {max_length}")
        self.data = data
        self.tokenizer = tokenizer
        self.rc_augment = rc_augment
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = self.data.labels[index]
        truncate = self.max_length is not None
        encoded = self.tokenizer(self.data.sequences[index], truncation=truncate, max_length=self.max_length)
        if self.data.task == "token":
            n_bases = len(encoded["input_ids"]) - 1
            label = list(label[:n_bases]) + [-100]
        item = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": label}
        if self.rc_augment and bool(torch.rand(()) < 0.5):
            item = reverse_complement_item(item, ("labels",) if self.data.task == "token" else ())
        return item


__all__ = [
    "FastaRecord",
    "GenomeSplit",
    "GenomeWindowDataset",
    "LabelledSequenceDataset",
    "LabelledSequences",
    "MLMCollator",
    "encode_labels",
    "PremaskedDataset",
    "Region",
    "parse_region",
    "read_fasta",
    "read_fasta_files",
    "read_sequence_table",
    "reverse_complement_item",
    "softmask_weights",
    "split_indices",
    "split_records",
    "tile_windows",
]
