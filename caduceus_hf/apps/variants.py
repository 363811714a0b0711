"""Zero-shot scoring of single-nucleotide variants with a Caduceus masked language model.

Score of an SNV (the masked-marginal log-likelihood ratio):

    score = log p(ALT | window, variant base masked) - log p(REF | window, variant base masked)

where the window is `window` bases of the reference centred on the variant (the variant at index window // 2),
followed by [SEP] as in pretraining. Negative scores mean the model finds the alternative allele less likely than the
reference one; pathogenic variants are expected to score lower, so AUROC is computed with -score as the predictor.
The position is masked, so ref and alt share one forward pass, and all ALT alleles at a site share it too.

* `rc_average`: also score the reverse-complement window, with the complemented alleles at the mirrored position,
  and report the mean of the two strands' scores (score_fwd, score_rc and their mean as score).
* windows at contig ends: on a linear contig the window is truncated at the end (the variant is then off-centre);
  on a circular contig (`circular`) it wraps around, and is at most the contig's length.
* REF is checked against the reference base (case-insensitive); mismatches are scored anyway with the VCF's alleles
  (the position is masked, so the reference base does not enter the score), counted and flagged in `ref_match`.
* `embedding_distance`: the Euclidean distance between the mean embeddings (`apps.embed` definition, same
  `rc_average`) of the window carrying REF and the window carrying ALT at the variant position.
* Only SNVs with REF and ALT in A, C, G, T are scored; each other ALT allele (indels, MNVs, symbolic alleles, N) is
  skipped and counted by reason. Multi-allelic records give one row per scored ALT allele.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..dna import reverse_complement
from ..genomics import (
    GenomeFileError,
    Reference,
    VcfRecord,
    atomic_write,
    check_input_file,
    check_output_file,
    check_positive,
    count_lines,
    is_bgzf,
    read_vcf,
    require,
    write_file_atomically,
)
from ..modeling_caduceus import CaduceusForMaskedLM
from ..tokenization_caduceus import CaduceusTokenizer
from .embed import check_finite, embed_sequences
from .models import ModelSource, load_model
from .sharded import BlockTask, ShardedRun, batched, file_fingerprint, model_fingerprint, process_group, run_blocks

PathLike = str | os.PathLike[str]
BASES = frozenset("ACGT")
SKIP_NOT_SNV = "not an SNV (indel, MNV, symbolic or missing allele)"
SKIP_NOT_ACGT = "REF or ALT not A/C/G/T"
# VCF records per block: the unit of work of a rank, of a part file and of resuming.
BLOCK_SIZE = 1024


@torch.inference_mode()
def masked_log_probs(
    model: CaduceusForMaskedLM,
    tokenizer: CaduceusTokenizer,
    sequences: Sequence[str],
    positions: Sequence[int],
) -> torch.Tensor:
    """Log-probabilities (n, vocab_size) float32 of every token at base `positions[i]` (0-based) of `sequences[i]`,
    with that base replaced by [MASK]. Inputs get [SEP] appended and are padded with an attention mask."""
    encoded = tokenizer(list(sequences), padding=True, return_tensors="pt")
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    rows = torch.arange(len(sequences))
    # The first real token, whichever side the padding is on; one token per base.
    tokens = attention_mask.argmax(-1) + torch.as_tensor(positions, dtype=torch.long)
    input_ids[rows, tokens] = tokenizer.mask_token_id
    model.validate_inputs(input_ids=input_ids, attention_mask=attention_mask)
    logits = model(
        input_ids.to(model.device), attention_mask=attention_mask.to(model.device), conjoin=False, return_dict=True
    ).logits
    log_probs = F.log_softmax(logits[rows.to(model.device), tokens.to(model.device)].float(), dim=-1).cpu()
    return check_finite(log_probs, "log-probabilities")


@dataclass
class ScoredVariant:
    """One scored SNV (1-based `pos`, alleles upper-cased); score_fwd / score_rc only with rc_average,
    embedding_distance only when asked for, label as written in the VCF (None if absent)."""

    chrom: str
    pos: int
    ref: str
    alt: str
    id: str
    ref_match: bool
    reference_base: str
    score: float = float("nan")
    score_fwd: float | None = None
    score_rc: float | None = None
    embedding_distance: float | None = None
    label: str | None = None
    line: int = 0


@dataclass
class VariantScores:
    """Scores of the SNVs of a VCF, what was skipped and why, and the settings used."""

    vcf: Path
    fasta: Path
    variants: list[ScoredVariant]
    skipped: Counter[str]
    records: int
    window: int
    rc_average: bool
    embedding_distance: bool
    label_key: str | None
    model: str = ""
    circular_contigs: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> list[ScoredVariant]:
        return [v for v in self.variants if not v.ref_match]

    def labelled(self) -> tuple[np.ndarray, list[ScoredVariant]]:
        """Binary labels (0/1) of the variants that carry one, and those variants. Labels must read as 0 or 1
        (1.0, true and false too); anything else is an error naming the VCF line."""
        labels, kept = [], []
        for v in self.variants:
            if v.label is not None:
                labels.append(binary_label(v.label, f"{self.vcf}:{v.line}", self.label_key))
                kept.append(v)
        return np.asarray(labels, dtype=np.int64), kept

    def auroc(self, predictor: str = "score") -> float | None:
        """AUROC of label 1 against label 0, predicted by -score ("score": lower alt likelihood means label 1) or by
        the embedding distance ("embedding_distance"). None without labels of both classes."""
        labels, kept = self.labelled()
        return auroc(labels, _predictor(kept, predictor))

    def summary(self) -> str:
        """What a command-line run prints: counts, mismatches and, with labels, the AUROC."""
        labels, kept = self.labelled() if self.label_key is not None else (None, [])
        predictors = {name: _predictor(kept, name) for name in self._predictor_names()}
        return format_summary(
            self.vcf, self.fasta, self.window, self.rc_average,
            [c for c in self.circular_contigs if c in {v.chrom for v in self.variants}], len(self.variants),
            self.records, self.skipped, len(self.mismatches), [_mismatch_text(v) for v in self.mismatches[:5]],
            self.label_key, labels, predictors,
        )

    def _predictor_names(self) -> list[str]:
        return ["score"] + (["embedding_distance"] if self.embedding_distance else [])

    def write_tsv(self, path: PathLike) -> Path:
        """One row per scored SNV: chrom, pos, ref, alt, id, score, [score_fwd, score_rc], [embedding_distance],
        ref_match (1/0), [label]. Written under a temporary name and renamed."""
        columns = tsv_columns(self.rc_average, self.embedding_distance, self.label_key)
        rows = ["\t".join(columns)] + [tsv_row(v, columns) for v in self.variants]
        return write_file_atomically(Path(path), ("\n".join(rows) + "\n").encode())

    def plot_roc(self, path: PathLike) -> Path:
        """A PNG of the ROC curve(s) of the labelled variants (matplotlib's Agg renderer, no display needed)."""
        labels, kept = self.labelled()
        predictors = {name: _predictor(kept, name) for name in self._predictor_names()}
        return plot_roc(path, labels, predictors, Path(self.vcf).name)


def _mismatch_text(v: ScoredVariant) -> str:
    return f"{v.chrom}:{v.pos} REF {v.ref} but reference {v.reference_base} (line {v.line})"


def auroc(labels: np.ndarray, values: np.ndarray) -> float | None:
    """AUROC of label 1 against label 0 predicted by `values` (larger: label 1); None without both classes."""
    if len(set(labels.tolist())) < 2:
        return None
    metrics = require("sklearn.metrics", "AUROC")
    return float(metrics.roc_auc_score(labels, values))


def format_summary(
    vcf: PathLike, fasta: PathLike, window: int, rc_average: bool, circular_used: Sequence[str], scored: int,
    records: int, skipped: Counter[str], mismatches: int, first_mismatches: Sequence[str], label_key: str | None,
    labels: np.ndarray | None, predictors: dict[str, np.ndarray],
) -> str:
    """The summary a command-line run prints: counts, mismatches and, with labels, the AUROC of each predictor
    ("score": -score; "embedding_distance")."""
    lines = [
        f"scored {scored:,} SNVs from {records:,} VCF records of {vcf} against {fasta} "
        f"(window {window} bases, rc-average {'on' if rc_average else 'off'}, "
        f"circular contigs: {', '.join(circular_used) or 'none'})"
    ]
    if skipped:
        reasons = "; ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items()))
        lines.append(f"skipped {sum(skipped.values()):,} ALT alleles: {reasons}")
    else:
        lines.append("skipped 0 ALT alleles")
    if mismatches:
        first = "; ".join(first_mismatches)
        lines.append(f"REF mismatches: {mismatches:,} (scored anyway, ref_match=0); first: {first}")
    else:
        lines.append("REF mismatches: 0")
    if label_key is not None:
        n1, n0 = int((labels == 1).sum()), int((labels == 0).sum())
        for name, values in predictors.items():
            auc = auroc(labels, values)
            how = "-score (lower ALT log-likelihood ratio -> label 1)" if name == "score" else \
                "embedding distance (larger -> label 1)"
            value = "n/a (needs labels of both classes)" if auc is None else f"{auc:.4f}"
            lines.append(f"AUROC {value}: INFO {label_key} 1 ({n1:,}) vs 0 ({n0:,}), predictor {how}")
    return "\n".join(lines)


def plot_roc(path: PathLike, labels: np.ndarray, predictors: dict[str, np.ndarray], title: str) -> Path:
    """A PNG of the ROC curve of each predictor (larger: label 1), written atomically."""
    if len(set(labels.tolist())) < 2:
        raise ValueError("a ROC curve needs labelled variants of both classes")
    metrics = require("sklearn.metrics", "the ROC curve")
    require("matplotlib", "the ROC plot")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), dpi=120)
    ax = fig.subplots()
    for name, values in predictors.items():
        fpr, tpr, _ = metrics.roc_curve(labels, values)
        legend = "-score" if name == "score" else "embedding distance"
        ax.plot(fpr, tpr, label=f"{legend} (AUROC {auroc(labels, values):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title}\n{int(labels.sum())} label 1 vs {int((labels == 0).sum())} label 0", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with tempfile.SpooledTemporaryFile() as buffer:
        fig.savefig(buffer, format="png")
        buffer.seek(0)
        return write_file_atomically(Path(path), buffer.read())


def tsv_columns(rc_average: bool, embedding_distance: bool, label_key: str | None) -> list[str]:
    """The TSV header: chrom, pos, ref, alt, id, score, [score_fwd, score_rc], [embedding_distance], ref_match,
    [label]."""
    columns = ["chrom", "pos", "ref", "alt", "id", "score"]
    columns += ["score_fwd", "score_rc"] if rc_average else []
    columns += ["embedding_distance"] if embedding_distance else []
    return columns + ["ref_match"] + (["label"] if label_key is not None else [])


def tsv_row(v: ScoredVariant, columns: Sequence[str]) -> str:
    def cell(name: str) -> str:
        value = getattr(v, name)
        if name == "ref_match":
            return "1" if value else "0"
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    return "\t".join(cell(c) for c in columns)


def binary_label(text: str, where: str, key: str | None) -> int:
    """0 or 1 from a label written 0/1, 0.0/1.0 or true/false; anything else is a GenomeFileError at `where`."""
    lowered = text.strip().lower()
    value = {"true": 1.0, "false": 0.0}.get(lowered)
    try:
        value = float(lowered) if value is None else value
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise GenomeFileError(f"{where}: label {key}={text!r} is not 0 or 1; AUROC needs binary labels")
    return int(value)


def _predictor(variants: Sequence[ScoredVariant], name: str) -> np.ndarray:
    if name == "score":
        return -np.asarray([v.score for v in variants], dtype=np.float64)
    if name == "embedding_distance":
        return np.asarray([v.embedding_distance for v in variants], dtype=np.float64)
    raise ValueError(f"unknown predictor {name!r}; use 'score' or 'embedding_distance'")


def variant_window(
    reference: Reference, contig: str, pos0: int, window: int, circular: bool
) -> tuple[str, int]:
    """The window around 0-based `pos0` and the variant's index in it (see the module docs for contig ends)."""
    length = reference.lengths[contig]
    if circular:
        size = min(window, length)
        return reference.fetch_circular(contig, pos0 - size // 2, size), size // 2
    lo = max(0, pos0 - window // 2)
    hi = min(length, pos0 - window // 2 + window)
    return reference.fetch(contig, lo, hi), pos0 - lo


@dataclass
class _Site:
    window: str
    index: int
    variants: list[ScoredVariant]


@dataclass
class _Settings:
    """What scoring a block needs besides the records."""

    vcf: Path
    reference: Reference
    window: int
    circular: bool | Collection[str]
    label_key: str | None
    rc_average: bool
    embedding_distance: bool
    batch_size: int


def _block_sites(
    records: Sequence[VcfRecord], s: _Settings
) -> tuple[list[ScoredVariant], list[_Site], Counter[str]]:
    """The SNVs of a block of records in file order (one per scorable ALT allele), the sites they share, and the
    skipped ALT alleles by reason. Errors name the VCF line."""
    sites: dict[tuple[str, int], _Site] = {}
    variants: list[ScoredVariant] = []
    skipped: Counter[str] = Counter()
    for record in records:
        length = s.reference.length_of(record.chrom, f"{s.vcf}:{record.line}")
        if not 1 <= record.pos <= length:
            raise GenomeFileError(
                f"{s.vcf}:{record.line}: position {record.pos:,} is outside contig {record.chrom!r} "
                f"(length {length:,} in {s.reference.path})"
            )
        ref = record.ref.upper()
        for alt in (record.alts or (".",)):
            alt = alt.upper()
            if len(ref) != 1 or len(alt) != 1 or alt in ".*":
                skipped[SKIP_NOT_SNV] += 1
                continue
            if ref not in BASES or alt not in BASES:
                skipped[SKIP_NOT_ACGT] += 1
                continue
            pos0 = record.pos - 1
            key = (record.chrom, pos0)
            if key not in sites:
                is_circular = s.circular if isinstance(s.circular, bool) else record.chrom in s.circular
                text, index = variant_window(s.reference, record.chrom, pos0, s.window, is_circular)
                sites[key] = _Site(text, index, [])
            site = sites[key]
            base = site.window[site.index].upper()
            if s.label_key is not None and record.label is not None:
                binary_label(record.label, f"{s.vcf}:{record.line}", s.label_key)
            variant = ScoredVariant(record.chrom, record.pos, ref, alt, record.id, base == ref, base,
                                    label=record.label, line=record.line)
            site.variants.append(variant)
            variants.append(variant)
    return variants, list(sites.values()), skipped


def _score_block(
    records: Sequence[VcfRecord], s: _Settings, mlm: CaduceusForMaskedLM, tokenizer: CaduceusTokenizer
) -> tuple[list[ScoredVariant], Counter[str]]:
    """Score the SNVs of a block of VCF records; returns them in file order, and the skipped ALT alleles."""
    variants, sites, skipped = _block_sites(records, s)
    ids = {base: tokenizer.convert_tokens_to_ids(base) for base in BASES}
    for start in range(0, len(sites), s.batch_size):
        batch = sites[start : start + s.batch_size]
        fwd = masked_log_probs(mlm, tokenizer, [site.window for site in batch], [site.index for site in batch])
        rc = None
        if s.rc_average:
            rc = masked_log_probs(
                mlm, tokenizer,
                [reverse_complement(site.window) for site in batch],
                [len(site.window) - 1 - site.index for site in batch],
            )
        for i, site in enumerate(batch):
            for v in site.variants:
                forward = float(fwd[i, ids[v.alt]] - fwd[i, ids[v.ref]])
                if rc is None:
                    v.score = forward
                else:
                    alt, ref = reverse_complement(v.alt), reverse_complement(v.ref)
                    reverse = float(rc[i, ids[alt]] - rc[i, ids[ref]])
                    v.score_fwd, v.score_rc, v.score = forward, reverse, (forward + reverse) / 2
        if s.embedding_distance:
            _embedding_distances(mlm, tokenizer, batch, s.rc_average)
    return variants, skipped


def _prepare(
    model: ModelSource, window: int, batch_size: int, device: str | None, dtype: str | None, allow_missing: bool
) -> tuple[CaduceusForMaskedLM, CaduceusTokenizer]:
    check_positive(window, "window")
    check_positive(batch_size, "batch_size")
    mlm, tokenizer = load_model(model, masked_lm=True, device=device, dtype=dtype, allow_missing=allow_missing)
    if window >= tokenizer.model_max_length:
        raise ValueError(
            f"window of {window:,} bases does not fit the model's {tokenizer.model_max_length:,} tokens ([SEP] included)"
        )
    return mlm, tokenizer


def _circular_contigs(reference: Reference, circular: bool | Collection[str]) -> list[str]:
    return [name for name in reference.lengths if (circular if isinstance(circular, bool) else name in circular)]


def score_variants(
    vcf: PathLike,
    fasta: PathLike,
    model: ModelSource = None,
    *,
    window: int = 512,
    rc_average: bool = False,
    embedding_distance: bool = False,
    circular: bool | Collection[str] = False,
    label_key: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
    allow_missing: bool = False,
) -> VariantScores:
    """Score every SNV of `vcf` against the reference `fasta` (see the module docs for the definitions).

    circular: True treats every contig as circular, a collection names the circular ones (e.g. {"chrM"}).
    model, device, dtype: see `load_model` (default: the bundled demo model; it must have an LM head).
    label_key: INFO key of a 0/1 label carried into the result (for `auroc`, `plot_roc`).
    Raises GenomeFileError naming the VCF line for a contig missing from the reference or a position outside it.
    The result holds every variant in memory: for large VCFs use `score_variants_to_file`.
    """
    vcf, fasta = Path(vcf), Path(fasta)
    mlm, tokenizer = _prepare(model, window, batch_size, device, dtype, allow_missing)
    variants: list[ScoredVariant] = []
    skipped: Counter[str] = Counter()
    records = 0
    tqdm = require("tqdm", "the progress bar").tqdm
    with Reference(fasta) as reference, tqdm(unit="record", desc="score-variants",
                                             disable=None if progress else True) as bar:
        settings = _Settings(vcf, reference, window, circular, label_key, rc_average, embedding_distance, batch_size)
        for block in batched(read_vcf(vcf, label_key), BLOCK_SIZE):
            scored, block_skipped = _score_block(block, settings, mlm, tokenizer)
            variants += scored
            skipped += block_skipped
            records += len(block)
            bar.update(len(block))
        circular_contigs = _circular_contigs(reference, circular)
    return VariantScores(
        vcf=vcf, fasta=fasta, variants=variants, skipped=skipped, records=records, window=window,
        rc_average=rc_average, embedding_distance=embedding_distance, label_key=label_key,
        model=str(mlm.name_or_path), circular_contigs=circular_contigs,
    )


@dataclass
class VariantRun:
    """What `score_variants_to_file` wrote, with what its summary needs: counts, the first REF mismatches and, with a
    label key, the labels and predictors of the labelled rows (read back from the parts: n floats)."""

    vcf: Path
    fasta: Path
    window: int
    rc_average: bool
    scored: int
    records: int
    skipped: Counter[str]
    mismatches: int
    first_mismatches: list[str]
    circular_used: list[str]
    label_key: str | None
    labels: np.ndarray | None
    predictors: dict[str, np.ndarray]

    def auroc(self, predictor: str = "score") -> float | None:
        if self.labels is None:
            return None
        return auroc(self.labels, self.predictors[predictor])

    def summary(self) -> str:
        return format_summary(
            self.vcf, self.fasta, self.window, self.rc_average, self.circular_used, self.scored, self.records,
            self.skipped, self.mismatches, self.first_mismatches, self.label_key, self.labels, self.predictors,
        )

    def plot_roc(self, path: PathLike) -> Path:
        if self.labels is None:
            raise ValueError("a ROC curve needs labelled variants of both classes")
        return plot_roc(path, self.labels, self.predictors, self.vcf.name)


def _read_part(path: Path) -> tuple[dict[str, Any], list[str]]:
    """A part file's statistics (its first line, '#' + JSON) and its TSV rows."""
    with open(path) as fh:
        head = fh.readline()
        rows = fh.read().splitlines()
    if not head.startswith("#"):
        raise ValueError(f"{path}: not a score-variants part file")
    stats = json.loads(head[1:])
    if stats.get("rows") != len(rows):
        raise ValueError(f"{path}: {len(rows)} rows, {stats.get('rows')} expected")
    return stats, rows


def _part_is_complete(path: Path) -> bool:
    try:
        _read_part(path)
    except (OSError, ValueError):
        return False
    return True


def score_variants_to_file(
    vcf: PathLike,
    fasta: PathLike,
    out: PathLike,
    model: ModelSource = None,
    *,
    window: int = 512,
    rc_average: bool = False,
    embedding_distance: bool = False,
    circular: bool | Collection[str] = False,
    label_key: str | None = None,
    batch_size: int = 16,
    block_size: int = BLOCK_SIZE,
    device: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    progress: bool = False,
    allow_missing: bool = False,
    roc_png: PathLike | None = None,
) -> ShardedRun[VariantRun] | None:
    """Score like `score_variants` and write the TSV `out` (as `VariantScores.write_tsv`), streaming: the VCF is read
    `block_size` records at a time and each block's rows are written as it is done, so memory does not grow with the
    number of variants (except, with `label_key`, 2-3 floats per labelled row for the AUROC). Launched by torchrun /
    accelerate the blocks are shared among the ranks and rank 0 writes `out`; `resume` keeps the blocks an
    interrupted run finished (see `apps.sharded`). The reference is read as `Reference` does: whole into memory
    unless indexed (PATH.fai), per rank. `roc_png` (with `label_key`): also plot the ROC curve there; without
    labelled variants of both classes the run fails before `out` is written.

    Returns, on rank 0, the run (counts, summary, AUROC, per-rank counts); None on the other ranks.
    """
    vcf, fasta = check_input_file(vcf, "VCF"), check_input_file(fasta, "FASTA")
    out = check_output_file(out, None, option="out")
    if roc_png is not None:
        if label_key is None:
            raise ValueError("roc_png needs label_key (the ROC curve plots labelled variants)")
        check_output_file(roc_png, (".png",), option="roc_png")
    check_positive(block_size, "block_size")
    columns = tsv_columns(rc_average, embedding_distance, label_key)
    with process_group(device, threads) as (workers, device), Reference(fasta) as reference:
        mlm, tokenizer = _prepare(model, window, batch_size, device, dtype, allow_missing)
        settings = _Settings(vcf, reference, window, circular, label_key, rc_average, embedding_distance, batch_size)
        circular_contigs = _circular_contigs(reference, circular)
        fingerprint = {
            "vcf": file_fingerprint(vcf, "VCF"), "fasta": file_fingerprint(fasta, "FASTA"),
            "model": model_fingerprint(mlm),
            "dtype": str(next(mlm.parameters()).dtype), "window": window, "rc_average": rc_average,
            "embedding_distance": embedding_distance, "circular_contigs": circular_contigs, "label_key": label_key,
        }

        def compute(block: list[VcfRecord]) -> bytes:
            variants, skipped = _score_block(block, settings, mlm, tokenizer)
            mismatched = [v for v in variants if not v.ref_match]
            stats = {
                "rows": len(variants), "records": len(block), "skipped": dict(skipped),
                "mismatches": len(mismatched), "first_mismatches": [_mismatch_text(v) for v in mismatched[:5]],
                "contigs": sorted({v.chrom for v in variants}),
            }
            lines = ["#" + json.dumps(stats)] + [tsv_row(v, columns) for v in variants]
            return ("\n".join(lines) + "\n").encode()

        def merge(parts: list[Path], path: Path) -> VariantRun:
            run = VariantRun(vcf, fasta, window, rc_average, 0, 0, Counter(), 0, [], [], label_key, None, {})
            labels, values = array("b"), {name: array("d") for name in
                                          ["score"] + (["embedding_distance"] if embedding_distance else [])}
            used: set[str] = set()
            with atomic_write(path) as fh:
                fh.write(("\t".join(columns) + "\n").encode())
                for part in parts:
                    stats, rows = _read_part(part)
                    run.scored += stats["rows"]
                    run.records += stats["records"]
                    run.skipped.update(stats["skipped"])
                    run.mismatches += stats["mismatches"]
                    run.first_mismatches += stats["first_mismatches"][: 5 - len(run.first_mismatches)]
                    used.update(stats["contigs"])
                    if rows:
                        fh.write(("\n".join(rows) + "\n").encode())
                    if label_key is not None:
                        _collect_labels(rows, columns, labels, values, label_key, vcf)
                run.circular_used = [c for c in circular_contigs if c in used]
                if label_key is not None:
                    run.labels = np.frombuffer(labels, dtype=np.int8).astype(np.int64)
                    run.predictors = {name: np.frombuffer(v, dtype=np.float64) * (-1 if name == "score" else 1)
                                      for name, v in values.items()}
                if roc_png is not None and run.auroc() is None:
                    # Inside the atomic write: a run that cannot plot leaves no output.
                    raise ValueError(f"{roc_png}: the ROC curve needs labelled variants of both classes "
                                     f"({label_key} 0 and 1)")
            if roc_png is not None:
                run.plot_roc(roc_png)
            return run

        def total() -> int | None:
            return None if is_bgzf(vcf) or vcf.suffix.lower() == ".bcf" else count_lines(vcf)

        task = BlockTask("score-variants", fingerprint, ".tsv", compute, _part_is_complete, merge)
        return run_blocks(task, read_vcf(vcf, label_key), out, workers, block_size=block_size, resume=resume,
                          progress=progress, total=total, unit="record")


def _collect_labels(
    rows: Sequence[str], columns: Sequence[str], labels: array, values: dict[str, array], key: str, vcf: Path
) -> None:
    label_column = columns.index("label")
    positions = {name: columns.index(name) for name in values}
    for row in rows:
        cells = row.split("\t")
        if cells[label_column] != "":
            labels.append(binary_label(cells[label_column], str(vcf), key))
            for name, column in positions.items():
                values[name].append(float(cells[column]))


def _embedding_distances(
    mlm: CaduceusForMaskedLM, tokenizer: CaduceusTokenizer, sites: Sequence[_Site], rc_average: bool
) -> None:
    """Set embedding_distance of every variant of `sites`: ||e(window with REF) - e(window with ALT)||_2."""
    pairs = []
    for site in sites:
        head, tail = site.window[: site.index], site.window[site.index + 1 :]
        pairs += [(v, head + v.ref + tail, head + v.alt + tail) for v in site.variants]
    vectors = embed_sequences([p[1] for p in pairs] + [p[2] for p in pairs], mlm.caduceus, tokenizer, rc_average)
    ref_vectors, alt_vectors = vectors[: len(pairs)], vectors[len(pairs) :]
    distances = torch.linalg.vector_norm(ref_vectors - alt_vectors, dim=-1).tolist()
    for (variant, _, _), distance in zip(pairs, distances):
        variant.embedding_distance = float(distance)


__all__ = [
    "ScoredVariant",
    "VariantRun",
    "VariantScores",
    "masked_log_probs",
    "score_variants",
    "score_variants_to_file",
    "variant_window",
]
