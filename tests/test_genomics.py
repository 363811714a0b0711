"""caduceus_hf.genomics: the one I/O layer of apps, training and conversion (tiling rules, DNA text, writes)."""

from __future__ import annotations

import gzip
import os

import pytest

import numpy as np

from caduceus_hf.genomics import (
    GenomeFileError,
    Interval,
    atomic_write,
    check_dna,
    count_fasta_windows,
    fasta_windows,
    is_bgzf,
    iter_bed,
    parse_interval,
    read_fasta,
    tile,
)


def test_tile_tail_rules():
    # Embedding covers every base (short last window); training windows are all full-size.
    assert tile(45, 20) == [(0, 20), (20, 40), (40, 45)]
    assert tile(45, 20, partial_tail=False) == [(0, 20), (20, 40)]
    assert tile(50, 20, 10, partial_tail=False) == [(0, 20), (10, 30), (20, 40), (30, 50)]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="window must be a positive integer"):
            tile(10, bad)


def test_intervals_print_and_parse_as_samtools():
    region = parse_interval("chr1:1,001-2,000")
    assert region == Interval("chr1", 1000, 2000) and len(region) == 1000 and str(region) == "chr1:1001-2000"
    with pytest.raises(ValueError, match="need 1 <= start <= end"):
        parse_interval("chr1:0-5")


def test_dna_text_rule_is_one_rule():
    assert check_dna("ACGTNacgtn-RY", "x") == "ACGTNacgtn-RY"
    assert check_dna("AC[MASK]T", "x", allow_mask_token=True)
    with pytest.raises(GenomeFileError, match=r"cell: invalid character 'Z' at position 3"):
        check_dna("ACZ", "cell")
    with pytest.raises(GenomeFileError, match=r"invalid character '\['"):
        check_dna("AC[MASK]T", "x")
    with pytest.raises(GenomeFileError, match="empty sequence"):
        check_dna("", "x")


def test_atomic_write_leaves_nothing_on_failure_and_respects_the_umask(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    previous = os.umask(0o077)
    try:
        with atomic_write(target) as fh:
            fh.write(b"done")
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"done" and target.stat().st_mode & 0o777 == 0o600


def test_gzip_and_bgzip_fasta_read_and_corrupt_gzip_is_named(tmp_path):
    pysam = pytest.importorskip("pysam")
    plain = tmp_path / "a.fa"
    plain.write_text(">a\nACGT\n>b\nGG\n")
    gz = tmp_path / "a.fa.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    bgz = tmp_path / "b.fa.gz"
    pysam.tabix_compress(str(plain), str(bgz))
    assert is_bgzf(bgz) and not is_bgzf(gz)
    for path in (plain, gz, bgz):
        assert [(r.name, r.sequence) for r in read_fasta(path)] == [("a", "ACGT"), ("b", "GG")]
    corrupt = tmp_path / "c.fa.gz"
    corrupt.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(GenomeFileError, match=r"c\.fa\.gz: cannot be read"):
        list(read_fasta(corrupt))


@pytest.mark.parametrize("window, stride", [(None, None), (1, None), (7, None), (10, 3), (10, 25), (64, 64)])
def test_streamed_windows_are_the_tiles_of_the_records(tmp_path, window, stride):
    rng = np.random.default_rng(window or 0)
    records = [(f"r{i}", "".join(rng.choice(list("ACGTacgtN"), n))) for i, n in enumerate([1, 9, 10, 64, 65, 203])]
    path = tmp_path / "x.fa.gz"
    with gzip.open(path, "wt") as fh:
        for i, (name, seq) in enumerate(records):
            width = 5 + 13 * i  # line lengths that do not divide the windows
            fh.write(f">{name} description\n" + "".join(seq[j : j + width] + "\r\n" for j in range(0, len(seq), width)))
    assert [r.sequence for r in read_fasta(path)] == [seq for _, seq in records]
    got = [(w.name, w.start, w.end, w.sequence) for w in fasta_windows(path, window, stride)]
    expected = [(name, a, b, seq[a:b]) for name, seq in records for a, b in tile(len(seq), window, stride)]
    assert got == expected
    assert count_fasta_windows(path, window, stride) == len(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("junk\n>a\nACGT\n", r"bad\.fa:1: not FASTA: expected a '>' header line"),
        ("\n>a\nACGT\nAC1T\n", r"bad\.fa:4: invalid character '1' in the sequence of record 'a'"),
        (">a\nACGT\n>\nACGT\n", r"bad\.fa:3: FASTA header without a name"),
        (">a\nACGT\n>b\n>c\nA\n", r"bad\.fa:3: record 'b' has no sequence"),
        (">a\nACGT\n>a\nAC\n", r"bad\.fa:3: record name 'a' appears more than once"),
        ("", r"bad\.fa: no FASTA records"),
    ],
)
def test_streamed_windows_check_the_fasta_like_read_fasta(tmp_path, text, message):
    path = tmp_path / "bad.fa"
    path.write_text(text)
    with pytest.raises(GenomeFileError, match=message):
        list(read_fasta(path))
    with pytest.raises(GenomeFileError, match=message):
        list(fasta_windows(path, 2))


def test_streamed_bed_names_the_line_of_a_bad_interval_after_good_ones(tmp_path):
    path = tmp_path / "b.bed"
    path.write_text("chr1\t0\t10\tx\nchr1\t5\t3\n")
    stream = iter_bed(path)
    assert next(stream) == Interval("chr1", 0, 10, "x", 1)
    with pytest.raises(GenomeFileError, match=r"b\.bed:2: BED interval needs 0 <= start < end"):
        next(stream)
