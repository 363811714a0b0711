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

import os
import tempfile
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..dna import reverse_complement
from ..genomics import GenomeFileError, Reference, check_positive, read_vcf, require, write_file_atomically
from ..modeling_caduceus import CaduceusForMaskedLM
from ..tokenization_caduceus import CaduceusTokenizer
from .embed import check_finite, embed_sequences
from .models import ModelSource, load_model

PathLike = str | os.PathLike[str]
BASES = frozenset("ACGT")
SKIP_NOT_SNV = "not an SNV (indel, MNV, symbolic or missing allele)"
SKIP_NOT_ACGT = "REF or ALT not A/C/G/T"


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
        if len(set(labels.tolist())) < 2:
            return None
        metrics = require("sklearn.metrics", "AUROC")
        return float(metrics.roc_auc_score(labels, _predictor(kept, predictor)))

    def summary(self) -> str:
        """What a command-line run prints: counts, mismatches and, with labels, the AUROC."""
        contigs = {v.chrom for v in self.variants}
        lines = [
            f"scored {len(self.variants):,} SNVs from {self.records:,} VCF records of {self.vcf} against {self.fasta} "
            f"(window {self.window} bases, rc-average {'on' if self.rc_average else 'off'}, "
            f"circular contigs: {', '.join(c for c in self.circular_contigs if c in contigs) or 'none'})"
        ]
        if self.skipped:
            reasons = "; ".join(f"{n:,} {reason}" for reason, n in sorted(self.skipped.items()))
            lines.append(f"skipped {sum(self.skipped.values()):,} ALT alleles: {reasons}")
        else:
            lines.append("skipped 0 ALT alleles")
        bad = self.mismatches
        if bad:
            first = "; ".join(
                f"{v.chrom}:{v.pos} REF {v.ref} but reference {v.reference_base} (line {v.line})" for v in bad[:5]
            )
            lines.append(f"REF mismatches: {len(bad):,} (scored anyway, ref_match=0); first: {first}")
        else:
            lines.append("REF mismatches: 0")
        if self.label_key is not None:
            labels, _ = self.labelled()
            n1, n0 = int((labels == 1).sum()), int((labels == 0).sum())
            predictors = ["score"] + (["embedding_distance"] if self.embedding_distance else [])
            for name in predictors:
                auc = self.auroc(name)
                how = "-score (lower ALT log-likelihood ratio -> label 1)" if name == "score" else \
                    "embedding distance (larger -> label 1)"
                value = "n/a (needs labels of both classes)" if auc is None else f"{auc:.4f}"
                lines.append(
                    f"AUROC {value}: INFO {self.label_key} 1 ({n1:,}) vs 0 ({n0:,}), predictor {how}"
                )
        return "\n".join(lines)

    def write_tsv(self, path: PathLike) -> Path:
        """One row per scored SNV: chrom, pos, ref, alt, id, score, [score_fwd, score_rc], [embedding_distance],
        ref_match (1/0), [label]. Written under a temporary name and renamed."""
        columns = ["chrom", "pos", "ref", "alt", "id", "score"]
        columns += ["score_fwd", "score_rc"] if self.rc_average else []
        columns += ["embedding_distance"] if self.embedding_distance else []
        columns += ["ref_match"] + (["label"] if self.label_key is not None else [])

        def cell(v: ScoredVariant, name: str) -> str:
            value = getattr(v, name)
            if name == "ref_match":
                return "1" if value else "0"
            if value is None:
                return ""
            return f"{value:.6g}" if isinstance(value, float) else str(value)

        rows = ["\t".join(columns)] + ["\t".join(cell(v, c) for c in columns) for v in self.variants]
        return write_file_atomically(Path(path), ("\n".join(rows) + "\n").encode())

    def plot_roc(self, path: PathLike) -> Path:
        """A PNG of the ROC curve(s) of the labelled variants (matplotlib's Agg renderer, no display needed)."""
        labels, kept = self.labelled()
        if len(set(labels.tolist())) < 2:
            raise ValueError("a ROC curve needs labelled variants of both classes")
        metrics = require("sklearn.metrics", "the ROC curve")
        require("matplotlib", "the ROC plot")
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 4.5), dpi=120)
        ax = fig.subplots()
        for name in ["score"] + (["embedding_distance"] if self.embedding_distance else []):
            fpr, tpr, _ = metrics.roc_curve(labels, _predictor(kept, name))
            legend = "-score" if name == "score" else "embedding distance"
            ax.plot(fpr, tpr, label=f"{legend} (AUROC {self.auroc(name):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{Path(self.vcf).name}\n{int(labels.sum())} label 1 vs {int((labels == 0).sum())} label 0",
                     fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path = Path(path)
        with tempfile.SpooledTemporaryFile() as buffer:
            fig.savefig(buffer, format="png")
            buffer.seek(0)
            return write_file_atomically(path, buffer.read())


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


def _collect_sites(
    vcf: Path, reference: Reference, window: int, circular: bool | Collection[str], label_key: str | None
) -> tuple[list[_Site], Counter[str], int]:
    sites: dict[tuple[str, int], _Site] = {}
    skipped: Counter[str] = Counter()
    records = 0
    for record in read_vcf(vcf, label_key):
        records += 1
        length = reference.length_of(record.chrom, f"{vcf}:{record.line}")
        if not 1 <= record.pos <= length:
            raise GenomeFileError(
                f"{vcf}:{record.line}: position {record.pos:,} is outside contig {record.chrom!r} "
                f"(length {length:,} in {reference.path})"
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
                is_circular = circular if isinstance(circular, bool) else record.chrom in circular
                text, index = variant_window(reference, record.chrom, pos0, window, is_circular)
                sites[key] = _Site(text, index, [])
            site = sites[key]
            base = site.window[site.index].upper()
            if label_key is not None and record.label is not None:
                binary_label(record.label, f"{vcf}:{record.line}", label_key)
            site.variants.append(
                ScoredVariant(record.chrom, record.pos, ref, alt, record.id, base == ref, base,
                              label=record.label, line=record.line)
            )
    return list(sites.values()), skipped, records


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
    """
    check_positive(window, "window")
    check_positive(batch_size, "batch_size")
    vcf, fasta = Path(vcf), Path(fasta)
    mlm, tokenizer = load_model(model, masked_lm=True, device=device, dtype=dtype, allow_missing=allow_missing)
    if window >= tokenizer.model_max_length:
        raise ValueError(
            f"window of {window:,} bases does not fit the model's {tokenizer.model_max_length:,} tokens ([SEP] included)"
        )
    with Reference(fasta) as reference:
        sites, skipped, records = _collect_sites(vcf, reference, window, circular, label_key)
        circular_contigs = [
            name for name in reference.lengths
            if (circular if isinstance(circular, bool) else name in circular)
        ]
    ids = {base: tokenizer.convert_tokens_to_ids(base) for base in BASES}

    tqdm = require("tqdm", "the progress bar").tqdm
    with tqdm(total=len(sites), unit="site", desc="score-variants", disable=None if progress else True) as bar:
        for start in range(0, len(sites), batch_size):
            batch = sites[start : start + batch_size]
            fwd = masked_log_probs(mlm, tokenizer, [s.window for s in batch], [s.index for s in batch])
            rc = None
            if rc_average:
                rc = masked_log_probs(
                    mlm, tokenizer,
                    [reverse_complement(s.window) for s in batch],
                    [len(s.window) - 1 - s.index for s in batch],
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
            if embedding_distance:
                _embedding_distances(mlm, tokenizer, batch, rc_average)
            bar.update(len(batch))

    variants = sorted((v for s in sites for v in s.variants), key=lambda v: v.line)
    return VariantScores(
        vcf=vcf, fasta=fasta, variants=variants, skipped=skipped, records=records, window=window,
        rc_average=rc_average, embedding_distance=embedding_distance, label_key=label_key,
        model=str(mlm.name_or_path), circular_contigs=circular_contigs,
    )


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
    "VariantScores",
    "masked_log_probs",
    "score_variants",
    "variant_window",
]
