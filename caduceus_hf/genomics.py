"""Genomics file I/O for every part of caduceus-hf (apps, training, conversion): opening plain / gzip / bgzip text,
FASTA (streamed, or a reference with random access), BED and VCF reading (pysam parses), intervals and tiling, DNA text
validation, and atomic writes of output files and directories.

Coordinates are 0-based and half-open inside the library (`Interval.start`, `end`) and written as samtools does,
`contig:start-end`, 1-based inclusive; VCF `pos` is kept 1-based as in the file. Bad input raises `GenomeFileError` (a
ValueError) whose message starts with `PATH:LINE:` where a line is to blame, or FileNotFoundError for a missing file.
Missing optional dependencies raise `MissingExtraError` naming the [apps] extra.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import extras
from .extras import MissingExtraError

PathLike = str | os.PathLike[str]

# IUPAC nucleotide codes and alignment gaps; the tokenizer maps everything but A C G T N to [UNK].
DNA_CHARS = "ACGTUNRYSWKMBDHV-"
MASK_TOKEN = "[MASK]"
# Escaped: an unescaped '-' between the cases would make a range ('V-a') that lets W..Z, [, ], ^, _ and ` through.
_DNA_CLASS = re.escape(DNA_CHARS + DNA_CHARS.lower())
_BAD_SEQUENCE_CHAR = re.compile(f"[^{_DNA_CLASS}]")
# fill-mask input may also hold the literal [MASK] token.
_BAD_MASKED_SEQUENCE_CHAR = re.compile(rf"\[MASK\]|([^{_DNA_CLASS}])")


class GenomeFileError(ValueError):
    """A FASTA, BED or VCF file that cannot be used; the message names the file and, where it can, the line."""


def require(module: str, purpose: str) -> Any:
    """Import an optional dependency of the [apps] extra, or raise MissingExtraError saying what needs it."""
    return extras.require(module, purpose, "apps")


def invalid_dna_character(sequence: str, allow_mask_token: bool = False) -> tuple[int, str] | None:
    """(0-based index, character) of the first character of `sequence` that is not an IUPAC nucleotide code or '-'
    (nor part of a literal [MASK] when `allow_mask_token`), else None. The one rule every entry point applies."""
    pattern = _BAD_MASKED_SEQUENCE_CHAR if allow_mask_token else _BAD_SEQUENCE_CHAR
    for match in pattern.finditer(sequence):
        char = match.group(1) if allow_mask_token else match.group(0)
        if char is not None:
            return match.start(), char
    return None


def check_dna(sequence: str, where: str, allow_mask_token: bool = False) -> str:
    """`sequence` if it is non-empty DNA text (see `invalid_dna_character`), else a GenomeFileError starting with
    `where` (a file and line, an option, a table cell)."""
    if not isinstance(sequence, str) or not sequence:
        raise GenomeFileError(f"{where}: empty sequence")
    bad = invalid_dna_character(sequence, allow_mask_token)
    if bad is not None:
        index, char = bad
        raise GenomeFileError(
            f"{where}: invalid character {char!r} at position {index + 1} (expected IUPAC nucleotide codes"
            f"{' or [MASK]' if allow_mask_token else ''})"
        )
    return sequence


def _check_readable(path: Path, kind: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    if not path.is_file():
        raise GenomeFileError(f"{path}: not a regular file (a {kind} file was expected)")
    if not os.access(path, os.R_OK):
        raise GenomeFileError(f"{path}: cannot be read (permission denied)")


def check_input_file(path: PathLike, kind: str) -> Path:
    """`path` if it is a readable regular file, else FileNotFoundError or GenomeFileError naming it as a `kind` file."""
    _check_readable(Path(path), kind)
    return Path(path)


def is_gzipped(path: PathLike) -> bool:
    """Whether a file starts with the gzip magic bytes (plain gzip and bgzip alike)."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def is_bgzf(path: PathLike) -> bool:
    """Whether a gzip file is BGZF (bgzip's blocked gzip, which htslib can seek in): its header carries the 'BC'
    extra subfield."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    return len(head) >= 14 and head[:2] == b"\x1f\x8b" and bool(head[3] & 4) and head[12:14] == b"BC"


def open_text(path: PathLike, newline: str | None = None) -> io.TextIOBase:
    """A text handle on a plain, gzip or bgzip file (detected from the magic bytes, not the name). Undecodable bytes
    are replaced; a corrupt compressed stream raises OSError/EOFError while reading, which `read_errors` words."""
    path = Path(path)
    if is_gzipped(path):
        return gzip.open(path, "rt", errors="replace", newline=newline)
    return open(path, errors="replace", newline=newline)


@contextlib.contextmanager
def read_errors(path: PathLike, kind: str) -> Iterator[None]:
    """Turn the errors of reading a damaged file (a truncated or corrupt gzip stream, an I/O error) into a
    GenomeFileError naming the file."""
    try:
        yield
    except GenomeFileError:
        raise
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise GenomeFileError(f"{path}: cannot be read as (gzipped) {kind} text: {err}") from None


@contextlib.contextmanager
def _quiet_htslib() -> Iterator[None]:
    """Silence htslib's own stderr messages: errors are reported once, with file and line, by this module."""
    pysam = require("pysam", "reading genome files")
    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


# --- FASTA ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceRecord:
    """One FASTA record: its name (the header up to the first whitespace) and sequence (case kept)."""

    name: str
    sequence: str


def _fasta_line_of(path: Path, record_index: int, bad: str | None) -> int:
    """1-based line of record `record_index`'s header, or, with `bad`, of its first sequence line containing `bad`.

    Only called to word an error message, so re-reading the file is fine.
    """
    header_line, seen = 0, -1
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if line.startswith(">"):
                seen += 1
                if seen > record_index:
                    break
                header_line = number
            elif seen == record_index and bad is not None and bad in line.rstrip("\r\n"):
                return number
    return header_line


def read_fasta(path: PathLike, allow_mask_token: bool = False) -> Iterator[SequenceRecord]:
    """Stream the records of a FASTA file (plain, gzip or bgzip), parsed by pysam.FastxFile and checked.

    Checks, each failing with a GenomeFileError naming the file and line: the first non-blank line is a '>' header;
    every header has a name; every record has a sequence; sequence lines hold only IUPAC nucleotide codes or '-'
    (and the literal token "[MASK]" when `allow_mask_token`). At least one record must be present.
    """
    path = Path(path)
    _check_readable(path, "FASTA")
    try:
        with open_text(path) as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    if not line.startswith(">"):
                        raise GenomeFileError(
                            f"{path}:{number}: not FASTA: expected a '>' header line, got {line.strip()[:40]!r}"
                        )
                    break
    except (OSError, EOFError, zlib.error) as err:
        raise GenomeFileError(f"{path}: cannot be read as (gzipped) FASTA text: {err}") from None

    pysam = require("pysam", "reading FASTA files")
    count = 0
    seen: set[str] = set()
    with _quiet_htslib(), pysam.FastxFile(str(path)) as fh:
        try:
            for index, entry in enumerate(fh):
                name, sequence = entry.name, entry.sequence or ""
                if not name:
                    raise GenomeFileError(f"{path}:{_fasta_line_of(path, index, None)}: FASTA header without a name")
                if name in seen:
                    line = _fasta_line_of(path, index, None)
                    raise GenomeFileError(f"{path}:{line}: record name {name!r} appears more than once")
                if not sequence:
                    line = _fasta_line_of(path, index, None)
                    raise GenomeFileError(f"{path}:{line}: record {name!r} has no sequence")
                bad = invalid_dna_character(sequence, allow_mask_token)
                if bad is not None:
                    line = _fasta_line_of(path, index, bad[1])
                    raise GenomeFileError(
                        f"{path}:{line}: invalid character {bad[1]!r} in the sequence of record {name!r} "
                        f"(expected IUPAC nucleotide codes{' or [MASK]' if allow_mask_token else ''})"
                    )
                seen.add(name)
                count += 1
                yield SequenceRecord(name, sequence)
        except GenomeFileError:
            raise
        except (OSError, ValueError, EOFError, zlib.error) as err:
            # pysam's own parse errors, e.g. a gzip stream that ends early, say neither record nor line.
            raise GenomeFileError(f"{path}: cannot be read as FASTA after record {count}: {err}") from None
    if count == 0:
        raise GenomeFileError(f"{path}: no FASTA records")


@dataclass(frozen=True)
class FastaWindow:
    """Bases [start, end) (0-based, half-open) of FASTA record `name`, and their text (case kept)."""

    name: str
    start: int
    end: int
    sequence: str


def fasta_windows(path: PathLike, window: int | None, stride: int | None = None) -> Iterator[FastaWindow]:
    """Stream the windows `tile(len(record), window, stride)` of every record of a FASTA file (plain, gzip or bgzip),
    in file order, holding at most about `window` + `stride` bases and one line at a time (window None: each whole
    record, which is then held in memory).

    The same checks as `read_fasta`, with file and line in every error: a '>' header first, named headers, unique
    names, no record without bases, only IUPAC nucleotide codes or '-' in sequence lines, and at least one record.
    """
    path = Path(path)
    _check_readable(path, "FASTA")
    tile(1, window, stride)  # the window options, before reading anything
    step = window if stride is None else stride
    seen: set[str] = set()
    name: str | None = None
    header_line = 0
    buffer, offset, length, next_start, last_end = "", 0, 0, 0, -1

    def finish() -> Iterator[FastaWindow]:
        # The record's tail: at most one window, ending at the record's end (tile's partial_tail).
        if length == 0:
            raise GenomeFileError(f"{path}:{header_line}: record {name!r} has no sequence")
        if window is None:
            yield FastaWindow(name, 0, length, buffer)
            return
        if last_end < length and next_start < length:
            yield FastaWindow(name, next_start, length, buffer[next_start - offset :])

    with read_errors(path, "FASTA"), open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if not text:
                continue
            if text.startswith(">"):
                if name is not None:
                    yield from finish()
                name = text[1:].split(maxsplit=1)[0] if text[1:].strip() else ""
                if not name:
                    raise GenomeFileError(f"{path}:{number}: FASTA header without a name")
                if name in seen:
                    raise GenomeFileError(f"{path}:{number}: record name {name!r} appears more than once")
                seen.add(name)
                header_line = number
                buffer, offset, length, next_start, last_end = "", 0, 0, 0, -1
                continue
            if name is None:
                raise GenomeFileError(
                    f"{path}:{number}: not FASTA: expected a '>' header line, got {text.strip()[:40]!r}"
                )
            bad = invalid_dna_character(text)
            if bad is not None:
                raise GenomeFileError(
                    f"{path}:{number}: invalid character {bad[1]!r} in the sequence of record {name!r} "
                    "(expected IUPAC nucleotide codes)"
                )
            buffer += text
            length += len(text)
            if window is None:
                continue
            while next_start + window <= length:
                lo = next_start - offset
                yield FastaWindow(name, next_start, next_start + window, buffer[lo : lo + window])
                last_end = next_start + window
                next_start += step
            # Keep only the bases from the next window's start on (all of them were read when stride > window).
            drop = min(next_start, length) - offset
            if drop > 0:
                buffer, offset = buffer[drop:], offset + drop
    if name is None:
        raise GenomeFileError(f"{path}: no FASTA records")
    yield from finish()


def count_fasta_windows(path: PathLike, window: int | None, stride: int | None = None) -> int:
    """How many windows `fasta_windows` yields, from the record lengths (PATH.fai when present, else one pass)."""
    fai = Path(f"{path}.fai")
    if fai.is_file():
        with open(fai) as fh:
            lengths = [int(line.split("\t")[1]) for line in fh if line.strip()]
    else:
        lengths, length = [], None
        with read_errors(path, "FASTA"), open_text(path) as fh:
            for line in fh:
                if line.startswith(">"):
                    if length is not None:
                        lengths.append(length)
                    length = 0
                elif length is not None:
                    length += len(line.rstrip("\r\n"))
        if length is not None:
            lengths.append(length)
    if window is None:
        return len(lengths)
    step = window if stride is None else stride
    # tile(): starts 0, step, ... below the length, stopping after the first window that reaches the end.
    return sum(min(-(-length // step), max(0, -(-(length - window) // step)) + 1) for length in lengths if length)


class Reference:
    """Random access to the contigs of a reference FASTA.

    With a samtools index next to the file (PATH.fai, and PATH.gzi for bgzip) the contigs are read on demand through
    pysam.FastaFile; otherwise the whole file is read into memory with `read_fasta` (fine for bacterial, organellar
    and small genomes; index large ones with `samtools faidx`). Contig names must be unique.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        _check_readable(self.path, "FASTA")
        self._indexed = None
        self._sequences: dict[str, str] = {}
        if Path(f"{self.path}.fai").is_file():
            pysam = require("pysam", "reading indexed FASTA files")
            try:
                with _quiet_htslib():
                    self._indexed = pysam.FastaFile(str(self.path))
            except (OSError, ValueError) as err:
                raise GenomeFileError(f"{self.path}: cannot be opened with its index {self.path}.fai: {err}") from None
            self.lengths = dict(zip(self._indexed.references, self._indexed.lengths))
        else:
            for record in read_fasta(self.path):
                self._sequences[record.name] = record.sequence
            self.lengths = {name: len(seq) for name, seq in self._sequences.items()}

    def __contains__(self, contig: str) -> bool:
        return contig in self.lengths

    def length_of(self, contig: str, where: str) -> int:
        """The length of `contig`, or a GenomeFileError starting with `where` (the file and line that named it)."""
        if contig not in self.lengths:
            names = list(self.lengths)
            raise GenomeFileError(
                f"{where}: contig {contig!r} is not in the reference {self.path} "
                f"(contigs: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''})"
            )
        return self.lengths[contig]

    def fetch(self, contig: str, start: int, end: int) -> str:
        """Bases [start, end) of `contig` (0-based, half-open, within the contig), case as in the file."""
        length = self.lengths[contig]
        if not 0 <= start <= end <= length:
            raise ValueError(f"{contig}:{start}-{end} is outside the contig (length {length})")
        if self._indexed is not None:
            return self._indexed.fetch(contig, start, end)
        return self._sequences[contig][start:end]

    def fetch_circular(self, contig: str, start: int, length: int) -> str:
        """`length` bases from `start` on a circular contig, wrapping around its end (start may be negative)."""
        size = self.lengths[contig]
        if not 0 < length <= size:
            raise ValueError(f"a circular window of {length} bases does not fit contig {contig!r} of {size} bases")
        start %= size
        end = start + length
        if end <= size:
            return self.fetch(contig, start, end)
        return self.fetch(contig, start, size) + self.fetch(contig, 0, end - size)

    def close(self) -> None:
        if self._indexed is not None:
            self._indexed.close()

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- BED --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Interval:
    """A stretch [start, end) of a contig (0-based, half-open), optionally named (a BED name column) and with the
    file line it came from. str() is samtools' 1-based inclusive `contig:start-end`."""

    contig: str
    start: int
    end: int
    name: str | None = None
    line: int | None = None

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.contig}:{self.start + 1}-{self.end}"

    @property
    def label(self) -> str:
        """The name, else `str(self)`."""
        return self.name or str(self)


_REGION = re.compile(r"^(?P<name>.+):(?P<start>[\d,]+)-(?P<end>[\d,]+)$")


def parse_interval(text: str) -> Interval:
    """Parse samtools' `contig:start-end` (1-based, inclusive; commas in numbers allowed) into an Interval."""
    match = _REGION.match(text.strip())
    if not match:
        raise ValueError(f"region {text!r} is not of the form name:start-end (1-based, inclusive)")
    start, end = (int(match[key].replace(",", "")) for key in ("start", "end"))
    if start < 1 or end < start:
        raise ValueError(f"region {text!r}: need 1 <= start <= end")
    return Interval(match["name"], start - 1, end)


def tile(length: int, window: int | None, stride: int | None = None, partial_tail: bool = True) -> list[tuple[int, int]]:
    """[start, end) windows over `length` bases, every `stride` (default `window`) bases from 0.

    partial_tail True (embedding a whole sequence): every base is covered; the last window ends at `length` and may
    be shorter. False (training windows of one size): only full windows; a tail shorter than a window is left out.
    window None: the whole sequence as one window.
    """
    return list(iter_tile(length, window, stride, partial_tail))


def iter_tile(
    length: int, window: int | None, stride: int | None = None, partial_tail: bool = True
) -> Iterator[tuple[int, int]]:
    """The windows of `tile`, one at a time (a long region's windows are never all held)."""
    if window is None:
        if stride is not None:
            raise ValueError("a stride needs a window")
        if length > 0:
            yield 0, length
        return
    stride = window if stride is None else stride
    check_positive(window, "window")
    check_positive(stride, "stride")
    if not partial_tail:
        for start in range(0, length - window + 1, stride):
            yield start, start + window
        return
    for start in range(0, length, stride):
        yield start, min(start + window, length)
        if start + window >= length:
            break


def check_positive(value: Any, name: str) -> int:
    """`value` if it is a positive integer, else a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def iter_bed(path: PathLike) -> Iterator[Interval]:
    """Stream the intervals of a BED file (plain or gzipped; tab-separated, whitespace accepted; 'track', 'browser'
    and '#' lines skipped). Columns past the 4th (score, strand, ...) are ignored. Errors name the file and line."""
    path = Path(path)
    _check_readable(path, "BED")
    count = 0
    with read_errors(path, "BED"), open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if not text.strip() or text.startswith(("#", "track", "browser")):
                continue
            fields = text.split("\t") if "\t" in text else text.split()
            if len(fields) < 3:
                raise GenomeFileError(f"{path}:{number}: a BED line needs chrom, start and end, got {text[:60]!r}")
            chrom, start_text, end_text = (f.strip() for f in fields[:3])
            try:
                start, end = int(start_text), int(end_text)
            except ValueError:
                raise GenomeFileError(
                    f"{path}:{number}: BED start and end must be integers, got {start_text!r} and {end_text!r}"
                ) from None
            if start < 0 or end <= start:
                raise GenomeFileError(f"{path}:{number}: BED interval needs 0 <= start < end, got {start}-{end}")
            name = fields[3].strip() if len(fields) > 3 and fields[3].strip() not in ("", ".") else None
            count += 1
            yield Interval(chrom, start, end, name, number)
    if count == 0:
        raise GenomeFileError(f"{path}: no BED intervals")


def read_bed(path: PathLike) -> list[Interval]:
    """The intervals of a BED file, as a list (see `iter_bed`)."""
    return list(iter_bed(path))


def count_lines(path: PathLike, skip_prefix: str = "#") -> int:
    """Non-blank lines of a plain or gzipped text file that do not start with `skip_prefix` (a progress bar's total:
    the records of a text VCF or the lines of a BED file)."""
    count = 0
    with read_errors(path, "text"), open_text(path) as fh:
        for line in fh:
            if line.strip() and not line.startswith(skip_prefix):
                count += 1
    return count


# --- VCF --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VcfRecord:
    """One VCF data line: 1-based `pos`, REF, ALT alleles, ID ("." when missing), the label INFO value as text
    (None when no label key is asked for or the record lacks it) and the line number in the file."""

    chrom: str
    pos: int
    id: str
    ref: str
    alts: tuple[str, ...]
    label: str | None
    line: int


def _vcf_header_lines(path: Path) -> int:
    """Lines before the first record of a text VCF (htslib's header may hold lines the file does not, e.g. PASS)."""
    count = 0
    with open_text(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            count += 1
    return count


def _vcf_line_text(path: Path, line: int) -> str:
    with open_text(path) as fh:
        for number, text in enumerate(fh, start=1):
            if number == line:
                return text.rstrip("\r\n")
    return ""


def _label_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def read_vcf(path: PathLike, label_key: str | None = None) -> Iterator[VcfRecord]:
    """Stream the records of a VCF (plain, bgzip or BCF) with pysam.VariantFile.

    `label_key` names an INFO field to carry along (it must be declared in the header). A record htslib cannot parse
    raises GenomeFileError naming the file, the line and its text. Line numbers assume no blank lines in the body;
    for BCF, `line` is the record's number.
    """
    path = Path(path)
    _check_readable(path, "VCF")
    pysam = require("pysam", "reading VCF files")
    with contextlib.ExitStack() as stack:
        source = path
        if is_gzipped(path) and not is_bgzf(path):
            # htslib reads only bgzip-compressed VCF; a plain gzip one is decompressed to a temporary file.
            plain = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".vcf"))
            with read_errors(path, "VCF"), gzip.open(path, "rb") as fh:
                shutil.copyfileobj(fh, plain)
            plain.flush()
            source = Path(plain.name)
        yield from _read_vcf(path, source, label_key, pysam)


def _read_vcf(path: Path, source: Path, label_key: str | None, pysam: Any) -> Iterator[VcfRecord]:
    with _quiet_htslib():
        try:
            vcf = pysam.VariantFile(str(source))
        except (OSError, ValueError, NotImplementedError) as err:
            raise GenomeFileError(f"{path}: not a readable VCF/BCF file ({err})") from None
    with vcf:
        if label_key is not None and label_key not in vcf.header.info:
            declared = ", ".join(vcf.header.info) or "none"
            raise GenomeFileError(
                f"{path}: INFO key {label_key!r} is not declared in the header (declared: {declared})"
            )
        # BCF is binary: its records are numbered instead of its lines.
        bcf = vcf.is_bcf
        line = 0 if bcf else _vcf_header_lines(source)
        records = iter(vcf)
        while True:
            line += 1
            try:
                with _quiet_htslib():
                    record = next(records)
            except StopIteration:
                return
            except (OSError, ValueError) as err:
                if bcf:
                    raise GenomeFileError(f"{path}: record {line}: malformed BCF record ({err})") from None
                text = _vcf_line_text(source, line)
                raise GenomeFileError(f"{path}:{line}: malformed VCF record ({err}): {text[:100]!r}") from None
            label = _label_text(record.info.get(label_key)) if label_key is not None else None
            yield VcfRecord(
                chrom=record.chrom,
                pos=record.pos,
                id=record.id or ".",
                ref=record.ref or "",
                alts=tuple(record.alts or ()),
                label=label,
                line=line,
            )


# --- writing ---------------------------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_file(path: PathLike, formats: tuple[str, ...] | None = None, option: str = "--out") -> Path:
    """Check before any work that `path` can be written: its directory exists, it is not a directory, and its
    extension is one of `formats` (lower case, with the dot). Raises ValueError naming the option."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a directory, not a file")
    if formats is not None and path.suffix.lower() not in formats:
        raise ValueError(
            f"{option} {path}: unknown output format {path.suffix or '(no extension)'!r}; use one of {', '.join(formats)}"
        )
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise ValueError(f"{option} {path}: the output directory {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: the output directory {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[IO[bytes]]:
    """Write a file under a temporary name in its directory and rename it into place on success, with the
    permissions a plain open() would give (0666 less the umask); on any error nothing is left behind."""
    path = Path(path)
    check_output_file(path, option="output")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_file_atomically(path: PathLike, data: bytes) -> Path:
    with atomic_write(path) as fh:
        fh.write(data)
    return Path(path)


def check_output_directory(path: PathLike, force: bool, option: str = "destination") -> Path:
    """Check before any work that the directory `path` can be created (or, with force, replaced)."""
    path = Path(path)
    if path.exists() and not force:
        raise ValueError(f"{option} {path} already exists; pass --force to replace it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{option} {path}: {parent} is not writable")
            break
    return path


def normalise_permissions(directory: PathLike) -> None:
    """Give the files under `directory` the permissions a plain open() would (0666 less the umask; 0777 for
    directories): some writers (temporary files, safetensors) create them 0600."""
    mask = _umask()
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_directory(path: PathLike, force: bool = False) -> Iterator[Path]:
    """Fill a temporary sibling directory, then move it to `path` (replacing what was there with force: a file or a
    directory, removed only after the new one is in place). Normal permissions (0777 less the umask); on any error
    nothing is left behind."""
    path = check_output_directory(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        normalise_permissions(tmp)
        if not path.exists() and not path.is_symlink():
            os.rename(tmp, path)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.rename(path, old / "old")
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = [
    "DNA_CHARS",
    "GenomeFileError",
    "FastaWindow",
    "Interval",
    "atomic_directory",
    "atomic_write",
    "check_dna",
    "check_input_file",
    "check_output_directory",
    "check_output_file",
    "check_positive",
    "count_fasta_windows",
    "count_lines",
    "fasta_windows",
    "invalid_dna_character",
    "normalise_permissions",
    "open_text",
    "parse_interval",
    "read_errors",
    "tile",
    "write_file_atomically",
    "MissingExtraError",
    "Reference",
    "SequenceRecord",
    "VcfRecord",
    "iter_bed",
    "iter_tile",
    "read_bed",
    "read_fasta",
    "read_vcf",
    "require",
]
