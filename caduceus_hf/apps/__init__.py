"""What people do with Caduceus models: embed sequences, score variants zero-shot, fill masks.

Library functions (the `caduceus-hf embed`, `score-variants` and `fill-mask` subcommands call them):

* `embed_fasta` / `embed_sequences`: mean embeddings of FASTA records, BED regions or windows (`apps.embed`);
  `embed_to_file`: the same streamed to .npz / .parquet, sharded across torchrun ranks, resumable (`apps.sharded`);
* `score_variants` / `masked_log_probs`: masked-marginal SNV scores from a VCF and a reference (`apps.variants`);
  `score_variants_to_file`: the same streamed to TSV, sharded across torchrun ranks, resumable;
* `fill_mask` / `fill_mask_fasta`: nucleotide probabilities at [MASK] tokens (`apps.fill_mask`);
* `load_model`, `default_model_path`: the model, by default the small demo model bundled with the package;
* `read_fasta`, `read_bed`, `read_vcf`, `Reference`: the file readers (`caduceus_hf.genomics`).

File reading needs the [apps] extra (pysam, tqdm, scikit-learn, matplotlib, pyarrow): pip install 'caduceus-hf[apps]'.
"""

from .embed import EMBEDDING_DEFINITION, EmbeddingRun, Embeddings, embed_fasta, embed_sequences, embed_to_file
from .fill_mask import MaskPrediction, fill_mask, fill_mask_fasta
from ..genomics import GenomeFileError, MissingExtraError, Reference, read_bed, read_fasta, read_vcf
from ..loading import ModelLoadError
from .models import default_model_path, load_model
from .sharded import ShardedRun
from .variants import ScoredVariant, VariantRun, VariantScores, masked_log_probs, score_variants, score_variants_to_file

__all__ = [
    "EMBEDDING_DEFINITION",
    "EmbeddingRun",
    "Embeddings",
    "GenomeFileError",
    "MaskPrediction",
    "MissingExtraError",
    "ModelLoadError",
    "Reference",
    "ScoredVariant",
    "ShardedRun",
    "VariantRun",
    "VariantScores",
    "default_model_path",
    "embed_fasta",
    "embed_sequences",
    "embed_to_file",
    "fill_mask",
    "fill_mask_fasta",
    "load_model",
    "masked_log_probs",
    "read_bed",
    "read_fasta",
    "read_vcf",
    "score_variants",
    "score_variants_to_file",
]
