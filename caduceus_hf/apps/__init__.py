"""What people do with Caduceus models: embed sequences, score variants zero-shot, fill masks.

Library functions (the `caduceus-hf embed`, `score-variants` and `fill-mask` subcommands call them):

* `embed_fasta` / `embed_sequences`: mean embeddings of FASTA records, BED regions or windows (`apps.embed`);
* `score_variants` / `masked_log_probs`: masked-marginal SNV scores from a VCF and a reference (`apps.variants`);
* `fill_mask` / `fill_mask_fasta`: nucleotide probabilities at [MASK] tokens (`apps.fill_mask`);
* `load_model`, `default_model_path`: the model, by default the small demo model bundled with the package;
* `read_fasta`, `read_bed`, `read_vcf`, `Reference`: the file readers (`caduceus_hf.genomics`).

File reading needs the [apps] extra (pysam, tqdm, scikit-learn, matplotlib, pyarrow): pip install 'caduceus-hf[apps]'.
"""

from .embed import EMBEDDING_DEFINITION, Embeddings, embed_fasta, embed_sequences
from .fill_mask import MaskPrediction, fill_mask, fill_mask_fasta
from ..genomics import GenomeFileError, MissingExtraError, Reference, read_bed, read_fasta, read_vcf
from ..loading import ModelLoadError
from .models import default_model_path, load_model
from .variants import ScoredVariant, VariantScores, masked_log_probs, score_variants

__all__ = [
    "EMBEDDING_DEFINITION",
    "Embeddings",
    "GenomeFileError",
    "MaskPrediction",
    "MissingExtraError",
    "ModelLoadError",
    "Reference",
    "ScoredVariant",
    "VariantScores",
    "default_model_path",
    "embed_fasta",
    "embed_sequences",
    "fill_mask",
    "fill_mask_fasta",
    "load_model",
    "masked_log_probs",
    "read_bed",
    "read_fasta",
    "read_vcf",
    "score_variants",
]
