"""caduceus-hf: Caduceus DNA language models as an installed Transformers package.

Importing the package registers the "caduceus" model type with AutoConfig, AutoModel, AutoModelForMaskedLM,
AutoModelForSequenceClassification and AutoModelForTokenClassification, so the published checkpoints load without
trust_remote_code.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from .configuration_caduceus import CaduceusConfig
from .data_collator import DataCollatorForNucleotideMLM
from .dna import reverse_complement, reverse_complement_ids
from .modeling_caduceus import (
    Caduceus,
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
    CaduceusPreTrainedModel,
)
from .ops.allocator import keep_freed_memory
from .tokenization_caduceus import CaduceusTokenizer
from .validation import validate_inputs

__version__ = "0.1.0"

AutoConfig.register(CaduceusConfig.model_type, CaduceusConfig, exist_ok=True)
AutoModel.register(CaduceusConfig, Caduceus, exist_ok=True)
AutoModelForMaskedLM.register(CaduceusConfig, CaduceusForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(CaduceusConfig, CaduceusForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(CaduceusConfig, CaduceusForTokenClassification, exist_ok=True)
AutoTokenizer.register(CaduceusConfig, tokenizer_class=CaduceusTokenizer, exist_ok=True)

__all__ = [
    "Caduceus",
    "CaduceusConfig",
    "CaduceusForMaskedLM",
    "CaduceusForSequenceClassification",
    "CaduceusForTokenClassification",
    "CaduceusPreTrainedModel",
    "CaduceusTokenizer",
    "DataCollatorForNucleotideMLM",
    "keep_freed_memory",
    "reverse_complement",
    "reverse_complement_ids",
    "validate_inputs",
]
