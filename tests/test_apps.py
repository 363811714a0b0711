"""caduceus_hf.apps: embeddings, zero-shot variant scoring, fill-mask, the file readers, the CLI and the bundled demo
model.

Tiny perturbed models (d_model 16, 2 layers) are saved to temporary directories; FASTA, BED and VCF inputs are
small synthetic files written in tmp_path. Numbers are checked against independent computations (a masked forward
pass by hand, single-sequence embeddings), not only for shape.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from conftest import save_tiny_mlm, tiny_config

from caduceus_hf import CaduceusForMaskedLM, CaduceusTokenizer
from caduceus_hf.apps import (
    GenomeFileError,
    ModelLoadError,
    Reference,
    default_model_path,
    embed_fasta,
    embed_sequences,
    fill_mask,
    fill_mask_fasta,
    load_model,
    read_bed,
    read_fasta,
    read_vcf,
    score_variants,
)
from caduceus_hf.genomics import tile
from caduceus_hf.apps.variants import variant_window
from caduceus_hf.cli import main as cli_main
from caduceus_hf.dna import VOCAB, reverse_complement

GENOME = "".join(np.random.default_rng(0).choice(list("ACGT"), 300))
CHR2 = "".join(np.random.default_rng(1).choice(list("ACGT"), 80))
VCF_HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=chr1,length=300>\n"
    "##contig=<ID=chr2,length=80>\n"
    '##INFO=<ID=LABEL,Number=1,Type=Integer,Description="1 pathogenic, 0 benign">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)


@pytest.fixture(scope="module", params=[False, True], ids=["ph", "ps"])
def model_dir(request, tmp_path_factory):
    """A perturbed tiny MLM (Ph or PS) saved with its tokenizer."""
    return save_tiny_mlm(tmp_path_factory.mktemp("ps" if request.param else "ph"), rcps=request.param)


@pytest.fixture(scope="module")
def ph_dir(tmp_path_factory):
    return save_tiny_mlm(tmp_path_factory.mktemp("ph-only"), seed=1)


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "ref.fa"
    lines = [">chr1 test contig"] + [GENOME[i : i + 60] for i in range(0, len(GENOME), 60)]
    lines += [">chr2"] + [CHR2[i : i + 60] for i in range(0, len(CHR2), 60)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_vcf(path, rows):
    path.write_text(VCF_HEADER + "".join("\t".join(map(str, row)) + "\n" for row in rows))
    return path


def snv(pos, ref=None, alt=None, chrom="chr1", vid=".", info="."):
    seq = GENOME if chrom == "chr1" else CHR2
    ref = ref or seq[pos - 1]
    alt = alt or next(b for b in "ACGT" if b != ref)
    return (chrom, pos, vid, ref, alt, ".", ".", info)


# --- embeddings -------------------------------------------------------------------------------------------------------


def test_tile_covers_the_sequence_with_a_short_last_window():
    assert tile(50, 20, 10) == [(0, 20), (10, 30), (20, 40), (30, 50)]
    assert tile(45, 20, None) == [(0, 20), (20, 40), (40, 45)]
    assert tile(40, 20, None) == [(0, 20), (20, 40)]
    assert tile(7, None, None) == [(0, 7)]
    assert tile(5, 20, 3) == [(0, 5)]
    with pytest.raises(ValueError, match="stride needs a window"):
        tile(5, None, 2)


def test_embed_fasta_ids_windows_and_both_output_formats(model_dir, tmp_path):
    fasta = tmp_path / "in.fa.gz"
    with gzip.open(fasta, "wt") as fh:
        fh.write(f">a first\n{GENOME[:50]}\n>b\n{GENOME[100:123].lower()}\n")
    result = embed_fasta(fasta, model_dir, window=20, stride=10, batch_size=3, device="cpu")
    # ids are unique coordinates (samtools' 1-based inclusive); names are the records'.
    assert result.ids == ["a:1-20", "a:11-30", "a:21-40", "a:31-50", "b:1-20", "b:11-23"]
    assert result.names == ["a"] * 4 + ["b"] * 2 and result.contig == result.names
    assert result.start.tolist() == [0, 10, 20, 30, 0, 10]
    assert result.end.tolist() == [20, 30, 40, 50, 20, 23]
    assert result.vectors.shape == (6, 16) and result.vectors.dtype == np.float32
    model, tok = load_model(model_dir, device="cpu")
    # Row 3 is a's last window; lower case is the same sequence to the tokenizer.
    expected = embed_sequences([GENOME[30:50], GENOME[110:123]], model, tok)
    torch.testing.assert_close(torch.from_numpy(result.vectors[[3, 5]]), expected, rtol=1e-5, atol=1e-6)

    npz = np.load(result.save(tmp_path / "e.npz"))
    assert npz["ids"].tolist() == result.ids and npz["end"].tolist() == result.end.tolist()
    np.testing.assert_array_equal(npz["embeddings"], result.vectors)
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(result.save(tmp_path / "e.parquet"))
    assert table.column("id").to_pylist() == result.ids
    assert table.column("contig").to_pylist() == result.contig and table.column("name").to_pylist() == result.names
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), result.vectors)
    assert b"definition" in table.schema.metadata
    with pytest.raises(ValueError, match="unknown output format"):
        result.save(tmp_path / "e.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz", "e.parquet", "in.fa.gz"]


def test_embeddings_of_a_padded_batch_equal_single_sequences(model_dir):
    model, tok = load_model(model_dir, device="cpu")
    seqs = [GENOME[:37], GENOME[50:53], GENOME[100:160]]
    batch = embed_sequences(seqs, model, tok)
    singles = torch.cat([embed_sequences([s], model, tok) for s in seqs])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-6)


def test_embedding_is_the_mean_over_bases_without_sep(model_dir):
    model, tok = load_model(model_dir, device="cpu")
    seq = GENOME[:25]
    ids = torch.tensor([[VOCAB[b] for b in seq] + [VOCAB["[SEP]"]]])
    with torch.no_grad():
        states = model(ids).last_hidden_state[0]
    if model.config.rcps:
        d = model.config.d_model
        states = (states[:, :d] + states[:, d:].flip(-1)) / 2
    torch.testing.assert_close(embed_sequences([seq], model, tok)[0], states[:-1].mean(0), rtol=1e-5, atol=1e-6)


def test_rc_average_makes_embeddings_rc_invariant(model_dir):
    model, tok = load_model(model_dir, device="cpu")
    seqs = [GENOME[:40], GENOME[200:233]]
    rcs = [reverse_complement(s) for s in seqs]
    torch.testing.assert_close(
        embed_sequences(seqs, model, tok, rc_average=True), embed_sequences(rcs, model, tok, rc_average=True),
        rtol=1e-5, atol=1e-6,
    )
    if not model.config.rcps:
        # Without averaging a Ph model sees the two strands differently.
        assert not torch.allclose(embed_sequences(seqs, model, tok), embed_sequences(rcs, model, tok), atol=1e-4)


def test_embed_bed_regions_on_a_reference(ph_dir, reference, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\n# comment\nchr1\t10\t40\tpromoter\t0\t+\nchr2\t5\t30\n")
    result = embed_fasta(reference, ph_dir, bed=bed, window=20, device="cpu")
    assert result.ids == ["chr1:11-30", "chr1:31-40", "chr2:6-25", "chr2:26-30"]
    assert result.names == ["promoter", "promoter", "chr2:6-30", "chr2:6-30"]
    assert result.contig == ["chr1", "chr1", "chr2", "chr2"]
    assert result.start.tolist() == [10, 30, 5, 25] and result.end.tolist() == [30, 40, 25, 30]
    model, tok = load_model(ph_dir, device="cpu")
    torch.testing.assert_close(
        torch.from_numpy(result.vectors[[1, 2]]), embed_sequences([GENOME[30:40], CHR2[5:25]], model, tok),
        rtol=1e-5, atol=1e-6,
    )
    bed.write_text("chr1\t10\t40\nchr9\t1\t5\n")
    with pytest.raises(GenomeFileError, match=r"r\.bed:2: contig 'chr9' is not in the reference"):
        embed_fasta(reference, ph_dir, bed=bed)
    bed.write_text("chr2\t10\t81\n")
    with pytest.raises(GenomeFileError, match=r"r\.bed:1: .*ends past the end of the contig \(80 bases"):
        embed_fasta(reference, ph_dir, bed=bed)


def test_sequence_longer_than_the_model_needs_windows(ph_dir, tmp_path):
    fasta = tmp_path / "long.fa"
    fasta.write_text(">x\n" + "A" * 50 + "\n")
    tok_dir = tmp_path / "model"
    model = CaduceusForMaskedLM.from_pretrained(ph_dir)
    model.save_pretrained(tok_dir)
    CaduceusTokenizer(model_max_length=32).save_pretrained(tok_dir)
    with pytest.raises(ValueError, match="does not fit the model's 32 tokens"):
        embed_fasta(fasta, tok_dir)
    assert len(embed_fasta(fasta, tok_dir, window=31)) == 2


# --- variant scores ---------------------------------------------------------------------------------------------------


def masked_score_by_hand(model, window: str, index: int, ref: str, alt: str) -> float:
    ids = [VOCAB[b] for b in window] + [VOCAB["[SEP]"]]
    ids[index] = VOCAB["[MASK]"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, index]
    logp = F.log_softmax(logits, -1)
    return float(logp[VOCAB[alt]] - logp[VOCAB[ref]])


def test_scores_equal_a_masked_forward_by_hand(model_dir, reference, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", [snv(150, vid="mid"), snv(151, alt="A" if GENOME[150] != "A" else "C"),
                                         snv(3), snv(40, chrom="chr2")])
    result = score_variants(vcf, reference, model_dir, window=64, rc_average=True, device="cpu", batch_size=2)
    mlm = CaduceusForMaskedLM.from_pretrained(model_dir).eval()
    assert [(v.chrom, v.pos) for v in result.variants] == [("chr1", 150), ("chr1", 151), ("chr1", 3), ("chr2", 40)]
    windows = [(GENOME[117:181], 32), (GENOME[118:182], 32), (GENOME[0:34], 2), (CHR2[7:71], 32)]
    for v, (window, index) in zip(result.variants, windows):
        assert window[index] == v.ref
        forward = masked_score_by_hand(mlm, window, index, v.ref, v.alt)
        comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
        reverse = masked_score_by_hand(mlm, reverse_complement(window), len(window) - 1 - index, comp[v.ref],
                                       comp[v.alt])
        assert v.score_fwd == pytest.approx(forward, abs=1e-5)
        assert v.score_rc == pytest.approx(reverse, abs=1e-5)
        assert v.score == pytest.approx((forward + reverse) / 2, abs=1e-5)
    assert result.variants[0].id == "mid" and all(v.ref_match for v in result.variants)


def test_ref_mismatches_are_scored_counted_and_flagged(ph_dir, reference, tmp_path):
    wrong = next(b for b in "ACGT" if b != GENOME[99])
    alt = next(b for b in "ACGT" if b not in (wrong, GENOME[99]))
    vcf = write_vcf(tmp_path / "v.vcf", [snv(20), snv(100, ref=wrong, alt=alt)])
    result = score_variants(vcf, reference, ph_dir, window=32, device="cpu")
    assert [v.ref_match for v in result.variants] == [True, False]
    assert math.isfinite(result.variants[1].score)
    summary = result.summary()
    assert "REF mismatches: 1" in summary
    assert f"chr1:100 REF {wrong} but reference {GENOME[99]} (line 7)" in summary
    rows = [line.split("\t") for line in result.write_tsv(tmp_path / "s.tsv").read_text().splitlines()]
    assert rows[0] == ["chrom", "pos", "ref", "alt", "id", "score", "ref_match"]
    assert [r[-1] for r in rows[1:]] == ["1", "0"]


def test_windows_at_contig_ends_truncate_or_wrap(reference):
    with Reference(reference) as ref:
        assert variant_window(ref, "chr1", 0, 10, circular=False) == (GENOME[:5], 0)
        assert variant_window(ref, "chr1", 299, 10, circular=False) == (GENOME[294:], 5)
        assert variant_window(ref, "chr1", 150, 11, circular=False) == (GENOME[145:156], 5)
        assert variant_window(ref, "chr1", 0, 10, circular=True) == (GENOME[-5:] + GENOME[:5], 5)
        assert variant_window(ref, "chr1", 298, 10, circular=True) == (GENOME[293:] + GENOME[:3], 5)
        # A window longer than a circular contig is the whole contig, rotated.
        assert variant_window(ref, "chr2", 3, 100, circular=True) == (CHR2[-37:] + CHR2[:43], 40)


def test_circular_contigs_by_name(ph_dir, reference, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", [snv(1), snv(2, chrom="chr2")])
    mlm = CaduceusForMaskedLM.from_pretrained(ph_dir).eval()
    result = score_variants(vcf, reference, ph_dir, window=20, circular={"chr2"}, device="cpu")
    v1, v2 = result.variants
    assert v1.score == pytest.approx(masked_score_by_hand(mlm, GENOME[:10], 0, v1.ref, v1.alt), abs=1e-5)
    assert v2.score == pytest.approx(
        masked_score_by_hand(mlm, CHR2[-9:] + CHR2[:11], 10, v2.ref, v2.alt), abs=1e-5
    )
    assert "circular contigs: chr2" in result.summary()


def test_non_snvs_are_skipped_and_counted(ph_dir, reference, tmp_path):
    ref5 = GENOME[4]
    rows = [
        snv(5),
        ("chr1", 10, "del", GENOME[9:12], GENOME[9], ".", ".", "."),
        ("chr1", 20, "mnv", GENOME[19:21], "AA" if GENOME[19:21] != "AA" else "CC", ".", ".", "."),
        ("chr1", 30, "sym", GENOME[29], "<DEL>", ".", ".", "."),
        ("chr1", 40, "n", GENOME[39], "N", ".", ".", "."),
        ("chr1", 50, "multi", GENOME[49], f"{'A' if GENOME[49] != 'A' else 'C'},{GENOME[49]}TT", ".", ".", "."),
        ("chr1", 60, "noalt", GENOME[59], ".", ".", ".", "."),
    ]
    result = score_variants(write_vcf(tmp_path / "v.vcf", rows), reference, ph_dir, window=16, device="cpu")
    assert [(v.pos, v.ref) for v in result.variants] == [(5, ref5), (50, GENOME[49])]
    assert result.records == 7
    assert dict(result.skipped) == {
        "not an SNV (indel, MNV, symbolic or missing allele)": 5,
        "REF or ALT not A/C/G/T": 1,
    }
    assert "skipped 6 ALT alleles" in result.summary()


def test_embedding_distance_matches_the_embeddings(ph_dir, reference, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", [snv(100)])
    result = score_variants(vcf, reference, ph_dir, window=30, embedding_distance=True, device="cpu")
    (v,) = result.variants
    model, tok = load_model(ph_dir, device="cpu")
    window = GENOME[84:114]
    alt_window = window[:15] + v.alt + window[16:]
    e = embed_sequences([window, alt_window], model, tok)
    assert v.embedding_distance == pytest.approx(float((e[0] - e[1]).norm()), rel=1e-4)
    assert v.embedding_distance > 0


def test_labels_give_auroc_and_a_roc_plot_from_the_cli(ph_dir, reference, tmp_path, capsys):
    rows = [snv(p, info=f"LABEL={p % 2}", vid=f"v{p}") for p in range(20, 280, 13)]
    vcf = write_vcf(tmp_path / "v.vcf", rows)
    out, png = tmp_path / "s.tsv", tmp_path / "roc.png"
    code = cli_main(["score-variants", "--vcf", str(vcf), "--fasta", str(reference), "--out", str(out),
                     "--model", str(ph_dir), "--window", "32", "--label-key", "LABEL", "--roc-png", str(png),
                     "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    from sklearn.metrics import roc_auc_score

    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0][-1] == "label"
    labels = [int(r[-1]) for r in rows[1:]]
    scores = [float(r[5]) for r in rows[1:]]
    expected = roc_auc_score(labels, [-s for s in scores])
    assert f"AUROC {expected:.4f}: INFO LABEL 1 ({sum(labels)}) vs 0 ({len(labels) - sum(labels)})" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_non_binary_labels_are_an_error_naming_the_line_before_anything_is_written(
    ph_dir, reference, tmp_path, capsys
):
    vcf = write_vcf(tmp_path / "v.vcf", [snv(20, info="LABEL=1"), snv(30, info="LABEL=2")])
    with pytest.raises(GenomeFileError, match=r"v\.vcf:7: label LABEL='2' is not 0 or 1"):
        score_variants(vcf, reference, ph_dir, window=16, label_key="LABEL", device="cpu")
    out = tmp_path / "s.tsv"
    args = ["score-variants", "--vcf", str(vcf), "--fasta", str(reference), "--model", str(ph_dir), "--out", str(out),
            "--window", "16", "--label-key", "LABEL", "--device", "cpu"]
    assert cli_main(args) == 1 and not out.exists()
    assert "v.vcf:7: label LABEL='2'" in capsys.readouterr().err


# --- fill-mask --------------------------------------------------------------------------------------------------------


def test_fill_mask_positions_and_probabilities(ph_dir, tmp_path):
    mlm = CaduceusForMaskedLM.from_pretrained(ph_dir).eval()
    predictions = fill_mask(["ACGT[MASK]ACG", ("x", "[MASK]AC[MASK]TTTTTTTTT")], ph_dir, top_k=4, device="cpu")
    assert [(p.id, p.position) for p in predictions] == [("seq1", 5), ("x", 1), ("x", 4)]
    for p in predictions:
        assert sum(prob for _, prob in p.top) == pytest.approx(1.0, abs=1e-5)
        assert [prob for _, prob in p.top] == sorted((prob for _, prob in p.top), reverse=True)
    ids = [VOCAB[c] for c in "ACGT"] + [VOCAB["[MASK]"]] + [VOCAB[c] for c in "ACG"] + [VOCAB["[SEP]"]]
    with torch.no_grad():
        logits = mlm(torch.tensor([ids])).logits[0, 4, [VOCAB[b] for b in "ACGT"]]
    expected = dict(zip("ACGT", logits.softmax(-1).tolist()))
    assert dict(predictions[0].top) == pytest.approx(expected, abs=1e-5)

    fasta = tmp_path / "m.fa"
    fasta.write_text(">r1\nAC[MASK]T\n>r2\nGG\nG[MASK]\n")
    assert [(p.id, p.position) for p in fill_mask_fasta(fasta, ph_dir, top_k=2)] == [("r1", 3), ("r2", 4)]
    with pytest.raises(ValueError, match="'y' has no \\[MASK\\]"):
        fill_mask([("y", "ACGT")], ph_dir)


# --- file readers and errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("junk\n>a\nACGT\n", r"bad\.fa:1: not FASTA: expected a '>' header line"),
        ("\n>a\nACGT\nAC1T\n", r"bad\.fa:4: invalid character '1' in the sequence of record 'a'"),
        (">a\nACGT\n>b\nAC GT\n", r"bad\.fa:4: invalid character ' ' in the sequence of record 'b'"),
        (">a\nACGT\n>\nACGT\n", r"bad\.fa:3: FASTA header without a name"),
        (">a\nACGT\n>b\n>c\nA\n", r"bad\.fa:3: record 'b' has no sequence"),
        ("", r"bad\.fa: no FASTA records"),
    ],
)
def test_malformed_fasta_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.fa"
    path.write_text(text)
    with pytest.raises(GenomeFileError, match=message):
        list(read_fasta(path))


def test_truncated_gzip_fasta_is_a_clear_error(tmp_path):
    data = gzip.compress(b">a\n" + b"ACGT" * 20_000 + b"\n")
    path = tmp_path / "cut.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GenomeFileError, match=r"cut\.fa\.gz: cannot be read as FASTA after record 0"):
        list(read_fasta(path))


def test_fasta_with_windows_line_endings_and_iupac_codes_reads(tmp_path):
    path = tmp_path / "crlf.fa"
    path.write_bytes(b">a desc\r\nACGTRYKM\r\nacgtn-\r\n")
    assert [(r.name, r.sequence) for r in read_fasta(path)] == [("a", "ACGTRYKMacgtn-")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("chr1\t10\n", r"b\.bed:1: a BED line needs chrom, start and end"),
        ("# c\nchr1\tten\t20\n", r"b\.bed:2: BED start and end must be integers, got 'ten' and '20'"),
        ("chr1\t30\t20\n", r"b\.bed:1: BED interval needs 0 <= start < end, got 30-20"),
        ("track x\n", r"b\.bed: no BED intervals"),
    ],
)
def test_malformed_bed_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "b.bed"
    path.write_text(text)
    with pytest.raises(GenomeFileError, match=message):
        read_bed(path)


def test_malformed_vcf_and_missing_contigs_name_file_and_line(ph_dir, reference, tmp_path):
    vcf = tmp_path / "v.vcf"
    vcf.write_text(VCF_HEADER + "\t".join(map(str, snv(5))) + "\nchr1\tabc\t.\tA\tG\t.\t.\t.\n")
    with pytest.raises(GenomeFileError, match=r"v\.vcf:7: malformed VCF record .*'chr1\\tabc"):
        list(read_vcf(vcf))
    write_vcf(vcf, [snv(5), snv(6), ("chrX", 3, ".", "A", "G", ".", ".", ".")])
    with pytest.raises(GenomeFileError, match=r"v\.vcf:8: contig 'chrX' is not in the reference .*ref\.fa"):
        score_variants(vcf, reference, ph_dir)
    write_vcf(vcf, [("chr2", 81, ".", "A", "G", ".", ".", ".")])
    with pytest.raises(GenomeFileError, match=r"v\.vcf:6: position 81 is outside contig 'chr2' \(length 80"):
        score_variants(vcf, reference, ph_dir)
    with pytest.raises(GenomeFileError, match=r"INFO key 'AF' is not declared in the header \(declared: LABEL\)"):
        list(read_vcf(vcf, "AF"))
    (tmp_path / "notvcf.vcf").write_text("hello\n")
    with pytest.raises(GenomeFileError, match=r"notvcf\.vcf: not a readable VCF/BCF file"):
        list(read_vcf(tmp_path / "notvcf.vcf"))


def test_cli_errors_name_the_file_and_exit_1(ph_dir, reference, tmp_path, capsys):
    bad = tmp_path / "bad.fa"
    bad.write_text(">a\nACGT\nAC#T\n")
    assert cli_main(["embed", "--fasta", str(bad), "--out", str(tmp_path / "e.npz"), "--model", str(ph_dir)]) == 1
    err = capsys.readouterr().err
    assert f"caduceus-hf embed: error: {bad}:3: invalid character '#'" in err
    assert not (tmp_path / "e.npz").exists()
    missing = tmp_path / "missing.vcf"
    assert cli_main(["score-variants", "--vcf", str(missing), "--fasta", str(reference), "--out",
                     str(tmp_path / "s.tsv"), "--model", str(ph_dir)]) == 1
    assert f"caduceus-hf score-variants: error: VCF file not found: {missing}" in capsys.readouterr().err
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.fa"
        locked.write_text(">a\nACGT\n")
        locked.chmod(0)
        assert cli_main(["fill-mask", "--fasta", str(locked), "--model", str(ph_dir)]) == 1
        assert "cannot be read (permission denied)" in capsys.readouterr().err
    assert cli_main(["fill-mask", "--sequence", "AC[MASK]", "--model", str(tmp_path / "nope")]) == 1
    assert "nope: no such model directory" in capsys.readouterr().err


def test_indexed_and_in_memory_references_agree(reference, tmp_path):
    import pysam

    with Reference(reference) as in_memory:
        assert in_memory._indexed is None
        pysam.faidx(str(reference))
        with Reference(reference) as indexed:
            assert indexed._indexed is not None
            assert indexed.lengths == in_memory.lengths == {"chr1": 300, "chr2": 80}
            for args in [("chr1", 0, 300), ("chr2", 70, 80), ("chr1", 59, 61)]:
                assert indexed.fetch(*args) == in_memory.fetch(*args)
            assert indexed.fetch_circular("chr2", -3, 6) == CHR2[-3:] + CHR2[:3]


# --- CLI and the bundled demo model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["embed", "score-variants", "fill-mask"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: caduceus-hf {command}" in out and "--model" in out and "--batch-size" in out


def test_demo_model_is_package_data_and_loads_offline(tmp_path, monkeypatch, capsys):
    import socket

    import huggingface_hub.constants

    # conftest sets HF_HUB_OFFLINE=1 before anything is imported; on top of that, any connection attempt fails.
    assert huggingface_hub.constants.HF_HUB_OFFLINE

    def no_network(*args, **kwargs):
        raise AssertionError("the demo model must load without network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    path = default_model_path()
    assert path.parent.name == "pretrained" and path.parent.parent.name == "caduceus_hf"
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= names
    assert (path / "model.safetensors").stat().st_size < 5_000_000
    card = (path / "README.md").read_text()
    assert "demo, not a replacement" in card and "held-out loss" in card and "mitochondrial" in card
    mlm, _ = load_model(masked_lm=True, device="cpu")
    assert 100_000 < mlm.num_parameters() < 1_000_000

    fasta = tmp_path / "x.fa"
    fasta.write_text(f">x\n{GENOME[:120]}\n")
    assert cli_main(["embed", "--fasta", str(fasta), "--out", str(tmp_path / "x.npz")]) == 0
    assert np.load(tmp_path / "x.npz")["embeddings"].shape == (1, mlm.config.d_model)
    assert cli_main(["fill-mask", "--sequence", "GATTACA[MASK]GATTACA", "--top-k", "2"]) == 0
    assert "seq1\tposition 8\t" in capsys.readouterr().out


def test_a_classifier_checkpoint_is_refused_as_a_masked_lm(tmp_path):
    from caduceus_hf import CaduceusForSequenceClassification

    CaduceusForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="has no language-model head"):
        load_model(tmp_path, masked_lm=True)
    model, _ = load_model(tmp_path, device="cpu")
    assert type(model).__name__ == "Caduceus"


def test_clinvar_chrm_slice_scores_with_the_demo_model(shared_data, tmp_path):
    """Real data: the first 25 ClinVar chrM SNVs against the circular rCRS; every REF matches (the full run of 1,686
    variants is benchmarks/clinvar_chrM.py)."""
    source = (shared_data / "variants" / "clinvar_chrM_SNV_PLP_vs_BLB.vcf").read_text().splitlines(keepends=True)
    header = [line for line in source if line.startswith("#")]
    vcf = tmp_path / "slice.vcf"
    vcf.write_text("".join(header + [line for line in source if not line.startswith("#")][:25]))
    fasta = shared_data / "genomes" / "human_mtDNA_rCRS_NC_012920.1.fa"
    result = score_variants(vcf, fasta, window=128, circular=True, label_key="LABEL", device="cpu")
    assert len(result.variants) == 25 and not result.mismatches and not result.skipped
    assert all(math.isfinite(v.score) and v.label in ("0", "1") for v in result.variants)


def test_a_missing_optional_dependency_names_the_apps_extra(ph_dir, reference, tmp_path, monkeypatch, capsys):
    import sys

    vcf = write_vcf(tmp_path / "v.vcf", [snv(20)])
    monkeypatch.setitem(sys.modules, "pysam", None)  # makes `import pysam` fail
    code = cli_main(["score-variants", "--vcf", str(vcf), "--fasta", str(reference), "--out", str(tmp_path / "s.tsv"),
                     "--model", str(ph_dir), "--window", "16"])
    assert code == 1
    # embed streams FASTA with its own reader; the reference of score-variants is read by pysam.
    assert ("caduceus-hf score-variants: error: reading FASTA files needs pysam, which is not installed: "
            "pip install 'caduceus-hf[apps]'") in capsys.readouterr().err


# --- models that do not fit, outputs, options (issue 13) ---------------------------------------------------------------


def _copy_model(src: Path, dst: Path, drop: str | None = None, config_edit=None) -> Path:
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    if drop is not None:
        weights = load_file(dst / "model.safetensors")
        save_file({k: v for k, v in weights.items() if drop not in k}, dst / "model.safetensors",
                  metadata={"format": "pt"})
    if config_edit is not None:
        config = json.loads((dst / "config.json").read_text())
        config_edit(config)
        (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_a_checkpoint_missing_weights_is_refused_unless_allowed(ph_dir, tmp_path, capsys):
    broken = _copy_model(ph_dir, tmp_path / "m", drop="layers.0.mixer.mamba_fwd.in_proj")
    with pytest.raises(ModelLoadError, match=r"missing 2 key\(s\): caduceus\.backbone\.layers\.0\.mixer\.mamba_fwd"
                                              r"\.in_proj\.weight.*--allow-missing"):
        load_model(broken, masked_lm=True, device="cpu")
    args = ["fill-mask", "--sequence", "ACGT[MASK]ACGT", "--model", str(broken), "--device", "cpu"]
    assert cli_main(args) == 1 and "--allow-missing" in capsys.readouterr().err
    assert cli_main(args + ["--allow-missing"]) == 0
    probabilities = [float(x) for x in capsys.readouterr().out.split()[4::2]]
    assert len(probabilities) == 4 and all(math.isfinite(p) for p in probabilities)


def test_a_config_that_does_not_fit_the_weights_is_refused(ph_dir, tmp_path):
    def typo(config):
        config["n_layers"] = config.pop("n_layer")

    with pytest.raises(ModelLoadError, match=r"config\.json has keys this model does not know: \['n_layers'\]"):
        load_model(_copy_model(ph_dir, tmp_path / "m", config_edit=typo), device="cpu")


@pytest.mark.parametrize("content", [b"", b"not safetensors at all", None], ids=["empty", "text", "truncated"])
def test_unreadable_weights_are_a_clear_error(ph_dir, tmp_path, content):
    bad = _copy_model(ph_dir, tmp_path / "m")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100] if content is None else content)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: (not a safetensors file|truncated)"):
        load_model(bad, device="cpu")


def test_non_finite_weights_are_refused(ph_dir, tmp_path):
    from safetensors.torch import save_file

    bad = _copy_model(ph_dir, tmp_path / "m")
    weights = load_file(bad / "model.safetensors")
    key = next(k for k in weights if k.endswith("mamba_fwd.D"))
    weights[key][0] = float("nan")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=rf"tensor {re.escape(key.removeprefix('caduceus.'))} holds NaN"):
        load_model(bad, device="cpu")


def test_non_finite_outputs_are_an_error_not_a_printed_nan(ph_dir):
    model, tok = load_model(ph_dir, masked_lm=True, device="cpu")
    with torch.no_grad():
        model.caduceus.backbone.norm_f.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite probabilities"):
        fill_mask(["AC[MASK]T"], model)
    with pytest.raises(ValueError, match="non-finite embeddings"):
        embed_sequences(["ACGT"], model.caduceus, tok)


@pytest.mark.parametrize(
    "out, message",
    [("missing/e.npz", "the output directory .*missing does not exist"), ("e.csv", "unknown output format '.csv'"),
     ("adir", "is a directory, not a file")],
)
def test_embed_checks_out_before_any_work(ph_dir, tmp_path, capsys, monkeypatch, out, message):
    (tmp_path / "adir").mkdir()
    fasta = tmp_path / "x.fa"
    fasta.write_text(">x\nACGTACGT\n")
    monkeypatch.setattr("caduceus_hf.apps.embed.embed_fasta", lambda *a, **k: pytest.fail("computed anyway"))
    monkeypatch.setattr("caduceus_hf.apps.embed.embed_to_file", lambda *a, **k: pytest.fail("computed anyway"))
    assert cli_main(["embed", "--fasta", str(fasta), "--out", str(tmp_path / out), "--model", str(ph_dir)]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_outputs_respect_the_umask(ph_dir, reference, tmp_path):
    previous = os.umask(0o022)
    try:
        result = embed_fasta(reference, ph_dir, device="cpu")
        result.save(tmp_path / "e.npz")
        vcf = write_vcf(tmp_path / "v.vcf", [snv(20)])
        score_variants(vcf, reference, ph_dir, window=16, device="cpu").write_tsv(tmp_path / "s.tsv")
    finally:
        os.umask(previous)
    assert (tmp_path / "e.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "s.tsv").stat().st_mode & 0o777 == 0o644


def test_windows_and_sequences_follow_the_same_rules_everywhere(ph_dir, reference, tmp_path, capsys):
    vcf = write_vcf(tmp_path / "v.vcf", [snv(20)])
    model = CaduceusForMaskedLM.from_pretrained(ph_dir)
    small = tmp_path / "small"
    model.save_pretrained(small)
    CaduceusTokenizer(model_max_length=32).save_pretrained(small)
    with pytest.raises(ValueError, match="window of 64 bases does not fit the model's 32 tokens"):
        score_variants(vcf, reference, small, window=64, device="cpu")
    # fill-mask --sequence is DNA text as the FASTA path requires.
    assert cli_main(["fill-mask", "--sequence", "AC#[MASK]", "--model", str(ph_dir)]) == 1
    assert "sequence 'seq1': invalid character '#' at position 3" in capsys.readouterr().err
    assert cli_main(["fill-mask", "--sequence", "AC[MASK]", "--model", str(ph_dir), "--threads", "-1"]) == 1
    assert "--threads must be a positive integer" in capsys.readouterr().err


def test_duplicate_fasta_record_names_are_refused(tmp_path):
    fasta = tmp_path / "d.fa"
    fasta.write_text(">a\nACGT\n>b\nACGT\n>a\nGG\n")
    with pytest.raises(GenomeFileError, match=r"d\.fa:5: record name 'a' appears more than once"):
        list(read_fasta(fasta))


def test_plain_gzip_vcf_reads_like_bgzip(ph_dir, reference, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", [snv(20), snv(30)])
    gz = tmp_path / "v.vcf.gz"
    gz.write_bytes(gzip.compress(vcf.read_bytes()))
    plain = score_variants(vcf, reference, ph_dir, window=16, device="cpu")
    zipped = score_variants(gz, reference, ph_dir, window=16, device="cpu")
    assert [v.score for v in zipped.variants] == [v.score for v in plain.variants]
    corrupt = tmp_path / "c.vcf.gz"
    corrupt.write_bytes(gz.read_bytes()[:30])
    with pytest.raises(GenomeFileError, match=r"c\.vcf\.gz: cannot be read"):
        list(read_vcf(corrupt))
