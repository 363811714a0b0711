"""Reading the genomic files of the applications: FASTA (streamed, or a reference with random access), BED regions
and VCF records, with pysam doing the parsing.

Coordinates are 0-based and half-open inside the library (`start`, `end`); VCF `pos` is kept 1-based as in the file.
Bad input raises `GenomeFileError` (a ValueError) whose message starts with `PATH:LINE:` where a line is to blame, or
FileNotFoundError for a missing file. Missing optional dependencies raise `MissingExtraError` naming the [apps] extra.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import extras
from ..extras import MissingExtraError

PathLike = str | os.PathLike[str]

# IUPAC nucleotide codes and alignment gaps; the tokenizer maps everything but A C G T N to [UNK].
_SEQUENCE_CHARS = "ACGTUNRYSWKMBDHV-"
_BAD_SEQUENCE_CHAR = re.compile(f"[^{_SEQUENCE_CHARS}{_SEQUENCE_CHARS.lower()}]")
# fill-mask input may also hold the literal [MASK] token.
_BAD_MASKED_SEQUENCE_CHAR = re.compile(rf"\[MASK\]|([^{_SEQUENCE_CHARS}{_SEQUENCE_CHARS.lower()}])")


class GenomeFileError(ValueError):
    """A FASTA, BED or VCF file that cannot be used; the message names the file and, where it can, the line."""


def require(module: str, purpose: str) -> Any:
    """Import an optional dependency of the [apps] extra, or raise MissingExtraError saying what needs it."""
    return extras.require(module, purpose, "apps")


def _check_readable(path: Path, kind: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    if not path.is_file():
        raise GenomeFileError(f"{path}: not a regular file (a {kind} file was expected)")
    if not os.access(path, os.R_OK):
        raise GenomeFileError(f"{path}: cannot be read (permission denied)")


def _open_text(path: Path) -> io.TextIOBase:
    """A text handle on a plain or gzip/bgzip-compressed file (detected from the magic bytes, not the name)."""
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", errors="replace") if gzipped else open(path, errors="replace")


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
    with _open_text(path) as fh:
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
        with _open_text(path) as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    if not line.startswith(">"):
                        raise GenomeFileError(
                            f"{path}:{number}: not FASTA: expected a '>' header line, got {line.strip()[:40]!r}"
                        )
                    break
    except (OSError, EOFError) as err:
        raise GenomeFileError(f"{path}: cannot be read as (gzipped) FASTA text: {err}") from None

    pysam = require("pysam", "reading FASTA files")
    bad_char = _BAD_MASKED_SEQUENCE_CHAR if allow_mask_token else _BAD_SEQUENCE_CHAR
    count = 0
    with _quiet_htslib(), pysam.FastxFile(str(path)) as fh:
        try:
            for index, entry in enumerate(fh):
                name, sequence = entry.name, entry.sequence or ""
                if not name:
                    raise GenomeFileError(f"{path}:{_fasta_line_of(path, index, None)}: FASTA header without a name")
                if not sequence:
                    line = _fasta_line_of(path, index, None)
                    raise GenomeFileError(f"{path}:{line}: record {name!r} has no sequence")
                for match in bad_char.finditer(sequence):
                    char = match.group(1) if allow_mask_token else match.group(0)
                    if char is not None:
                        line = _fasta_line_of(path, index, char)
                        raise GenomeFileError(
                            f"{path}:{line}: invalid character {char!r} in the sequence of record {name!r} "
                            f"(expected IUPAC nucleotide codes{' or [MASK]' if allow_mask_token else ''})"
                        )
                count += 1
                yield SequenceRecord(name, sequence)
        except GenomeFileError:
            raise
        except (OSError, ValueError) as err:
            # pysam's own parse errors, e.g. a gzip stream that ends early, say neither record nor line.
            raise GenomeFileError(f"{path}: cannot be read as FASTA after record {count}: {err}") from None
    if count == 0:
        raise GenomeFileError(f"{path}: no FASTA records")


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
                if record.name in self._sequences:
                    raise GenomeFileError(f"{self.path}: contig name {record.name!r} appears more than once")
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


@dataclass(frozen=True)
class BedRegion:
    """A BED interval [start, end) (0-based, half-open), its name (4th column) if any, and its line in the file."""

    chrom: str
    start: int
    end: int
    name: str | None
    line: int

    @property
    def label(self) -> str:
        """The name column, else samtools' 1-based inclusive `chrom:start-end`."""
        return self.name or f"{self.chrom}:{self.start + 1}-{self.end}"


def read_bed(path: PathLike) -> list[BedRegion]:
    """The intervals of a BED file (plain or gzipped; tab-separated, whitespace accepted; 'track', 'browser' and '#'
    lines skipped). Columns past the 4th (score, strand, ...) are ignored. Errors name the file and line."""
    path = Path(path)
    _check_readable(path, "BED")
    regions = []
    try:
        with _open_text(path) as fh:
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
                regions.append(BedRegion(chrom, start, end, name, number))
    except OSError as err:
        raise GenomeFileError(f"{path}: cannot be read as (gzipped) BED text: {err}") from None
    if not regions:
        raise GenomeFileError(f"{path}: no BED intervals")
    return regions


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
    with _open_text(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            count += 1
    return count


def _vcf_line_text(path: Path, line: int) -> str:
    with _open_text(path) as fh:
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
    with _quiet_htslib():
        try:
            vcf = pysam.VariantFile(str(path))
        except (OSError, ValueError) as err:
            raise GenomeFileError(f"{path}: not a readable VCF/BCF file ({err})") from None
    with vcf:
        if label_key is not None and label_key not in vcf.header.info:
            declared = ", ".join(vcf.header.info) or "none"
            raise GenomeFileError(
                f"{path}: INFO key {label_key!r} is not declared in the header (declared: {declared})"
            )
        # BCF is binary: its records are numbered instead of its lines.
        bcf = vcf.is_bcf
        line = 0 if bcf else _vcf_header_lines(path)
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
                text = _vcf_line_text(path, line)
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


__all__ = [
    "BedRegion",
    "GenomeFileError",
    "MissingExtraError",
    "Reference",
    "SequenceRecord",
    "VcfRecord",
    "read_bed",
    "read_fasta",
    "read_vcf",
    "require",
]
